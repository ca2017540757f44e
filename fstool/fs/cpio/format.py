"""The newc cpio header (`070701`, and `070702` with a data checksum), as the kernel reads it.

Every field is eight ASCII hex digits (Documentation/driver-api/early-userspace/buffer-format.rst):
the 110-byte header is followed by the NUL-terminated name, padded so the data starts on a 4-byte
boundary, then the data, padded to 4 bytes again. The archive ends with an entry named
`TRAILER!!!`. For 070702, `check` is the sum of the data bytes, modulo 2^32.
"""
from __future__ import annotations

import struct
from typing import NamedTuple

MAGIC_NEWC = b"070701"
MAGIC_CRC = b"070702"
TRAILER = b"TRAILER!!!"
HEADER_SIZE = 110
ALIGN = 4

# 6-byte magic, then thirteen 8-digit hex fields
HEADER = struct.Struct("6s" + "8s" * 13)


class Header(NamedTuple):
    magic: bytes
    ino: int
    mode: int
    uid: int
    gid: int
    nlink: int
    mtime: int
    filesize: int
    devmajor: int
    devminor: int
    rdevmajor: int
    rdevminor: int
    namesize: int  # including the terminating NUL
    check: int

    def pack(self) -> bytes:
        return HEADER.pack(self.magic, *(b"%08X" % v for v in self[1:]))

    @classmethod
    def unpack(cls, raw: bytes) -> "Header":
        """Parse 110 bytes; ValueError when they are not a newc header."""
        fields = HEADER.unpack(raw)
        if fields[0] not in (MAGIC_NEWC, MAGIC_CRC):
            raise ValueError(f"bad magic {fields[0]!r}")
        values = []
        for f in fields[1:]:
            if not all(c in b"0123456789abcdefABCDEF" for c in f):
                raise ValueError(f"non-hex field {f!r}")
            values.append(int(f, 16))
        return cls(fields[0], *values)


def pad(n: int, align: int = ALIGN) -> int:
    """Bytes of zero padding that bring n to a multiple of align."""
    return -n % align
