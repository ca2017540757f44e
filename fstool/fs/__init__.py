"""The format registry: every filesystem or archive format, found by type name.

Adding a format is adding its package under `fstool/fs/` (which defines one
`FORMAT = Format(...)`, see `registry.py`) and one line to `FORMAT_PACKAGES`.
Nothing else in the engine, the CLI or the Bazel rules names a format.
Packages are imported when first asked for; their writers and readers only when used,
so a missing optional codec only matters for the format that needs it.
"""
from __future__ import annotations

import importlib

from ..errors import ImageError, SpecError, did_you_mean
from .registry import Capabilities, Format, Limits, check_tree  # noqa: F401  (the public shape)

FORMAT_PACKAGES: tuple[str, ...] = (
    "fstool.fs.squashfs",
    "fstool.fs.ext",
    "fstool.fs.fat",
    "fstool.fs.tar",
    "fstool.fs.erofs",
    "fstool.fs.exfat",
    "fstool.fs.f2fs",
    "fstool.fs.cpio",
    "fstool.fs.iso9660",
    "fstool.fs.xfs",
)

_formats: list[Format] | None = None
_by_name: dict[str, tuple[Format, str]] = {}


def formats() -> list[Format]:
    """Every registered format, in probe order."""
    global _formats
    if _formats is None:
        found = []
        for pkg in FORMAT_PACKAGES:
            fmt = importlib.import_module(pkg).FORMAT
            found.append(fmt)
            for t in fmt.types:
                _by_name[t] = (fmt, t)
            for alias, t in fmt.aliases.items():
                _by_name[alias] = (fmt, t)
        _formats = sorted(found, key=lambda f: f.probe_order)
    return _formats


def type_names() -> list[str]:
    """Every accepted type name (canonical names and aliases), sorted."""
    formats()
    return sorted(_by_name)


def lookup(name: str, where: str = "type") -> tuple[Format, str]:
    """(the Format, the canonical type) for a type name or alias; SpecError naming the nearest."""
    formats()
    try:
        return _by_name[name.lower()]
    except KeyError:
        hint = did_you_mean(name.lower(), _by_name)
        raise SpecError(f"unknown filesystem type {name!r}{hint}; known: {', '.join(type_names())}",
                        where=where) from None


def canonical_type(name: str, where: str = "type") -> str:
    return lookup(name, where)[1]


def format_for(fs_type: str, where: str = "type") -> Format:
    return lookup(fs_type, where)[0]


def writer_for(fs_type: str, where: str = "type"):
    return format_for(fs_type, where).writer_module(where)


def open_reader(region):
    """Probe region with each format's reader; return an open Reader or raise ImageError."""
    for fmt in formats():
        mod = fmt.reader_module()
        if mod is not None and mod.probe(region):
            return mod.open(region)
    known = ", ".join(f.name for f in formats() if f.reader)
    raise ImageError(f"no filesystem this tool can read was found (known: {known})", where=region.path)
