"""ext block groups: the block and inode bitmaps and the group descriptors.

Invariants: a bitmap marks the superblock backups, descriptor tables, bitmaps, inode tables
and every allocated block of its group; bits past the end of a short last group (or past
inodes_per_group) are set, as the kernel expects; the free counts in each descriptor are
those of its bitmaps; with metadata_csum a group whose inodes are all unused is INODE_UNINIT
and every descriptor carries crc32c checksums of its bitmaps and of itself.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Iterator

from ...tree import Kind
from .format import (
    BG_INODE_UNINIT, BG_INODE_ZEROED, DESC_SIZE_64, GROUP_DESC, GROUP_DESC_HI, csum,
)
from .inode import Ino

M32 = 0xFFFFFFFF


def set_bits(bm: bytearray, a: int, b: int) -> None:
    """Set bits [a, b) of a little-endian bitmap."""
    if a >= b:
        return
    fa, fb = (a + 7) >> 3, b >> 3
    if fa > fb:
        for i in range(a, b):
            bm[i >> 3] |= 1 << (i & 7)
        return
    for i in range(a, fa * 8):
        bm[i >> 3] |= 1 << (i & 7)
    if fb > fa:
        bm[fa:fb] = b"\xff" * (fb - fa)
    for i in range(fb * 8, b):
        bm[i >> 3] |= 1 << (i & 7)


@dataclass
class GroupState:
    group: int
    block_bitmap: bytearray
    inode_bitmap: bytearray
    free_blocks: int
    free_inodes: int
    used_dirs: int
    itable_unused: int
    flags: int


def group_bitmaps(geo, bs: int, csum_on: bool, inos: list[Ino], used_runs: list,
                  last_ino: int) -> Iterator[GroupState]:
    """Each group's bitmaps and counts in turn; used_runs are the allocated [start, end) runs."""
    used = sorted([tuple(x) for x in geo.reserved] + [tuple(x) for x in used_runs])
    dirs: dict[int, int] = {}
    for r in inos:
        if r.kind is Kind.DIR:
            g = (r.ino - 1) // geo.ipg
            dirs[g] = dirs.get(g, 0) + 1
    ui = 0
    for g in range(geo.groups):
        gs = geo.gstart(g)
        size = geo.gsize(g)
        ge = gs + size
        bb = bytearray(bs)
        while ui < len(used) and used[ui][0] < ge:
            s, e = used[ui]
            lo, hi = max(s, gs), min(e, ge)
            if lo < hi:
                set_bits(bb, lo - gs, hi - gs)
            if e > ge:
                break
            ui += 1
        used_bits = int.from_bytes(bb, "little").bit_count()
        if size < 8 * bs:
            set_bits(bb, size, 8 * bs)
        n_used = max(0, min(last_ino - g * geo.ipg, geo.ipg))
        ib = bytearray(bs)
        set_bits(ib, 0, n_used)
        set_bits(ib, geo.ipg, 8 * bs)
        flags = unused = 0
        if csum_on:
            flags = BG_INODE_ZEROED | (BG_INODE_UNINIT if n_used == 0 else 0)
            unused = geo.ipg - n_used
        yield GroupState(g, bb, ib, size - used_bits, geo.ipg - n_used, dirs.get(g, 0), unused, flags)


def descriptor(geo, st: GroupState, csum_on: bool, fs_seed: int) -> bytes:
    """The group's descriptor (32 bytes, or 64 with the 64bit feature)."""
    g = st.group
    bbc = csum(fs_seed, st.block_bitmap[:geo.bpg // 8]) if csum_on else 0
    ibc = csum(fs_seed, st.inode_bitmap[:geo.ipg // 8]) if csum_on else 0
    fb, fi, dirs, unused = st.free_blocks, st.free_inodes, st.used_dirs, st.itable_unused
    lo = dict(block_bitmap=geo.bb[g] & M32, inode_bitmap=geo.ib[g] & M32,
              inode_table=geo.it[g] & M32, free_blocks=fb & 0xFFFF, free_inodes=fi & 0xFFFF,
              used_dirs=dirs & 0xFFFF, flags=st.flags, block_bitmap_csum=bbc & 0xFFFF,
              inode_bitmap_csum=ibc & 0xFFFF, itable_unused=unused & 0xFFFF)
    d = GROUP_DESC.pack(**lo)
    hi = b""
    if geo.desc_size == DESC_SIZE_64:
        hi = GROUP_DESC_HI.pack(
            block_bitmap_hi=geo.bb[g] >> 32, inode_bitmap_hi=geo.ib[g] >> 32,
            inode_table_hi=geo.it[g] >> 32, free_blocks_hi=fb >> 16, free_inodes_hi=fi >> 16,
            used_dirs_hi=dirs >> 16, itable_unused_hi=unused >> 16,
            block_bitmap_csum_hi=bbc >> 16, inode_bitmap_csum_hi=ibc >> 16)
    if csum_on:  # crc32c(fs seed, le32 group, descriptor with its checksum field zero)
        c = csum(csum(fs_seed, g.to_bytes(4, "little")), d + hi)
        d = GROUP_DESC.pack(checksum=c & 0xFFFF, **lo)
    return d + hi
