"""Directories in every form: shortform (in the inode), block, leaf and node.

The form follows from the size, as the kernel would have left it: shortform while
the entries fit in the data fork; one block (entries + sorted hash array + tail)
while that fits; else data blocks plus one leaf1 block (hash array + best-free
table) while that fits; else data blocks, a da-node root over leafn blocks, and
free-index blocks. Invariants: entries never span data blocks, every data block
ends in one unused region (if any space is left) that its best-free table lists,
the hash arrays are sorted by xfs_da_hashname, and da-node levels are added above
the leafn blocks until one root block (at the first leaf-space block) holds them.
"""
from __future__ import annotations

import struct

from .format import (BESTFREE, BLOCK_TAIL, DA3_BLKINFO, DA3_CRC_OFF, DA3_NODE_HDR_TAIL,
                     DA3_NODE_MAGIC, DATA_FIRST_OFFSET, DIR2_FREE_OFFSET, DIR2_LEAF_OFFSET,
                     DIR3_BLK_HDR, DIR3_BLOCK_MAGIC, DIR3_DATA_HDR_SIZE, DIR3_DATA_MAGIC,
                     DIR3_FREE_HDR_TAIL, DIR3_FREE_MAGIC, DIR3_LEAF1_MAGIC, DIR3_LEAF_HDR_TAIL,
                     DIR3_LEAFN_MAGIC, DIR_FREE_TAG, DIR_UNUSED, FT, LEAF_ENT, NULLDATAOFF,
                     da_hashname, dirent_size, set_crc)

Entry = tuple[bytes, int, int]  # name, inode number, ftype


def shortform(entries: list[Entry], parent: int) -> bytes:
    """The shortform directory (xfs_dir2_sf): header, then entries with their would-be offsets."""
    i8 = parent > 0xFFFFFFFF or any(ino > 0xFFFFFFFF for _, ino, _ in entries)
    isz = 8 if i8 else 4
    out = bytearray(struct.pack(">BB", len(entries), sum(1 for _, ino, _ in entries if ino > 0xFFFFFFFF)))
    out += parent.to_bytes(isz, "big")
    off = DATA_FIRST_OFFSET
    for name, ino, ft in entries:
        out += struct.pack(">BH", len(name), off) + name + bytes([ft]) + ino.to_bytes(isz, "big")
        off += dirent_size(len(name))
    return bytes(out)


def shortform_size(entries: list[Entry], parent: int) -> int:
    i8 = parent > 0xFFFFFFFF or any(ino > 0xFFFFFFFF for _, ino, _ in entries)
    isz = 8 if i8 else 4
    return 2 + isz + sum(3 + len(n) + 1 + isz for n, _, _ in entries)


def _dirent(name: bytes, ino: int, ft: int, off: int) -> bytes:
    n = dirent_size(len(name))
    b = bytearray(n)
    struct.pack_into(">QB", b, 0, ino, len(name))
    b[9:9 + len(name)] = name
    b[9 + len(name)] = ft
    struct.pack_into(">H", b, n - 2, off)
    return bytes(b)


def _unused(off: int, length: int) -> bytes:
    b = bytearray(length)
    DIR_UNUSED.pack_into(b, 0, DIR_FREE_TAG, length)
    struct.pack_into(">H", b, length - 2, off)
    return bytes(b)


class DirPlan:
    """A multi-block directory: its logical blocks (`dablks`), `size` (di_size) and `render`."""

    def __init__(self, entries: list[Entry], self_ino: int, parent: int, bs: int):
        self.bs = bs
        allents = [(b".", self_ino, FT["dir"]), (b"..", parent, FT["dir"])] + list(entries)
        self.nents = len(allents)
        used = DIR3_DATA_HDR_SIZE + sum(dirent_size(len(n)) for n, _, _ in allents)
        self.leaf_db = DIR2_LEAF_OFFSET // bs
        self.free_db = DIR2_FREE_OFFSET // bs
        if used + LEAF_ENT.size * self.nents + BLOCK_TAIL.size <= bs:
            self.form = "block"
            self.data = [self._place(allents, 0)]
            self.dablks = [0]
            self.size = bs
            return
        # pack entries into data blocks in order
        blocks, cur, pos = [], [], DIR3_DATA_HDR_SIZE
        for e in allents:
            n = dirent_size(len(e[0]))
            if pos + n > bs:
                blocks.append(cur)
                cur, pos = [], DIR3_DATA_HDR_SIZE
            cur.append(e)
            pos += n
        blocks.append(cur)
        self.data = [self._place(b, db) for db, b in enumerate(blocks)]
        nd = len(self.data)
        self.size = nd * bs
        self.leaf_ents = sorted((h for blk in self.data for h in blk["hashes"]))
        leaf_hdr = DA3_BLKINFO.size + DIR3_LEAF_HDR_TAIL.size
        if leaf_hdr + LEAF_ENT.size * self.nents + 2 * nd + 4 <= bs:
            self.form = "leaf"
            self.dablks = list(range(nd)) + [self.leaf_db]
            return
        self.form = "node"
        per_leaf = (bs - leaf_hdr) // LEAF_ENT.size
        nleaves = -(-self.nents // per_leaf)
        k, r = divmod(self.nents, nleaves)
        self.leaves, pos = [], 0
        for i in range(nleaves):
            n = k + (1 if i < r else 0)
            self.leaves.append(self.leaf_ents[pos:pos + n])
            pos += n
        per_node = (bs - leaf_hdr) // LEAF_ENT.size
        self.per_free = (bs - DIR3_BLK_HDR.size - DIR3_FREE_HDR_TAIL.size) // 2
        nfree = -(-nd // self.per_free)
        if nleaves == 1:  # the leafn block is the root itself, as xfs_dir2_leaf_to_node leaves it
            self.leaf_dbs = [self.leaf_db]
            self.nodes: list[list[int]] = []
        else:
            self.leaf_dbs = [self.leaf_db + 1 + i for i in range(nleaves)]
            # da-node levels above the leaves: the top one is the root at leaf_db
            counts = [nleaves]
            while counts[-1] > per_node:
                counts.append(-(-counts[-1] // per_node))
            nxt = self.leaf_db + 1 + nleaves
            self.nodes = []  # the dablks of each node level, lowest first; the root level last
            for c in counts[1:]:
                self.nodes.append(list(range(nxt, nxt + c)))
                nxt += c
            self.nodes.append([self.leaf_db])
        self.dablks = (list(range(nd)) + ([self.leaf_db] if nleaves > 1 else []) + self.leaf_dbs
                       + sorted(b for lvl in self.nodes[:-1] for b in lvl)
                       + [self.free_db + i for i in range(nfree)])

    def _place(self, ents: list[Entry], db: int) -> dict:
        """Lay out one data block's entries; remember their hashes and the free tail."""
        pos = DIR3_DATA_HDR_SIZE
        body = bytearray()
        hashes = []
        for name, ino, ft in ents:
            body += _dirent(name, ino, ft, pos)
            hashes.append((da_hashname(name), (db * self.bs + pos) >> 3))
            pos += dirent_size(len(name))
        return {"body": body, "end": pos, "hashes": hashes}

    def _data_block(self, magic: int, blk: dict, free_end: int, daddr: int, owner: int,
                    uuid: bytes) -> bytearray:
        bs = self.bs
        buf = bytearray(bs)
        buf[:DIR3_BLK_HDR.size] = DIR3_BLK_HDR.pack(magic=magic, blkno=daddr, uuid=uuid, owner=owner)
        end = blk["end"]
        buf[DIR3_DATA_HDR_SIZE:end] = blk["body"]
        free = free_end - end
        if free:
            buf[end:free_end] = _unused(end, free)
            BESTFREE.pack_into(buf, DIR3_BLK_HDR.size, end, free, 0, 0, 0, 0)
        blk["best"] = free
        return buf

    def render(self, owner: int, uuid: bytes, daddr: dict[int, int]) -> dict[int, bytes]:
        bs = self.bs
        out: dict[int, bytes] = {}
        if self.form == "block":
            blk = self.data[0]
            n = len(blk["hashes"])
            leaf_start = bs - BLOCK_TAIL.size - n * LEAF_ENT.size
            buf = self._data_block(DIR3_BLOCK_MAGIC, blk, leaf_start, daddr[0], owner, uuid)
            for i, (h, a) in enumerate(sorted(blk["hashes"])):
                LEAF_ENT.pack_into(buf, leaf_start + i * LEAF_ENT.size, h, a)
            BLOCK_TAIL.pack_into(buf, bs - BLOCK_TAIL.size, n, 0)
            out[0] = bytes(set_crc(buf, 4))
            return out
        for db, blk in enumerate(self.data):
            out[db] = bytes(set_crc(self._data_block(DIR3_DATA_MAGIC, blk, bs, daddr[db], owner, uuid), 4))
        bests = [blk["best"] for blk in self.data]
        if self.form == "leaf":
            buf = self._leaf_block(DIR3_LEAF1_MAGIC, self.leaf_ents, 0, 0, daddr[self.leaf_db], owner, uuid)
            struct.pack_into(">I", buf, bs - 4, len(bests))
            for i, b in enumerate(bests):
                struct.pack_into(">H", buf, bs - 4 - 2 * len(bests) + 2 * i, b)
            out[self.leaf_db] = bytes(set_crc(buf, DA3_CRC_OFF))
            return out
        # node form: leafn blocks, the da-node root above them, free-index blocks
        dbs = self.leaf_dbs
        for i, ents in enumerate(self.leaves):
            forw = dbs[i + 1] if i + 1 < len(dbs) else 0
            back = dbs[i - 1] if i > 0 else 0
            buf = self._leaf_block(DIR3_LEAFN_MAGIC, ents, forw, back, daddr[dbs[i]], owner, uuid)
            out[dbs[i]] = bytes(set_crc(buf, DA3_CRC_OFF))
        # da-node levels: each entry is (the highest hash below the child, the child's dablk)
        children = [(ents[-1][0], dbs[i]) for i, ents in enumerate(self.leaves)]
        for level, blocks in enumerate(self.nodes, start=1):
            k, r = divmod(len(children), len(blocks))
            pos, above = 0, []
            for i, db in enumerate(blocks):
                n = k + (1 if i < r else 0)
                group = children[pos:pos + n]
                pos += n
                buf = bytearray(bs)
                buf[:DA3_BLKINFO.size] = DA3_BLKINFO.pack(
                    forw=blocks[i + 1] if i + 1 < len(blocks) else 0, back=blocks[i - 1] if i else 0,
                    magic=DA3_NODE_MAGIC, blkno=daddr[db], uuid=uuid, owner=owner)
                DA3_NODE_HDR_TAIL.pack_into(buf, DA3_BLKINFO.size, len(group), level, 0)
                for j, (h, child) in enumerate(group):
                    LEAF_ENT.pack_into(buf, 64 + j * 8, h, child)
                out[db] = bytes(set_crc(buf, DA3_CRC_OFF))
                above.append((group[-1][0], db))
            children = above
        for f in range(-(-len(bests) // self.per_free)):
            chunk = bests[f * self.per_free:(f + 1) * self.per_free]
            buf = bytearray(bs)
            fdb = self.free_db + f
            buf[:DIR3_BLK_HDR.size] = DIR3_BLK_HDR.pack(magic=DIR3_FREE_MAGIC, blkno=daddr[fdb],
                                                        uuid=uuid, owner=owner)
            DIR3_FREE_HDR_TAIL.pack_into(buf, DIR3_BLK_HDR.size, f * self.per_free, len(chunk),
                                         sum(1 for b in chunk if b != NULLDATAOFF), 0)
            for i, b in enumerate(chunk):
                struct.pack_into(">H", buf, 64 + 2 * i, b)
            out[fdb] = bytes(set_crc(buf, 4))
        return out

    def _leaf_block(self, magic: int, ents, forw: int, back: int, daddr: int, owner: int,
                    uuid: bytes) -> bytearray:
        buf = bytearray(self.bs)
        buf[:DA3_BLKINFO.size] = DA3_BLKINFO.pack(forw=forw, back=back, magic=magic, blkno=daddr,
                                                  uuid=uuid, owner=owner)
        DIR3_LEAF_HDR_TAIL.pack_into(buf, DA3_BLKINFO.size, len(ents), 0, 0)
        for i, (h, a) in enumerate(ents):
            LEAF_ENT.pack_into(buf, 64 + i * 8, h, a)
        return buf
