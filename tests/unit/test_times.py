"""Time encodings: ext's 32-bit seconds plus the extra field (epoch bits, nanoseconds), as
Documentation/filesystems/ext4/inodes.rst tabulates it, and FAT's DOS date and time."""
from __future__ import annotations

import pytest

from fstool.fs.ext.format import decode_time, encode_time
from fstool.fs.fat.common import from_fat_time, to_fat_time


@pytest.mark.parametrize("sec, low, epoch", [
    (0, 0, 0),
    (1_700_000_000, 1_700_000_000, 0),
    (-1, 0xFFFFFFFF, 0),                    # 1969-12-31 23:59:59: a negative 32-bit value
    (-(1 << 31), 0x80000000, 0),            # 1901-12-13, the oldest
    ((1 << 31) - 1, 0x7FFFFFFF, 0),         # 2038-01-19 03:14:07
    (1 << 31, 0x80000000, 1),               # one second later: epoch bit 1
    ((1 << 32) + 5, 5, 1),                  # 2106
    ((1 << 32) + (1 << 31), 0x80000000, 2),  # 2174-02-25: 0x80000000 with epoch 2
    ((3 << 32) + (1 << 31) - 1, 0x7FFFFFFF, 3),  # 2446-05-10 22:38:55, the newest
])
def test_ext_time_epoch_bits(sec, low, epoch):
    got_low, extra = encode_time(sec, 0)
    assert (got_low, extra & 3) == (low, epoch)
    assert decode_time(got_low, extra) == sec


def test_ext_time_limit_is_the_last_encodable_second():
    from fstool.fs.ext import FORMAT
    top = FORMAT.limits.max_time
    assert decode_time(*encode_time(top)) == top
    assert decode_time(*encode_time(top + 1)) != top + 1  # one more wraps around


def test_ext_time_nanoseconds_and_128_byte_inodes():
    low, extra = encode_time(1_700_000_000, 999_999_999)
    assert extra >> 2 == 999_999_999 and extra & 3 == 0
    assert decode_time(0xFFFFFFFF, None) == -1  # no extra field: signed 32-bit


def test_dos_date_and_time():
    # 2023-11-14 22:13:20 UTC: year 43 since 1980, month 11, day 14; 22:13, 20 s / 2
    date, hms, tenths = to_fat_time(1_700_000_000)
    assert date == (43 << 9) | (11 << 5) | 14 == 0x576E
    assert hms == (22 << 11) | (13 << 5) | 10 == 0xB1AA
    assert tenths == 0
    assert from_fat_time(date, hms) == 1_700_000_000
    assert to_fat_time(1_700_000_001)[2] == 100  # the odd second lives in the tenths field


def test_dos_dates_clamp_to_1980_and_reject_garbage():
    date, hms, _ = to_fat_time(0)
    assert date == (0 << 9) | (1 << 5) | 1 and hms == 0  # 1980-01-01 00:00:00
    assert from_fat_time(0, 0) == 0  # month 0: unset
