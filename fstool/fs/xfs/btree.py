"""B+tree shapes and blocks: the AG btrees (short form) and the bmbt (long form).

Invariant: records are spread evenly over the blocks of a level, so every
non-root block holds at least half of its capacity (xfs_repair's minrecs), and
the shape only depends on the record count, so block counts can be planned
before any block is placed.
"""
from __future__ import annotations

from .format import (BMAP_MAGIC, BMBT_KEY, BMBT_PTR, BMDR_HDR, BT_LONG, BT_SHORT, NULLAGBLOCK, NULLFSBLOCK,
                     set_crc)


def _ceil(a: int, b: int) -> int:
    return -(-a // b)


def block_levels(nrecs: int, leaf_cap: int, node_cap: int, root_cap: int) -> list[int]:
    """Blocks per level, leaves first, for a tree whose top holds at most root_cap entries.

    For an AG btree the root is a block (root_cap == node_cap and the last level has one
    block); for a bmbt the root sits in the inode and is not counted here.
    """
    levels = [max(1, _ceil(nrecs, leaf_cap))]
    while levels[-1] > root_cap:
        levels.append(_ceil(levels[-1], node_cap))
    return levels


def _spread(items: list, nblocks: int) -> list[list]:
    out, pos = [], 0
    for i in range(nblocks):
        n = len(items) // nblocks + (1 if i < len(items) % nblocks else 0)
        out.append(items[pos:pos + n])
        pos += n
    return out


def short_btree(bs: int, magic: int, recs: list[bytes], keys: list[bytes], key_size: int,
                root_agbno: int, extra: list[int], agno: int, daddr_of,
                uuid: bytes) -> tuple[dict[int, bytes], int]:
    """Blocks of an AG btree: {agbno: block}, levels. The root is root_agbno; the other
    blocks take agbnos from `extra` in order (len(extra) == blocks needed - 1)."""
    hdr = BT_SHORT.size
    leaf_cap = (bs - hdr) // (len(recs[0]) if recs else 8)
    node_cap = (bs - hdr) // (key_size + 4)
    levels = block_levels(len(recs), leaf_cap, node_cap, 1)
    if len(extra) != sum(levels) - 1:
        raise AssertionError("btree block plan does not match its shape")
    pool = iter(extra)
    out: dict[int, bytes] = {}
    items = list(zip(keys, recs))  # (first key, payload)
    for level, nblocks in enumerate(levels):
        groups = _spread(items, nblocks)
        top = level == len(levels) - 1
        agbnos = [root_agbno] if top else [next(pool) for _ in groups]
        nxt = []
        for i, (g, agbno) in enumerate(zip(groups, agbnos)):
            buf = bytearray(bs)
            buf[:hdr] = BT_SHORT.pack(
                magic=magic, level=level, numrecs=len(g),
                leftsib=agbnos[i - 1] if i > 0 else NULLAGBLOCK,
                rightsib=agbnos[i + 1] if i + 1 < len(agbnos) else NULLAGBLOCK,
                blkno=daddr_of(agbno), uuid=uuid, owner=agno)
            if level == 0:
                pos = hdr
                for _, payload in g:
                    buf[pos:pos + len(payload)] = payload
                    pos += len(payload)
            else:
                kpos, ppos = hdr, hdr + node_cap * key_size
                for k, child in g:
                    buf[kpos:kpos + key_size] = k
                    buf[ppos:ppos + 4] = child.to_bytes(4, "big")
                    kpos += key_size
                    ppos += 4
            out[agbno] = bytes(set_crc(buf, 52))
            if g:
                nxt.append((g[0][0], agbno))
        items = nxt
    return out, len(levels)


def short_btree_blocks(bs: int, nrecs: int, rec_size: int, key_size: int) -> int:
    hdr = BT_SHORT.size
    return sum(block_levels(nrecs, (bs - hdr) // rec_size, (bs - hdr) // (key_size + 4), 1))


BMBT_REC = 16


def bmbt_levels(bs: int, nrecs: int, fork_size: int) -> list[int]:
    cap = (bs - BT_LONG.size) // BMBT_REC
    return block_levels(nrecs, cap, cap, (fork_size - BMDR_HDR.size) // 16)


def bmbt(bs: int, recs: list[bytes], fork_size: int, fsbs: list[int], owner: int,
         daddr_of_fsb, uuid: bytes) -> tuple[bytes, dict[int, bytes]]:
    """A bmbt rooted in an inode fork of fork_size bytes: (the fork's root bytes, {fsb: block}).
    `fsbs` are the blocks to use, as many as bmbt_levels() sums to."""
    cap = (bs - BT_LONG.size) // BMBT_REC
    levels = bmbt_levels(bs, len(recs), fork_size)
    if len(fsbs) != sum(levels):
        raise AssertionError("bmbt block plan does not match its shape")
    pool = iter(fsbs)
    blocks: dict[int, bytes] = {}
    items = [(BMBT_KEY.pack(int.from_bytes(r[:8], 'big') >> 9), r) for r in recs]  # key: startoff
    for level, nblocks in enumerate(levels):
        groups = _spread(items, nblocks)
        addrs = [next(pool) for _ in groups]
        nxt = []
        for i, (g, fsb) in enumerate(zip(groups, addrs)):
            buf = bytearray(bs)
            buf[:BT_LONG.size] = BT_LONG.pack(
                magic=BMAP_MAGIC, level=level, numrecs=len(g),
                leftsib=addrs[i - 1] if i > 0 else NULLFSBLOCK,
                rightsib=addrs[i + 1] if i + 1 < len(addrs) else NULLFSBLOCK,
                blkno=daddr_of_fsb(fsb), uuid=uuid, owner=owner)
            if level == 0:
                pos = BT_LONG.size
                for _, r in g:
                    buf[pos:pos + 16] = r
                    pos += 16
            else:
                kpos, ppos = BT_LONG.size, BT_LONG.size + cap * 8
                for k, child in g:
                    buf[kpos:kpos + 8] = k
                    buf[ppos:ppos + 8] = BMBT_PTR.pack(child)
                    kpos += 8
                    ppos += 8
            blocks[fsb] = bytes(set_crc(buf, 64))
            nxt.append((g[0][0], fsb))
        items = nxt
    rootmax = (fork_size - BMDR_HDR.size) // 16
    root = bytearray(fork_size)
    BMDR_HDR.pack_into(root, 0, len(levels), len(items))
    for i, (k, child) in enumerate(items):
        root[4 + i * 8:12 + i * 8] = k
        BMBT_PTR.pack_into(root, 4 + rootmax * 8 + i * 8, child)
    return bytes(root), blocks
