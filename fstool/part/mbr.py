"""Master Boot Record partition tables, with logical partitions in an EBR chain.

Primary partitions take slots 1-3 (or 1-4 when there are at most four); with
more, slot 4 holds an extended container (type 0x0F) and every further
partition is a logical one, numbered from 5, described by an Extended Boot
Record in the sector just before it. Each EBR's second entry links to the next
EBR, relative to the container's start, as Linux and util-linux expect.
"""
from __future__ import annotations

import struct
from dataclasses import dataclass

from ..errors import ImageError

ENTRY = struct.Struct("<B3sB3sII")
TABLE_OFF = 446
SIG_OFF = 440
EXTENDED_TYPES = (0x05, 0x0F, 0x85)


@dataclass
class MbrPartition:
    start_lba: int
    sectors: int
    type_byte: int
    bootable: bool = False
    logical: bool = False
    number: int = 0
    offset: int = 0
    size: int = 0


@dataclass
class MbrTable:
    signature: int
    sector_size: int
    partitions: list[MbrPartition]
    extended: MbrPartition | None = None


def chs(lba: int) -> bytes:
    """CHS triple for lba with the conventional 255 heads x 63 sectors; past cylinder 1023 the
    spec's 'use LBA' marker (1023, 254, 63)."""
    c, rem = divmod(lba, 255 * 63)
    h, s = divmod(rem, 63)
    if c > 1023:
        c, h, s = 1023, 254, 62
    s += 1
    return bytes([h, ((c >> 2) & 0xC0) | s, c & 0xFF])


def _entry(start: int, sectors: int, type_byte: int, bootable: bool = False) -> bytes:
    return ENTRY.pack(0x80 if bootable else 0, chs(start), type_byte, chs(start + sectors - 1),
                      start, sectors)


def _sector(entries: list[bytes], ss: int, signature: int | None = None) -> bytes:
    buf = bytearray(ss)
    if signature is not None:
        struct.pack_into("<I", buf, SIG_OFF, signature)
    for i, e in enumerate(entries):
        buf[TABLE_OFF + 16 * i:TABLE_OFF + 16 * (i + 1)] = e
    buf[510:512] = b"\x55\xaa"
    return bytes(buf)


def write_mbr(out, disk_size: int, ss: int, signature: int, parts: list[MbrPartition]) -> None:
    primary = [p for p in parts if not p.logical]
    logical = [p for p in parts if p.logical]
    entries = [_entry(p.start_lba, p.sectors, p.type_byte, p.bootable) for p in primary]
    if logical:
        ext_start = logical[0].start_lba - 1
        ext_end = logical[-1].start_lba + logical[-1].sectors  # exclusive
        entries.append(_entry(ext_start, ext_end - ext_start, 0x0F))
        for i, p in enumerate(logical):
            ebr = p.start_lba - 1
            chain = [_entry(1, p.sectors, p.type_byte, p.bootable)]
            if i + 1 < len(logical):
                nxt = logical[i + 1]
                chain.append(ENTRY.pack(0, chs(nxt.start_lba - 1), 0x05,
                                        chs(nxt.start_lba + nxt.sectors - 1),
                                        nxt.start_lba - 1 - ext_start, nxt.sectors + 1))
            out.pwrite(_sector(chain, ss), ebr * ss)
    if len(entries) > 4:
        raise ImageError(f"{len(entries)} primary MBR entries (at most 4)")
    # only the MBR's own bytes (signature, entries, 0x55AA): the boot code area before them
    # belongs to whatever is placed there (a blob at offset 0, a partition with a hole)
    out.pwrite(_sector(entries, ss, signature)[SIG_OFF:512], SIG_OFF)


def read_mbr(region, ss: int = 512) -> MbrTable | None:
    """Parse an MBR (primaries and the EBR chain); None if there is no 0x55AA or it is GPT's."""
    if region.length < ss:
        return None
    sec = region.pread(512, 0)
    if sec[510:512] != b"\x55\xaa":
        return None
    raw = [ENTRY.unpack_from(sec, TABLE_OFF + 16 * i) for i in range(4)]
    if any(e[2] == 0xEE for e in raw):
        return None
    if any(e[0] not in (0, 0x80) for e in raw):
        return None  # a FAT boot sector also ends in 0x55AA; its "entries" are code
    table = MbrTable(struct.unpack_from("<I", sec, SIG_OFF)[0], ss, [])
    path = getattr(region, "path", "<image>")
    for i, (status, _, t, _, start, n) in enumerate(raw):
        if t == 0 or n == 0:
            continue
        if (start + n) * ss > region.length:
            raise ImageError(f"MBR partition {i + 1} ends past the end of the image", where=path)
        p = MbrPartition(start, n, t, status == 0x80, False, i + 1, start * ss, n * ss)
        if t in EXTENDED_TYPES:
            table.extended = p
            continue
        table.partitions.append(p)
    if table.extended is not None:
        ext = table.extended.start_lba
        ebr, number, seen = ext, 5, set()
        while True:
            if ebr in seen or len(seen) > 1024:
                raise ImageError("the EBR chain loops", where=path)
            seen.add(ebr)
            s = region.pread(512, ebr * ss)
            if s[510:512] != b"\x55\xaa":
                raise ImageError(f"no EBR signature at LBA {ebr}", where=path)
            e1 = ENTRY.unpack_from(s, TABLE_OFF)
            e2 = ENTRY.unpack_from(s, TABLE_OFF + 16)
            if e1[2] and e1[5]:
                start = ebr + e1[4]
                table.partitions.append(MbrPartition(start, e1[5], e1[2], e1[0] == 0x80, True, number,
                                                     start * ss, e1[5] * ss))
                number += 1
            if e2[2] not in EXTENDED_TYPES or e2[5] == 0:
                break
            ebr = ext + e2[4]
    return table
