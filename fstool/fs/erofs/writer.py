"""EROFS writer: plan every inode, write the data, then place and write the metadata.

Image layout: block 0 holds the superblock, the compression configurations and the root
inode (its nid must fit the superblock's 16 bits); the shared-xattr area starts at block
1; file, symlink and directory data follow in tree order; the metadata area (every other
inode with its xattrs, chunk map, compression indexes and inline tail) comes last, so
each inode's layout is settled before it is placed. meta_blkaddr is 0: a nid is the
byte offset of an inode divided by 32.

Phases:
1. `_plan_inodes`: one `Ino` per distinct node (hardlinks share one), in tree-walk order.
   Each gets its xattr body (a name/value pair found on more than `xattr_tolerance`
   inodes is shared, as mkfs.erofs decides), its size, the directory blocks (name-sorted,
   `.` and `..` included) and its data layout: CHUNK_BASED (a block map with null chunks)
   for files with holes when that costs less, FLAT_INLINE when the tail fits in one block
   with the inode, FLAT_PLAIN otherwise; files to compress are settled in phase 2.
2. `_DataWriter`: data blocks in tree order. File data moves extent by extent with
   `ImageFile.copy_from` (holes stay holes); compressed files go through a thread pool in
   segments (`compress.py`) whose results are written in submission order. A compressed
   file that saves nothing is rewound and written flat, as mkfs.erofs does.
3. `_Placer`: inodes go into 32-byte slots, best fit into partly used blocks, so that
   an inode and its inline data never cross a block boundary.
4. Directory blocks (which name nids), the metadata area, then block 0 with the
   superblock's crc32c.

Compact (32-byte) inodes are used exactly where mkfs.erofs uses them: ids and link
counts fit in 16 bits, the size in 32 bits, and the mtime equals the build time.
Nothing is random and nothing depends on the clock or thread timing.
"""
from __future__ import annotations

import heapq
from bisect import bisect_left
import os
import struct
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from ...errors import CapacityError
from ...ids import derive_uuid, parse_uuid
from ...image import ImageFile, in_background, write_zeros
from ...sizes import format_size
from ...tree import FileSource, Kind, Node, Tree, encode_name
from ...zeros import content_segments, scan_ahead
from ..base import FsParams
from .compress import ALG_ID, LZMA_DICT, MAX_EXTENT, SEGMENT
from .format import (
    COMPAT_MTIME, COMPAT_SB_CHKSUM, DIRENT, FT_BLK, FT_CHR, FT_DIR, FT_FIFO, FT_REG, FT_SOCK, FT_SYMLINK,
    INCOMPAT_CHUNKED_FILE, INCOMPAT_COMPR_CFGS, INCOMPAT_FRAGMENTS, INCOMPAT_LZ4_0PADDING, INCOMPAT_ZTAILPACKING,
    INODE_COMPACT, INODE_EXTENDED, INODE_SLOT, LAYOUT_CHUNK_BASED, LAYOUT_COMPRESSED_COMPACT, LAYOUT_COMPRESSED_FULL,
    LAYOUT_FLAT_INLINE, LAYOUT_FLAT_PLAIN, MAGIC, NULL_ADDR, SB_OFFSET, SUPERBLOCK, XATTR_IBODY_HEADER,
    Z_ADVISE_BIG_PCLUSTER_1, Z_ADVISE_BIG_PCLUSTER_2, Z_ADVISE_COMPACTED_2B, Z_ADVISE_FRAGMENT_PCLUSTER,
    Z_ADVISE_INLINE_PCLUSTER,
    Z_ALG_DEFLATE, Z_ALG_LZ4, Z_ALG_LZMA, Z_LCLUSTER_HEAD1, Z_LCLUSTER_INDEX, Z_LCLUSTER_NONHEAD,
    Z_LCLUSTER_PLAIN, Z_LI_D0_CBLKCNT, Z_MAP_HEADER, compact_layout, compact_nblk, encode_rdev, sb_checksum,
    xattr_entry, xattr_split,
)
from .fragments import FRAGMENT, Packer, fragment_of, is_whole_fragment, map_header, whole_header
from .options import BLOCK_SIZE, Options, parse_options

FILE_TYPE = {Kind.FILE: FT_REG, Kind.DIR: FT_DIR, Kind.CHR: FT_CHR, Kind.BLK: FT_BLK, Kind.FIFO: FT_FIFO,
             Kind.SOCK: FT_SOCK, Kind.SYMLINK: FT_SYMLINK}
U16 = 0xFFFF
U32 = 0xFFFFFFFF


@dataclass(eq=False, slots=True)
class Ino:
    """One inode being planned. Its sequences start as one shared empty tuple and are
    replaced (lists) only for the inodes that have them: an empty file owns none."""

    node: Node
    nlink: int
    uid: int
    gid: int
    size: int = 0
    extended: bool = False
    layout: int = LAYOUT_FLAT_PLAIN
    compress: bool = False  # a compression candidate (its layout is settled once compressed)
    xattr_body: bytes = b""
    tail: int = 0  # bytes of inline tail data (FLAT_INLINE)
    nblocks: int = 0  # data blocks (FLAT: contiguous; CHUNK: allocated chunks' blocks)
    chunkbits: int = 0  # CHUNK_BASED: chunk size = block << chunkbits
    chunks: list | tuple = ()  # CHUNK_BASED: [(chunk number, blocks)] of data chunks
    nchunks: int = 0
    # DIR: (names, Inos), two parallel lists (no tuple per entry), sorted by name, with . and ..
    dirents: tuple = ()
    dirblocks: list | tuple = ()  # DIR: [(first, end) index ranges into dirents]
    nid: int = 0
    startblk: int = NULL_ADDR
    chunk_addrs: list | tuple = ()
    extents: list | tuple = ()  # compressed: [(length, raw, blkaddr, blocks)]
    zblocks: int = 0  # compressed: blocks used by its pclusters
    segs: list | None = None  # FILE: the source's data segments, looked up once
    idata: bytes = b""  # compressed with ztailpacking: the tail pcluster kept in the inode
    dup_of: "Ino | None" = None  # dedupe: an earlier file with the same bytes, whose data this one shares
    idata_raw: bool = False

    def data_segments(self, fd: int = -1) -> list:
        if self.segs is None:  # zero blocks are holes (fd: the file, already open)
            self.segs = content_segments(self.node.source, BLOCK_SIZE, fd)
        return self.segs

    def read(self, off: int, n: int) -> bytes:
        """Bytes [off, off + n) of the file, holes and the part past its end as zeros."""
        data = self.node.source.read(off, n)
        return data + bytes(n - len(data))

    @property
    def isize(self) -> int:
        return 64 if self.extended else 32

    def meta_size(self, bs: int = BLOCK_SIZE) -> int:
        """Bytes in the metadata area: inode, xattrs, then a chunk block map, compression
        indexes (map header at an 8-byte boundary, 8 reserved bytes, one index per lcluster)
        or the inline tail."""
        n = self.isize + len(self.xattr_body)
        if self.layout == LAYOUT_CHUNK_BASED:
            n += 4 * self.nchunks
        elif self.layout == LAYOUT_COMPRESSED_FULL:  # (a file whole in the packed inode has no indexes)
            n = -(-n // 8) * 8 + Z_MAP_HEADER.size + 8 + (
                0 if is_whole_fragment(self) else Z_LCLUSTER_INDEX.size * -(-self.size // bs))
        elif self.layout == LAYOUT_COMPRESSED_COMPACT:
            n = -(-n // 8) * 8 + Z_MAP_HEADER.size
            first, two, last = compact_layout(n, -(-self.size // bs))  # inodes start 32-aligned
            n += 4 * first + 2 * two + 8 * -(-last // 2)
        return n + self.tail + len(self.idata)

    def flat_layout(self, inline: bool, bs: int) -> None:
        tail = self.size % bs
        if tail and inline and self.isize + len(self.xattr_body) + tail <= bs:
            self.layout, self.tail, self.nblocks = LAYOUT_FLAT_INLINE, tail, self.size // bs
        else:
            self.layout, self.tail, self.nblocks = LAYOUT_FLAT_PLAIN, 0, -(-self.size // bs)


def _xattr_items(node: Node, where: str) -> list[tuple[int, bytes, bytes]]:
    items = []
    for name, value in node.xattrs.items():
        split = xattr_split(name)
        if split is None:
            raise CapacityError(f"xattr {name!r} has a name prefix erofs cannot store (user., trusted., "
                                "security., lustre. and the POSIX ACLs)", where=where)
        if len(value) > U16:
            raise CapacityError(f"xattr {name!r} value of {len(value)} bytes is over 65535", where=where)
        items.append((split[0], split[1], bytes(value)))
    return sorted(items)


def _dir_blocks(names: list[bytes], bs: int) -> tuple[list[tuple[int, int]], int]:
    """Cut sorted dirents into blocks; return the index ranges and the directory's i_size."""
    blocks = []
    first, used = 0, 0
    for i, name in enumerate(names):
        need = DIRENT.size + len(name)
        if used + need > bs:
            blocks.append((first, i))
            first, used = i, 0
        used += need
    blocks.append((first, len(names)))
    return blocks, (len(blocks) - 1) * bs + used


def _choose_chunks(segments, size: int, bs: int) -> tuple[int, list[tuple[int, int]], int] | None:
    """For a file with holes: (chunkbits, [(chunk number, blocks)], cost in bytes) of the chunk size
    that stores it in the fewest bytes (block map plus data blocks), or None if no hole is big enough."""
    best = None
    for bits in range(0, 21):
        csize = bs << bits
        nchunks = -(-size // csize)
        if nchunks * 4 > size:  # a block map larger than the file itself never pays
            continue
        used = []
        for foff, length, _ in segments:
            lo, hi = foff // csize, (foff + length - 1) // csize
            if used and used[-1] >= lo:
                lo = used[-1] + 1
            used.extend(range(lo, hi + 1))
        chunks = [(c, -(-min(csize, size - c * csize) // bs)) for c in used]
        cost = nchunks * 4 + bs * sum(n for _, n in chunks)
        if best is None or cost < best[2]:
            best = (bits, chunks, cost)
        if nchunks == 1:
            break
    return best


def _plan_inodes(tree: Tree, params: FsParams, opts: Options, bs: int) -> tuple[list[Ino], bytes]:
    inos: dict[Node, Ino] = {}  # keyed by node (identity): no id() int per entry
    order: list[Ino] = []
    paths: dict[Node, str] = {}  # for error messages: only the nodes with xattrs
    for path, node in tree.walk():
        if node in inos:
            continue
        ino = Ino(node, tree.nlink(node), node.uid, node.gid)
        inos[node] = ino
        if node.xattrs:
            paths[node] = path
        order.append(ino)

    # shared xattrs: pairs found on more than xattr_tolerance inodes
    counts: dict[tuple[int, bytes, bytes], int] = {}
    items_of: dict[Ino, list] = {}
    for ino in order:
        if not ino.node.xattrs:
            continue
        items = items_of[ino] = _xattr_items(ino.node, paths[ino.node])
        for it in items:
            counts[it] = counts.get(it, 0) + 1
    shared_ids: dict[tuple, int] = {}
    shared_blob = bytearray()
    if opts.xattr_tolerance >= 0:
        for it in sorted(k for k, c in counts.items() if c > opts.xattr_tolerance):
            shared_ids[it] = len(shared_blob) // 4
            shared_blob += xattr_entry(*it)

    build = params.timestamp
    # the zero blocks of files that may go chunk-based are found by a second thread as well
    scanned = (i.node.source for i in order if i.node.kind is Kind.FILE and i.node.size > bs) \
        if opts.chunked_sparse else ()
    with scan_ahead(scanned, bs):
        for ino in order:
            node = ino.node
            items = items_of.get(ino)
            if items:
                shared = [shared_ids[it] for it in items if it in shared_ids][:255]
                inline = b"".join(xattr_entry(*it) for it in items if it not in shared_ids or
                                  shared_ids[it] not in shared)
                body = XATTR_IBODY_HEADER.pack(shared_count=len(shared)) + b"".join(
                    s.to_bytes(4, "little") for s in shared) + inline
                if (len(body) - XATTR_IBODY_HEADER.size) // 4 + 1 > U16:
                    raise CapacityError("xattrs too large for one erofs inode", where=paths[node])
                ino.xattr_body = body
            if node.kind is Kind.DIR:
                children = node.sorted_children()
                ents = [(b".", ino), (b"..", None)] + [(encode_name(n), inos[c]) for n, c in children]
                ents.sort(key=lambda e: e[0])
                names = [e[0] for e in ents]
                ino.dirents = (names, [e[1] for e in ents])
                ino.dirblocks, ino.size = _dir_blocks(names, bs)
            elif node.kind is Kind.FILE or node.kind is Kind.SYMLINK:
                ino.size = node.size
            mtime_ok = opts.ignore_mtime or (node.mtime == build and node.mtime_ns == 0)
            ino.extended = not (ino.size <= U32 and ino.uid <= U16 and ino.gid <= U16 and ino.nlink <= U16
                                and mtime_ok)
            # data layout
            if node.kind is Kind.FILE and opts.chunked_sparse and ino.size > bs:
                segs = ino.data_segments()
                data = sum(n for _, n, _ in segs)
                # holes are zero blocks (fstool.zeros): compressed, a few of them cost next to
                # nothing, so a file goes chunk-based then only when they are at least half of it
                if data < ino.size and (opts.compression == "none" or 2 * data <= ino.size):
                    best = _choose_chunks(segs, ino.size, bs)
                    if best is not None and best[2] < -(-ino.size // bs) * bs:
                        ino.layout = LAYOUT_CHUNK_BASED
                        ino.chunkbits, ino.chunks, _ = best
                        ino.nchunks = -(-ino.size // (bs << ino.chunkbits))
                        ino.nblocks = sum(n for _, n in ino.chunks)
                        continue
            if node.kind is Kind.FILE and opts.compression != "none" and (
                    ino.size > bs or ((opts.ztailpacking or opts.fragments) and ino.size)):
                ino.compress = True  # settled in the data pass: compressed, or flat if that saves nothing
            elif node.kind in (Kind.FILE, Kind.DIR, Kind.SYMLINK) and ino.size:
                ino.flat_layout(opts.inline_data or node.kind is not Kind.FILE, bs)
    if opts.dedupe:
        _find_duplicates(order, bs)
    # ".." of each directory: its parent (the root's is itself)
    root = inos[tree.root]
    _set_dotdot(root, root)
    for ino in order:
        if ino.node.kind is Kind.DIR:
            for name, child in zip(*ino.dirents):
                if child is not None and child.node.kind is Kind.DIR and name not in (b".", b".."):
                    _set_dotdot(child, ino)
    return order, bytes(shared_blob)


def _set_dotdot(d: Ino, parent: Ino) -> None:
    names, kids = d.dirents
    i = bisect_left(names, b"..")  # the names are sorted and ".." is among them once
    kids[i] = parent


def _find_duplicates(order: list[Ino], bs: int) -> None:
    """Mark files whose bytes equal an earlier file's (same size, then same SHA-256; only
    files sharing a size are read)."""
    import hashlib

    by_size: dict[int, list[Ino]] = {}
    for ino in order:
        if ino.node.kind is Kind.FILE and ino.size and ino.layout != LAYOUT_CHUNK_BASED:
            by_size.setdefault(ino.size, []).append(ino)
    for group in by_size.values():
        if len(group) < 2:
            continue
        first: dict[tuple, Ino] = {}
        for ino in group:
            h = hashlib.sha256()
            for off in range(0, ino.size, 1 << 20):
                h.update(ino.read(off, min(1 << 20, ino.size - off)))
            key = h.digest()
            if key in first:
                ino.dup_of = first[key]
            else:
                first[key] = ino


class _Placer:
    """Best-fit placement of inode records into metadata blocks (32-byte slots)."""

    def __init__(self, bs: int, start: int):
        self.bs = bs
        self.end = start  # first free byte after everything placed
        self.units = bs // INODE_SLOT
        self.buckets: list[list[tuple[int, int]]] = [[] for _ in range(self.units + 1)]  # free units -> heap
        self.free: dict[int, int] = {}  # block -> offset of its free space
        self.last = start  # end of the last byte placed
        self._open(start)

    def _open(self, pos: int) -> None:
        blk = pos // self.bs
        left = (self.bs - pos % self.bs) // INODE_SLOT if pos % self.bs else 0
        if left:
            self.free[blk] = pos
            heapq.heappush(self.buckets[left], (blk, pos))

    def jump(self, pos: int) -> None:
        """Continue in fresh blocks from pos (space left in earlier blocks stays usable)."""
        self.end = max(self.end, pos)

    def place(self, size: int) -> int:
        pos = self._place(size)
        self.last = max(self.last, pos + size)
        return pos

    def _place(self, size: int) -> int:
        units = -(-size // INODE_SLOT)
        if units <= self.units:
            for k in range(units, self.units + 1):
                heap = self.buckets[k]
                while heap:
                    blk, pos = heapq.heappop(heap)
                    if self.free.get(blk) != pos:
                        continue  # stale
                    del self.free[blk]
                    new = pos + units * INODE_SLOT
                    if new % self.bs:
                        self._open(new)
                    if new > self.end:
                        self.end = new
                    return pos
            pos = -(-self.end // self.bs) * self.bs
        else:
            pos = -(-self.end // INODE_SLOT) * INODE_SLOT
            if self.end % self.bs:
                self.free.pop(self.end // self.bs, None)
        self.end = pos + units * INODE_SLOT
        self._open(self.end)
        return pos


def _dir_block_bytes(ino: Ino, first: int, end: int, bs: int) -> bytes:
    all_names, kids = ino.dirents
    ents = list(zip(all_names[first:end], kids[first:end]))
    off = DIRENT.size * len(ents)
    heads, names = bytearray(), bytearray()
    for name, child in ents:
        heads += DIRENT.pack(nid=child.nid, nameoff=off + len(names), file_type=FILE_TYPE[child.node.kind])
        names += name
    return bytes(heads + names)


class _DataWriter:
    """Places file and directory data from block `blk` on, in submission order.

    Compression segments run in a thread pool; every other step (flat files, chunks,
    directory block reservations) waits in the same queue, so block addresses follow the
    tree order whatever the threads do. A compressed file that saves no block is rewound
    and written flat (as mkfs.erofs does); `hwm` remembers how far the image was ever
    written, so bytes a rewind leaves behind are zeroed before they could be read.
    """

    def __init__(self, out: ImageFile, bs: int, blk: int, opts: Options, threads: int, report, cache=None):
        self.out, self.bs, self.blk, self.opts = out, bs, blk, opts
        self.hwm = blk * bs
        self.codec = None
        self.pool = None
        self.cache = cache  # fstool.cache.BlockCache: segments' extents reused, never other bytes
        self.namespace = None
        if opts.compression != "none":
            from .compress import Codec, cache_namespace
            self.codec = Codec(opts.compression, opts.compression_level)
            if cache is not None:
                self.namespace = cache_namespace(self.codec, opts.pcluster_size, bs)
            if threads > 1:
                self.pool = ThreadPoolExecutor(threads)
        self.window = max(2, 2 * threads)
        self.queue: deque = deque()
        self.report = report
        self.done = 0
        self.jobs: list[tuple[Ino, int, int]] = []  # flat files to copy: (inode, bytes, image offset)
        self.packer: Packer | None = None  # fragments: where file tails go (fragments.py)
        self.packed: Ino | None = None  # the packed inode itself, once its data is queued

    def _fragmented(self, ino: Ino) -> bool:
        """Does this file's tail go to the packed inode? (Not the packed inode's own.)"""
        return self.packer is not None and ino is not self.packed

    # -- queueing -------------------------------------------------------------------
    def add(self, ino: Ino) -> None:
        if ino.compress and ino.dup_of is None:
            from .compress import cached_compress_segment
            cache, ns = self.cache, self.namespace
            for off in range(0, ino.size, SEGMENT):
                n = min(SEGMENT, ino.size - off)
                seg = ino.read(off, n)
                frag = off + n == ino.size and self._fragmented(ino)
                tail = self.opts.ztailpacking and off + n == ino.size and not frag
                if self.pool is not None:
                    fut = self.pool.submit(cached_compress_segment, cache, ns, self.codec, seg,
                                           self.opts.pcluster_size, self.bs, tail, frag)
                else:
                    fut = cached_compress_segment(cache, ns, self.codec, seg, self.opts.pcluster_size,
                                                  self.bs, tail, frag)
                self.queue.append((ino, off, fut))
                self._drain(self.window)
        else:
            self.queue.append((ino, None, None))
            self._drain(self.window)

    def finish(self) -> int:
        self._drain(0)
        if self.pool is not None:
            self.pool.shutdown()
        return self.blk

    def _drain(self, keep: int) -> None:
        while len(self.queue) > keep:
            ino, off, fut = self.queue.popleft()
            if off is None:
                self._place(ino)
            else:
                self._zsegment(ino, off, fut if isinstance(fut, list) else fut.result())

    # -- writing ----------------------------------------------------------------------
    def _write(self, data: bytes, pos: int) -> None:
        self.out.pwrite(data, pos)
        self.hwm = max(self.hwm, pos + len(data))

    def _clean(self, pos: int, end: int) -> None:
        """Zero [pos, end) where an earlier rewind may have left bytes."""
        if pos < self.hwm:
            write_zeros(self.out, pos, min(end, self.hwm) - pos)

    def _share(self, ino: Ino) -> bool:
        """dedupe: take the data of the earlier identical file where the layouts allow."""
        orig, bs = ino.dup_of, self.bs
        if ino.compress:
            if orig.layout in (LAYOUT_COMPRESSED_FULL, LAYOUT_COMPRESSED_COMPACT):
                ino.layout, ino.extents, ino.zblocks = orig.layout, orig.extents, orig.zblocks
                ino.idata, ino.idata_raw = orig.idata, orig.idata_raw
                if ino.idata and ino.meta_size() > bs:
                    # the inline tail does not fit beside this inode's own xattrs: a block of its own
                    data = ino.idata
                    payload = data + bytes(bs - len(data)) if ino.idata_raw else bytes(bs - len(data)) + data
                    self._clean(self.blk * bs, (self.blk + 1) * bs)
                    self._write(payload, self.blk * bs)
                    length, raw, _a, _b = orig.extents[-1]
                    ino.extents = orig.extents[:-1] + [(length, raw, self.blk, 1)]
                    ino.zblocks, ino.idata = orig.zblocks + 1, b""
                    self.blk += 1
                return True
            ino.compress = False
            ino.flat_layout(self.opts.inline_data, bs)
        if ino.layout in (LAYOUT_FLAT_PLAIN, LAYOUT_FLAT_INLINE) and 0 < ino.nblocks <= orig.nblocks and \
                orig.layout in (LAYOUT_FLAT_PLAIN, LAYOUT_FLAT_INLINE):
            ino.startblk = orig.startblk
            return True
        if ino.compress:  # cannot happen: a compressed original is shared whole
            raise AssertionError("unshared compressed duplicate")
        return False

    def _place(self, ino: Ino) -> None:
        bs = self.bs
        node = ino.node
        if ino.dup_of is not None and self._share(ino):
            self.done += ino.size
            self.report(self.done)
            return
        if ino.layout == LAYOUT_CHUNK_BASED:
            ino.chunk_addrs = []
            for _c, n in ino.chunks:
                ino.chunk_addrs.append(self.blk)
                self._clean(self.blk * bs, (self.blk + n) * bs)
                self.blk += n
            csize = bs << ino.chunkbits
            base = {c: addr * bs for (c, _n), addr in zip(ino.chunks, ino.chunk_addrs)}
            ranges = []
            for foff, length, soff in ino.data_segments():
                while length:
                    c = foff // csize
                    n = min(length, (c + 1) * csize - foff)
                    ranges.append((soff, n, base[c] + foff - c * csize))
                    foff, soff, length = foff + n, soff + n, length - n
            fd = os.open(node.source.path, os.O_RDONLY)
            try:
                self._copy(fd, ranges)
            finally:
                os.close(fd)
        elif ino.nblocks:
            ino.startblk = self.blk
            self.blk += ino.nblocks
            start, end = ino.startblk * bs, self.blk * bs
            self._clean(start, end)
            if node.kind is Kind.FILE:
                limit = ino.size - ino.tail
                # copied later, on a second thread, while the metadata is encoded (run_jobs);
                # the blocks are this file's alone, so the bytes are the same as copying now
                self.jobs.append((ino, limit, start))
                self.hwm = max(self.hwm, start + limit)
                if ino.layout == LAYOUT_FLAT_PLAIN and ino.size % bs:
                    self._write(bytes(-ino.size % bs), start + ino.size)  # the last block's slack reads as zeros
            elif node.kind is Kind.SYMLINK:
                target = encode_name(node.target or "")
                self._write(target + bytes(-len(target) % bs), start)
            # directory blocks are written once nids are known
        if node.kind is Kind.FILE:
            self.done += ino.size
            self.report(self.done)

    def run_jobs(self, stop) -> None:
        """Copy the flat files' blocks placed by _place (until stop is set): one open per file
        for its zero-block scan and its copy."""
        for ino, limit, start in self.jobs:
            if stop.is_set():
                return
            fd = os.open(ino.node.source.path, os.O_RDONLY)
            try:
                for foff, length, soff in ino.data_segments(fd):
                    if foff < limit:
                        self.out.copy_from(fd, soff, min(length, limit - foff), start + foff, stop)
            finally:
                os.close(fd)

    def _copy(self, fd: int, ranges) -> None:
        for soff, n, dst in ranges:
            self.out.copy_from(fd, soff, n, dst)
            self.hwm = max(self.hwm, dst + n)

    def _zsegment(self, ino: Ino, off: int, extents) -> None:
        bs = self.bs
        if off == 0:
            ino.startblk = self.blk  # where a rewind goes back to
            ino.extents = []
        for length, raw, payload, inline in extents:
            if inline and self._fragmented(ino):
                # fragments: the remainder goes to the packed inode, no blocks here
                offset = self.packer.add(payload, off == 0 and length == ino.size, ino.node.where())
                ino.extents.append((length, False, offset, FRAGMENT))
                continue
            if inline:
                # ztailpacking: the tail pcluster follows the indexes in the inode's block if
                # the whole record fits one block; otherwise it takes a block like the others
                ino.layout = LAYOUT_COMPRESSED_FULL if self.opts.legacy_compress else LAYOUT_COMPRESSED_COMPACT
                ino.idata = payload
                if ino.meta_size() <= bs:
                    ino.extents.append((length, raw, self.blk, 1))
                    ino.idata_raw = raw
                    continue
                ino.idata = b""
                payload = payload + bytes(bs - len(payload)) if raw else bytes(bs - len(payload)) + payload
            blocks = len(payload) // bs
            self._write(payload, self.blk * bs)
            ino.extents.append((length, raw, self.blk, blocks))
            ino.zblocks += blocks
            self.blk += blocks
        if off + SEGMENT < ino.size:
            return
        # the whole file is in: keep it compressed only if that saves a block (or, with
        # ztailpacking, space in the inode's block) and something was compressed at all
        saved = ino.zblocks < -(-ino.size // bs) if not ino.idata or ino.idata_raw else True
        # (a tail in the packed inode always stays: its block is saved, as mkfs.erofs keeps it)
        if fragment_of(ino) is None and (not saved or all(raw for _l, raw, _a, _b in ino.extents)):
            self.blk = ino.startblk
            ino.extents, ino.zblocks, ino.compress, ino.idata = [], 0, False, b""
            ino.flat_layout(self.opts.inline_data, bs)
            self._place(ino)
            return
        # a file whole in the packed inode has the full-index layout (and no indexes), as mkfs.erofs
        full = self.opts.legacy_compress or is_whole_fragment(ino)
        ino.layout = LAYOUT_COMPRESSED_FULL if full else LAYOUT_COMPRESSED_COMPACT
        self.done += ino.size
        self.report(self.done)


def _z_entries(ino: Ino, bs: int, big: bool) -> list[tuple[int, int, int, bool]]:
    """One (type, value, block address, real head?) per lcluster, as the kernel walks them:
    HEAD/PLAIN where an extent starts (value: the offset it starts at), NONHEAD for the
    lclusters it covers after that (value: delta[0] | delta[1] << 16, the distances back to
    its head and on to the next one; the first NONHEAD of a big pcluster carries its block
    count instead of delta[0]). A last PLAIN index with address 0 marks the end of the file
    inside its lcluster. A fragment (the last extent, in the packed inode) is a HEAD1 with no
    pcluster: address and block count 0, never a real head (the kernel reads neither)."""
    out = []
    clusterofs = 0
    for length, raw, blkaddr, blocks in ino.extents:
        real = blocks != FRAGMENT
        if not real:
            blkaddr, blocks, raw = 0, 0, False
        head = Z_LCLUSTER_PLAIN if raw else Z_LCLUSTER_HEAD1
        d1 = (clusterofs + length) // bs
        if d1 == 0:  # the file's last extent, ending inside its lcluster
            out.append((head, clusterofs, blkaddr, real))
            clusterofs = 0
            continue
        d0 = 0
        count = length
        while True:
            if d0 == 0:
                out.append((head, clusterofs, blkaddr, real))
            else:
                delta0 = (blocks | Z_LI_D0_CBLKCNT) if d0 == 1 and big else min(d0, Z_LI_D0_CBLKCNT - 1)
                out.append((Z_LCLUSTER_NONHEAD, delta0 | (d1 << 16), 0, False))
            count -= bs - clusterofs
            clusterofs = 0
            d0 += 1
            d1 -= 1
            if count < bs:
                break
        clusterofs = count
    if clusterofs:
        out.append((Z_LCLUSTER_PLAIN, clusterofs, 0, False))
    assert len(out) == -(-ino.size // bs), (len(out), ino.size)
    return out


def _z_full(entries) -> bytes:
    """Full indexes: 8 bytes per lcluster."""
    return b"".join(Z_LCLUSTER_INDEX.pack(advise=t, u=v) if t == Z_LCLUSTER_NONHEAD else
                    Z_LCLUSTER_INDEX.pack(advise=t, clusterofs=v, u=a) for t, v, a, _real in entries)


def _z_compact(entries, ebase: int, big: bool, lcbits: int) -> bytes:
    """Compact indexes (mkfs.erofs's default): units of 2 lclusters in 8 bytes or 16 in 32
    bytes, each value `type << lclusterbits | offset` in 16 or 14 bits, the unit's base block
    address in its last 4 bytes; the kernel recounts each head's address from that base
    (`compact_nblk`), so the base is chosen to make the first head come out right."""
    first, two, last = compact_layout(ebase, len(entries))
    out = bytearray()
    k = 0
    running = next((a for t, v, a, real in entries if real), 0)
    for vcnt, count in ((2, first), (16, two), (2, last)):
        unit_bytes = 8 if vcnt == 2 else 32
        encodebits = (unit_bytes * 8 - 32) // vcnt
        for _u in range(-(-count // vcnt)):
            unit = entries[k:k + min(vcnt, count)]
            k += len(unit)
            count -= len(unit)
            vals = []
            for i, (t, v, _a, _real) in enumerate(unit):
                if t == Z_LCLUSTER_NONHEAD:
                    d0, d1 = v & 0xFFFF, v >> 16
                    lo = d0 if d0 & Z_LI_D0_CBLKCNT or i + 1 != vcnt else d1
                else:
                    lo = v
                vals.append((t, lo))
            vals += [(Z_LCLUSTER_PLAIN, 0)] * (vcnt - len(vals))
            heads = [(i, a) for i, (t, v, a, real) in enumerate(unit) if real]
            base = running if not heads else heads[0][1] - compact_nblk(vals, heads[0][0], big)
            for i, a in heads:
                assert base + compact_nblk(vals, i, big) == a, "compact index base does not fit"
            if heads:
                running = heads[-1][1]
            bits = 0
            for i, (t, lo) in enumerate(vals):
                bits |= ((t << lcbits) | lo) << (encodebits * i)
            out += bits.to_bytes(unit_bytes - 4, "little") + struct.pack("<I", base & 0xFFFFFFFF)
    return bytes(out)


def _compr_cfgs(opts: Options, bs: int) -> tuple[int, int, bytes]:
    """(incompat features, superblock u1, configuration records after the superblock)."""
    if opts.compression == "none":
        return 0, 0, b""
    alg = ALG_ID[opts.compression]
    incompat = INCOMPAT_LZ4_0PADDING
    if alg == Z_ALG_LZ4 and opts.pcluster_size == bs:
        return incompat, 0, b""  # u1 is lz4_max_distance then (0: the default 64 KiB)
    if alg == Z_ALG_LZ4:
        rec = struct.pack("<HH10s", 0, opts.pcluster_size // bs, bytes(10))
    elif alg == Z_ALG_LZMA:
        rec = struct.pack("<IH8s", LZMA_DICT, 0, bytes(8))
    elif alg == Z_ALG_DEFLATE:
        rec = struct.pack("<B5s", 15, bytes(5))
    else:
        rec = struct.pack("<BB4s", 0, MAX_EXTENT.bit_length() - 1 - 10, bytes(4))
    blob = struct.pack("<H", len(rec)) + rec
    return incompat | INCOMPAT_COMPR_CFGS, 1 << alg, blob + bytes(-len(blob) % 4)


def write(tree: Tree, out: ImageFile, params: FsParams) -> int:
    opts = params.opts if params.opts is not None else parse_options(params)
    packer = Packer() if opts.fragments else None  # fragments: the packed inode's bytes, until the end
    try:
        return _write(tree, out, params, opts, packer)
    finally:
        if packer is not None:
            packer.close()


def _write(tree: Tree, out: ImageFile, params: FsParams, opts: Options, packer: Packer | None) -> int:
    bs = BLOCK_SIZE
    order, shared_xattrs = _plan_inodes(tree, params, opts, bs)
    root = order[0]
    incompat, u1, cfgs = _compr_cfgs(opts, bs)
    big = opts.compression != "none" and opts.pcluster_size > bs

    # the root's nid must fit 16 bits: it goes into block 0, after the superblock and the
    # compression configurations; a root whose listing does not fit there keeps it in blocks
    meta_start = -(-(SB_OFFSET + SUPERBLOCK.size + len(cfgs)) // INODE_SLOT) * INODE_SLOT
    if root.layout == LAYOUT_FLAT_INLINE and meta_start + root.meta_size() > bs:
        root.layout, root.tail, root.nblocks = LAYOUT_FLAT_PLAIN, 0, -(-root.size // bs)
    if meta_start + root.meta_size() > bs:
        raise CapacityError("the root directory's inode and xattrs do not fit in the first block")

    # -- data: shared xattrs from block 1, then file, symlink and directory blocks in tree order --
    xattr_blkaddr = 1 if shared_xattrs else 0
    first = 1 + -(-len(shared_xattrs) // bs)
    dw = _DataWriter(out, bs, first, opts, params.thread_count(),
                     lambda done: params.report(min(done, total_bytes), total_bytes), params.block_cache)
    total_bytes = sum(i.size for i in order if i.node.kind is Kind.FILE)
    dw.packer = packer
    try:
        for ino in order:
            dw.add(ino)
        if packer is not None:
            _add_packed_inode(dw, order, params, opts, bs)
        data_end = dw.finish()
    finally:
        if dw.pool is not None:
            dw.pool.shutdown(cancel_futures=True)
    # every block is placed: flat files are copied on a second thread while the metadata is
    # encoded here (disjoint blocks at fixed offsets: the same bytes as in sequence)
    with in_background(dw.run_jobs):
        return _write_metadata(out, params, opts, order, shared_xattrs, dw, data_end, meta_start,
                               xattr_blkaddr, incompat, u1, cfgs, big)


def _add_packed_inode(dw: "_DataWriter", order: list, params: FsParams, opts: Options, bs: int) -> None:
    """Once every file's tail is in the packer, queue the packed inode's own data (after all
    other data, compressed like a file, ztailpacking as asked, never fragments of its own) and
    give it the last inode number. It is in no directory: only the superblock's packed_nid
    names it. Mode 0600, owned by root, as mkfs.erofs writes it."""
    dw._drain(0)  # every fragment has been appended, in tree order
    size = dw.packer.length
    if not size:
        return
    node = Node(Kind.FILE, mode=0o600, mtime=params.timestamp, source=FileSource(dw.packer.path, size),
                origin="<erofs packed inode>")
    ino = Ino(node, 1, 0, 0, size=size, extended=size > U32)
    if size > bs or opts.ztailpacking:
        ino.compress = True
    else:
        ino.flat_layout(opts.inline_data, bs)
    dw.packed = ino
    order.append(ino)
    dw.add(ino)


def _write_metadata(out: ImageFile, params: FsParams, opts: Options, order: list, shared_xattrs: bytes,
                    dw: "_DataWriter", data_end: int, meta_start: int, xattr_blkaddr: int, incompat: int,
                    u1: int, cfgs: bytes, big: bool) -> int:
    bs = BLOCK_SIZE
    root = order[0]
    if shared_xattrs:
        out.pwrite(shared_xattrs + bytes(-len(shared_xattrs) % bs), bs)

    # -- metadata: root in block 0, everything else from the end of the data, best fit --------
    placer = _Placer(bs, meta_start)
    root.nid = placer.place(root.meta_size()) // INODE_SLOT
    placer.jump(data_end * bs)
    for ino in order[1:]:
        ino.nid = placer.place(ino.meta_size()) // INODE_SLOT
    meta_base = data_end * bs
    # fsck.erofs 1.5 reads an xattr header after every inode, even one without xattrs: keep
    # 12 readable bytes after the last one
    meta_end = max(-(-(placer.last + XATTR_IBODY_HEADER.size) // bs) * bs, data_end * bs)
    used = max(meta_end, bs)
    if used // bs > U32:
        raise CapacityError(f"the erofs image needs {used // bs} blocks, over the 32-bit block address limit")
    if params.size is not None:
        total = params.size
        if total < used:
            raise CapacityError(f"the erofs image needs {format_size(used)}, more than the "
                                f"{format_size(total)} it was given")
    else:
        total = used + -(-params.headroom // bs) * bs
    total -= total % bs

    block0 = bytearray(bs)
    meta = bytearray(max(0, meta_end - meta_base))

    def put(pos: int, data: bytes) -> None:
        if pos + len(data) <= bs:
            block0[pos:pos + len(data)] = data
        else:
            meta[pos - meta_base:pos - meta_base + len(data)] = data

    build = params.timestamp
    for i, ino in enumerate(order):
        node = ino.node
        if node.kind in (Kind.CHR, Kind.BLK):
            u = encode_rdev(*node.rdev)
        elif ino.layout == LAYOUT_CHUNK_BASED:
            u = ino.chunkbits
            incompat |= INCOMPAT_CHUNKED_FILE
        elif ino.layout in (LAYOUT_COMPRESSED_FULL, LAYOUT_COMPRESSED_COMPACT):
            u = ino.zblocks
        else:
            u = ino.startblk if ino.nblocks else (NULL_ADDR if ino.layout == LAYOUT_FLAT_INLINE else 0)
        pos = ino.nid * INODE_SLOT
        fmt = (1 if ino.extended else 0) | (ino.layout << 1)
        icount = (len(ino.xattr_body) - XATTR_IBODY_HEADER.size) // 4 + 1 if ino.xattr_body else 0
        if ino.extended:
            rec = INODE_EXTENDED.pack(format=fmt, xattr_icount=icount, mode=node.st_mode, size=ino.size, u=u,
                                      ino=i + 1, uid=ino.uid, gid=ino.gid, mtime=node.mtime,
                                      mtime_nsec=node.mtime_ns, nlink=ino.nlink)
        else:
            rec = INODE_COMPACT.pack(format=fmt, xattr_icount=icount, mode=node.st_mode, nlink=ino.nlink,
                                     size=ino.size, mtime=0 if opts.ignore_mtime else node.mtime - build, u=u,
                                     ino=i + 1, uid=ino.uid, gid=ino.gid)
        rec += ino.xattr_body
        if ino.layout == LAYOUT_CHUNK_BASED:
            cmap = [NULL_ADDR] * ino.nchunks
            for (c, _n), addr in zip(ino.chunks, ino.chunk_addrs):
                cmap[c] = addr
            rec += b"".join(a.to_bytes(4, "little") for a in cmap)
        elif ino.layout in (LAYOUT_COMPRESSED_FULL, LAYOUT_COMPRESSED_COMPACT):
            rec += bytes(-len(rec) % 8)
            frag = fragment_of(ino)
            if frag is not None:
                incompat |= INCOMPAT_FRAGMENTS
            if frag is not None and frag[1]:
                rec += whole_header(frag[0])
            else:
                entries = _z_entries(ino, bs, big)
                # where the last extent is: in the inode (ztailpacking) or the packed inode
                tail = Z_ADVISE_INLINE_PCLUSTER if ino.idata else Z_ADVISE_FRAGMENT_PCLUSTER if frag else 0
                if ino.idata:
                    incompat |= INCOMPAT_ZTAILPACKING
                alg = ALG_ID[opts.compression]
                if ino.layout == LAYOUT_COMPRESSED_FULL:
                    advise = (Z_ADVISE_BIG_PCLUSTER_1 if big else 0) | tail
                    rec += map_header(advise, alg, len(ino.idata), frag) + bytes(8)
                    rec += _z_full(entries)
                else:
                    advise = Z_ADVISE_COMPACTED_2B | (Z_ADVISE_BIG_PCLUSTER_1 | Z_ADVISE_BIG_PCLUSTER_2 if big else 0)
                    rec += map_header(advise | tail, alg, len(ino.idata), frag)
                    rec += _z_compact(entries, pos + len(rec), big, bs.bit_length() - 1)
            rec += ino.idata
        if node.kind is Kind.DIR:
            for k, (lo, hi) in enumerate(ino.dirblocks):
                data = _dir_block_bytes(ino, lo, hi, bs)
                if ino.layout == LAYOUT_FLAT_INLINE and k == len(ino.dirblocks) - 1:
                    rec += data
                else:
                    out.pwrite(data + bytes(bs - len(data)), (ino.startblk + k) * bs)
        elif node.kind is Kind.SYMLINK and ino.layout == LAYOUT_FLAT_INLINE:
            rec += encode_name(node.target or "")
        elif node.kind is Kind.FILE and ino.tail:
            rec += ino.read(ino.size - ino.tail, ino.tail)
        assert len(rec) == ino.meta_size(), (len(rec), ino.meta_size())
        put(pos, rec)

    uuid = parse_uuid(params.uuid, f"{params.where}.uuid") if params.uuid else derive_uuid(params.seed, "erofs")
    label = (params.label or "").encode()
    fields = dict(magic=MAGIC, feature_compat=COMPAT_SB_CHKSUM | COMPAT_MTIME, blkszbits=bs.bit_length() - 1,
                  root_nid=root.nid, inos=len(order), epoch=build, blocks=total // bs, xattr_blkaddr=xattr_blkaddr,
                  uuid=uuid.bytes, volume_name=label, feature_incompat=incompat, u1=u1,
                  packed_nid=dw.packed.nid if dw.packed is not None else 0)
    SUPERBLOCK.pack_into(block0, SB_OFFSET, **fields)
    block0[SB_OFFSET + SUPERBLOCK.size:SB_OFFSET + SUPERBLOCK.size + len(cfgs)] = cfgs
    # the checksum covers the rest of block 0 from the superblock on, its own field zero
    crc = sb_checksum(bytes(block0[SB_OFFSET:bs]))
    SUPERBLOCK.pack_into(block0, SB_OFFSET, checksum=crc, **fields)
    out.pwrite(block0, 0)
    out.pwrite(meta, meta_base)
    if dw.hwm > meta_base + len(meta):  # bytes a rewound file left past the end
        write_zeros(out, meta_base + len(meta), dw.hwm - meta_base - len(meta))
    if total > used:
        out.pwrite(b"\0", total - 1)
    out.truncate(total)
    params.log(f"erofs: {len(order)} inodes, {format_size(used)} used, image {format_size(total)}")
    return total
