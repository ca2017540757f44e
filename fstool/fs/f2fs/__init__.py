"""F2FS: writer (`writer.py`), reader (`reader.py`), records and algorithms (`layout.py`)."""
from __future__ import annotations

from ..registry import Capabilities, Format, Limits


def _parse_options(params):
    from .writer import parse_options
    return parse_options(params)


FORMAT = Format(
    name="f2fs",
    types=("f2fs",),
    caps=Capabilities(label=1024, uuid=True, block_sizes=(4096,)),
    # one xattr block per inode (4072 bytes with its header); symlink targets in one block
    limits=Limits(max_time=(1 << 63) - 1, max_symlink=4095, max_xattr_value=4000,
                  max_file_size=(873 + 2 * 1018 + 2 * 1018 ** 2 + 1018 ** 3) * 4096),
    parse_options=_parse_options,
    writer="fstool.fs.f2fs.writer",
    reader="fstool.fs.f2fs.reader",
    extensions=(".f2fs",),
    probe_order=20,
    description="F2FS (flash storage: Android data, eMMC/UFS roots)",
)
