"""Rock Ridge system use entries (RRIP 1.12 over SUSP 1.12) and their placement.

A directory record holds at most 255 bytes, so the entries that do not fit go to continuation
areas (SUSP 5.1, the CE entry), each at most one sector and never crossing a sector boundary.
`split` decides the placement from the entries' sizes alone, so it can run before any location is
known; `render` then links the pieces with CE entries once the continuation area is placed.
"""
from __future__ import annotations

import os

from ...tree import Kind, Node, encode_name
from .format import (
    CE_BODY, CE_LEN, ER_HEAD, NM_CONTINUE, PN_BODY, PX_BODY, RRIP_DESCRIPTOR, RRIP_ID, RRIP_SOURCE, SECTOR,
    SL_COMP_CONTINUE, SL_COMP_CURRENT, SL_COMP_PARENT, SL_COMP_ROOT, SL_CONTINUE, SP_BODY, TF_ACCESS,
    TF_ATTRIBUTES, TF_MODIFY, both32, date7, susp,
)

MAX_ENTRY = 255


def sp() -> bytes:
    return susp(b"SP", SP_BODY.pack(b"\xbe\xef", 0))


def er() -> bytes:
    return susp(b"ER", ER_HEAD.pack(len(RRIP_ID), len(RRIP_DESCRIPTOR), len(RRIP_SOURCE), 1)
                + RRIP_ID + RRIP_DESCRIPTOR + RRIP_SOURCE)


def px(node: Node, nlink: int, ino: int) -> bytes:
    return susp(b"PX", PX_BODY.pack(both32(node.st_mode), both32(nlink), both32(node.uid),
                                    both32(node.gid), both32(ino)))


def tf(node: Node) -> bytes:
    t = date7(node.mtime)
    return susp(b"TF", bytes((TF_MODIFY | TF_ACCESS | TF_ATTRIBUTES,)) + t + t + t)


def pn(node: Node) -> bytes:
    """RRIP 4.1.2 leaves the split of a dev_t to the writer, and readers disagree: Linux reads
    (high, low) as (major, minor) unless high is 0, then low as an old 16-bit dev_t; libisofs
    reads high:low as a glibc dev_t. Small numbers (major < 4096, minor < 256) are written as the
    old dev_t, which both read alike; larger ones as (major, minor), which Linux and mkisofs-style
    readers (and ours) read, libisofs does not."""
    major, minor = node.rdev
    if major < 4096 and minor < 256:
        high, low = 0, os.makedev(major, minor)
    else:
        high, low = major, minor
    return susp(b"PN", PN_BODY.pack(both32(high), both32(low)))


def nm(name: str) -> list[bytes]:
    raw = encode_name(name)
    room = MAX_ENTRY - 5
    out = []
    while True:
        part, raw = raw[:room], raw[room:]
        out.append(susp(b"NM", bytes((NM_CONTINUE if raw else 0,)) + part))
        if not raw:
            return out


def sl(target: str) -> list[bytes]:
    """SL entries for a symlink target: one component record per path component (RRIP 4.1.3.1),
    long components split with the component CONTINUE flag, entries with the SL CONTINUE flag."""
    raw = encode_name(target)
    comps: list[bytes] = []
    if raw.startswith(b"/"):
        comps.append(bytes((SL_COMP_ROOT, 0)))
    parts = [p for p in raw.split(b"/") if p] if raw not in (b"",) else [b""]
    for p in parts:
        if p == b".":
            comps.append(bytes((SL_COMP_CURRENT, 0)))
        elif p == b"..":
            comps.append(bytes((SL_COMP_PARENT, 0)))
        else:
            while len(p) > 248:
                comps.append(bytes((SL_COMP_CONTINUE, 248)) + p[:248])
                p = p[248:]
            comps.append(bytes((0, len(p))) + p)
    room = MAX_ENTRY - 5
    groups: list[list[bytes]] = [[]]
    for c in comps:
        if sum(map(len, groups[-1])) + len(c) > room:
            groups.append([])
        groups[-1].append(c)
    return [susp(b"SL", bytes((SL_CONTINUE if i < len(groups) - 1 else 0,)) + b"".join(g))
            for i, g in enumerate(groups)]


def cl(lba: int) -> bytes:
    return susp(b"CL", both32(lba))


def pl(lba: int) -> bytes:
    return susp(b"PL", both32(lba))


def re() -> bytes:
    return susp(b"RE", b"")


def entries_for(node: Node, name: str | None, nlink: int, ino: int) -> list[bytes]:
    """PX, TF, then PN / SL by kind, then NM (None for the "." and ".." records)."""
    out = [px(node, nlink, ino), tf(node)]
    if node.kind in (Kind.CHR, Kind.BLK):
        out.append(pn(node))
    elif node.kind is Kind.SYMLINK:
        out += sl(node.target or "")
    if name is not None:
        out += nm(name)
    return out


class Placement:
    """Where a record's entries go: `inline` in the record, `pieces` in continuation areas."""

    def __init__(self, entries: list[bytes], room: int):
        total = sum(map(len, entries))
        if total <= room:
            self.inline, self.pieces = list(entries), []
            return
        i, used = 0, 0
        while i < len(entries) and used + len(entries[i]) + CE_LEN <= room:
            used += len(entries[i])
            i += 1
        self.inline = entries[:i]
        rest = entries[i:]
        self.pieces: list[list[bytes]] = []
        while rest:
            if sum(map(len, rest)) <= SECTOR:
                self.pieces.append(rest)
                break
            j, used = 0, 0
            while used + len(rest[j]) + CE_LEN <= SECTOR:
                used += len(rest[j])
                j += 1
            self.pieces.append(rest[:j])
            rest = rest[j:]
        self.locations: list[tuple[int, int]] = []  # (lba, offset) of each piece, set by the allocator

    def inline_size(self) -> int:
        return sum(map(len, self.inline)) + (CE_LEN if self.pieces else 0)

    def piece_sizes(self) -> list[int]:
        n = len(self.pieces)
        return [sum(map(len, p)) + (CE_LEN if k < n - 1 else 0) for k, p in enumerate(self.pieces)]

    def _ce(self, k: int) -> bytes:
        lba, off = self.locations[k]
        return susp(b"CE", CE_BODY.pack(both32(lba), both32(off), both32(self.piece_sizes()[k])))

    def render_inline(self) -> bytes:
        return b"".join(self.inline) + (self._ce(0) if self.pieces else b"")

    def render_pieces(self) -> list[tuple[int, int, bytes]]:
        out = []
        for k, p in enumerate(self.pieces):
            tail = self._ce(k + 1) if k + 1 < len(self.pieces) else b""
            lba, off = self.locations[k]
            out.append((lba, off, b"".join(p) + tail))
        return out


class ContinuationArea:
    """Continuation pieces packed into whole sectors from a start LBA; none crosses a sector."""

    def __init__(self, start: int):
        self.start = start
        self.pos = 0  # bytes from start

    def place(self, p: Placement) -> None:
        p.locations = []
        for size in p.piece_sizes():
            if self.pos % SECTOR + size > SECTOR:
                self.pos += -self.pos % SECTOR
            p.locations.append((self.start + self.pos // SECTOR, self.pos % SECTOR))
            self.pos += size

    def sectors(self) -> int:
        return (self.pos + SECTOR - 1) // SECTOR
