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

- `rules_pkg`: `pkg/providers.bzl` with rules_pkg's provider names and fields
  (`PackageFilesInfo`, `PackageDirsInfo`, `PackageSymlinkInfo`, `PackageFilegroupInfo`),
  and `pkg/mappings.bzl` with small `pkg_files`, `pkg_mkdirs`, `pkg_mklink`,
  `pkg_filegroup` and `pkg_attributes` that fill them as rules_pkg's do (a subset of
  their attributes), so the rules' rules_pkg support is tested offline.

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

_PKG_PROVIDERS_BZL = '''"""Stand-in for rules_pkg's providers.bzl: the same names and fields."""

PackageFilesInfo = provider(
    doc = "Files to package, by destination.",
    fields = {
        "attributes": "dict: mode (octal string), user, group, uid, gid.",
        "dest_src_map": "dict: destination path -> File.",
    },
)

PackageDirsInfo = provider(
    doc = "Directories to create.",
    fields = {
        "attributes": "dict, as in PackageFilesInfo.",
        "dirs": "list of destination paths.",
    },
)

PackageSymlinkInfo = provider(
    doc = "One symbolic link.",
    fields = {
        "attributes": "dict, as in PackageFilesInfo.",
        "destination": "string: where the link is.",
        "target": "string: what it points to.",
    },
)

PackageFilegroupInfo = provider(
    doc = "A group of the above.",
    fields = {
        "pkg_dirs": "list of (PackageDirsInfo, Label).",
        "pkg_files": "list of (PackageFilesInfo, Label).",
        "pkg_symlinks": "list of (PackageSymlinkInfo, Label).",
    },
)
'''

_PKG_MAPPINGS_BZL = '''"""Stand-in for rules_pkg's mappings.bzl: a subset of each rule's attributes."""

load(
    ":providers.bzl",
    "PackageDirsInfo",
    "PackageFilegroupInfo",
    "PackageFilesInfo",
    "PackageSymlinkInfo",
)

def pkg_attributes(mode = None, user = None, group = None, uid = None, gid = None):
    attrs = {}
    for key, value in (("mode", mode), ("user", user), ("group", group), ("uid", uid), ("gid", gid)):
        if value != None:
            attrs[key] = value
    return json.encode(attrs)

def _join(prefix, path):
    return "/".join([c for c in (prefix + "/" + path).split("/") if c])

def _pkg_files_impl(ctx):
    renames = {}
    for target, name in ctx.attr.renames.items():
        for f in target.files.to_list():
            renames[f] = name
    dest_src_map = {}
    for f in ctx.files.srcs:
        dest_src_map[_join(ctx.attr.prefix, renames.get(f, f.basename))] = f
    return [
        PackageFilesInfo(dest_src_map = dest_src_map, attributes = json.decode(ctx.attr.attributes)),
        DefaultInfo(files = depset(ctx.files.srcs)),
    ]

pkg_files = rule(
    implementation = _pkg_files_impl,
    attrs = {
        "srcs": attr.label_list(allow_files = True),
        "prefix": attr.string(),
        "renames": attr.label_keyed_string_dict(allow_files = True),
        "attributes": attr.string(default = "{}"),
    },
    provides = [PackageFilesInfo],
)

def _pkg_mkdirs_impl(ctx):
    return [PackageDirsInfo(dirs = ctx.attr.dirs, attributes = json.decode(ctx.attr.attributes))]

pkg_mkdirs = rule(
    implementation = _pkg_mkdirs_impl,
    attrs = {
        "dirs": attr.string_list(mandatory = True),
        "attributes": attr.string(default = "{}"),
    },
    provides = [PackageDirsInfo],
)

def _pkg_mklink_impl(ctx):
    return [PackageSymlinkInfo(
        destination = ctx.attr.link_name,
        target = ctx.attr.target,
        attributes = json.decode(ctx.attr.attributes),
    )]

pkg_mklink = rule(
    implementation = _pkg_mklink_impl,
    attrs = {
        "link_name": attr.string(mandatory = True),
        "target": attr.string(mandatory = True),
        "attributes": attr.string(default = "{}"),
    },
    provides = [PackageSymlinkInfo],
)

def _prefixed(ctx, info, kind):
    p = ctx.attr.prefix
    if kind == "files":
        return PackageFilesInfo(
            dest_src_map = {_join(p, d): f for d, f in info.dest_src_map.items()},
            attributes = info.attributes,
        )
    if kind == "dirs":
        return PackageDirsInfo(dirs = [_join(p, d) for d in info.dirs], attributes = info.attributes)
    return PackageSymlinkInfo(destination = _join(p, info.destination), target = info.target,
                              attributes = info.attributes)

def _pkg_filegroup_impl(ctx):
    files, dirs, links = [], [], []
    for s in ctx.attr.srcs:
        if PackageFilegroupInfo in s:
            g = s[PackageFilegroupInfo]
            files += [(_prefixed(ctx, i, "files"), o) for i, o in g.pkg_files]
            dirs += [(_prefixed(ctx, i, "dirs"), o) for i, o in g.pkg_dirs]
            links += [(_prefixed(ctx, i, "links"), o) for i, o in g.pkg_symlinks]
        if PackageFilesInfo in s:
            files.append((_prefixed(ctx, s[PackageFilesInfo], "files"), s.label))
        if PackageDirsInfo in s:
            dirs.append((_prefixed(ctx, s[PackageDirsInfo], "dirs"), s.label))
        if PackageSymlinkInfo in s:
            links.append((_prefixed(ctx, s[PackageSymlinkInfo], "links"), s.label))
    return [
        PackageFilegroupInfo(pkg_files = files, pkg_dirs = dirs, pkg_symlinks = links),
        DefaultInfo(files = depset([f for i, _ in files for f in i.dest_src_map.values()])),
    ]

pkg_filegroup = rule(
    implementation = _pkg_filegroup_impl,
    attrs = {
        "srcs": attr.label_list(mandatory = True),
        "prefix": attr.string(),
    },
    provides = [PackageFilegroupInfo],
)
'''

def _stand_in_rules_pkg_impl(rctx):
    rctx.file("WORKSPACE", 'workspace(name = "%s")\n' % rctx.name)
    rctx.file("BUILD.bazel", "")
    rctx.file("pkg/BUILD.bazel", 'exports_files(["providers.bzl", "mappings.bzl"])\n')
    rctx.file("pkg/providers.bzl", _PKG_PROVIDERS_BZL)
    rctx.file("pkg/mappings.bzl", _PKG_MAPPINGS_BZL)

stand_in_rules_pkg = repository_rule(
    implementation = _stand_in_rules_pkg_impl,
    doc = "A local `rules_pkg` with its providers and small mapping rules that fill them.",
)

def fstool_offline_repositories():
    """Declares the stand-ins `rules_python`, `rules_pkg` and `rules_fstool_pip` (offline only)."""
    stand_in_rules_python(name = "rules_python")
    stand_in_rules_pkg(name = "rules_pkg")
    stand_in_pip_hub(
        name = "rules_fstool_pip",
        requirements_lock = Label("//:requirements_lock.txt"),
    )
