"""EROFS options: `[filesystem.options]` / `-O k=v` into a typed Options, named after mkfs.erofs's.

Run when the spec is read (the registry calls `parse_options`), so a bad option, or a codec
whose library is missing, is reported before any image is written; every key not read here
is an error.
"""
from __future__ import annotations

from dataclasses import dataclass

from ...errors import SpecError
from ...ids import parse_uuid
from ..base import FsParams, OptionReader

BLOCK_SIZE = 4096
COMPRESSORS = ("none", "lz4", "lz4hc", "lzma", "deflate", "zstd")


@dataclass(frozen=True)
class Options:
    compression: str = "none"
    compression_level: int | None = None
    pcluster_size: int = BLOCK_SIZE
    ignore_mtime: bool = False
    inline_data: bool = True
    chunked_sparse: bool = True
    xattr_tolerance: int = 2
    legacy_compress: bool = False
    ztailpacking: bool = False
    dedupe: bool = False
    fragments: bool = False


def parse_options(params: FsParams) -> Options:
    from .compress import LEVEL_RANGE, check_available

    where = f"{params.where}.options"
    o = OptionReader(params.options, where)
    comp = o.get_str("compression", "none", choices=COMPRESSORS)
    level = o.get_int("compression_level", None, 0, 22)
    pcluster = o.get_size("pcluster_size", BLOCK_SIZE)
    opts = Options(
        compression=comp,
        compression_level=level,
        pcluster_size=pcluster,
        ignore_mtime=o.get_bool("ignore_mtime", False),
        inline_data=o.get_bool("inline_data", True),
        chunked_sparse=o.get_bool("chunked_sparse", True),
        xattr_tolerance=o.get_int("xattr_tolerance", 2, -1, 1 << 30),
        legacy_compress=o.get_bool("legacy_compress", False),
        ztailpacking=o.get_bool("ztailpacking", False),
        dedupe=o.get_bool("dedupe", False),
        fragments=o.get_bool("fragments", False),
    )
    o.finish()
    if comp == "none":
        if level is not None:
            raise SpecError("compression_level needs a compression", where=f"{where}.compression_level")
        if opts.fragments:
            # the packed inode holds file tails compressed together: nothing to pack without a codec
            raise SpecError("fragments needs a compression (the packed inode is compressed like a file)",
                            where=f"{where}.fragments")
    else:
        lo, hi = LEVEL_RANGE[comp]
        if level is not None and not lo <= level <= hi:
            raise SpecError(f"{comp} levels run from {lo} to {hi}; got {level}", where=f"{where}.compression_level")
        check_available(comp)
    if pcluster % BLOCK_SIZE or not BLOCK_SIZE <= pcluster <= 1 << 20:
        raise SpecError(f"pcluster_size must be a multiple of {BLOCK_SIZE} up to 1 MiB, got {pcluster}",
                        where=f"{where}.pcluster_size")
    bs = params.block_size or BLOCK_SIZE
    if bs != BLOCK_SIZE:
        raise SpecError(f"erofs block size must be {BLOCK_SIZE}, got {bs}", where=f"{params.where}.block_size")
    if params.label is not None and len(params.label.encode()) > 16:
        raise SpecError("an erofs volume name is at most 16 bytes", where=f"{params.where}.label")
    if params.uuid:
        parse_uuid(params.uuid, f"{params.where}.uuid")
    return opts


