"""On-disk structures and algorithms shared by the exFAT writer and reader.

Everything here follows Microsoft's exFAT file system specification: the main
boot sector (section 3.1), extended boot sectors and the boot checksum (3.2-3.4),
the FAT (4), the directory entries (6, 7) with their set checksum (6.3.3) and
name hash (7.6.4), timestamps (7.4.8-7.4.10), and the up-case table (7.2).

The up-case table is the specification's recommended one (its compressed form is
5836 bytes with checksum E619D30Dh). It is built here from a short list of case
rules rather than stored as bytes; `upcase_table()` checks the result against
that size and checksum, so a wrong rule can never reach an image.
"""
from __future__ import annotations

import calendar
import struct
import time
from functools import lru_cache

BOOT_SECTORS = 12  # main boot region: boot sector, 8 extended, OEM, reserved, checksum
BACKUP_BOOT = 12  # the backup boot region starts at sector 12
FS_NAME = b"EXFAT   "
JUMP_BOOT = b"\xeb\x76\x90"
BOOT_SIGNATURE = 0xAA55
EXT_BOOT_SIGNATURE = 0xAA550000
REVISION = 0x0100  # 1.00
FIRST_CLUSTER = 2
MAX_CLUSTERS = 0xFFFFFFF5
FAT_MEDIA = 0xFFFFFFF8  # FatEntry[0]
FAT_EOC = 0xFFFFFFFF
FAT_BAD = 0xFFFFFFF7
MAX_CLUSTER_SIZE = 32 << 20
MAX_DIR_BYTES = 256 << 20  # a directory's DataLength is at most 256 MiB (6.2.1)
MAX_NAME_UNITS = 255
NAME_UNITS_PER_ENTRY = 15
ENTRY = 32

# Main boot sector (3.1): JumpBoot, FileSystemName, MustBeZero, PartitionOffset,
# VolumeLength, FatOffset, FatLength, ClusterHeapOffset, ClusterCount,
# FirstClusterOfRootDirectory, VolumeSerialNumber, FileSystemRevision, VolumeFlags,
# BytesPerSectorShift, SectorsPerClusterShift, NumberOfFats, DriveSelect,
# PercentInUse, Reserved, BootCode, BootSignature.
BOOT = struct.Struct("<3s8s53sQQIIIIIIHHBBBBB7s390sH")

# Directory entries (7.x), 32 bytes each.
# File (85h): EntryType, SecondaryCount, SetChecksum, FileAttributes, Reserved1,
# CreateTimestamp, LastModifiedTimestamp, LastAccessedTimestamp, Create10ms,
# LastModified10ms, CreateUtcOffset, LastModifiedUtcOffset, LastAccessedUtcOffset, Reserved2.
FILE_ENTRY = struct.Struct("<BBHHHIIIBBBBB7s")
# Stream Extension (C0h): EntryType, GeneralSecondaryFlags, Reserved1, NameLength,
# NameHash, Reserved2, ValidDataLength, Reserved3, FirstCluster, DataLength.
STREAM_ENTRY = struct.Struct("<BBBBHHQIIQ")
# File Name (C1h): EntryType, GeneralSecondaryFlags, FileName (15 UTF-16 units).
NAME_ENTRY = struct.Struct("<BB30s")
# Allocation Bitmap (81h): EntryType, BitmapFlags, Reserved, FirstCluster, DataLength.
BITMAP_ENTRY = struct.Struct("<BB18sIQ")
# Up-case Table (82h): EntryType, Reserved1, TableChecksum, Reserved2, FirstCluster, DataLength.
UPCASE_ENTRY = struct.Struct("<B3sI12sIQ")
# Volume Label (83h): EntryType, CharacterCount, VolumeLabel (11 UTF-16 units), Reserved.
LABEL_ENTRY = struct.Struct("<BB22s8s")
# Volume GUID (A0h): EntryType, SecondaryCount, SetChecksum, GeneralPrimaryFlags, VolumeGuid, Reserved.
GUID_ENTRY = struct.Struct("<BBHH16s10s")

assert BOOT.size == 512
assert all(s.size == ENTRY for s in (FILE_ENTRY, STREAM_ENTRY, NAME_ENTRY, BITMAP_ENTRY,
                                     UPCASE_ENTRY, LABEL_ENTRY, GUID_ENTRY))

TYPE_END = 0x00
TYPE_BITMAP = 0x81
TYPE_UPCASE = 0x82
TYPE_LABEL = 0x83
TYPE_FILE = 0x85
TYPE_GUID = 0xA0
TYPE_STREAM = 0xC0
TYPE_NAME = 0xC1
TYPE_IN_USE = 0x80
TYPE_GUID_UNUSED = TYPE_GUID & ~TYPE_IN_USE  # a reserved slot, as mkfs.exfat leaves one

ATTR_READ_ONLY = 0x01
ATTR_HIDDEN = 0x02
ATTR_SYSTEM = 0x04
ATTR_DIRECTORY = 0x10
ATTR_ARCHIVE = 0x20

FLAG_ALLOCATION_POSSIBLE = 0x01
FLAG_NO_FAT_CHAIN = 0x02

UTC_OFFSET_VALID = 0x80  # OffsetValid bit; offset 0: the timestamps are UTC

# Characters a file name may not hold (7.7.3), besides controls below 20h.
FORBIDDEN_NAME_CHARS = frozenset('"*/:<>?\\|')

EXFAT_TIME_MIN = calendar.timegm((1980, 1, 1, 0, 0, 0))
EXFAT_TIME_MAX = calendar.timegm((2107, 12, 31, 23, 59, 59))


# -- checksums ------------------------------------------------------------------

def boot_checksum(sectors: bytes) -> int:
    """The boot checksum (3.4) over the first 11 sectors of a boot region, skipping
    VolumeFlags and PercentInUse of the first, which change without a new checksum."""
    c = 0
    for i, b in enumerate(sectors):
        if i in (106, 107, 112):
            continue
        c = (((c & 1) << 31) | (c >> 1)) + b & 0xFFFFFFFF
    return c


def table_checksum(data: bytes) -> int:
    """The up-case table checksum (7.2.2): the boot checksum's rotation over every byte."""
    c = 0
    for b in data:
        c = (((c & 1) << 31) | (c >> 1)) + b & 0xFFFFFFFF
    return c


def set_checksum(entries: bytes | bytearray) -> int:
    """The SetChecksum of a directory entry set (6.3.3), skipping the field itself."""
    c = 0
    for i, b in enumerate(entries):
        if i == 2 or i == 3:
            continue
        c = (((c & 1) << 15) | (c >> 1)) + b & 0xFFFF
    return c


def name_hash(upcased_units: bytes) -> int:
    """The NameHash (7.6.4) of an up-cased UTF-16LE name."""
    h = 0
    for b in upcased_units:
        h = (((h & 1) << 15) | (h >> 1)) + b & 0xFFFF
    return h


# -- the up-case table ------------------------------------------------------------

# The recommended up-case table as case rules: (first code point, count, delta, step):
# code points first, first+step, ... (count of them) up-case to themselves plus delta.
# Every code point not named maps to itself.
_CASE_RULES = (
    (0x0061, 26, -32, 1), (0x00E0, 23, -32, 1), (0x00F8, 7, -32, 1), (0x00FF, 1, 121, 1),
    (0x0101, 24, -1, 2), (0x0133, 3, -1, 2), (0x013A, 8, -1, 2), (0x014B, 23, -1, 2),
    (0x017A, 3, -1, 2), (0x0180, 1, 195, 1), (0x0183, 2, -1, 2), (0x0188, 1, -1, 1),
    (0x018C, 1, -1, 1), (0x0192, 1, -1, 1), (0x0195, 1, 97, 1), (0x0199, 1, -1, 1),
    (0x019A, 1, 163, 1), (0x019E, 1, 130, 1), (0x01A1, 3, -1, 2), (0x01A8, 1, -1, 1),
    (0x01AD, 1, -1, 1), (0x01B0, 1, -1, 1), (0x01B4, 2, -1, 2), (0x01B9, 1, -1, 1),
    (0x01BD, 1, -1, 1), (0x01BF, 1, 56, 1), (0x01C6, 1, -2, 1), (0x01C9, 1, -2, 1),
    (0x01CC, 1, -2, 1), (0x01CE, 8, -1, 2), (0x01DD, 1, -79, 1), (0x01DF, 9, -1, 2),
    (0x01F3, 1, -2, 1), (0x01F5, 1, -1, 1), (0x01F9, 20, -1, 2), (0x0223, 9, -1, 2),
    (0x023A, 1, 10795, 1), (0x023C, 1, -1, 1), (0x023E, 1, 10792, 1), (0x0242, 1, -1, 1),
    (0x0247, 5, -1, 2), (0x0253, 1, -210, 1), (0x0254, 1, -206, 1), (0x0256, 2, -205, 1),
    (0x0259, 1, -202, 1), (0x025B, 1, -203, 1), (0x0260, 1, -205, 1), (0x0263, 1, -207, 1),
    (0x0268, 1, -209, 1), (0x0269, 1, -211, 1), (0x026B, 1, 10743, 1), (0x026F, 1, -211, 1),
    (0x0272, 1, -213, 1), (0x0275, 1, -214, 1), (0x027D, 1, 10727, 1), (0x0280, 1, -218, 1),
    (0x0283, 1, -218, 1), (0x0288, 1, -218, 1), (0x0289, 1, -69, 1), (0x028A, 2, -217, 1),
    (0x028C, 1, -71, 1), (0x0292, 1, -219, 1), (0x037B, 3, 130, 1), (0x03AC, 1, -38, 1),
    (0x03AD, 3, -37, 1), (0x03B1, 17, -32, 1), (0x03C2, 1, -31, 1), (0x03C3, 9, -32, 1),
    (0x03CC, 1, -64, 1), (0x03CD, 2, -63, 1), (0x03D9, 12, -1, 2), (0x03F2, 1, 7, 1),
    (0x03F8, 1, -1, 1), (0x03FB, 1, -1, 1), (0x0430, 32, -32, 1), (0x0450, 16, -80, 1),
    (0x0461, 17, -1, 2), (0x048B, 27, -1, 2), (0x04C2, 7, -1, 2), (0x04CF, 1, -15, 1),
    (0x04D1, 34, -1, 2), (0x0561, 38, -48, 1), (0x1D7D, 1, 3814, 1), (0x1E01, 75, -1, 2),
    (0x1EA1, 45, -1, 2), (0x1F00, 8, 8, 1), (0x1F10, 6, 8, 1), (0x1F20, 8, 8, 1),
    (0x1F30, 8, 8, 1), (0x1F40, 6, 8, 1), (0x1F51, 4, 8, 2), (0x1F60, 8, 8, 1),
    (0x1F70, 2, 74, 1), (0x1F72, 4, 86, 1), (0x1F76, 2, 100, 1), (0x1F78, 2, 128, 1),
    (0x1F7A, 2, 112, 1), (0x1F7C, 2, 126, 1), (0x1F80, 8, 8, 1), (0x1F90, 8, 8, 1),
    (0x1FA0, 8, 8, 1), (0x1FB0, 2, 8, 1), (0x1FB3, 1, 9, 1), (0x1FCC, 1, -9, 1),
    (0x1FD0, 2, 8, 1), (0x1FE0, 2, 8, 1), (0x1FE5, 1, 7, 1), (0x1FFC, 1, -9, 1),
    (0x214E, 1, -28, 1), (0x2170, 16, -16, 1), (0x2184, 1, -1, 1), (0x24D0, 26, -26, 1),
    (0x2C30, 47, -48, 1), (0x2C61, 1, -1, 1), (0x2C68, 3, -1, 2), (0x2C76, 1, -1, 1),
    (0x2C81, 50, -1, 2), (0x2D00, 38, -7264, 1), (0xFF41, 26, -32, 1),
)
# The compressed table lists these code point ranges value by value; each gap
# between them is one FFFFh marker plus the length of the identity run (7.2.1).
_LISTED_RANGES = ((0x0000, 0x0587), (0x1D7D, 0x2185), (0x24D0, 0x24EA), (0x2C30, 0x2D26),
                  (0xFF41, 0x10000))
UPCASE_SIZE = 5836
UPCASE_CHECKSUM = 0xE619D30D


@lru_cache(maxsize=1)
def upcase_map() -> tuple[int, ...]:
    """The full 65536-entry up-case mapping of the recommended table."""
    up = list(range(0x10000))
    for first, count, delta, step in _CASE_RULES:
        for c in range(first, first + count * step, step):
            up[c] = c + delta
    return tuple(up)


@lru_cache(maxsize=1)
def upcase_table() -> bytes:
    """The recommended up-case table in its compressed on-disk form."""
    up = upcase_map()
    words: list[int] = []
    pos = 0
    for lo, hi in _LISTED_RANGES:
        if lo > pos:
            assert all(up[c] == c for c in range(pos, lo))
            words += [0xFFFF, lo - pos]
        words += up[lo:hi]
        pos = hi
    data = struct.pack(f"<{len(words)}H", *words)
    if len(data) != UPCASE_SIZE or table_checksum(data) != UPCASE_CHECKSUM:
        raise AssertionError("the built-in up-case table does not match the specification's")
    return data


def decompress_upcase(data: bytes) -> list[int]:
    """The 65536-entry mapping of a compressed up-case table (7.2.1); unlisted code points
    map to themselves. A trailing FFFFh with no count is taken literally."""
    up = list(range(0x10000))
    words = struct.unpack(f"<{len(data) // 2}H", data[:len(data) // 2 * 2])
    k = i = 0
    while i < len(words) and k < 0x10000:
        w = words[i]
        if w == 0xFFFF and i + 1 < len(words):
            k += words[i + 1]
            i += 2
        else:
            up[k] = w
            k += 1
            i += 1
    return up


def upcase_units(units: bytes, up: tuple[int, ...] | list[int]) -> bytes:
    """Up-case a UTF-16LE string unit by unit (surrogates map to themselves)."""
    n = len(units) // 2
    return struct.pack(f"<{n}H", *(up[u] for u in struct.unpack(f"<{n}H", units)))


# -- timestamps --------------------------------------------------------------------

def to_exfat_time(sec: int, nsec: int = 0) -> tuple[int, int]:
    """(timestamp, 10ms increment) for a UTC time, clamped to 1980..2107 (7.4.8, 7.4.9)."""
    if sec < EXFAT_TIME_MIN:
        sec, nsec = EXFAT_TIME_MIN, 0
    elif sec > EXFAT_TIME_MAX:
        sec, nsec = EXFAT_TIME_MAX, 999_999_999
    t = time.gmtime(sec)
    stamp = ((t.tm_year - 1980) << 25 | t.tm_mon << 21 | t.tm_mday << 16 | t.tm_hour << 11
             | t.tm_min << 5 | t.tm_sec // 2)
    return stamp, (t.tm_sec % 2) * 100 + min(nsec, 999_999_999) // 10_000_000


def from_exfat_time(stamp: int, ms10: int = 0, utc_offset: int = UTC_OFFSET_VALID) -> int:
    """Seconds since the epoch for an exFAT timestamp; 0 if it is not a valid date.
    A valid UTC offset (in 15-minute units) is applied; without one the time is taken as UTC."""
    year = 1980 + (stamp >> 25)
    month, day = (stamp >> 21) & 0x0F, (stamp >> 16) & 0x1F
    hour, minute, sec = (stamp >> 11) & 0x1F, (stamp >> 5) & 0x3F, (stamp & 0x1F) * 2
    if not (1 <= month <= 12 and 1 <= day <= 31 and hour < 24 and minute < 60 and sec < 60):
        return 0
    t = calendar.timegm((year, month, day, hour, minute, sec)) + min(ms10, 199) // 100
    if utc_offset & UTC_OFFSET_VALID:
        off = utc_offset & 0x7F
        if off & 0x40:
            off -= 0x80
        t -= off * 15 * 60
    return t


def format_serial(serial: int) -> str:
    return f"{serial >> 16:04X}-{serial & 0xFFFF:04X}"
