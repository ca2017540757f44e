"""How an inode's logical blocks map to physical ones: extent trees (ext4) and
direct/indirect block maps (ext2/ext3).

Extents: at most EXT_INIT_MAX_LEN blocks each; up to four live in i_block, more go to leaf
blocks (each with a checksum tail after its `max` entries) under index levels until the
root fits in i_block. Indirect maps: i_block[0..11] direct, then the single, double and
triple indirect blocks, each placed just before the first data block it maps (as the kernel
lays files out), so a file stays contiguous.
"""
from __future__ import annotations

from array import array

from .alloc import Allocator
from .format import (
    BLOCK_PTR_SIZE, EXT_INIT_MAX_LEN, EXTENT_HEADER, EXTENT_INDEX, EXTENT_LEAF, EXTENT_MAGIC,
    EXTENT_ROOT_MAX, EXTENT_TAIL, I_BLOCK_SIZE, IND_BLOCK, NDIR_BLOCKS, csum, extents_per_block,
    indirect_bounds,
)

M32 = 0xFFFFFFFF
Extent = tuple[int, int, int]  # (logical, length, physical)
# i_block of an inode that maps nothing, one shared copy each: an extent root with no
# entries, and twelve direct plus three indirect pointers all zero
EMPTY_EXTENT_ROOT = EXTENT_HEADER.pack(magic=EXTENT_MAGIC, entries=0, max=EXTENT_ROOT_MAX,
                                       depth=0).ljust(I_BLOCK_SIZE, b"\0")
EMPTY_INDIRECT = bytes(I_BLOCK_SIZE)


class TooBig(Exception):
    """A file maps past what triple indirect blocks reach."""


def map_runs(runs: list[tuple[int, int]], phys: list[tuple[int, int]]) -> list[Extent]:
    """Extents for logical runs laid onto physical runs, each at most EXT_INIT_MAX_LEN long."""
    out: list[Extent] = []
    pi, poff = 0, 0
    for ls, le in runs:
        l = ls
        while l < le:
            ps, pn = phys[pi]
            n = min(le - l, pn - poff, EXT_INIT_MAX_LEN)
            p = ps + poff
            if out and out[-1][0] + out[-1][1] == l and out[-1][2] + out[-1][1] == p \
                    and out[-1][1] + n <= EXT_INIT_MAX_LEN:
                o = out[-1]
                out[-1] = (o[0], o[1] + n, o[2])
            else:
                out.append((l, n, p))
            l += n
            poff += n
            if poff == pn:
                pi, poff = pi + 1, 0
    return out


def extent_tree_blocks(n_extents: int, bs: int) -> int:
    """Blocks of the extent tree above n_extents extents (0 while they fit in i_block)."""
    if n_extents <= EXTENT_ROOT_MAX:
        return 0
    per = extents_per_block(bs)
    total = 0
    n = n_extents
    while n > EXTENT_ROOT_MAX:
        n = -(-n // per)
        total += n
    return total


def indirect_keys(runs: list[tuple[int, int]], bs: int) -> list[tuple]:
    """The indirect blocks a file with these logical runs needs, parents before children.
    Keys: (1,) single; (2,) double, (2, i) its children; (3,), (3, i), (3, i, j)."""
    P, b1, b2, b3 = indirect_bounds(bs)
    keys: set[tuple] = set()
    for s, e in runs:
        if e > b3:
            raise TooBig()
        if e > NDIR_BLOCKS and s < b1:
            keys.add((1,))
        if e > b1 and s < b2:
            keys.add((2,))
            lo, hi = max(s, b1) - b1, min(e, b2) - b1
            for i in range(lo // P, (hi - 1) // P + 1):
                keys.add((2, i))
        if e > b2:
            keys.add((3,))
            lo, hi = max(s, b2) - b2, e - b2
            for i in range(lo // (P * P), (hi - 1) // (P * P) + 1):
                keys.add((3, i))
            for k in range(lo // P, (hi - 1) // P + 1):
                keys.add((3, k // P, k % P))
    return sorted(keys, key=lambda k: (k[0], len(k), k))


def mapping_blocks(runs: list[tuple[int, int]], bs: int, extents: bool) -> int:
    """Blocks the map of these runs needs: exact for indirect maps, an upper estimate for
    extent trees (the allocation may merge runs)."""
    if extents:
        est = sum(-(-(b - a) // EXT_INIT_MAX_LEN) for a, b in runs)
        return extent_tree_blocks(est + (1 if est >= EXTENT_ROOT_MAX else 0), bs)
    return len(indirect_keys(runs, bs))


def place(runs: list[tuple[int, int]], nblocks: int, al: Allocator, bs: int,
          extents: bool) -> tuple[list[Extent], list[int]]:
    """Allocate an inode's blocks: (its extents, its mapping blocks in the order they are filled)."""
    if not extents:
        return _place_indirect(runs, nblocks, al, bs)
    ext = map_runs(runs, al.alloc(nblocks))
    n = extent_tree_blocks(len(ext), bs)
    meta = [b for s, c in al.alloc(n) for b in range(s, s + c)] if n else []
    return ext, meta


def _place_indirect(runs: list[tuple[int, int]], nblocks: int, al: Allocator,
                    bs: int) -> tuple[list[Extent], list[int]]:
    """Data and indirect blocks in one run, each indirect block just before the first data
    block it maps."""
    keys = indirect_keys(runs, bs)
    phys = al.alloc(nblocks + len(keys))
    P, b1, b2, _ = indirect_bounds(bs)
    pi, poff = 0, 0
    where: dict[tuple, int] = {}
    ext: list[Extent] = []

    def take(n: int) -> list[tuple[int, int]]:
        nonlocal pi, poff
        out = []
        while n:
            ps, pn = phys[pi]
            m = min(n, pn - poff)
            out.append((ps + poff, m))
            poff += m
            n -= m
            if poff == pn:
                pi, poff = pi + 1, 0
        return out

    for s, e in runs:
        l = s
        while l < e:
            if l < NDIR_BLOCKS:
                need, end = (), min(e, NDIR_BLOCKS)
            elif l < b1:
                need, end = ((1,),), min(e, b1)
            elif l < b2:
                i = (l - b1) // P
                need, end = ((2,), (2, i)), min(e, b1 + (i + 1) * P)
            else:
                k = (l - b2) // P
                need, end = ((3,), (3, k // P), (3, k // P, k % P)), min(e, b2 + (k + 1) * P)
            for key in need:
                if key not in where:
                    where[key] = take(1)[0][0]
            for p, m in take(end - l):
                if ext and ext[-1][0] + ext[-1][1] == l and ext[-1][2] + ext[-1][1] == p:
                    ext[-1] = (ext[-1][0], ext[-1][1] + m, ext[-1][2])
                else:
                    ext.append((l, m, p))
                l += m
    return ext, [where[k] for k in keys]


def extent_tree(ext: list[Extent], meta: list[int], bs: int, iseed: int, csum_on: bool,
                writes: list) -> bytes:
    """i_block (the tree's root) for these extents; queues the tree's blocks in writes."""
    if not ext:
        return EMPTY_EXTENT_ROOT

    def node(entries: list[bytes], max_: int, depth: int) -> bytes:
        return (EXTENT_HEADER.pack(magic=EXTENT_MAGIC, entries=len(entries), max=max_, depth=depth)
                + b"".join(entries))

    def root(entries: list[bytes], depth: int) -> bytes:
        body = node(entries, EXTENT_ROOT_MAX, depth)
        return body + bytes(I_BLOCK_SIZE - len(body))

    # level 0: the leaves
    items = [EXTENT_LEAF.pack(block=l, len=n, start_hi=p >> 32, start_lo=p & M32) for l, n, p in ext]
    if len(items) <= EXTENT_ROOT_MAX:
        return root(items, 0)
    per = extents_per_block(bs)
    mi = 0
    firsts = [l for l, _, _ in ext]
    depth = 0
    while len(items) > EXTENT_ROOT_MAX:
        new_items, new_firsts = [], []
        for i in range(0, len(items), per):
            chunk = items[i:i + per]
            blk = meta[mi]
            mi += 1
            body = bytearray(node(chunk, per, depth))
            body += bytes(EXTENT_HEADER.size + per * EXTENT_LEAF.size - len(body))
            body += EXTENT_TAIL.pack(checksum=csum(iseed, body) if csum_on else 0)
            body += bytes(bs - len(body))
            writes.append((blk, bytes(body)))
            new_items.append(EXTENT_INDEX.pack(block=firsts[i], leaf_lo=blk & M32, leaf_hi=blk >> 32))
            new_firsts.append(firsts[i])
        items, firsts = new_items, new_firsts
        depth += 1
    assert mi == len(meta), (mi, len(meta))
    return root(items, depth)


def indirect_map(runs: list[tuple[int, int]], ext: list[Extent], meta: list[int], bs: int,
                 writes: list) -> bytes:
    """i_block (12 direct pointers, then single, double, triple) for these extents; queues
    the indirect blocks in writes."""
    if not ext and not runs:
        return EMPTY_INDIRECT
    P, b1, b2, _ = indirect_bounds(bs)
    keys = indirect_keys(runs, bs)
    blk_of = dict(zip(keys, meta))
    # block pointers are little-endian u32 (array "I" is 4 bytes and the host little-endian)
    assert array("I").itemsize == BLOCK_PTR_SIZE
    tables: dict[tuple, array] = {k: array("I", bytes(bs)) for k in keys}
    iblock = array("I", bytes(I_BLOCK_SIZE))
    for l, n, p in ext:
        while n > 0:
            if l < NDIR_BLOCKS:
                m = min(n, NDIR_BLOCKS - l)
                iblock[l:l + m] = array("I", range(p, p + m))
            elif l < b1:
                i = l - NDIR_BLOCKS
                m = min(n, P - i)
                tables[(1,)][i:i + m] = array("I", range(p, p + m))
            elif l < b2:
                rel = l - b1
                i, j = divmod(rel, P)
                m = min(n, P - j)
                tables[(2, i)][j:j + m] = array("I", range(p, p + m))
            else:
                rel = l - b2
                i, rest = divmod(rel, P * P)
                j, kk = divmod(rest, P)
                m = min(n, P - kk)
                tables[(3, i, j)][kk:kk + m] = array("I", range(p, p + m))
            l, n, p = l + m, n - m, p + m
    for key in keys:
        if len(key) == 1:  # (1,), (2,), (3,): i_block[IND_BLOCK], [DIND_BLOCK], [TIND_BLOCK]
            iblock[IND_BLOCK - 1 + key[0]] = blk_of[key]
        else:
            tables[key[:-1]][key[-1]] = blk_of[key]
    for key in keys:
        writes.append((blk_of[key], tables[key].tobytes()))
    return iblock.tobytes()
