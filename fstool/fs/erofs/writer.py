"""EROFS writer: plan every inode's metadata, place it, then stream data and write metadata.

Phases, each returning a plan:
1. `_plan_inodes`: one `Ino` per distinct node (hardlinks share one), in tree-walk
   order (root first, so its nid fits the superblock's 16-bit field). Each gets its
   xattr body (shared xattrs are the name/value pairs found on more than
   `xattr_tolerance` inodes, as mkfs.erofs decides), its size, its data layout and the
   size of its inline tail: FLAT_INLINE when the tail fits in one block with the inode
   and its xattrs, FLAT_PLAIN otherwise, CHUNK_BASED (a 4-byte block map with null
   entries) for files with holes when that costs less than writing the holes out.
2. `_place`: inodes go into the metadata area at 32-byte slots, best fit into
   partly used blocks so an inode and its inline tail never cross a block boundary;
   a nid is the slot number.
3. `_assign_blocks`: data blocks (directory blocks, file blocks, chunks) after the
   metadata and the shared-xattr area, in nid order.
4. the directory blocks are built (they name nids), file data is copied extent by
   extent with `copy_file_range` (holes stay holes), metadata is written, then the
   superblock with its crc32c.

Compact (32-byte) inodes are used exactly where mkfs.erofs uses them: ids and link
counts fit in 16 bits, the size in 32 bits, and the mtime equals the build time.
Nothing is random and nothing depends on the clock or thread timing.
"""
from __future__ import annotations

import heapq
import os
from dataclasses import dataclass, field

from ...errors import CapacityError, SpecError
from ...ids import derive_uuid, parse_uuid
from ...image import ImageFile
from ...sizes import format_size
from ...tree import Kind, Node, Tree, encode_name
from ..base import FsParams, OptionReader
from .format import (
    COMPAT_SB_CHKSUM, DIRENT, FT_BLK, FT_CHR, FT_DIR, FT_FIFO, FT_REG, FT_SOCK, FT_SYMLINK,
    INCOMPAT_CHUNKED_FILE, INODE_COMPACT, INODE_EXTENDED, INODE_SLOT, LAYOUT_CHUNK_BASED,
    LAYOUT_FLAT_INLINE, LAYOUT_FLAT_PLAIN, MAGIC, NULL_ADDR, SB_OFFSET, SUPERBLOCK, XATTR_IBODY_HEADER,
    encode_rdev, sb_checksum, xattr_entry, xattr_split,
)

BLOCK_SIZE = 4096
FILE_TYPE = {Kind.FILE: FT_REG, Kind.DIR: FT_DIR, Kind.CHR: FT_CHR, Kind.BLK: FT_BLK, Kind.FIFO: FT_FIFO,
             Kind.SOCK: FT_SOCK, Kind.SYMLINK: FT_SYMLINK}
COMPRESSORS = ("none", "lz4", "lz4hc", "lzma", "deflate", "zstd")
U16 = 0xFFFF
U32 = 0xFFFFFFFF


@dataclass(frozen=True)
class Options:
    compression: str = "none"
    compression_level: int | None = None
    pcluster_size: int = BLOCK_SIZE
    all_root: bool = False
    ignore_mtime: bool = False
    inline_data: bool = True
    chunked_sparse: bool = True
    xattr_tolerance: int = 2


def parse_options(params: FsParams) -> Options:
    where = f"{params.where}.options"
    o = OptionReader(params.options, where)
    comp = o.get_str("compression", "none", choices=COMPRESSORS)
    level = o.get_int("compression_level", None, 0, 22)
    pcluster = o.get_size("pcluster_size", BLOCK_SIZE)
    opts = Options(
        compression=comp,
        compression_level=level,
        pcluster_size=pcluster,
        all_root=o.get_bool("all_root", False),
        ignore_mtime=o.get_bool("ignore_mtime", False),
        inline_data=o.get_bool("inline_data", True),
        chunked_sparse=o.get_bool("chunked_sparse", True),
        xattr_tolerance=o.get_int("xattr_tolerance", 2, -1, 1 << 30),
    )
    for key in ("dedupe", "fragments", "ztailpacking"):
        if o.get_bool(key, False):
            raise SpecError(f"{key} is not supported yet by the erofs writer", where=f"{where}.{key}")
    o.finish()
    if comp != "none":
        raise SpecError(f"erofs compression {comp!r} is not supported yet (only 'none')",
                        where=f"{where}.compression")
    if level is not None:
        raise SpecError("compression_level needs a compression", where=f"{where}.compression_level")
    if pcluster % BLOCK_SIZE or not BLOCK_SIZE <= pcluster <= 1 << 20:
        raise SpecError(f"pcluster_size must be a multiple of {BLOCK_SIZE} up to 1 MiB, got {pcluster}",
                        where=f"{where}.pcluster_size")
    bs = params.block_size or BLOCK_SIZE
    if bs != BLOCK_SIZE:
        raise SpecError(f"erofs block size must be {BLOCK_SIZE}, got {bs}", where=f"{params.where}.block_size")
    if params.label is not None and len(params.label.encode()) > 16:
        raise SpecError("an erofs volume name is at most 16 bytes", where=f"{params.where}.label")
    if params.uuid:
        parse_uuid(params.uuid, f"{params.where}.uuid")
    return opts


@dataclass(eq=False)
class Ino:
    node: Node
    nlink: int
    uid: int
    gid: int
    size: int = 0
    extended: bool = False
    layout: int = LAYOUT_FLAT_PLAIN
    xattr_body: bytes = b""
    tail: int = 0  # bytes of inline tail data (FLAT_INLINE)
    nblocks: int = 0  # data blocks (FLAT: contiguous; CHUNK: allocated chunks' blocks)
    chunkbits: int = 0  # CHUNK_BASED: chunk size = block << chunkbits
    chunks: list = field(default_factory=list)  # CHUNK_BASED: [(chunk number, blocks)] of data chunks
    nchunks: int = 0
    dirents: list = field(default_factory=list)  # DIR: [(name bytes, Ino)], sorted, with . and ..
    dirblocks: list = field(default_factory=list)  # DIR: [(first, end) index ranges into dirents]
    nid: int = 0
    startblk: int = NULL_ADDR
    chunk_addrs: list = field(default_factory=list)

    @property
    def isize(self) -> int:
        return 64 if self.extended else 32

    def meta_size(self) -> int:
        """Bytes in the metadata area: inode, xattrs, chunk block map, inline tail."""
        n = self.isize + len(self.xattr_body)
        if self.layout == LAYOUT_CHUNK_BASED:
            n += 4 * self.nchunks
        return n + self.tail


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


def _plan_inodes(tree: Tree, params: FsParams, opts: Options, bs: int) -> tuple[list[Ino], list[bytes]]:
    inos: dict[int, Ino] = {}
    order: list[Ino] = []
    paths: dict[int, str] = {}
    for path, node in tree.walk():
        if id(node) in inos:
            continue
        uid, gid = (0, 0) if opts.all_root else (node.uid, node.gid)
        ino = Ino(node, tree.nlink(node), uid, gid)
        inos[id(node)] = ino
        paths[id(node)] = path
        order.append(ino)

    # shared xattrs: pairs found on more than xattr_tolerance inodes
    counts: dict[tuple[int, bytes, bytes], int] = {}
    items_of: dict[int, list] = {}
    for ino in order:
        items = _xattr_items(ino.node, paths[id(ino.node)]) if ino.node.xattrs else []
        items_of[id(ino)] = items
        for it in items:
            counts[it] = counts.get(it, 0) + 1
    shared_ids: dict[tuple, int] = {}
    shared_blob = bytearray()
    if opts.xattr_tolerance >= 0:
        for it in sorted(k for k, c in counts.items() if c > opts.xattr_tolerance):
            shared_ids[it] = len(shared_blob) // 4
            shared_blob += xattr_entry(*it)

    build = params.timestamp
    for ino in order:
        node = ino.node
        items = items_of[id(ino)]
        if items:
            shared = [shared_ids[it] for it in items if it in shared_ids][:255]
            inline = b"".join(xattr_entry(*it) for it in items if it not in shared_ids or
                              shared_ids[it] not in shared)
            body = XATTR_IBODY_HEADER.pack(0, len(shared), bytes(7)) + b"".join(
                s.to_bytes(4, "little") for s in shared) + inline
            if (len(body) - 12) // 4 + 1 > U16:
                raise CapacityError("xattrs too large for one erofs inode", where=paths[id(node)])
            ino.xattr_body = body
        if node.kind is Kind.DIR:
            children = node.sorted_children()
            ents = [(b".", ino), (b"..", None)] + [(encode_name(n), inos[id(c)]) for n, c in children]
            ents.sort(key=lambda e: e[0])
            ino.dirents = ents
            ino.dirblocks, ino.size = _dir_blocks([e[0] for e in ents], bs)
        elif node.kind is Kind.FILE or node.kind is Kind.SYMLINK:
            ino.size = node.size
        mtime_ok = opts.ignore_mtime or (node.mtime == build and node.mtime_ns == 0)
        ino.extended = not (ino.size <= U32 and ino.uid <= U16 and ino.gid <= U16 and ino.nlink <= U16
                            and mtime_ok)
        # data layout
        if node.kind is Kind.FILE and opts.chunked_sparse and ino.size > bs:
            segs = node.source.data_segments()
            data = sum(n for _, n, _ in segs)
            if data < ino.size:
                best = _choose_chunks(segs, ino.size, bs)
                if best is not None and best[2] < -(-ino.size // bs) * bs:
                    ino.layout = LAYOUT_CHUNK_BASED
                    ino.chunkbits, ino.chunks, _ = best
                    ino.nchunks = -(-ino.size // (bs << ino.chunkbits))
                    ino.nblocks = sum(n for _, n in ino.chunks)
                    continue
        if node.kind in (Kind.FILE, Kind.DIR, Kind.SYMLINK) and ino.size:
            tail = ino.size % bs
            inline_ok = opts.inline_data or node.kind is not Kind.FILE
            if tail and inline_ok and ino.isize + len(ino.xattr_body) + tail <= bs:
                ino.layout, ino.tail, ino.nblocks = LAYOUT_FLAT_INLINE, tail, ino.size // bs
            else:
                ino.layout, ino.nblocks = LAYOUT_FLAT_PLAIN, -(-ino.size // bs)
    # ".." of each directory: its parent (the root's is itself)
    root = inos[id(tree.root)]
    root.dirents = [(n, root if i is None else i) for n, i in root.dirents]
    for ino in order:
        if ino.node.kind is Kind.DIR:
            for name, child in ino.dirents:
                if child is not None and child.node.kind is Kind.DIR and name not in (b".", b".."):
                    child.dirents = [(n, ino if i is None else i) for n, i in child.dirents]
    return order, bytes(shared_blob)


class _Placer:
    """Best-fit placement of inode records into metadata blocks (32-byte slots)."""

    def __init__(self, bs: int, start: int):
        self.bs = bs
        self.end = start  # first free byte after everything placed
        self.units = bs // INODE_SLOT
        self.buckets: list[list[tuple[int, int]]] = [[] for _ in range(self.units + 1)]  # free units -> heap
        self.free: dict[int, int] = {}  # block -> offset of its free space
        self._open(start)

    def _open(self, pos: int) -> None:
        blk = pos // self.bs
        left = (self.bs - pos % self.bs) // INODE_SLOT if pos % self.bs else 0
        if left:
            self.free[blk] = pos
            heapq.heappush(self.buckets[left], (blk, pos))

    def place(self, size: int) -> int:
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
    ents = ino.dirents[first:end]
    off = DIRENT.size * len(ents)
    heads, names = bytearray(), bytearray()
    for name, child in ents:
        heads += DIRENT.pack(child.nid, off + len(names), FILE_TYPE[child.node.kind], 0)
        names += name
    return bytes(heads + names)


def write(tree: Tree, out: ImageFile, params: FsParams) -> int:
    opts = params.opts if params.opts is not None else parse_options(params)
    bs = BLOCK_SIZE
    order, shared_xattrs = _plan_inodes(tree, params, opts, bs)

    # -- place inodes in the metadata area (meta_blkaddr 0: right after the superblock) ------------
    placer = _Placer(bs, SB_OFFSET + SUPERBLOCK.size)
    for ino in order:
        ino.nid = placer.place(ino.meta_size()) // INODE_SLOT
    root = order[0]
    if root.nid > U16:
        raise CapacityError("the root inode does not fit the superblock's 16-bit nid")
    meta_end = -(-placer.end // bs) * bs
    xattr_blkaddr = meta_end // bs if shared_xattrs else 0
    blk = (meta_end + len(shared_xattrs) + bs - 1) // bs

    # -- data blocks, in nid order ------------------------------------------------------------
    for ino in sorted(order, key=lambda i: i.nid):
        if ino.layout == LAYOUT_CHUNK_BASED:
            for _c, n in ino.chunks:
                ino.chunk_addrs.append(blk)
                blk += n
        elif ino.nblocks:
            ino.startblk = blk
            blk += ino.nblocks
    if blk > U32:
        raise CapacityError(f"the erofs image needs {blk} blocks, over the 32-bit block address limit")
    used = blk * bs
    if params.size is not None:
        total = params.size
        if total < used:
            raise CapacityError(f"the erofs image needs {format_size(used)}, more than the "
                                f"{format_size(total)} it was given")
    else:
        total = used + -(-params.headroom // bs) * bs
    total -= total % bs

    # -- metadata: inodes, xattrs, chunk maps, inline tails; directory blocks --------------------
    meta = bytearray(meta_end)
    incompat = 0
    build = params.timestamp
    for i, ino in enumerate(order):
        node = ino.node
        if node.kind in (Kind.CHR, Kind.BLK):
            u = encode_rdev(*node.rdev)
        elif ino.layout == LAYOUT_CHUNK_BASED:
            u = ino.chunkbits
            incompat |= INCOMPAT_CHUNKED_FILE
        else:
            u = ino.startblk if ino.nblocks else (NULL_ADDR if ino.layout == LAYOUT_FLAT_INLINE else 0)
        fmt = (1 if ino.extended else 0) | (ino.layout << 1)
        icount = (len(ino.xattr_body) - 12) // 4 + 1 if ino.xattr_body else 0
        mode = node.st_mode
        if ino.extended:
            rec = INODE_EXTENDED.pack(fmt, icount, mode, 0, ino.size, u, i + 1, ino.uid, ino.gid,
                                      node.mtime, node.mtime_ns, ino.nlink, bytes(16))
        else:
            rec = INODE_COMPACT.pack(fmt, icount, mode, ino.nlink, ino.size, node.mtime - build
                                     if not opts.ignore_mtime else 0, u, i + 1, ino.uid, ino.gid, 0)
        pos = ino.nid * INODE_SLOT
        rec += ino.xattr_body
        if ino.layout == LAYOUT_CHUNK_BASED:
            cmap = [NULL_ADDR] * ino.nchunks
            for (c, _n), addr in zip(ino.chunks, ino.chunk_addrs):
                cmap[c] = addr
            rec += b"".join(a.to_bytes(4, "little") for a in cmap)
        meta[pos:pos + len(rec)] = rec
        tail_pos = pos + len(rec)
        if node.kind is Kind.DIR:
            for k, (first, end) in enumerate(ino.dirblocks):
                data = _dir_block_bytes(ino, first, end, bs)
                if ino.layout == LAYOUT_FLAT_INLINE and k == len(ino.dirblocks) - 1:
                    meta[tail_pos:tail_pos + len(data)] = data
                else:
                    out.pwrite(data + bytes(bs - len(data)), (ino.startblk + k) * bs)
        elif node.kind is Kind.SYMLINK:
            target = encode_name(node.target or "")
            if ino.layout == LAYOUT_FLAT_INLINE:
                meta[tail_pos:tail_pos + len(target)] = target
            else:
                out.pwrite(target + bytes(-len(target) % bs), ino.startblk * bs)
        elif node.kind is Kind.FILE and ino.tail:
            meta[tail_pos:tail_pos + ino.tail] = node.source.read(ino.size - ino.tail, ino.tail)

    # -- file data, extent by extent (holes stay holes) -------------------------------------------
    done, total_bytes = 0, sum(i.size for i in order if i.node.kind is Kind.FILE)
    for ino in sorted(order, key=lambda i: i.nid):
        if ino.node.kind is not Kind.FILE or not ino.size:
            continue
        src = ino.node.source
        segs = src.data_segments()
        if ino.layout == LAYOUT_CHUNK_BASED:
            csize = bs << ino.chunkbits
            base = {c: addr * bs for (c, _n), addr in zip(ino.chunks, ino.chunk_addrs)}
            ranges = []
            for foff, length, soff in segs:
                while length:
                    c = foff // csize
                    n = min(length, (c + 1) * csize - foff)
                    ranges.append((soff, n, base[c] + foff - c * csize))
                    foff, soff, length = foff + n, soff + n, length - n
        else:
            limit = ino.nblocks * bs if ino.layout == LAYOUT_FLAT_PLAIN else ino.size - ino.tail
            ranges = [(soff, min(length, limit - foff), ino.startblk * bs + foff)
                      for foff, length, soff in segs if foff < limit]
        if ranges:
            fd = os.open(src.path, os.O_RDONLY)
            try:
                for soff, n, dst in ranges:
                    out.copy_from(fd, soff, n, dst)
            finally:
                os.close(fd)
        if ino.layout == LAYOUT_FLAT_PLAIN and ino.size % bs:
            end = ino.startblk * bs + ino.size
            pad = -ino.size % bs
            # the block's slack must read as zeros whatever was in the image file before
            out.pwrite(bytes(pad), end)
        done += ino.size
        params.report(done, total_bytes)

    if shared_xattrs:
        meta += shared_xattrs + bytes(-len(shared_xattrs) % bs)

    uuid = parse_uuid(params.uuid, f"{params.where}.uuid") if params.uuid else derive_uuid(params.seed, "erofs")
    label = (params.label or "").encode()
    sb = SUPERBLOCK.pack(MAGIC, 0, COMPAT_SB_CHKSUM, bs.bit_length() - 1, 0, root.nid, len(order), build, 0,
                         total // bs, 0, xattr_blkaddr, uuid.bytes, label.ljust(16, b"\0"), incompat, 0, 0, 0,
                         0, 0, 0, 0, 0, bytes(23))
    meta[SB_OFFSET:SB_OFFSET + len(sb)] = sb
    crc = sb_checksum(bytes(meta[SB_OFFSET:bs]))
    meta[SB_OFFSET + 4:SB_OFFSET + 8] = crc.to_bytes(4, "little")
    out.pwrite(meta, 0)
    if total > used:
        out.pwrite(b"\0", total - 1)
    out.truncate(total)
    params.log(f"erofs: {len(order)} inodes, {format_size(used)} used, image {format_size(total)}")
    return total
