"""On-disk structures and helpers shared by the FAT writer and reader.

Everything here follows Microsoft's FAT specification (fatgen103): the boot
sector and BIOS parameter block, the FAT32 FSInfo sector, 32-byte directory
entries, VFAT long-name entries and their checksum, and the packed date/time
fields. The FAT type is decided by the cluster count alone, as the spec says:
fewer than 4085 clusters is FAT12, fewer than 65525 is FAT16, else FAT32.
"""
from __future__ import annotations

import calendar
import struct
import time

SECTOR = 512

# What a volume label may hold: what a short name may, plus spaces (not leading).
LABEL_CHARS = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789$%'-_@~`!(){}^#& ")


def store_label(label: str) -> str:
    """The label a FAT volume stores for `label`, as the Rust fstool makes it: upper-cased,
    characters a label cannot hold replaced by '_', cut to 11 bytes."""
    out = "".join(c if c in LABEL_CHARS else "_" for c in label.upper())[:11]
    if out.startswith(" "):
        out = "_" + out[1:]
    return out

# Boot sector, offsets 0..35: the BPB common to every FAT type.
# jmp, OEM name, bytes/sector, sectors/cluster, reserved sectors, FAT count,
# root entries, total sectors (16-bit), media, FAT size (16-bit), sectors/track,
# heads, hidden sectors, total sectors (32-bit).
BPB = struct.Struct("<3s8sHBHBHHBHHHII")
# Offsets 36..61 on FAT12/16: drive number, reserved, boot signature (0x29),
# volume id, volume label, file system type string.
EBPB16 = struct.Struct("<BBBI11s8s")
# Offsets 36..89 on FAT32: FAT size (32-bit), ext flags, version, root cluster,
# FSInfo sector, backup boot sector, 12 reserved bytes, then as EBPB16.
EBPB32 = struct.Struct("<IHHIHH12sBBBI11s8s")
# FSInfo sector: lead signature, reserved, struct signature, free cluster count,
# next free cluster hint, reserved, trail signature.
FSINFO = struct.Struct("<I480sIII12sI")
# Directory entry: name (8.3, space padded), attributes, NT case flags,
# creation time tenths, creation time, creation date, access date,
# first cluster high word, write time, write date, first cluster low word, size.
DIRENT = struct.Struct("<11sBBBHHHHHHHI")
# Long-name entry: order, name chars 1-5, attributes (0x0F), type (0),
# checksum of the short name, name chars 6-11, first cluster (0), chars 12-13.
LFNENT = struct.Struct("<B10sBBB12sH4s")

assert BPB.size == 36 and EBPB16.size == 26 and EBPB32.size == 54
assert FSINFO.size == SECTOR and DIRENT.size == 32 and LFNENT.size == 32

FSINFO_LEAD = 0x41615252
FSINFO_STRUCT = 0x61417272
FSINFO_TRAIL = 0xAA550000
BOOT_SIGNATURE = b"\x55\xaa"
EXT_BOOT_SIGNATURE = 0x29

ATTR_READ_ONLY = 0x01
ATTR_HIDDEN = 0x02
ATTR_SYSTEM = 0x04
ATTR_VOLUME_ID = 0x08
ATTR_DIRECTORY = 0x10
ATTR_ARCHIVE = 0x20
ATTR_LONG_NAME = 0x0F
ATTR_LONG_NAME_MASK = 0x3F

LFN_LAST = 0x40
LFN_CHARS = 13  # UTF-16 code units per long-name entry
DELETED = 0xE5
NT_LOWER_BASE = 0x08
NT_LOWER_EXT = 0x10

# Legal cluster counts for each FAT type (the spec's thresholds).
CLUSTER_RANGE = {12: (1, 4084), 16: (4085, 65524), 32: (65525, 0x0FFFFFF5)}
# The smallest value of an end-of-chain mark, and the bad-cluster mark.
EOC_MIN = {12: 0xFF8, 16: 0xFFF8, 32: 0x0FFFFFF8}
EOC = {12: 0xFFF, 16: 0xFFFF, 32: 0x0FFFFFFF}
BAD = {12: 0xFF7, 16: 0xFFF7, 32: 0x0FFFFFF7}
TYPE_STRING = {12: b"FAT12   ", 16: b"FAT16   ", 32: b"FAT32   "}

MAX_DIR_ENTRIES = 65536  # a directory is at most 2 MiB of entries

FAT_TIME_MIN = calendar.timegm((1980, 1, 1, 0, 0, 0))
FAT_TIME_MAX = calendar.timegm((2107, 12, 31, 23, 59, 58))


def bits_for_clusters(clusters: int) -> int:
    """The FAT type a volume with this many data clusters is, by the spec's rule."""
    if clusters < 4085:
        return 12
    if clusters < 65525:
        return 16
    return 32


def lfn_checksum(short_name: bytes) -> int:
    """The checksum of an 11-byte short name that every long-name entry carries."""
    s = 0
    for b in short_name:
        s = (((s & 1) << 7) + (s >> 1) + b) & 0xFF
    return s


def to_fat_time(ts: int) -> tuple[int, int, int]:
    """(date, time, tenths) for seconds since the epoch (UTC), clamped to 1980..2107."""
    ts = min(max(int(ts), FAT_TIME_MIN), FAT_TIME_MAX)
    t = time.gmtime(ts)
    date = ((t.tm_year - 1980) << 9) | (t.tm_mon << 5) | t.tm_mday
    hms = (t.tm_hour << 11) | (t.tm_min << 5) | (t.tm_sec // 2)
    return date, hms, (t.tm_sec % 2) * 100


def from_fat_time(date: int, hms: int) -> int:
    """Seconds since the epoch (UTC) for a FAT date and time; 0 if the date is unset or invalid."""
    year, month, day = 1980 + (date >> 9), (date >> 5) & 0x0F, date & 0x1F
    hour, minute, sec = hms >> 11, (hms >> 5) & 0x3F, (hms & 0x1F) * 2
    if not (1 <= month <= 12 and 1 <= day <= 31 and hour < 24 and minute < 60 and sec < 60):
        return 0
    return calendar.timegm((year, month, day, hour, minute, sec))


def format_volume_id(vid: int) -> str:
    return f"{vid >> 16:04X}-{vid & 0xFFFF:04X}"
