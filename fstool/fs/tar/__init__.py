"""tar (ustar + PAX): writer (`writer.py`), reader (`reader.py`), header records (`format.py`)."""
from __future__ import annotations

from ..registry import Capabilities, Format, Limits


def _parse_options(params):
    from .writer import parse_options
    return parse_options(params)


FORMAT = Format(
    name="tar",
    types=("tar",),
    caps=Capabilities(label=None, uuid=False, seeded=False, sockets=False, fills_partition=False),
    # PAX stores any id, time and length; device numbers are 7 octal digits (no PAX key)
    limits=Limits(max_id=(1 << 63) - 1, min_time=-(1 << 63), max_time=(1 << 63) - 1,
                  max_major=0o7777777, max_minor=0o7777777, max_symlink=65535,
                  max_xattr_value=1 << 20),
    parse_options=_parse_options,
    writer="fstool.fs.tar.writer",
    reader="fstool.fs.tar.reader",
    extensions=(".tar", ".tar.gz", ".tgz", ".tar.zst", ".tzst", ".tar.xz", ".txz"),
    probe_order=90,
    description="tar archive (ustar + PAX: long names, xattrs, nanosecond times), optionally compressed",
)
