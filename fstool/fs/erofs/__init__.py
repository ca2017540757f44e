"""EROFS: writer (`writer.py`), reader (`reader.py`), on-disk records (`format.py`)."""
from __future__ import annotations

from ..registry import Capabilities, Format, Limits


def _parse_options(params):
    from .options import parse_options
    return parse_options(params)


FORMAT = Format(
    name="erofs",
    types=("erofs",),
    caps=Capabilities(label=16, uuid=True, block_sizes=(4096,), fills_partition=False),
    # extended inodes hold 32-bit ids and 64-bit times; data addresses are 32-bit block numbers
    limits=Limits(min_time=-(1 << 63), max_time=(1 << 63) - 1, max_symlink=4095, max_xattr_value=65535,
                  max_file_size=(1 << 44) - 1),
    parse_options=_parse_options,
    writer="fstool.fs.erofs.writer",
    reader="fstool.fs.erofs.reader",
    extensions=(".erofs",),
    probe_order=15,
    description="EROFS (read-only; uncompressed or lz4, lz4hc, lzma, deflate, zstd)",
)
