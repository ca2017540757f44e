"""Stand-in repositories for the offline world (Bazel 4.2.3, no network).

The ruleset's BUILD files load Python rules from `@rules_python//python:defs.bzl` and
depend on the pip hub `@rules_fstool_pip`, as modern (bzlmod) users expect. Neither can
be fetched here, so, the way Debian's bazel-bootstrap mock_repos stand in for rules_cc,
these repository rules write small local replacements:

- `rules_python`: `python/defs.bzl` forwards `py_binary`, `py_library`, `py_test`,
  `py_runtime` and `py_runtime_pair` to the rules built into Bazel 4.2.3, mapping
  `python_version = "3.x"` to `"PY3"`; `//python:toolchain_type` aliases Bazel's own.
- `rules_fstool_pip`: one empty `py_library` per package of `//:requirements_lock.txt`;
  the imports are then served by the interpreter's installed packages
  (`python3-zstandard`, `python3-lz4`, `python3-crc32c` for `/usr/bin/python3`).

Only WORKSPACE files of the offline world call `fstool_offline_repositories()`;
`MODULE.bazel` uses the real rules_python and its pip extension.
"""

_DEFS_BZL = '''"""Stand-in for rules_python's defs.bzl: the rules built into Bazel 4.2.3."""

load("@bazel_tools//tools/python:toolchain.bzl", _py_runtime_pair = "py_runtime_pair")

def _python_version(kwargs):
    v = kwargs.pop("python_version", None)
    if v != None:
        kwargs["python_version"] = "PY2" if v.startswith("2") or v == "PY2" else "PY3"
    return kwargs

def py_binary(**kwargs):
    native.py_binary(**_python_version(kwargs))

def py_test(**kwargs):
    native.py_test(**_python_version(kwargs))

def py_library(**kwargs):
    native.py_library(**kwargs)

def py_runtime(**kwargs):
    native.py_runtime(**kwargs)

py_runtime_pair = _py_runtime_pair
'''

_PYTHON_BUILD = '''package(default_visibility = ["//visibility:public"])

alias(
    name = "toolchain_type",
    actual = "@bazel_tools//tools/python:toolchain_type",
)
'''

def _stand_in_rules_python_impl(rctx):
    rctx.file("WORKSPACE", 'workspace(name = "%s")\n' % rctx.name)
    rctx.file("BUILD.bazel", "")
    rctx.file("python/BUILD.bazel", _PYTHON_BUILD)
    rctx.file("python/defs.bzl", _DEFS_BZL)

stand_in_rules_python = repository_rule(
    implementation = _stand_in_rules_python_impl,
    doc = "A local `rules_python` that re-exports the Python rules built into Bazel 4.2.3.",
)

def _package_names(lock_text):
    """Normalized names (PEP 503, with `_`) of the pinned packages of a requirements lock."""
    names = []
    for line in lock_text.splitlines():
        line = line.split("#")[0].strip()
        if not line or line.startswith("-"):
            continue
        for sep in ("==", ">=", "<=", "~=", "[", ";", " "):
            line = line.split(sep)[0]
        name = line.strip().lower().replace("-", "_").replace(".", "_")
        if name and name not in names:
            names.append(name)
    return names

_PACKAGE_BUILD = '''load("@rules_python//python:defs.bzl", "py_library")

package(default_visibility = ["//visibility:public"])

# Empty: the import is served by the interpreter's installed package.
py_library(name = "pkg")

alias(
    name = "{name}",
    actual = ":pkg",
)
'''

def _stand_in_pip_hub_impl(rctx):
    rctx.file("WORKSPACE", 'workspace(name = "%s")\n' % rctx.name)
    rctx.file("BUILD.bazel", "")
    for name in _package_names(rctx.read(rctx.attr.requirements_lock)):
        rctx.file(name + "/BUILD.bazel", _PACKAGE_BUILD.format(name = name))

stand_in_pip_hub = repository_rule(
    implementation = _stand_in_pip_hub_impl,
    attrs = {
        "requirements_lock": attr.label(allow_single_file = True, mandatory = True),
    },
    doc = "A pip hub whose `//<package>` targets are empty `py_library` rules.",
)

def fstool_offline_repositories():
    """Declares the stand-ins `rules_python` and `rules_fstool_pip` (offline world only)."""
    stand_in_rules_python(name = "rules_python")
    stand_in_pip_hub(
        name = "rules_fstool_pip",
        requirements_lock = Label("//:requirements_lock.txt"),
    )
