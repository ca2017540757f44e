"""ext2, ext3 and ext4: on-disk records (`format.py`), options (`options.py`), the writer
(`writer.py`, in phases: inode.py, dir.py/htree.py, xattr.py, layout.py, alloc.py, extent.py,
journal.py, group.py, superblock.py, emit.py) and the reader (`reader.py`)."""
from __future__ import annotations

from ..registry import Capabilities, Format, Limits


def _parse_options(params):
    from .options import parse_options
    return parse_options(params)


FORMAT = Format(
    name="ext",
    types=("ext2", "ext3", "ext4"),
    caps=Capabilities(label=16, uuid=True, journal=True, block_sizes=(1024, 2048, 4096)),
    # times: 256-byte inodes carry the epoch bits (1901..2446-05-10, the last being a signed
    # 32-bit value plus 3 << 32); ext2's 128-byte ones are signed 32-bit
    limits=Limits(min_time=0, max_time=(3 << 32) + (1 << 31) - 1, max_xattr_value=65536),
    parse_options=_parse_options,
    writer="fstool.fs.ext.writer",
    reader="fstool.fs.ext.reader",
    extensions=(".ext2", ".ext3", ".ext4"),
    probe_order=20,
    description="ext2/ext3/ext4 (Linux)",
)
