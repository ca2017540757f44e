"""The format registry: filesystem type names to writer and reader modules.

Each format package exposes `write(tree, out: ImageFile, params: FsParams) -> int`
in `writer.py` and `probe(region) -> bool` / `open(region) -> Reader` in
`reader.py`. Modules are imported lazily so a missing optional codec only
matters for the format that needs it.
"""
from __future__ import annotations

import importlib

from ..errors import ImageError, SpecError

# type name (and aliases) -> (package, canonical type)
FS_TYPES: dict[str, tuple[str, str]] = {
    "ext2": ("fstool.fs.ext", "ext2"),
    "ext3": ("fstool.fs.ext", "ext3"),
    "ext4": ("fstool.fs.ext", "ext4"),
    "squashfs": ("fstool.fs.squashfs", "squashfs"),
    "vfat": ("fstool.fs.fat", "vfat"),
    "fat": ("fstool.fs.fat", "vfat"),
    "msdos": ("fstool.fs.fat", "vfat"),
    "fat12": ("fstool.fs.fat", "fat12"),
    "fat16": ("fstool.fs.fat", "fat16"),
    "fat32": ("fstool.fs.fat", "fat32"),
}

READER_ORDER = ("fstool.fs.squashfs", "fstool.fs.ext", "fstool.fs.fat")


def canonical_type(name: str, where: str = "type") -> str:
    try:
        return FS_TYPES[name.lower()][1]
    except KeyError:
        raise SpecError(f"unknown filesystem type {name!r}; known: "
                        f"{', '.join(sorted(FS_TYPES))}", where=where) from None


def writer_for(fs_type: str, where: str = "type"):
    pkg, _ = FS_TYPES.get(fs_type.lower(), (None, None))
    if pkg is None:
        canonical_type(fs_type, where)
    try:
        return importlib.import_module(pkg + ".writer")
    except ModuleNotFoundError as e:
        if e.name and e.name.startswith(pkg):
            raise SpecError(f"writing {fs_type} is not supported yet", where=where) from None
        raise


def open_reader(region):
    """Probe region with each format reader; return an open Reader or raise ImageError."""
    for pkg in READER_ORDER:
        try:
            mod = importlib.import_module(pkg + ".reader")
        except ModuleNotFoundError as e:
            if e.name and e.name.startswith(pkg):
                continue
            raise
        if mod.probe(region):
            return mod.open(region)
    raise ImageError("no filesystem this tool can read was found (known: squashfs, ext2/3/4, FAT)",
                     where=region.path)
