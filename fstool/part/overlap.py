"""Overlap checks for board layouts: partitions, raw blobs and partition-table structures.

Every piece of a disk is a named byte range [start, end). Two pieces may share bytes only
where one of them declares a hole (bytes it does not write, such as the MBR's 440..512
inside a bootloader blob written at offset 0). Any other shared byte is an error naming
both pieces and their ranges, so a bootloader placed over the GPT entry array is caught
when the spec is built, not when the board fails to boot.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from ..errors import SpecError
from ..sizes import parse_size


@dataclass
class Piece:
    name: str
    start: int
    end: int  # exclusive
    holes: list[tuple[int, int]] = field(default_factory=list)  # absolute, bytes not written
    blob: bool = False  # a raw image outside the partition table

    def describe(self) -> str:
        return f"{self.name} (bytes {self.start}..{self.end})"


def parse_holes(value: Any, where: str) -> list[tuple[int, int]]:
    """holes = ["440..512", "1KiB..2KiB"] (genimage's "(440; 512)" also accepted), relative to
    the piece's start; each [start, end) with start < end."""
    if not isinstance(value, list):
        raise SpecError("expected a list of ranges like [\"440..512\"]", where=where)
    out = []
    for i, h in enumerate(value):
        w = f"{where}[{i}]"
        if isinstance(h, list) and len(h) == 2:
            a, b = h
        elif isinstance(h, str):
            m = re.fullmatch(r"\s*\(?\s*([^.;]+?)\s*(?:\.\.|;)\s*([^.;)]+?)\s*\)?\s*", h)
            if not m:
                raise SpecError(f"expected START..END (e.g. \"440..512\"), got {h!r}", where=w)
            a, b = m.group(1), m.group(2)
        else:
            raise SpecError(f"expected START..END (e.g. \"440..512\"), got {h!r}", where=w)
        start, end = parse_size(a, where=w), parse_size(b, where=w)
        if start >= end:
            raise SpecError(f"hole {start}..{end} is empty (start must be below end)", where=w)
        out.append((start, end))
    return sorted(out)


def _minus(lo: int, hi: int, holes: list[tuple[int, int]]) -> list[tuple[int, int]]:
    """[lo, hi) without the holes."""
    parts = [(lo, hi)]
    for a, b in holes:
        nxt = []
        for x, y in parts:
            if b <= x or a >= y:
                nxt.append((x, y))
                continue
            if x < a:
                nxt.append((x, a))
            if b < y:
                nxt.append((b, y))
        parts = nxt
    return parts


def check_overlaps(pieces: list[Piece], where: str = "partitions") -> None:
    """SpecError for the first two pieces sharing a byte that neither declares a hole."""
    ordered = sorted(pieces, key=lambda p: (p.start, p.end))
    for i, a in enumerate(ordered):
        for b in ordered[i + 1:]:
            if b.start >= a.end:
                break
            lo, hi = max(a.start, b.start), min(a.end, b.end)
            if lo >= hi:
                continue
            left = _minus(lo, hi, a.holes + b.holes)
            if left:
                x, y = left[0]
                blob = a if a.blob else b if b.blob else None
                hint = (f"; if {blob.name} leaves those bytes alone, declare holes = "
                        f"[\"{x - blob.start}..{y - blob.start}\"] on it") if blob else ""
                raise SpecError(f"{a.describe()} overlaps {b.describe()} at bytes {x}..{y}{hint}",
                                where=where)
