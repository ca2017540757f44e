"""HTree (dir_index) directories: leaves of entries sorted by half_md4 hash, and index
blocks above them (Documentation/filesystems/ext4/directory.rst, "Hash Tree Directories").

Layout of a directory's logical blocks: 0 the root (".", "..", dx_root_info, the root's
entries), then the interior index nodes from the top level down, then the leaves in hash
order. Invariants: a leaf never splits a run of equal hashes without marking the next
leaf's key with the continuation bit (| 1); every index block's entry 0 carries only a block
number (the count/limit header takes its hash's place); with metadata_csum each index block
keeps a dx_tail just after its last possible entry.
"""
from __future__ import annotations

from typing import Callable

from ...errors import CapacityError
from .format import (
    DX_COUNTLIMIT, DX_ENTRY, DX_MAX_LEVELS, DX_NODE, DX_NODE_COUNT_OFFSET, DX_ROOT,
    DX_ROOT_COUNT_OFFSET, DX_ROOT_INFO_LENGTH, DX_TAIL, FT_DIR, HASH_HALF_MD4, csum,
    dirent_rec_len, dx_hash, pack_dirent,
)

Entry = tuple[bytes, int, int]  # (name, inode, file type)


def index_limits(bs: int, csum_on: bool) -> tuple[int, int]:
    """(entries the root holds, entries an interior node holds)."""
    tail = DX_TAIL.size if csum_on else 0
    return (bs - DX_ROOT_COUNT_OFFSET - tail) // DX_ENTRY.size, (bs - DX_NODE_COUNT_OFFSET - tail) // DX_ENTRY.size


def htree_blocks(ino: int, parent: int, entries: list[Entry], bs: int, usable: int, csum_on: bool,
                 iseed: int, seed: tuple[int, int, int, int],
                 finish_leaf: Callable[[bytearray, int], bytes]) -> tuple[list[bytes], int]:
    """(every block of the directory in logical order, index depth: 0 = the root's entries
    point at leaves). finish_leaf(buf, offset of its last entry) closes a leaf block."""
    root_limit, node_limit = index_limits(bs, csum_on)
    hashed = sorted(((dx_hash(n, seed, True), n, i, ft) for n, i, ft in entries), key=lambda e: (e[0], e[1]))
    leaves: list[tuple[int, bytes]] = []  # (key hash, block bytes)
    buf = bytearray()
    last = -1
    key = 0
    prev_hash = None
    for (h, _minor), name, cino, ft in hashed:
        rl = dirent_rec_len(len(name))
        if len(buf) + rl > usable:
            leaves.append((key, finish_leaf(buf, last)))
            buf = bytearray()
            key = h | 1 if h == prev_hash else h  # | 1: the hash continues from the last leaf
        last = len(buf)
        buf += pack_dirent(cino, rl, name, ft)
        prev_hash = h
    leaves.append((key, finish_leaf(buf, last)))
    # index levels, bottom-up: each level is a list of nodes, each a list of (key, child)
    levels: list[list[list[tuple[int, tuple]]]] = []
    cur: list[tuple[int, tuple]] = [(k, ("leaf", j)) for j, (k, _) in enumerate(leaves)]
    while len(cur) > root_limit:
        nodes = [cur[i:i + node_limit] for i in range(0, len(cur), node_limit)]
        levels.append(nodes)
        cur = [(n[0][0], ("node", len(levels) - 1, j)) for j, n in enumerate(nodes)]
    depth = len(levels)
    if depth > DX_MAX_LEVELS - 1:
        raise CapacityError("a directory is too large even for a 3-level HTree")
    # logical block numbers: 0 root, then index nodes from the top level down, then leaves
    lblk = 1
    node_blk: dict[tuple[int, int], int] = {}
    for lv in range(depth - 1, -1, -1):
        for j in range(len(levels[lv])):
            node_blk[(lv, j)] = lblk
            lblk += 1
    leaf0 = lblk

    def target(ref: tuple) -> int:
        return leaf0 + ref[1] if ref[0] == "leaf" else node_blk[(ref[1], ref[2])]

    def index_block(head: bytes, count_off: int, limit: int, ents: list[tuple[int, tuple]]) -> bytes:
        """head, then the count/limit header (which carries entry 0's block), then the other
        entries; with metadata_csum a dx_tail right after the last possible entry."""
        blk = bytearray(bs)
        blk[:count_off] = head
        DX_COUNTLIMIT.pack_into(blk, count_off, limit=limit, count=len(ents), block=target(ents[0][1]))
        pos = count_off + DX_COUNTLIMIT.size
        for k, ref in ents[1:]:
            DX_ENTRY.pack_into(blk, pos, hash=k, block=target(ref))
            pos += DX_ENTRY.size
        if csum_on:
            t = count_off + limit * DX_ENTRY.size
            c = csum(iseed, blk[:count_off + len(ents) * DX_ENTRY.size])
            c = csum(c, DX_TAIL.pack())  # the tail, its checksum still zero
            DX_TAIL.pack_into(blk, t, checksum=c)
        return bytes(blk)

    dot, dotdot = dirent_rec_len(1), bs - dirent_rec_len(1)
    root = DX_ROOT.pack(
        dot_inode=ino, dot_rec_len=dot, dot_name_len=1, dot_file_type=FT_DIR, dot_name=b".",
        dotdot_inode=parent, dotdot_rec_len=dotdot, dotdot_name_len=2, dotdot_file_type=FT_DIR,
        dotdot_name=b"..", hash_version=HASH_HALF_MD4, info_length=DX_ROOT_INFO_LENGTH,
        indirect_levels=depth)
    out = [index_block(root[:DX_ROOT_COUNT_OFFSET], DX_ROOT_COUNT_OFFSET, root_limit, cur)]
    fake = DX_NODE.pack(fake_rec_len=bs)[:DX_NODE_COUNT_OFFSET]
    for lv in range(depth - 1, -1, -1):
        for ents in levels[lv]:
            out.append(index_block(fake, DX_NODE_COUNT_OFFSET, node_limit, ents))
    out.extend(b for _, b in leaves)
    return out, depth
