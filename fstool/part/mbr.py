"""Master Boot Record partition tables, with logical partitions in an EBR chain.

Primary partitions take slots 1-3 (or 1-4 when there are at most four); with
more, slot 4 holds an extended container (type 0x0F) and every further
partition is a logical one, numbered from 5, described by an Extended Boot
Record in the sector just before it. Each EBR's second entry links to the next
EBR, relative to the container's start, as Linux and util-linux expect.
"""
from __future__ import annotations

from dataclasses import dataclass

from ..errors import ImageError
from ..structs import Record

ENTRY = Record("mbr_partition", (
    ("status", "B"), ("chs_first", "3s"), ("type", "B"), ("chs_last", "3s"), ("lba_start", "I"),
    ("sectors", "I")))
N_ENTRIES = 4
SECTOR = Record("mbr", (                      # the first 512 bytes of the disk, and of each EBR
    ("boot_code", "440s"), ("disk_signature", "I"), ("copy_protect", "H"),
    ("entries", f"{N_ENTRIES * ENTRY.size}s"), ("boot_signature", "2s")))
assert SECTOR.size == 512
TABLE_OFF = SECTOR.offset("entries")
BOOT_CODE_END = SECTOR.offset("disk_signature")  # bytes before it belong to boot code (or a blob)
BOOT_SIGNATURE = b"\x55\xaa"
STATUS_ACTIVE = 0x80
EXTENDED_TYPES = (0x05, 0x0F, 0x85)
EXTENDED_LBA = 0x0F   # the container slot 4 gets
EBR_LINK = 0x05       # an EBR's link to the next one
GPT_PROTECTIVE = 0xEE


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


def is_logical(index: int, count: int) -> bool:
    """Whether the index-th (1-based) of count partitions is a logical one: with more than
    four, slot 4 holds the extended container and partitions 4 and up are logical."""
    return count > 4 and index >= 4


def mbr_number(index: int, count: int) -> int:
    """The number Linux gives the index-th of count partitions (logical ones from 5)."""
    return index + 1 if is_logical(index, count) else index


def chs(lba: int) -> bytes:
    """CHS triple for lba with the conventional 255 heads x 63 sectors; past cylinder 1023 the
    spec's 'use LBA' marker (1023, 254, 63)."""
    c, rem = divmod(lba, 255 * 63)
    h, s = divmod(rem, 63)
    if c > 1023:
        c, h, s = 1023, 254, 62
    s += 1
    return bytes([h, ((c >> 2) & 0xC0) | s, c & 0xFF])


def entry(start: int, sectors: int, type_byte: int, bootable: bool = False, chs_start: int | None = None) -> bytes:
    """A partition entry; its CHS fields describe chs_start (default start) and its last sector."""
    first = start if chs_start is None else chs_start
    return ENTRY.pack(status=STATUS_ACTIVE if bootable else 0, chs_first=chs(first), type=type_byte,
                      chs_last=chs(first + sectors - 1), lba_start=start, sectors=sectors)


def sector(entries: list[bytes], ss: int, signature: int = 0) -> bytes:
    """A boot sector (MBR or EBR) holding entries, padded to the sector size."""
    return SECTOR.pack(disk_signature=signature, entries=b"".join(entries),
                       boot_signature=BOOT_SIGNATURE).ljust(ss, b"\0")


def write_mbr(out, disk_size: int, ss: int, signature: int, parts: list[MbrPartition]) -> None:
    primary = [p for p in parts if not p.logical]
    logical = [p for p in parts if p.logical]
    entries = [entry(p.start_lba, p.sectors, p.type_byte, p.bootable) for p in primary]
    if logical:
        ext_start = logical[0].start_lba - 1
        ext_end = logical[-1].start_lba + logical[-1].sectors  # exclusive
        entries.append(entry(ext_start, ext_end - ext_start, EXTENDED_LBA))
        for i, p in enumerate(logical):
            ebr = p.start_lba - 1
            chain = [entry(1, p.sectors, p.type_byte, p.bootable)]
            if i + 1 < len(logical):
                nxt = logical[i + 1]  # its EBR, relative to the container, CHS absolute
                chain.append(entry(nxt.start_lba - 1 - ext_start, nxt.sectors + 1, EBR_LINK,
                                   chs_start=nxt.start_lba - 1))
            out.pwrite(sector(chain, ss), ebr * ss)
    if len(entries) > N_ENTRIES:
        raise ImageError(f"{len(entries)} primary MBR entries (at most {N_ENTRIES})")
    # only the MBR's own bytes (signature, entries, 0x55AA): the boot code area before them
    # belongs to whatever is placed there (a blob at offset 0, a partition with a hole)
    out.pwrite(sector(entries, ss, signature)[BOOT_CODE_END:SECTOR.size], BOOT_CODE_END)


def read_mbr(region, ss: int = 512) -> MbrTable | None:
    """Parse an MBR (primaries and the EBR chain); None if there is no 0x55AA or it is GPT's."""
    if region.length < ss:
        return None
    mbr = SECTOR.unpack(region.pread(SECTOR.size, 0))
    if mbr.boot_signature != BOOT_SIGNATURE:
        return None
    raw = list(ENTRY.iter_unpack(mbr.entries))
    if any(e.type == GPT_PROTECTIVE for e in raw):
        return None
    if any(e.status not in (0, STATUS_ACTIVE) for e in raw):
        return None  # a FAT boot sector also ends in 0x55AA; its "entries" are code
    table = MbrTable(mbr.disk_signature, ss, [])
    path = getattr(region, "path", "<image>")
    for i, e in enumerate(raw):
        start, n, t = e.lba_start, e.sectors, e.type
        if t == 0 or n == 0:
            continue
        if (start + n) * ss > region.length:
            raise ImageError(f"MBR partition {i + 1} ends past the end of the image", where=path)
        p = MbrPartition(start, n, t, e.status == STATUS_ACTIVE, False, i + 1, start * ss, n * ss)
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
            s = SECTOR.unpack(region.pread(SECTOR.size, ebr * ss))
            if s.boot_signature != BOOT_SIGNATURE:
                raise ImageError(f"no EBR signature at LBA {ebr}", where=path)
            e1, e2 = ENTRY.unpack(s.entries), ENTRY.unpack(s.entries, ENTRY.size)
            if e1.type and e1.sectors:
                start = ebr + e1.lba_start
                table.partitions.append(MbrPartition(start, e1.sectors, e1.type, e1.status == STATUS_ACTIVE,
                                                     True, number, start * ss, e1.sectors * ss))
                number += 1
            if e2.type not in EXTENDED_TYPES or e2.sectors == 0:
                break
            ebr = ext + e2.lba_start
    return table
