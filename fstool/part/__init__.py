"""Partition tables: GPT (gpt.py), MBR with logical partitions (mbr.py), type names (types.py).

`probe_table` recognises a table on an image; `render_table` gives the lines
`fstool info` prints for it.
"""
from __future__ import annotations

from ..sizes import format_size
from . import gpt, mbr, types


def probe_table(region):
    """('gpt', GptTable) or ('mbr', MbrTable) for a partitioned image, else None."""
    t = gpt.read_gpt(region)
    if t is not None:
        return "gpt", t
    m = mbr.read_mbr(region)
    if m is not None and m.partitions:
        return "mbr", m
    return None


def render_table(kind: str, table) -> list[str]:
    lines = []
    if kind == "gpt":
        lines.append(f"  disk GUID {table.disk_guid}, {table.sector_size}-byte sectors, "
                     f"usable LBA {table.first_usable}-{table.last_usable}")
        for p in table.partitions:
            attrs = ",".join(gpt.attribute_names(p.attributes))
            lines.append(f"  {p.number:>3}  {p.offset:>12}  {format_size(p.size):>10}  "
                         f"{types.type_name(p.type_guid)} ({p.type_guid})  uuid={p.part_guid}"
                         + (f"  name={p.name}" if p.name else "") + (f"  attrs={attrs}" if attrs else ""))
    else:
        lines.append(f"  disk signature 0x{table.signature:08x}, {table.sector_size}-byte sectors")
        for p in table.partitions:
            lines.append(f"  {p.number:>3}  {p.offset:>12}  {format_size(p.size):>10}  "
                         f"{types.type_name(p.type_byte)} (0x{p.type_byte:02x})"
                         + ("  bootable" if p.bootable else "") + ("  logical" if p.logical else ""))
    return lines
