"""exFAT: writer (`writer.py`), reader (`reader.py`), records and algorithms (`common.py`)."""
from __future__ import annotations

from ..registry import Capabilities, Format, Limits


def _parse_options(params):
    from .writer import parse_options
    return parse_options(params)


def _store_label(label: str) -> str:
    """exFAT labels are up to 11 UTF-16 code units: a longer one is cut there (with the same
    warning FAT and ext labels get)."""
    units = label.encode("utf-16-le", "surrogatepass")[:22]
    return units.decode("utf-16-le", "ignore")


FORMAT = Format(
    name="exfat",
    types=("exfat",),
    caps=Capabilities(label=11, uuid=True, volume_id=True, owners=False, symlinks=False,
                      hardlinks=False, devices=False, fifos=False, sockets=False, xattrs=False),
    # exFAT timestamps run 1980..2107; the writer clamps into that range as FAT's does
    limits=Limits(min_time=-(1 << 63), max_time=(1 << 63) - 1, max_file_size=(1 << 63) - 1),
    parse_options=_parse_options,
    writer="fstool.fs.exfat.writer",
    reader="fstool.fs.exfat.reader",
    extensions=(".exfat",),
    probe_order=25,  # before FAT: an exFAT boot sector has a strong name, and no BPB
    partition_type="exfat",
    label_rule=_store_label,  # MBR 0x07, GPT Microsoft basic data (as SD cards carry it)
    description="exFAT (SDXC cards, removable media)",
)
