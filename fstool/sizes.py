"""Size strings: `512`, `64K`, `64KiB`, `64MiB`, `1GiB`, `1G` (binary), `1MB`, `1KB` (decimal).

Bare letters K/M/G/T are binary (as mke2fs and the Rust fstool read them); the
`B` suffixed SI forms (kB, MB, GB, TB) are decimal; `s`/`sectors` are 512-byte sectors.
"""
from __future__ import annotations

import re

from .errors import SpecError

_UNITS = {
    "": 1, "b": 1,
    "k": 1 << 10, "kib": 1 << 10, "kb": 1000,
    "m": 1 << 20, "mib": 1 << 20, "mb": 1000**2,
    "g": 1 << 30, "gib": 1 << 30, "gb": 1000**3,
    "t": 1 << 40, "tib": 1 << 40, "tb": 1000**4,
    "s": 512, "sectors": 512,
}
_RE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([a-zA-Z]*)\s*$")


def parse_size(value: object, *, where: str = "size") -> int:
    """Return a byte count from an int or a size string; raise SpecError naming `where`."""
    if isinstance(value, bool):
        raise SpecError(f"expected a size, got {value!r}", where=where)
    if isinstance(value, int):
        if value < 0:
            raise SpecError(f"size must not be negative: {value}", where=where)
        return value
    if not isinstance(value, str):
        raise SpecError(f"expected a size such as 64MiB, got {value!r}", where=where)
    m = _RE.match(value)
    unit = m.group(2).lower() if m else None
    if not m or unit not in _UNITS:
        raise SpecError(
            f"invalid size {value!r} (use e.g. 512, 64KiB, 64MiB, 1GiB, 1G, 1MB)", where=where)
    number = float(m.group(1)) if "." in m.group(1) else int(m.group(1))
    result = number * _UNITS[unit]
    if result != int(result):
        raise SpecError(f"size {value!r} is not a whole number of bytes", where=where)
    return int(result)


def format_size(n: int) -> str:
    """Human form for messages: 1536 -> '1.5 KiB'."""
    for unit, scale in (("TiB", 1 << 40), ("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if n >= scale:
            v = n / scale
            return f"{v:.0f} {unit}" if v == int(v) else f"{v:.1f} {unit}"
    return f"{n} B"
