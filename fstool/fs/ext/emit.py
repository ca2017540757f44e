"""Writing a planned ext filesystem: every metadata block is built in memory and written in
coalesced runs at rising block numbers; file bytes go straight from their sources to the
image with ImageFile.copy_from.

Invariant: nothing else is written, so free space, unused inode tables and the journal body
stay holes (unless `sparse = false`, when the holes are filled with zeros at the end); the
primary and backup superblocks and descriptor tables agree; the free counts in the
superblock and the descriptors are those of the bitmaps.
"""
from __future__ import annotations

import os

from ..base import FsParams
from ...image import ImageFile, Tally, data_extents, for_each_in_order, in_background, write_zeros
from ...tree import Kind
from . import xattr
from .extent import extent_tree, indirect_map
from .format import (
    BG_INODE_UNINIT, BLOCK_PTR_SIZE, EXTENTS_FL, I_BLOCK_SIZE, SUPERBLOCK, SUPERBLOCK_OFFSET,
    encode_dev, inode_csum_seed,
)
from .group import descriptor, group_bitmaps
from .inode import Content, Ino, Inventory, inode_tables
from .journal import journal_superblock
from .layout import Layout
from .superblock import superblock

RUN_LIMIT = 8 << 20  # bytes of one coalesced write


class BlockSink:
    """Coalesces writes of whole blocks at rising block numbers into pwrites of up to
    RUN_LIMIT bytes; a write that does not continue the current run starts a new one."""

    def __init__(self, out: ImageFile, bs: int):
        self.out, self.bs = out, bs
        self.start, self.end, self.parts, self.size = -1, -1, [], 0

    def add(self, block: int, data: bytes) -> None:
        if block != self.end or self.size >= RUN_LIMIT:
            self.flush()
            self.start = self.end = block
        self.parts.append(data)
        self.size += len(data)
        self.end += len(data) // self.bs

    def flush(self) -> None:
        if self.parts:
            self.out.pwrite(b"".join(self.parts), self.start * self.bs)
        self.start, self.end, self.parts, self.size = -1, -1, [], 0

    def write_all(self, writes: list[tuple[int, bytes]]) -> None:
        """Write (block, bytes of whole blocks) pieces in block order."""
        for blk, data in sorted(writes, key=lambda w: w[0]):
            self.add(blk, data)
        self.flush()


def _put_logical(r: Ino, blocks: list[bytes], writes: list) -> None:
    """Queue an inode's content blocks (by logical number) at their physical places."""
    for l, n, p in r.extents:
        for i in range(n):
            if l + i < len(blocks):
                writes.append((p + i, blocks[l + i]))


def inode_blocks(r: Ino, lay: Layout, fs_seed: int, writes: list) -> None:
    """Fill r.iblock (and EXTENTS_FL) and queue r's directory, symlink, journal and mapping blocks."""
    cfg, bs = lay.cfg, lay.bs
    k = r.kind
    if k in (Kind.CHR, Kind.BLK):
        b0, b1 = encode_dev(*r.node.rdev)
        r.iblock = (b0.to_bytes(BLOCK_PTR_SIZE, "little") + b1.to_bytes(BLOCK_PTR_SIZE, "little")
                    + bytes(I_BLOCK_SIZE - 2 * BLOCK_PTR_SIZE))
        return
    if k in (Kind.FIFO, Kind.SOCK):
        return
    if k is Kind.SYMLINK and r.nblocks == 0:
        r.iblock = r.target + bytes(I_BLOCK_SIZE - len(r.target))
        return
    if r.dirblocks is not None:
        _put_logical(r, r.dirblocks, writes)
    elif k is Kind.SYMLINK:
        _put_logical(r, [r.target + bytes(bs - len(r.target))], writes)
    elif r is lay.journal:
        _put_logical(r, [journal_superblock(cfg, bs, lay.jblocks)], writes)
    if cfg.extents:
        r.flags = r.flags | EXTENTS_FL if r.flags else EXTENTS_FL  # the constant, not an int per inode
        iseed = inode_csum_seed(fs_seed, r.ino) if cfg.csum else 0
        r.iblock = extent_tree(r.extents, r.meta, bs, iseed, cfg.csum, writes)
    else:
        r.iblock = indirect_map(r.runs, r.extents, r.meta, bs, writes)


def emit(out: ImageFile, params: FsParams, inv: Inventory, content: Content, lay: Layout,
         fs_seed: int) -> None:
    """Write every metadata block, then the file data."""
    # every block is placed: the file data goes out from a child process (or a second thread)
    # while the metadata is encoded here (disjoint blocks at fixed offsets: the same bytes as
    # in sequence); not from a child when progress is shown, which only this process draws
    with in_background(lambda stop: copy_data(out, params, inv.inos, lay.bs, stop),
                       fork=params.progress is None):
        _emit_metadata(out, params, inv, content, lay, fs_seed)


def _emit_metadata(out: ImageFile, params: FsParams, inv: Inventory, content: Content, lay: Layout,
                   fs_seed: int) -> None:
    cfg, geo, bs, ts = lay.cfg, lay.geo, lay.bs, params.timestamp
    writes: list[tuple[int, bytes]] = []   # (block, bytes of whole blocks)
    for r in ([lay.journal] if lay.journal else []) + inv.inos:
        inode_blocks(r, lay, fs_seed, writes)
    for xb in inv.xattrs.blocks:
        writes.append((xb.block, xattr.block(xb, bs, cfg.csum, fs_seed)))
    # the inode tables go out group by group as they are packed (the biggest metadata: never
    # all in memory at once); nothing else is written to their blocks
    for g, table in inode_tables(inv.inos, lay.journal, cfg, bs, fs_seed, ts, geo.ipg):
        out.pwrite(table, geo.it[g] * bs)
    # bitmaps and descriptors, group by group (bitmaps go straight out)
    gd = bytearray()
    free_blocks_total = 0
    bsink, isink = BlockSink(out, bs), BlockSink(out, bs)
    for st in group_bitmaps(geo, bs, cfg.csum, inv.inos, lay.alloc.runs, inv.last_ino):
        free_blocks_total += st.free_blocks
        gd += descriptor(geo, st, cfg.csum, fs_seed)
        if any(st.block_bitmap):  # an all-zero bitmap is what the hole already reads as
            bsink.add(geo.bb[st.group], bytes(st.block_bitmap))
        if not st.flags & BG_INODE_UNINIT:  # an uninitialised group's inode bitmap is never read
            isink.add(geo.ib[st.group], bytes(st.inode_bitmap))
    bsink.flush()
    isink.flush()
    gd += bytes(-len(gd) % bs)
    free_inodes = geo.inodes - inv.last_ino
    for g in range(geo.groups):
        if not geo.has_super(g):
            continue
        sb = superblock(cfg, geo, bs, g, free_blocks_total, free_inodes, lay.journal,
                        content.dirs.largedir, ts)
        if g == 0:
            if bs > SUPERBLOCK_OFFSET:  # block 0 holds the boot area, then the superblock
                blk0 = bytearray(bs)
                blk0[SUPERBLOCK_OFFSET:SUPERBLOCK_OFFSET + SUPERBLOCK.size] = sb
                writes.append((0, bytes(blk0) + bytes(gd)))
            else:  # 1 KiB blocks: the superblock is block 1
                writes.append((1, sb + bytes(gd)))
        else:
            writes.append((geo.gstart(g), sb + bytes(bs - len(sb)) + bytes(gd)))
    BlockSink(out, bs).write_all(writes)


def copy_data(out: ImageFile, params: FsParams, inos: list[Ino], bs: int, stop=None) -> None:
    """Each file's data segments to the blocks its extents give them (until stop is set), on
    two threads unless one was asked for (image.for_each_in_order: the same bytes)."""
    files = [r for r in inos if r.kind is Kind.FILE and r.segs]
    tally = Tally(params.report, sum(r.node.size for r in files))

    def copy_one(r: Ino) -> None:
        tally.add(r.node.size)
        fd = os.open(r.node.source.path, os.O_RDONLY)
        try:
            ext = r.extents
            ei = 0
            for foff, ln, soff in r.segs:
                end = foff + ln
                # skip extents wholly before this segment
                while ei < len(ext) and (ext[ei][0] + ext[ei][1]) * bs <= foff:
                    ei += 1
                j = ei
                while j < len(ext) and ext[j][0] * bs < end:
                    l, n, p = ext[j]
                    lo = max(foff, l * bs)
                    hi = min(end, (l + n) * bs)
                    if lo < hi:
                        out.copy_from(fd, soff + lo - foff, hi - lo, p * bs + lo - l * bs, stop)
                    j += 1
        finally:
            os.close(fd)

    for_each_in_order(files, copy_one, stop, min(2, params.thread_count()))


def fill_holes(out: ImageFile, size: int) -> None:
    """Write zeros over every hole of the first `size` bytes of the image (`sparse = false`)."""
    pos = 0
    for start, n in data_extents(out.fd, size, out.base):
        if start > pos:
            write_zeros(out, pos, start - pos)
        pos = start + n
    if pos < size:
        write_zeros(out, pos, size - pos)
