"""GUID Partition Table: write and read (UEFI specification 2.10, chapter 5.3).

Layout on a disk of N logical blocks: protective MBR at LBA 0, primary header
at LBA 1, the 128-entry array at LBA 2, the backup array just before the
backup header at LBA N-1. GUIDs are stored in the mixed-endian form
(`uuid.bytes_le`). Nothing here is random: the caller passes every GUID.
`GptGeometry` moves the primary array (genimage's gpt-location), sets the entry
count and the first usable LBA; a hybrid MBR replaces the protective one with up
to 3 mirrored partitions and a 0xEE entry covering the GPT's own sectors.
"""
from __future__ import annotations

import struct
import uuid
import zlib
from dataclasses import dataclass

from ..errors import ImageError

HEADER = struct.Struct("<8sIIIIQQQQ16sQIII")  # signature .. entry CRC (92 bytes)
ENTRY = struct.Struct("<16s16sQQQ72s")  # 128 bytes
N_ENTRIES = 128
SIGNATURE = b"EFI PART"
REVISION = 0x00010000

ATTR_BITS = {0: "required", 1: "no-block-io", 2: "legacy-bios-bootable",
             60: "read-only", 62: "hidden", 63: "no-auto", 59: "growfs"}


@dataclass
class GptPartition:
    start_lba: int
    end_lba: int  # inclusive
    type_guid: uuid.UUID
    part_guid: uuid.UUID
    name: str = ""
    attributes: int = 0
    number: int = 0
    offset: int = 0
    size: int = 0


@dataclass
class GptTable:
    disk_guid: uuid.UUID
    sector_size: int
    first_usable: int
    last_usable: int
    partitions: list[GptPartition]


def _entries_sectors(ss: int, n_entries: int = N_ENTRIES) -> int:
    return (n_entries * ENTRY.size + ss - 1) // ss


@dataclass
class HybridEntry:
    """One MBR entry of a hybrid MBR, mirroring a GPT partition (as gdisk's `h` command and
    genimage's partition-table-type = "hybrid" make them)."""

    start_lba: int
    sectors: int
    type_byte: int
    bootable: bool = False


def protective_mbr(total_sectors: int, ss: int, hybrid: list[HybridEntry] | None = None,
                   protect_end: int | None = None, signature: int = 0) -> bytes:
    """LBA 0. Without hybrid entries: one 0xEE partition covering the disk (clamped to 32 bits),
    as the UEFI spec requires. With them: the mirrored partitions in slots 1-3 and a 0xEE
    entry after them covering the GPT header and primary array (LBA 1 to protect_end), as
    genimage writes it."""
    from .mbr import ENTRY as MBR_ENTRY, chs
    if not hybrid:
        size = min(total_sectors - 1, 0xFFFFFFFF)
        entry = struct.pack("<B3sB3sII", 0, b"\x00\x02\x00", 0xEE, b"\xff\xff\xff", 1, size)
        return (bytes(446) + entry + bytes(48) + b"\x55\xaa").ljust(ss, b"\0")
    assert protect_end is not None and len(hybrid) <= 3
    entries = [MBR_ENTRY.pack(0x80 if h.bootable else 0, chs(h.start_lba), h.type_byte,
                              chs(h.start_lba + h.sectors - 1), h.start_lba, h.sectors) for h in hybrid]
    entries.append(MBR_ENTRY.pack(0, chs(1), 0xEE, chs(protect_end), 1, protect_end))
    return (bytes(440) + struct.pack("<I", signature) + bytes(2) + b"".join(entries).ljust(64, b"\0")
            + b"\x55\xaa").ljust(ss, b"\0")


def _header(my_lba: int, alt_lba: int, first: int, last: int, disk_guid: uuid.UUID,
            entries_lba: int, entries_crc: int, n_entries: int = N_ENTRIES) -> bytes:
    fields = [SIGNATURE, REVISION, HEADER.size, 0, 0, my_lba, alt_lba, first, last,
              disk_guid.bytes_le, entries_lba, n_entries, ENTRY.size, entries_crc]
    crc = zlib.crc32(HEADER.pack(*fields))
    fields[3] = crc
    return HEADER.pack(*fields)


@dataclass
class GptGeometry:
    """Where the GPT's pieces go on a disk of `total` sectors: the primary entry array at
    `entries_lba` (LBA 2 unless moved with gpt_location), the usable area after it (or after
    raw blobs that follow it), the backup array and header at the end."""

    total: int
    ss: int
    entries_lba: int = 2
    n_entries: int = N_ENTRIES
    first_usable: int | None = None

    @property
    def entries_sectors(self) -> int:
        return _entries_sectors(self.ss, self.n_entries)

    @property
    def array_end(self) -> int:  # first LBA after the primary array
        return self.entries_lba + self.entries_sectors

    @property
    def usable(self) -> tuple[int, int]:
        first = self.first_usable if self.first_usable is not None else self.array_end
        return first, self.total - 1 - self.entries_sectors - 1

    def pieces(self) -> list[tuple[str, int, int]]:
        """(name, first byte, end byte) of every GPT structure, for overlap checks."""
        ss, last = self.ss, self.total - 1
        return [("the protective MBR", 0, ss), ("the primary GPT header", ss, 2 * ss),
                ("the primary GPT entry array", self.entries_lba * ss, self.array_end * ss),
                ("the backup GPT entry array", (last - self.entries_sectors) * ss, last * ss),
                ("the backup GPT header", last * ss, (last + 1) * ss)]


def write_gpt(out, disk_size: int, ss: int, disk_guid: uuid.UUID, parts: list[GptPartition],
              geometry: GptGeometry | None = None, hybrid: list[HybridEntry] | None = None,
              signature: int = 0) -> None:
    """Write the protective (or hybrid) MBR, both headers and both entry arrays into out."""
    total = disk_size // ss
    geo = geometry or GptGeometry(total, ss)
    es = geo.entries_sectors
    last = total - 1
    first_usable, last_usable = geo.usable
    if len(parts) > geo.n_entries:
        raise ImageError(f"{len(parts)} partitions but the GPT has {geo.n_entries} entries",
                         where=getattr(out, "path", None))
    array = bytearray(geo.n_entries * ENTRY.size)
    for i, p in enumerate(parts):
        if not (first_usable <= p.start_lba <= p.end_lba <= last_usable):
            raise ImageError(f"partition {i + 1} (LBA {p.start_lba}-{p.end_lba}) is outside the usable "
                             f"area {first_usable}-{last_usable}", where=getattr(out, "path", None))
        ENTRY.pack_into(array, i * ENTRY.size, p.type_guid.bytes_le, p.part_guid.bytes_le,
                        p.start_lba, p.end_lba, p.attributes, p.name.encode("utf-16-le").ljust(72, b"\0"))
    array += bytes(es * ss - len(array))  # the array's sectors are written whole (zero-padded)
    crc = zlib.crc32(array[:geo.n_entries * ENTRY.size])
    pad = bytes(ss - HEADER.size)
    backup_entries = last - es
    # only the MBR's own bytes (signature, entries, 0x55AA): the boot code area before them
    # belongs to whatever is placed there (a blob at offset 0, a partition with a hole)
    out.pwrite(protective_mbr(total, ss, hybrid, geo.array_end - 1, signature)[440:512], 440)
    out.pwrite(_header(1, last, first_usable, last_usable, disk_guid, geo.entries_lba, crc,
                       geo.n_entries) + pad, ss)
    out.pwrite(bytes(array), geo.entries_lba * ss)
    out.pwrite(bytes(array), backup_entries * ss)
    out.pwrite(_header(last, 1, first_usable, last_usable, disk_guid, backup_entries, crc,
                       geo.n_entries) + pad, last * ss)


def read_gpt(region, ss: int | None = None) -> GptTable | None:
    """Parse the primary GPT of region (trying 512- then 4096-byte sectors); None if absent."""
    sizes = [ss] if ss else [512, 4096]
    for s in sizes:
        if region.length < 2 * s + HEADER.size:
            continue
        raw = region.pread(HEADER.size, s)
        if raw[:8] != SIGNATURE:
            continue
        f = list(HEADER.unpack(raw))
        (_, _, hsize, hcrc, _, my_lba, alt_lba, first, last, dguid, elba, n, esize, ecrc) = f
        f[3] = 0
        where = f"{getattr(region, 'path', '<image>')}: GPT header"
        if hsize < HEADER.size or zlib.crc32(HEADER.pack(*f)) != hcrc:
            raise ImageError("bad header CRC (corrupt table)", where=where)
        if esize < ENTRY.size or n > 1024 or (elba + (n * esize + s - 1) // s) * s > region.length:
            raise ImageError(f"entry array ({n} x {esize} at LBA {elba}) does not fit the disk", where=where)
        array = region.pread(n * esize, elba * s)
        if zlib.crc32(array) != ecrc:
            raise ImageError("bad partition entry array CRC", where=where)
        parts = []
        for i in range(n):
            t, g, a, b, attrs, name = ENTRY.unpack_from(array, i * esize)
            if t == bytes(16):
                continue
            nm = name.decode("utf-16-le", "replace").split("\0", 1)[0]
            parts.append(GptPartition(a, b, uuid.UUID(bytes_le=t), uuid.UUID(bytes_le=g), nm, attrs,
                                      number=i + 1, offset=a * s, size=(b - a + 1) * s))
        return GptTable(uuid.UUID(bytes_le=dguid), s, first, last, parts)
    return None


def attribute_names(attrs: int) -> list[str]:
    out = []
    for bit in range(64):
        if attrs >> bit & 1:
            out.append(ATTR_BITS.get(bit, str(bit)))
    return out
