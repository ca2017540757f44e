"""Checks of the Bazel ruleset that need no Bazel (fast): the rules' sources read as data.

- the Starlark list of filesystem types (rules/private/fs_types.bzl) is the Python
  registry's `fstool.fs.type_names()`;
- every attribute of every rule is documented in docs/rules.md;
- every fail() branch of the rules has an analysis test (tests/analysis), matched by
  its message;
- the BCR templates and MODULE.bazel say what the registry needs.
"""
from __future__ import annotations

import ast
import json
import os
import re

import fstool.fs
from conftest import REPO

RULES = os.path.join(REPO, "rules")
PRIVATE = os.path.join(RULES, "private")

# Rule attributes the public macros rename (Bazel 4.2.3 reserves `size` for tests).
MACRO_NAMES = {"image_size": "size", "partition_size": "size", "disk_size": "size", "blob_size": "size"}


def _module(path: str) -> ast.Module:
    """A .bzl file parsed as Python (the ruleset's Starlark stays within that subset)."""
    with open(path) as f:
        return ast.parse(f.read(), filename=path)


def _attr_names(node, env: dict[str, set[str]]) -> set[str]:
    """The keys of an attrs expression: a dict literal, a name, or dict(X, k = ...)."""
    if isinstance(node, ast.Dict):
        return {k.value for k in node.keys if isinstance(k, ast.Constant)}
    if isinstance(node, ast.Name):
        return set(env[node.id])
    if isinstance(node, ast.Call) and getattr(node.func, "id", None) == "dict":
        out: set[str] = set()
        for a in node.args:
            out |= _attr_names(a, env)
        return out | {k.arg for k in node.keywords if k.arg}
    raise AssertionError(f"cannot read attrs from {ast.dump(node)[:80]}")


def rule_attributes() -> dict[str, set[str]]:
    """rule name -> its public attribute names (as users write them)."""
    env: dict[str, set[str]] = {}
    rules: dict[str, set[str]] = {}
    for name in sorted(os.listdir(PRIVATE)):
        if not name.endswith(".bzl"):
            continue
        for stmt in _module(os.path.join(PRIVATE, name)).body:
            if not (isinstance(stmt, ast.Assign) and isinstance(stmt.targets[0], ast.Name)):
                continue
            target, value = stmt.targets[0].id, stmt.value
            if isinstance(value, ast.Dict):
                env[target] = _attr_names(value, env)
            elif isinstance(value, ast.Call) and getattr(value.func, "id", None) == "rule":
                kw = {k.arg: k.value for k in value.keywords}
                names = _attr_names(kw["attrs"], env) if "attrs" in kw else set()
                rules[target] = {MACRO_NAMES.get(n, n) for n in names
                                 if not n.startswith("_") and not n.startswith("private_")}
    return rules


def doc_sections() -> dict[str, str]:
    with open(os.path.join(REPO, "docs", "rules.md")) as f:
        text = f.read()
    out = {}
    for part in re.split(r"^## ", text, flags=re.M)[1:]:
        title, _, body = part.partition("\n")
        out[title.strip()] = body
    return out


def table_rows(section: str) -> set[str]:
    return set(re.findall(r"^\| `([a-z_]+)` \|", section, flags=re.M))


def test_fs_types_constant_is_the_registry():
    """ONE Starlark constant lists the type names; it must be the Python registry's."""
    mod = _module(os.path.join(PRIVATE, "fs_types.bzl"))
    lists = [s for s in mod.body if isinstance(s, ast.Assign) and s.targets[0].id == "FS_TYPES"]
    assert len(lists) == 1
    starlark = [e.value for e in lists[0].value.elts]
    assert starlark == sorted(starlark)
    assert starlark == fstool.fs.type_names()
    # No other .bzl spells out a list of types.
    for root, _dirs, files in os.walk(RULES):
        for name in files:
            if name.endswith(".bzl") and name != "fs_types.bzl":
                with open(os.path.join(root, name)) as f:
                    text = f.read()
                assert not re.search(r'\[\s*"ext2",', text), name


def test_every_rule_attribute_is_documented():
    rules = rule_attributes()
    assert {"fs_image", "squashfs_image", "partition", "gpt_disk", "mbr_disk", "fstool_image",
            "fstool_toolchain"} <= set(rules), sorted(rules)
    sections = doc_sections()
    missing = []
    for rule, names in sorted(rules.items()):
        assert rule in sections, f"docs/rules.md has no section '## {rule}'"
        rows = table_rows(sections[rule])
        for n in sorted(names):
            if n in rows:
                continue
            # squashfs_image and iso_image document the shared content attributes by
            # naming them and pointing at fs_image's table.
            if rule in ("squashfs_image", "iso_image") and f"`{n}`" in sections[rule] and n in table_rows(sections["fs_image"]):
                continue
            missing.append(f"{rule}.{n}")
    assert not missing, f"undocumented in docs/rules.md: {missing}"


def _string_constants(node) -> str:
    return " ".join(n.value for n in ast.walk(node) if isinstance(n, ast.Constant) and isinstance(n.value, str))


def test_every_fail_branch_has_an_analysis_test():
    """Each attr_error() call site's message literal contains a needle that an analysis
    test in tests/analysis/failure_tests.bzl expects."""
    tests = _module(os.path.join(REPO, "tests", "analysis", "failure_tests.bzl"))
    needles = set()
    for call in ast.walk(tests):
        if isinstance(call, ast.Call) and getattr(call.func, "id", None) == "_case":
            for n in call.args[2].elts:
                if not n.value.startswith("attribute '"):
                    needles.add(n.value)
    sites = []
    for name in sorted(os.listdir(PRIVATE)):
        if name.endswith(".bzl"):
            for call in ast.walk(_module(os.path.join(PRIVATE, name))):
                if isinstance(call, ast.Call) and getattr(call.func, "id", None) == "attr_error":
                    sites.append((f"{name}:{call.lineno}", _string_constants(call.args[2])))
                if isinstance(call, ast.Call) and getattr(call.func, "id", None) == "fail":
                    assert name == "common.bzl", f"{name}:{call.lineno}: use attr_error"
    assert len(sites) >= 17
    untested = [where for where, text in sites if not any(n in text for n in needles)]
    assert not untested, f"fail() branches without an analysis test: {untested}"


def test_bcr_templates_and_module():
    bcr = os.path.join(REPO, ".bcr")
    with open(os.path.join(bcr, "metadata.template.json")) as f:
        meta = json.load(f)
    assert meta["maintainers"] and meta["repository"] and meta["versions"] == []
    with open(os.path.join(bcr, "source.template.json")) as f:
        source = json.load(f)
    assert "{TAG}" in source["url"] or "{VERSION}" in source["url"]
    assert source["strip_prefix"]
    with open(os.path.join(bcr, "presubmit.yml")) as f:
        presubmit = f.read()
    for v in ("7.x", "8.x", "9.x"):
        assert v in presubmit
    with open(os.path.join(REPO, "MODULE.bazel")) as f:
        module = f.read()
    assert not re.search(r"compatibility_level\s*=", module)
    assert 'bazel_compatibility = [">=7.0.0"]' in module
    with open(os.path.join(REPO, "fstool", "BUILD.bazel")) as f:
        assert "legacy_create_init = 0" in f.read()
    assert "target_platforms" in module
    assert 'register_toolchains("//fstool:linux_toolchain")' in module
    with open(os.path.join(REPO, ".bazelversion")) as f:
        assert re.fullmatch(r"\d+\.\d+\.\d+\n?", f.read())


def test_lock_has_hashes_for_every_pin():
    with open(os.path.join(REPO, "requirements_lock.txt")) as f:
        text = f.read()
    blocks = re.split(r"\n(?=[a-z0-9])", "\n".join(ln for ln in text.splitlines() if not ln.startswith("#")))
    pins = [b for b in blocks if "==" in b]
    assert {p.split("==")[0] for p in pins} >= {"crc32c", "lz4", "zstandard"}
    for p in pins:
        assert "--hash=sha256:" in p, p.splitlines()[0]
    with open(os.path.join(REPO, "Makefile")) as f:
        assert "--require-hashes" in f.read()
