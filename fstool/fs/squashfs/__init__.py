"""SquashFS 4.0: writer (`writer.py`), reader (`reader.py`), records (`format.py`), codecs (`codec.py`)."""
from __future__ import annotations

from ..registry import Capabilities, Format, Limits


def _parse_options(params):
    from .options import parse_options
    return parse_options(params)


FORMAT = Format(
    name="squashfs",
    types=("squashfs",),
    aliases={"sqfs": "squashfs", "squashfs4": "squashfs"},
    caps=Capabilities(label=None, uuid=False, seeded=False, block_sizes=tuple(1 << i for i in range(12, 21)),
                      fills_partition=False),
    # the kernel refuses symlinks longer than a page ("Corrupted symlink")
    limits=Limits(max_time=(1 << 32) - 1, max_symlink=4095, max_xattr_value=65536),
    parse_options=_parse_options,
    writer="fstool.fs.squashfs.writer",
    reader="fstool.fs.squashfs.reader",
    head_start="fstool.fs.squashfs.headstart",
    extensions=(".sqfs", ".squashfs"),
    probe_order=10,
    description="SquashFS 4.0 (compressed, read-only)",
)
