"""Size strings as the spec and the CLI accept them."""
import pytest
from hypothesis import given, strategies as st

from fstool.errors import SpecError
from fstool.sizes import format_size, parse_size


@pytest.mark.parametrize("text, value", [
    ("512", 512), (4096, 4096), ("64K", 64 << 10), ("64KiB", 64 << 10), ("64MiB", 64 << 20),
    ("1GiB", 1 << 30), ("1G", 1 << 30), ("1MB", 10**6), ("1kB", 1000), ("1.5MiB", 3 << 19),
    ("2TiB", 2 << 40), ("8s", 4096), (" 3 M ", 3 << 20), ("1b", 1),
])
def test_parse_size(text, value):
    assert parse_size(text) == value


@pytest.mark.parametrize("text", ["", "MiB", "12 parsecs", "-1", "1.3", True, None, 1.5, "0x10"])
def test_parse_size_errors_name_the_key(text):
    with pytest.raises(SpecError) as e:
        parse_size(text, where="image.size")
    assert str(e.value).startswith("image.size: ")


def test_format_size():
    assert format_size(1536) == "1.5 KiB" and format_size(64 << 20) == "64 MiB" and format_size(7) == "7 B"


@given(st.integers(min_value=0, max_value=1 << 50), st.sampled_from(["K", "KiB", "M", "MiB", "G", "GiB"]))
def test_binary_units_roundtrip(n, unit):
    scale = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30}[unit[0]]
    assert parse_size(f"{n}{unit}") == n * scale
