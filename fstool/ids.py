"""Deterministic identifiers: UUIDs, hash seeds, volume ids, disk signatures.

Nothing here is random: every identifier is a name-based (SHA-1, RFC 4122
version 5) UUID or a hash of a seed plus a purpose string, so the same spec and
content always give the same bytes.
"""
from __future__ import annotations

import hashlib
import uuid

from .errors import SpecError

NAMESPACE = uuid.UUID("6f0b5a3e-8c1d-5d2e-9a4b-f57c0010a001")  # fstool's own namespace


def derive_uuid(seed: bytes, purpose: str) -> uuid.UUID:
    return uuid.uuid5(NAMESPACE, seed.hex() + "/" + purpose)


def derive_bytes(seed: bytes, purpose: str, n: int) -> bytes:
    out = b""
    counter = 0
    while len(out) < n:
        out += hashlib.sha256(seed + b"/" + purpose.encode() + counter.to_bytes(4, "little")).digest()
        counter += 1
    return out[:n]


def derive_u32(seed: bytes, purpose: str) -> int:
    return int.from_bytes(derive_bytes(seed, purpose, 4), "little")


def parse_uuid(value: object, where: str) -> uuid.UUID:
    if not isinstance(value, str):
        raise SpecError(f"expected a UUID string, got {value!r}", where=where)
    try:
        return uuid.UUID(value)
    except ValueError:
        raise SpecError(f"invalid UUID {value!r}", where=where) from None
