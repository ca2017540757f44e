"""SquashFS options: `[filesystem.options]` / `-O k=v` into a typed SquashfsOptions.

Run when the spec is read (the registry calls `parse_options`), so a bad option is
reported before any image is written; every key not read here is an error.
"""
from __future__ import annotations

from dataclasses import dataclass

from ...errors import SpecError
from ..base import FsParams, OptionReader
from .codec import ALIASES, DEFAULT_LEVELS, LEVEL_RANGES

DEFAULT_BLOCK_SIZE = 131072


@dataclass(frozen=True)
class SquashfsOptions:
    compression: str          # gzip, xz, lzma, lz4 or zstd
    level: int | None         # None: the compressor's default level
    fragments: str            # "none", "small" (files under a block) or "always" (every tail)
    dedup: bool
    exportable: bool
    xattrs: bool
    pad: bool                 # pad the image to a multiple of 4 KiB, as mksquashfs
    block_size: int


def parse_options(params: FsParams) -> SquashfsOptions:
    where = f"{params.where}.options"
    o = OptionReader(params.options, where)
    comp = o.get_str("compression", "zstd", choices=tuple(DEFAULT_LEVELS) + tuple(ALIASES) + ("lzo",))
    comp = ALIASES.get(comp, comp)
    if comp == "lzo":
        try:
            import lzo  # type: ignore[import-not-found]  # noqa: F401
        except ImportError:
            raise SpecError("lzo compression needs the python-lzo package, which is not installed "
                            "(gzip, xz, lz4 and zstd need nothing more)", where=f"{where}.compression") from None
        raise SpecError("lzo compression is not implemented; use lz4 for speed or zstd",
                        where=f"{where}.compression")
    lo, hi = LEVEL_RANGES[comp]
    level = o.get_int("compression_level", None, lo, hi)
    no_fragments = o.get_bool("no_fragments", False)
    always_fragments = o.get_bool("always_fragments", False)
    dedup = o.get_bool("dedup", True)
    exportable = o.get_bool("exportable", True)
    xattrs = o.get_bool("xattrs", True)
    pad = o.get_bool("pad", True)
    o.finish()
    if no_fragments and always_fragments:
        raise SpecError("no_fragments and always_fragments contradict each other", where=f"{where}.always_fragments")
    bs = params.block_size or DEFAULT_BLOCK_SIZE
    if bs & (bs - 1) or not 4096 <= bs <= 1 << 20:
        raise SpecError(f"squashfs block size must be a power of two from 4KiB to 1MiB, got {bs}",
                        where=f"{params.where}.block_size")
    if params.label:
        raise SpecError("squashfs has no volume label", where=f"{params.where}.label")
    if params.uuid:
        raise SpecError("squashfs has no UUID", where=f"{params.where}.uuid")
    return SquashfsOptions(
        compression=comp, level=level,
        fragments="none" if no_fragments else "always" if always_fragments else "small",
        dedup=dedup, exportable=exportable, xattrs=xattrs, pad=pad, block_size=bs)
