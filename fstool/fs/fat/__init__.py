"""FAT12/16/32 with VFAT long names: writer (`writer.py`), reader (`reader.py`), records (`common.py`)."""
from __future__ import annotations

from ..registry import Capabilities, Format, Limits


def _store_label(label: str) -> str:
    from .common import store_label
    return store_label(label)


def _parse_options(params):
    from .writer import _read_options as parse
    return parse(params)


FORMAT = Format(
    name="fat",
    # vfat is FAT32, as in the Rust fstool and as UEFI expects of an ESP; fat picks by size
    types=("vfat", "fat12", "fat16", "fat32", "fat"),
    aliases={"msdos": "fat"},
    caps=Capabilities(label=11, volume_id=True, owners=False, symlinks=False, hardlinks=False,
                      devices=False, fifos=False, sockets=False, xattrs=False,
                      block_sizes=tuple(512 << i for i in range(8))),
    # DOS dates run 1980..2107; the writer clamps into that range as mkfs.vfat and mtools do
    limits=Limits(min_time=-(1 << 63), max_time=(1 << 63) - 1, max_file_size=(1 << 32) - 1),
    parse_options=_parse_options,
    label_rule=_store_label,
    writer="fstool.fs.fat.writer",
    reader="fstool.fs.fat.reader",
    extensions=(".vfat", ".fat"),
    probe_order=30,
    partition_type="msdata",
    description="FAT12/16/32 with long names (vfat)",
)
