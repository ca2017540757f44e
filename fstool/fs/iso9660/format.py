"""ISO 9660 (ECMA-119), Rock Ridge (SUSP 1.12 / RRIP 1.12), Joliet and El Torito records.

Multi-byte numbers in ECMA-119 are often "both-byte orders" (7.2.3, 7.3.3): the little-endian
then the big-endian copy; `both16`/`both32` make them and `le_of` reads the little half. Every
structure is declared here once with named fields; the writer and reader only fill and read
them by name.
"""
from __future__ import annotations

import struct
import time
from typing import NamedTuple

SECTOR = 2048
SYSTEM_AREA = 16  # sectors before the first volume descriptor (ECMA-119 6.2.1)
STD_ID = b"CD001"

VD_BOOT, VD_PRIMARY, VD_SUPPLEMENTARY, VD_TERMINATOR = 0, 1, 2, 255
JOLIET_ESCAPE = b"%/E"  # UCS-2 level 3 (Joliet specification, 1995)

FLAG_HIDDEN, FLAG_DIR, FLAG_MULTI_EXTENT = 0x01, 0x02, 0x80
MAX_EXTENT = 0xFFFFF800  # largest extent that is a whole number of sectors below 4 GiB


def both16(v: int) -> bytes:
    return struct.pack("<H", v) + struct.pack(">H", v)


def both32(v: int) -> bytes:
    return struct.pack("<I", v) + struct.pack(">I", v)


def le_of(raw: bytes) -> int:
    return int.from_bytes(raw[:len(raw) // 2], "little")


# ECMA-119 8.4: the primary (and, with escape sequences, the supplementary) volume descriptor
VOLUME_DESCRIPTOR = struct.Struct("<B5sBB32s32s8s8s32s4s4s4s8sII4s4s34s128s128s128s128s37s37s37s17s17s17s17sBB512s653s")


class VolumeDescriptor(NamedTuple):
    type: int
    std_id: bytes
    version: int
    flags: int  # unused in the primary; volume flags in a supplementary one
    system_id: bytes
    volume_id: bytes
    unused1: bytes
    space_size: bytes  # both32, in sectors
    escapes: bytes  # 32 bytes: zeros in the primary, "%/E" for Joliet
    set_size: bytes  # both16
    seq_number: bytes  # both16
    block_size: bytes  # both16
    path_table_size: bytes  # both32
    l_path_table: int
    l_path_table_opt: int
    m_path_table: bytes  # big-endian u32
    m_path_table_opt: bytes
    root_record: bytes  # 34 bytes
    volume_set_id: bytes
    publisher_id: bytes
    preparer_id: bytes
    application_id: bytes
    copyright_file: bytes
    abstract_file: bytes
    bibliographic_file: bytes
    created: bytes  # 17-byte dates (8.4.26.1)
    modified: bytes
    expires: bytes
    effective: bytes
    structure_version: int
    unused2: int
    application_use: bytes
    reserved: bytes


# ECMA-119 9.1: a directory record, before its file identifier and system use area
DIR_RECORD = struct.Struct("<BB8s8s7sBBB4sB")


class DirRecord(NamedTuple):
    length: int
    ext_attr_length: int
    extent: bytes  # both32
    data_length: bytes  # both32
    recorded: bytes  # 7-byte date (9.1.5)
    flags: int
    unit_size: int
    gap: int
    volume_seq: bytes  # both16
    name_len: int


# ECMA-119 9.4: a path table record (L table little-endian, M table big-endian)
PATH_RECORD_L = struct.Struct("<BBIH")
PATH_RECORD_M = struct.Struct(">BBIH")

# El Torito 1.0, section 2.0 and 2.x: boot record volume descriptor and catalog entries
BOOT_RECORD = struct.Struct("<B5sB32s32sI1973s")
EL_TORITO_ID = b"EL TORITO SPECIFICATION"
VALIDATION_ENTRY = struct.Struct("<BBH24sHBB")  # header id 1, platform, reserved, id, checksum, 55 AA
BOOT_ENTRY = struct.Struct("<BBHBBHI20s")  # indicator, media, load segment, system type, unused, count, rba
SECTION_HEADER = struct.Struct("<BBH28s")  # 0x90 / 0x91 (final), platform, entries, id
PLATFORM_X86, PLATFORM_EFI = 0x00, 0xEF
BOOTABLE, NO_EMULATION = 0x88, 0x00
BOOT_INFO_TABLE = struct.Struct("<IIII40s")  # at byte 8 of the boot file: PVD LBA, file LBA, length, checksum

# SUSP 1.12 / RRIP 1.12 system use entries: signature, length, version, then the body
SUSP_HEADER = struct.Struct("<2sBB")
CE_BODY = struct.Struct("<8s8s8s")  # block, offset, length (both32)
CE_LEN = SUSP_HEADER.size + CE_BODY.size  # 28
PX_BODY = struct.Struct("<8s8s8s8s8s")  # mode, nlink, uid, gid, serial number (both32)
PN_BODY = struct.Struct("<8s8s")  # dev_t high, low (both32)
SP_BODY = struct.Struct("<2sB")  # check bytes BE EF, bytes skipped
ER_HEAD = struct.Struct("<BBBB")  # id length, descriptor length, source length, version
TF_CREATION, TF_MODIFY, TF_ACCESS, TF_ATTRIBUTES = 0x01, 0x02, 0x04, 0x08
NM_CONTINUE, SL_CONTINUE = 0x01, 0x01
SL_COMP_CONTINUE, SL_COMP_CURRENT, SL_COMP_PARENT, SL_COMP_ROOT = 0x01, 0x02, 0x04, 0x08

RRIP_ID = b"RRIP_1991A"
RRIP_DESCRIPTOR = b"THE ROCK RIDGE INTERCHANGE PROTOCOL PROVIDES SUPPORT FOR POSIX FILE SYSTEM SEMANTICS"
RRIP_SOURCE = (b"PLEASE CONTACT DISC PUBLISHER FOR SPECIFICATION SOURCE.  SEE PUBLISHER IDENTIFIER IN "
               b"PRIMARY VOLUME DESCRIPTOR FOR CONTACT INFORMATION.")


def susp(sig: bytes, body: bytes) -> bytes:
    return SUSP_HEADER.pack(sig, SUSP_HEADER.size + len(body), 1) + body


def date7(t: int) -> bytes:
    """9.1.5: years since 1900, month, day, hour, minute, second, GMT offset (UTC here)."""
    t = max(0, t)
    g = time.gmtime(t)
    year = min(max(g.tm_year - 1900, 0), 255)
    return bytes((year, g.tm_mon, g.tm_mday, g.tm_hour, g.tm_min, g.tm_sec, 0))


def date17(t: int | None) -> bytes:
    """8.4.26.1: 16 ASCII digits and a GMT offset; None is "not specified" (digits 0, offset 0)."""
    if t is None:
        return b"0" * 16 + b"\0"
    g = time.gmtime(max(0, t))
    return b"%04d%02d%02d%02d%02d%02d00\0" % (min(g.tm_year, 9999), g.tm_mon, g.tm_mday, g.tm_hour,
                                               g.tm_min, g.tm_sec)


def parse_date7(raw: bytes) -> int:
    import calendar
    y, mo, d, h, mi, s, off = raw[0], raw[1], raw[2], raw[3], raw[4], raw[5], raw[6]
    if not 1 <= mo <= 12 or not 1 <= d <= 31:
        return 0
    off = off - 256 if off > 127 else off
    return calendar.timegm((1900 + y, mo, d, h, mi, s, 0, 0, 0)) - off * 15 * 60
