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
    SL_COMP_CONTINUE, SL_COMP_ROOT, SL_CONTINUE, SP_BODY, TF_ACCESS,
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
    """RRIP 4.1.2 leaves the split of a dev_t to the writer. libisofs (xorriso) and libarchive
    write and read the two halves of a glibc dev_t, and so do we. Linux reads the same numbers
    for every device up to major 4095 / minor 255; past that it takes (high, low) as (major,
    minor) and misreads these images, as it misreads xorriso's."""
    dev = os.makedev(*node.rdev)
    return susp(b"PN", PN_BODY.pack(both32(dev >> 32), both32(dev & 0xFFFFFFFF)))


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
    """SL entries for a symlink target (RRIP 4.1.3.1): a ROOT component for a leading "/", then
    one component record per path component ("." and ".." as plain text, which every reader
    turns into the same string).

    Where the target needs several SL entries, an entry only ever ends inside a name component
    (its last record flagged CONTINUE): libarchive joins the first component of a continued SL
    entry to the previous one without a "/", whatever the flags say, and Linux and libisofs read
    this form the same way."""
    raw = encode_name(target)
    room = MAX_ENTRY - 5  # component records per SL entry
    entries: list[bytearray] = []
    cur = bytearray()
    if raw.startswith(b"/"):
        cur += bytes((SL_COMP_ROOT, 0))
    parts = [p for p in raw.split(b"/") if p] or ([b""] if not raw.startswith(b"/") else [])
    for i, text in enumerate(parts):
        last = i == len(parts) - 1
        while True:
            space = room - len(cur) - 2
            if len(text) <= space and (last or len(cur) + 2 + len(text) + 3 <= room):
                cur += bytes((0, len(text))) + text
                break
            n = min(space, len(text) - 1)  # leave at least a byte for the next entry
            if n < 1:  # a one-byte name at the very end of an entry: end the entry before it
                entries.append(cur)
                cur = bytearray()
                continue
            cur += bytes((SL_COMP_CONTINUE, n)) + text[:n]
            text = text[n:]
            entries.append(cur)
            cur = bytearray()
    entries.append(cur)
    return [susp(b"SL", bytes((SL_CONTINUE if k < len(entries) - 1 else 0,)) + bytes(e))
            for k, e in enumerate(entries)]


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
    """Where a record's entries go: the first `n_inline` in the record, then continuation pieces
    of `cuts[k]` entries each. Only sizes are kept, not the entries: they are made again when the
    record is written (with the real CL/PL locations, same sizes) and handed to `render`, so
    a plan of a million records holds no entry bytes."""

    __slots__ = ("n_inline", "inline_bytes", "cuts", "sizes", "locations")

    def __init__(self, entries: list[bytes], room: int):
        total = sum(map(len, entries))
        self.locations: list[tuple[int, int]] | tuple = ()  # (lba, offset) of each piece, set by the allocator
        if total <= room:
            self.n_inline, self.inline_bytes, self.cuts, self.sizes = len(entries), total, (), ()
            return
        i, used = 0, 0
        while i < len(entries) and used + len(entries[i]) + CE_LEN <= room:
            used += len(entries[i])
            i += 1
        self.n_inline, self.inline_bytes = i, used
        self.sizes = tuple(map(len, entries))  # checked against the entries made again
        rest = list(self.sizes[i:])
        cuts = []
        while rest:
            if sum(rest) <= SECTOR:
                cuts.append(len(rest))
                break
            j, used = 0, 0
            while used + rest[j] + CE_LEN <= SECTOR:
                used += rest[j]
                j += 1
            cuts.append(j)
            rest = rest[j:]
        self.cuts = tuple(cuts)

    def inline_size(self) -> int:
        return self.inline_bytes + (CE_LEN if self.cuts else 0)

    def piece_sizes(self) -> list[int]:
        n, k, out = len(self.cuts), self.n_inline, []
        for i, c in enumerate(self.cuts):
            out.append(sum(self.sizes[k:k + c]) + (CE_LEN if i < n - 1 else 0))
            k += c
        return out

    def _check(self, entries: list[bytes]) -> None:
        if self.cuts:
            assert tuple(map(len, entries)) == self.sizes, "Rock Ridge entries changed size"
        else:
            assert len(entries) == self.n_inline and sum(map(len, entries)) == self.inline_bytes, \
                "Rock Ridge entries changed size"

    def _ce(self, k: int, sizes: list[int]) -> bytes:
        lba, off = self.locations[k]
        return susp(b"CE", CE_BODY.pack(both32(lba), both32(off), both32(sizes[k])))

    def render(self, entries: list[bytes]) -> tuple[bytes, list[tuple[int, int, bytes]]]:
        """The record's inline bytes (ending in a CE when pieces follow) and its continuation
        pieces, (lba, offset, bytes) each, every piece but the last ending in a CE."""
        self._check(entries)
        inline = b"".join(entries[:self.n_inline])
        if not self.cuts:
            return inline, []
        sizes = self.piece_sizes()
        pieces = []
        k = self.n_inline
        for i, c in enumerate(self.cuts):
            tail = self._ce(i + 1, sizes) if i + 1 < len(self.cuts) else b""
            lba, off = self.locations[i]
            pieces.append((lba, off, b"".join(entries[k:k + c]) + tail))
            k += c
        return inline + self._ce(0, sizes), pieces


_INLINE: dict[tuple[int, int], Placement] = {}


def placement(entries: list[bytes], room: int) -> Placement:
    """The Placement of a record's entries. One that keeps them all inline (nearly every
    record) is never changed afterwards, so it is shared: one per (count, bytes)."""
    total = sum(map(len, entries))
    if total > room:
        return Placement(entries, room)
    key = (len(entries), total)
    p = _INLINE.get(key)
    if p is None:
        p = _INLINE[key] = Placement(entries, room)
    return p


class ContinuationArea:
    """Continuation pieces packed into whole sectors from a start LBA; none crosses a sector."""

    def __init__(self, start: int):
        self.start = start
        self.pos = 0  # bytes from start

    def place(self, p: Placement) -> None:
        if not p.cuts:  # all inline: no location, and no list of none
            return
        p.locations = []
        for size in p.piece_sizes():
            if self.pos % SECTOR + size > SECTOR:
                self.pos += -self.pos % SECTOR
            p.locations.append((self.start + self.pos // SECTOR, self.pos % SECTOR))
            self.pos += size

    def sectors(self) -> int:
        return (self.pos + SECTOR - 1) // SECTOR
