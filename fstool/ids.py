"""Deterministic identifiers: UUIDs, hash seeds, volume ids, disk signatures.

Nothing here is random: every identifier is a name-based (SHA-1, RFC 4122
version 5) UUID or a hash of a seed plus a purpose string, so the same spec and
content always give the same bytes.
"""
from __future__ import annotations

import hashlib
from typing import TYPE_CHECKING

from .errors import SpecError

if TYPE_CHECKING:
    import uuid

# fstool's own namespace. The uuid module (2 ms to import, with platform) is imported where a
# UUID is made: a FAT or squashfs build makes none.
NAMESPACE = "6f0b5a3e-8c1d-5d2e-9a4b-f57c0010a001"


def derive_uuid(seed: bytes, purpose: str) -> "uuid.UUID":
    import uuid
    return uuid.uuid5(uuid.UUID(NAMESPACE), seed.hex() + "/" + purpose)


def derive_bytes(seed: bytes, purpose: str, n: int) -> bytes:
    out = b""
    counter = 0
    while len(out) < n:
        out += hashlib.sha256(seed + b"/" + purpose.encode() + counter.to_bytes(4, "little")).digest()
        counter += 1
    return out[:n]


def derive_u32(seed: bytes, purpose: str) -> int:
    return int.from_bytes(derive_bytes(seed, purpose, 4), "little")


def parse_uuid(value: object, where: str) -> "uuid.UUID":
    import uuid
    if not isinstance(value, str):
        raise SpecError(f"expected a UUID string, got {value!r}", where=where)
    try:
        return uuid.UUID(value)
    except ValueError:
        raise SpecError(f"invalid UUID {value!r}", where=where) from None
