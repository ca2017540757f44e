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

import uuid
import zlib
from dataclasses import dataclass

from ..errors import ImageError, warn
from ..structs import Record
from .mbr import BOOT_CODE_END, ENTRY as MBR_ENTRY, GPT_PROTECTIVE, entry as mbr_entry, sector as mbr_sector

HEADER = Record("gpt_header", (   # 92 bytes; the rest of its sector is zero
    ("signature", "8s"), ("revision", "I"), ("header_size", "I"), ("header_crc32", "I"),
    ("reserved", "I"), ("my_lba", "Q"), ("alternate_lba", "Q"), ("first_usable_lba", "Q"),
    ("last_usable_lba", "Q"), ("disk_guid", "16s"), ("partition_entry_lba", "Q"),
    ("num_partition_entries", "I"), ("sizeof_partition_entry", "I"),
    ("partition_entry_array_crc32", "I")))
ENTRY = Record("gpt_entry", (
    ("type_guid", "16s"), ("unique_guid", "16s"), ("starting_lba", "Q"), ("ending_lba", "Q"),
    ("attributes", "Q"), ("name", "72s")))
assert HEADER.size == 92 and ENTRY.size == 128
N_ENTRIES = 128
SIGNATURE = b"EFI PART"
REVISION = 0x00010000
PROTECTIVE_CHS_FIRST = b"\x00\x02\x00"  # head 0, sector 2, cylinder 0: LBA 1
CHS_USE_LBA = b"\xff\xff\xff"

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
    if not hybrid:
        size = min(total_sectors - 1, 0xFFFFFFFF)
        # CHS: start (0, 0, 2) as LBA 1 is; end always the "use LBA" marker (spec 5.2.3)
        entry = MBR_ENTRY.pack(chs_first=PROTECTIVE_CHS_FIRST, type=GPT_PROTECTIVE,
                               chs_last=CHS_USE_LBA, lba_start=1, sectors=size)
        return mbr_sector([entry], ss)
    assert protect_end is not None and len(hybrid) <= 3
    entries = [mbr_entry(h.start_lba, h.sectors, h.type_byte, h.bootable) for h in hybrid]
    entries.append(mbr_entry(1, protect_end, GPT_PROTECTIVE))
    return mbr_sector(entries, ss, signature)


def _header(my_lba: int, alt_lba: int, first: int, last: int, disk_guid: uuid.UUID,
            entries_lba: int, entries_crc: int, n_entries: int = N_ENTRIES) -> bytes:
    fields = dict(signature=SIGNATURE, revision=REVISION, header_size=HEADER.size, my_lba=my_lba,
                  alternate_lba=alt_lba, first_usable_lba=first, last_usable_lba=last,
                  disk_guid=disk_guid.bytes_le, partition_entry_lba=entries_lba,
                  num_partition_entries=n_entries, sizeof_partition_entry=ENTRY.size,
                  partition_entry_array_crc32=entries_crc)
    return HEADER.pack(header_crc32=zlib.crc32(HEADER.pack(**fields)), **fields)


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
        ENTRY.pack_into(array, i * ENTRY.size, type_guid=p.type_guid.bytes_le, unique_guid=p.part_guid.bytes_le,
                        starting_lba=p.start_lba, ending_lba=p.end_lba, attributes=p.attributes,
                        name=p.name.encode("utf-16-le"))
    crc = zlib.crc32(array)
    array += bytes(es * ss - len(array))  # the array's sectors are written whole (zero-padded)
    pad = bytes(ss - HEADER.size)
    backup_entries = last - es
    # only the MBR's own bytes (signature, entries, 0x55AA): the boot code area before them
    # belongs to whatever is placed there (a blob at offset 0, a partition with a hole)
    out.pwrite(protective_mbr(total, ss, hybrid, geo.array_end - 1, signature)[BOOT_CODE_END:512],
               BOOT_CODE_END)
    out.pwrite(_header(1, last, first_usable, last_usable, disk_guid, geo.entries_lba, crc,
                       geo.n_entries) + pad, ss)
    out.pwrite(bytes(array), geo.entries_lba * ss)
    out.pwrite(bytes(array), backup_entries * ss)
    out.pwrite(_header(last, 1, first_usable, last_usable, disk_guid, backup_entries, crc,
                       geo.n_entries) + pad, last * ss)


def read_gpt(region, ss: int | None = None) -> GptTable | None:
    """Parse the GPT of region (trying 512- then 4096-byte sectors); None if absent.

    A missing or damaged primary header or array falls back to the backup at the disk's last
    LBA, with a warning, as sgdisk recovers it; both damaged is an ImageError."""
    sizes = [ss] if ss else [512, 4096]
    path = getattr(region, "path", "<image>")
    for s in sizes:
        if region.length < 2 * s + HEADER.size:
            continue
        err = None
        try:
            table = _parse(region, s, 1)
        except ImageError as e:
            table, err = None, e
        if table is not None:
            return table
        try:
            backup = _parse(region, s, region.length // s - 1)
        except ImageError:
            backup = None
        if backup is not None:
            warn("the primary GPT is " + ("damaged" if err else "missing") + "; using the backup "
                 "at the end of the disk (sgdisk can rewrite the primary from it)", where=path)
            return backup
        if err is not None:
            raise err
    return None


def _parse(region, s: int, lba: int) -> GptTable | None:
    """The GPT whose header is at lba (sector size s): None without a signature there."""
    h = HEADER.unpack(region.pread(HEADER.size, lba * s))
    if h.signature != SIGNATURE:
        return None
    first, last, dguid = h.first_usable_lba, h.last_usable_lba, h.disk_guid
    elba, n, esize = h.partition_entry_lba, h.num_partition_entries, h.sizeof_partition_entry
    where = f"{getattr(region, 'path', '<image>')}: GPT header" + ("" if lba == 1 else " (backup)")
    if h.header_size < HEADER.size or not header_crc_ok(h):
        raise ImageError("bad header CRC (corrupt table)", where=where)
    if h.my_lba != lba:
        raise ImageError(f"the header at LBA {lba} says it is at LBA {h.my_lba}", where=where)
    if esize < ENTRY.size or n > 1024 or (elba + (n * esize + s - 1) // s) * s > region.length:
        raise ImageError(f"entry array ({n} x {esize} at LBA {elba}) does not fit the disk", where=where)
    array = region.pread(n * esize, elba * s)
    if zlib.crc32(array) != h.partition_entry_array_crc32:
        raise ImageError("bad partition entry array CRC", where=where)
    parts = []
    for i in range(n):
        t, g, a, b, attrs, name = ENTRY.unpack(array, i * esize)
        if t == bytes(16):
            continue
        nm = name.decode("utf-16-le", "replace").split("\0", 1)[0]
        parts.append(GptPartition(a, b, uuid.UUID(bytes_le=t), uuid.UUID(bytes_le=g), nm, attrs,
                                  number=i + 1, offset=a * s, size=(b - a + 1) * s))
    return GptTable(uuid.UUID(bytes_le=dguid), s, first, last, parts)


def header_crc_ok(h) -> bool:
    """Whether an unpacked header's CRC32 matches its first 92 bytes (with the CRC field zero)."""
    return zlib.crc32(HEADER.pack(**h._replace(header_crc32=0)._asdict())) == h.header_crc32


def attribute_names(attrs: int) -> list[str]:
    out = []
    for bit in range(64):
        if attrs >> bit & 1:
            out.append(ATTR_BITS.get(bit, str(bit)))
    return out
