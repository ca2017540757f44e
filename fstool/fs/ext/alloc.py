"""Block allocation for the ext writer: one forward-only cursor over the free ranges.

Invariant: what the allocator hands out is a prefix of the free ranges, in order, so the
used blocks of the data area are contiguous from the first free block and an image's
content never depends on anything but the order of the requests.
"""
from __future__ import annotations


class NoSpace(Exception):
    """The planned block count is too small by about `short` blocks (or too few inodes):
    the sizing loop grows the filesystem and tries again."""

    def __init__(self, short: int, what: str = "blocks"):
        super().__init__(short)
        self.short = max(1, short)
        self.what = what


class Allocator:
    """First-fit, forward-only over the free ranges [start, end)."""

    def __init__(self, free: list[tuple[int, int]]):
        self.free = free
        self.i = 0
        self.pos = free[0][0] if free else 0
        self.runs: list[list[int]] = []  # the used [start, end) runs, merged, in order

    def remaining(self) -> int:
        if self.i >= len(self.free):
            return 0
        return self.free[self.i][1] - self.pos + sum(e - s for s, e in self.free[self.i + 1:])

    def alloc(self, n: int) -> list[tuple[int, int]]:
        """n blocks as (start, count) runs; NoSpace when the free ranges run out."""
        out: list[tuple[int, int]] = []
        while n > 0:
            if self.i >= len(self.free):
                raise NoSpace(n)
            s, e = self.free[self.i]
            if self.pos < s:
                self.pos = s
            take = min(n, e - self.pos)
            if take <= 0:
                self.i += 1
                continue
            out.append((self.pos, take))
            if self.runs and self.runs[-1][1] == self.pos:
                self.runs[-1][1] += take
            else:
                self.runs.append([self.pos, self.pos + take])
            self.pos += take
            n -= take
            if self.pos >= e:
                self.i += 1
        return out
