"""The ustar header and PAX extended records (POSIX.1-2001, `pax` in IEEE Std 1003.1).

One 512-byte header per member; numbers are NUL-terminated octal; what does not
fit (a name over 100 bytes, a long link target, ids or times out of octal range,
sub-second times, xattrs) goes in a PAX `x` header before the member.
"""
from __future__ import annotations

import struct

BLOCK = 512
RECORD = 20 * BLOCK  # GNU tar's and bsdtar's default blocking: archives end on a 10 KiB record

# name, mode, uid, gid, size, mtime, chksum, typeflag, linkname, magic, version, uname, gname,
# devmajor, devminor, prefix, padding
USTAR = struct.Struct("100s8s8s8s12s12s8s1s100s6s2s32s32s8s8s155s12s")
USTAR_MAGIC, USTAR_VERSION = b"ustar\0", b"00"
CHKSUM_OFFSET, CHKSUM_LEN = 148, 8

REG, HARDLINK, SYMLINK, CHR, BLK, DIR, FIFO, PAX = b"0", b"1", b"2", b"3", b"4", b"5", b"6", b"x"


def octal(value: int, width: int) -> bytes | None:
    """value as a NUL-terminated octal field of width bytes, or None when it does not fit."""
    if value < 0 or value >= 8 ** (width - 1):
        return None
    return b"%0*o\0" % (width - 1, value)


def pax_record(key: str, value: bytes) -> bytes:
    """One "LEN key=value\\n" record; LEN counts itself."""
    body = b" " + key.encode("utf-8") + b"=" + value + b"\n"
    n = len(body) + 1
    while len(str(n).encode()) + len(body) != n:
        n = len(str(n).encode()) + len(body)
    return str(n).encode() + body


def header(name: bytes, mode: int, uid: int, gid: int, size: int, mtime: int, typeflag: bytes,
           linkname: bytes = b"", devmajor: int = 0, devminor: int = 0) -> bytes:
    """A ustar header block. Values that do not fit must already be in a PAX header: they
    are written here as 0 (times clamped), which every reader overrides with the PAX value."""
    def num(v: int, w: int) -> bytes:
        return octal(v, w) or octal(0, w)
    mt = octal(mtime, 12) or (octal(0, 12) if mtime < 0 else b"%011o\0" % (8 ** 11 - 1))
    raw = bytearray(USTAR.pack(name[:100], num(mode, 8), num(uid, 8), num(gid, 8), num(size, 12),
                               mt, b" " * 8, typeflag, linkname[:100], USTAR_MAGIC, USTAR_VERSION,
                               b"", b"", num(devmajor, 8), num(devminor, 8), b"", b""))
    raw[CHKSUM_OFFSET:CHKSUM_OFFSET + CHKSUM_LEN] = b"%06o\0 " % sum(raw)
    return bytes(raw)


def padding(n: int) -> bytes:
    """Zeros that bring n bytes up to a whole block."""
    return bytes(-n % BLOCK)
