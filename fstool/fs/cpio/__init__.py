"""newc cpio archives (initramfs): writer (`writer.py`), reader (`reader.py`), header (`format.py`),
whole-archive compression (`compress.py`)."""
from __future__ import annotations

from ..registry import Capabilities, Format, Limits


def _parse_options(params):
    from .writer import _parse_options as parse
    return parse(params)


FORMAT = Format(
    name="cpio",
    types=("cpio",),
    aliases={"newc": "cpio", "initramfs": "cpio"},
    # newc has no xattrs (they are dropped), no label or UUID; every field is 32 bits
    caps=Capabilities(label=None, seeded=False, xattrs=False),
    limits=Limits(max_time=(1 << 32) - 1, max_major=(1 << 32) - 1, max_minor=(1 << 32) - 1,
                  max_file_size=(1 << 32) - 1),
    parse_options=_parse_options,
    writer="fstool.fs.cpio.writer",
    reader="fstool.fs.cpio.reader",
    extensions=(".cpio", ".cpio.gz", ".cpio.zst", ".cpio.xz", ".cpio.lz4"),
    probe_order=60,
    description="newc cpio archive (initramfs), optionally compressed",
)
