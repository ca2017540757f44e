"""The HTree name hash against e2fsprogs: values from
`debugfs -R "dx_hash -h half_md4 -s SEED NAME"` (signed chars, as the writer sets
FLAGS_SIGNED_HASH) and `-h HASHALG_4` (half_md4 with unsigned chars)."""
from __future__ import annotations

import uuid

import pytest

from fstool.fs.ext.format import dx_hash

ZERO = "00000000-0000-0000-0000-000000000000"
SEED = "0123abcd-4567-89ef-fedc-ba9876543210"
UNICODE = "\u00e9t\u00e9-\u65e5\u672c"


def seed_words(text: str) -> tuple[int, int, int, int]:
    b = uuid.UUID(text).bytes  # s_hash_seed is the UUID's bytes, read as four le32 words
    return tuple(int.from_bytes(b[i:i + 4], "little") for i in range(0, 16, 4))


@pytest.mark.parametrize("seed, name, want", [
    (ZERO, "hello", (0x1746DA32, 0x420013B5)),
    (ZERO, ".", (0x3DF9C490, 0x700A9A17)),
    (ZERO, "lost+found", (0x591DE422, 0x6FFC56E0)),
    (ZERO, "entry-00042-xxxxxxxxxx", (0x878911EA, 0xAEF07D0E)),
    (ZERO, "a" * 100, (0x7B03646E, 0x773EE8E7)),          # four 32-byte rounds
    (ZERO, "b" * 33, (0x664E87E6, 0xF6138986)),           # one byte into the second round
    (ZERO, UNICODE, (0x4A054AE2, 0x8FD5BFEB)),
    (SEED, "hello", (0xFC224AA6, 0xBB46B5FC)),
    (SEED, ".", (0x659728CE, 0x32A3DC1C)),
    (SEED, "lost+found", (0xB5DE9C1C, 0x2F14A1C9)),
    (SEED, "entry-00042-xxxxxxxxxx", (0x4F3E83F6, 0x6B3D124C)),
    (SEED, "a" * 100, (0x6AD2B160, 0x503700FB)),
    (SEED, UNICODE, (0x88E3638A, 0xE0CCE78C)),
])
def test_half_md4_signed(seed, name, want):
    assert dx_hash(name.encode(), seed_words(seed), True) == want


@pytest.mark.parametrize("seed, name, want", [
    (ZERO, "hello", (0x1746DA32, 0x420013B5)),            # ASCII: signedness does not matter
    (ZERO, UNICODE, (0x88700428, 0x4F5303D3)),
    (SEED, UNICODE, (0xE39FE2E2, 0x5BB1998E)),
    (SEED, "b" * 33, (0xE1DB1C98, 0xF206CE68)),
])
def test_half_md4_unsigned(seed, name, want):
    assert dx_hash(name.encode(), seed_words(seed), False) == want


def test_zero_seed_means_the_default_seed():
    assert dx_hash(b"x", None, True) == dx_hash(b"x", (0, 0, 0, 0), True)


def test_hash_is_even_and_never_the_eof_marker():
    for i in range(2000):
        h, _ = dx_hash(f"name-{i}".encode(), seed_words(SEED), True)
        assert h & 1 == 0 and h != 0x7FFFFFFF << 1
