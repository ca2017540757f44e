"""ISO 9660 with Rock Ridge, Joliet, El Torito and isohybrid: writer (`writer.py`), reader (`reader.py`),
records (`format.py`), names (`names.py`), Rock Ridge entries (`susp.py`)."""
from __future__ import annotations

from ..registry import Capabilities, Format, Limits


def _parse_options(params):
    from .writer import _parse_options as parse
    return parse(params)


FORMAT = Format(
    name="iso9660",
    types=("iso9660",),
    aliases={"iso": "iso9660"},
    # Rock Ridge stores owners, modes, devices, symlinks and hardlinks (PX serial numbers); no xattrs
    caps=Capabilities(label=32, xattrs=False),
    # 7-byte directory dates count years from 1900 to 2155
    limits=Limits(min_time=0, max_time=(1 << 32) - 1, max_major=(1 << 32) - 1, max_minor=(1 << 32) - 1),
    parse_options=_parse_options,
    writer="fstool.fs.iso9660.writer",
    reader="fstool.fs.iso9660.reader",
    extensions=(".iso",),
    probe_order=40,
    description="ISO 9660 with Rock Ridge, Joliet, El Torito and isohybrid (CD/DVD/USB boot media)",
)
