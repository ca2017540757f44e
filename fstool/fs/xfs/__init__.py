"""XFS v5: writer (`writer.py`), reader (`reader.py`), on-disk records (`format.py`),
directories (`dirs.py`), extended attributes (`attrs.py`), B+trees (`btree.py`)."""
from __future__ import annotations

from ..registry import Capabilities, Format, Limits


def _parse_options(params):
    from .writer import parse_options
    return parse_options(params)


FORMAT = Format(
    name="xfs",
    types=("xfs",),
    caps=Capabilities(label=12, uuid=True, journal=True, block_sizes=(4096,)),
    # bigtime inodes: 1901-12-13 to 2486-07-02; devices: sysv encoding, 9-bit major (the kernel
    # masks it) and 18-bit minor; symlinks shorter than XFS_SYMLINK_MAXLEN (xfs_repair refuses 1024)
    limits=Limits(min_time=-(1 << 31), max_time=16299260424, max_major=(1 << 9) - 1,
                  max_minor=(1 << 18) - 1, max_symlink=1023, max_xattr_value=65536),
    parse_options=_parse_options,
    writer="fstool.fs.xfs.writer",
    reader="fstool.fs.xfs.reader",
    extensions=(".xfs",),
    probe_order=25,
    description="XFS v5 (CRCs, ftype, finobt, sparse inodes, bigtime)",
)
