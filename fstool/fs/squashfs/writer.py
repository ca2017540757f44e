"""SquashFS 4.0 writer: plan inode numbers, stream file data, then write the metadata.

Two passes over the tree, both in the same post-order (a directory's entries,
sorted by name bytes, then the directory), so inode numbers rise along the
inode table and the root is the last inode, as mksquashfs lays it out:

1. data: every regular file is cut into `block_size` blocks, read through
   `FileSource` (holes are never read, all-zero blocks become sparse entries),
   compressed in a thread pool and written in submission order, so the bytes
   never depend on thread timing. A file's tail shorter than a block goes into
   a shared fragment block. Identical files (same size and SHA-256) share one
   copy: a duplicate's already-written blocks are rewound over.
2. metadata: inodes, directory listings, then the fragment, export (NFS), id
   and xattr tables, and the superblock last.

Nothing is held whole: at most a window of compressed blocks per thread is in
memory, plus the metadata tables themselves.
"""
from __future__ import annotations

import hashlib
import struct
import sys
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field

from ...errors import CapacityError, SpecError
from ...image import ImageFile
from ...sizes import format_size
from ...tree import Kind, Node, Tree, encode_name
from ..base import FsParams, OptionReader
from .codec import ALIASES, DEFAULT_LEVELS, LEVEL_RANGES, Codec
from .format import (
    ALWAYS_FRAGMENTS, DATA_UNCOMPRESSED, DIR_ENTRY, DIR_HEADER, DIR_INODE, DEV_INODE, DUPLICATES, EXPORTABLE,
    COMPRESSOR_OPTIONS, FILE_INODE, FRAGMENT_ENTRY, INODE_HEADER, IPC_INODE, LDEV_INODE, LDIR_INODE,
    LFILE_INODE, LIPC_INODE, MAGIC, META_UNCOMPRESSED, METADATA_SIZE, NO_FRAGMENT, NO_FRAGMENTS,
    NO_TABLE, NO_XATTRS, SUPERBLOCK, SYMLINK_INODE, XATTR_ID, XATTR_KEY, XATTR_PREFIXES,
    XATTR_TABLE_HEADER, encode_rdev,
)

BASIC_TYPE = {Kind.DIR: 1, Kind.FILE: 2, Kind.SYMLINK: 3, Kind.BLK: 4, Kind.CHR: 5, Kind.FIFO: 6,
              Kind.SOCK: 7}
NO_XATTR = 0xFFFFFFFF
U32 = 0xFFFFFFFF


class MetaWriter:
    """A metadata stream cut into 8 KiB blocks, each compressed when that saves space."""

    def __init__(self, codec: Codec):
        self.codec = codec
        self.out = bytearray()
        self.cur = bytearray()
        self.block_starts: list[int] = []

    def ref(self) -> int:
        return (len(self.out) << 16) | len(self.cur)

    def tell(self) -> int:
        """Position in the uncompressed stream."""
        return len(self.block_starts) * METADATA_SIZE + len(self.cur)

    def block_start(self, upos: int) -> int:
        """Offset (from the table start) of the block holding uncompressed position upos; valid
        once everything up to upos has been added."""
        k = upos // METADATA_SIZE
        return self.block_starts[k] if k < len(self.block_starts) else len(self.out)

    def add(self, data: bytes) -> None:
        self.cur += data
        while len(self.cur) >= METADATA_SIZE:
            self._flush(bytes(self.cur[:METADATA_SIZE]))
            del self.cur[:METADATA_SIZE]

    def _flush(self, block: bytes) -> None:
        self.block_starts.append(len(self.out))
        c = self.codec.compress(block)
        if len(c) < len(block):
            self.out += struct.pack("<H", len(c)) + c
        else:
            self.out += struct.pack("<H", len(block) | META_UNCOMPRESSED) + block

    def finish(self) -> bytes:
        if self.cur:
            self._flush(bytes(self.cur))
            self.cur = bytearray()
        return bytes(self.out)


@dataclass(eq=False)
class FileRec:
    size: int
    sizes: list[int] = field(default_factory=list)
    blocks_start: int | None = None
    frag: int = NO_FRAGMENT
    frag_off: int = 0
    sparse: int = 0
    dup_of: "FileRec | None" = None
    rewound: bool = False


def iter_blocks(node: Node, bs: int):
    """(data or None for a block wholly inside a hole, length) for each block of the file."""
    src = node.source
    if src is None or src.size == 0:
        return
    size = src.size
    buf = bytearray()
    for off, data, n in src.iter_chunks(bs):
        pos = 0
        while pos < n:
            cur = off + pos
            blen = min(bs, size - (cur // bs) * bs)
            take = min(blen - len(buf), n - pos)
            if data is None:
                if not buf and take == blen:
                    yield None, blen
                else:
                    buf += bytes(take)
            elif not buf and take == blen:
                yield (data if pos == 0 and take == len(data) else data[pos:pos + take]), blen
            else:
                buf += data[pos:pos + take]
            pos += take
            if buf and len(buf) == blen:
                yield bytes(buf), blen
                buf = bytearray()


class DataWriter:
    """Writes compressed data and fragment blocks in submission order."""

    def __init__(self, out: ImageFile, codec: Codec, bs: int, threads: int, start: int, limit: int | None):
        self.out, self.codec, self.bs = out, codec, bs
        self.pos = self.hwm = start
        self.limit = limit
        self.pool = ThreadPoolExecutor(threads) if threads > 1 else None
        self.window = max(4, threads * 4)
        self.queue: deque = deque()
        self.frag_buf = bytearray()
        self.fragments: list[tuple[int, int]] = []  # (start, size word)
        self.zero = bytes(bs)

    def _compress(self, data: bytes) -> tuple[bytes, bool]:
        c = self.codec.compress(data)
        if len(c) < len(data):
            return c, False
        return data, True

    def _submit(self, data: bytes) -> Future:
        if self.pool is None:
            f: Future = Future()
            f.set_result(self._compress(data))
            return f
        return self.pool.submit(self._compress, data)

    def _place(self, data: bytes) -> int:
        start = self.pos
        end = start + len(data)
        if self.limit is not None and end > self.limit:
            raise CapacityError(f"the squashfs image needs more than {format_size(self.limit)}")
        self.out.pwrite(data, start)
        self.pos = end
        self.hwm = max(self.hwm, end)
        return start

    def _drain(self, keep: int) -> None:
        while len(self.queue) > keep:
            kind, rec, idx, fut = self.queue.popleft()
            data, raw = fut.result()
            if kind == "frag":
                start = self._place(data)
                self.fragments[idx] = (start, len(data) | (DATA_UNCOMPRESSED if raw else 0))
                continue
            if rec.dup_of is not None:
                if rec.blocks_start is not None and not rec.rewound:
                    self.pos = rec.blocks_start  # nothing else was written among its blocks
                    rec.rewound = True
                continue
            start = self._place(data)
            if rec.blocks_start is None:
                rec.blocks_start = start
            rec.sizes[idx] = len(data) | (DATA_UNCOMPRESSED if raw else 0)

    def add_file(self, node: Node, fragments: str, seen: dict | None) -> FileRec:
        """fragments: "none", "small" (files under a block, mksquashfs's default) or "always"
        (every file's tail, mksquashfs -always-use-fragments)."""
        rec = FileRec(size=node.size)
        bs = self.bs
        use_frag = fragments == "always" or (fragments == "small" and rec.size < bs)
        h = hashlib.sha256() if seen is not None else None
        tail: bytes | None = None
        for data, blen in iter_blocks(node, bs):
            if h is not None:
                h.update(b"H%d;" % blen if data is None else b"D%d;" % blen)
                if data is not None:
                    h.update(data)
            if data is not None and blen < bs and use_frag:
                tail = bytes(data)
                continue
            if data is None or (blen == bs and data == self.zero):
                rec.sizes.append(0)
                rec.sparse += blen
                continue
            self._drain(self.window)
            rec.sizes.append(-1)
            self.queue.append(("data", rec, len(rec.sizes) - 1, self._submit(bytes(data))))
        if h is not None and rec.size:
            key = (rec.size, h.digest())
            orig = seen.get(key)
            if orig is not None:
                rec.dup_of = orig
                return rec
            seen[key] = rec
        if tail is not None:
            if len(self.frag_buf) + len(tail) > bs:
                self.flush_fragment()
            rec.frag, rec.frag_off = len(self.fragments), len(self.frag_buf)
            self.frag_buf += tail
        return rec

    def flush_fragment(self) -> None:
        if not self.frag_buf:
            return
        self.fragments.append((0, 0))
        self._drain(self.window)
        self.queue.append(("frag", None, len(self.fragments) - 1, self._submit(bytes(self.frag_buf))))
        self.frag_buf = bytearray()

    def finish(self) -> None:
        self.flush_fragment()
        self._drain(0)
        if self.pool is not None:
            self.pool.shutdown()


class IdTable:
    def __init__(self) -> None:
        self.ids: list[int] = []
        self.index: dict[int, int] = {}

    def get(self, v: int) -> int:
        i = self.index.get(v)
        if i is None:
            if len(self.ids) >= 65536:
                raise CapacityError("more than 65536 distinct uids and gids (squashfs limit)")
            i = self.index[v] = len(self.ids)
            self.ids.append(v)
        return i


class XattrTable:
    def __init__(self, codec: Codec, params: FsParams):
        self.kv = MetaWriter(codec)
        self.ids: list[tuple[int, int, int]] = []
        self.index: dict[tuple, int] = {}
        self.params = params

    def get(self, xattrs: dict[str, bytes]) -> int:
        items = []
        for name, value in sorted(xattrs.items()):
            for prefix, t in XATTR_PREFIXES:
                if name.startswith(prefix) and len(name) > len(prefix):
                    items.append((t, name[len(prefix):].encode(), bytes(value), name))
                    break
            else:
                self.params.log(f"xattr {name} has a prefix squashfs cannot store; skipped")
        if not items:
            return NO_XATTR
        key = tuple(items)
        i = self.index.get(key)
        if i is not None:
            return i
        ref = self.kv.ref()
        total = 0
        for t, short, value, full in items:
            self.kv.add(XATTR_KEY.pack(t, len(short)) + short + struct.pack("<I", len(value)) + value)
            total += len(full) + 1 + len(value)
        i = self.index[key] = len(self.ids)
        self.ids.append((ref, len(items), total))
        return i


def _parse_options(params: FsParams) -> dict:
    where = f"{params.where}.options"
    o = OptionReader(params.options, where)
    comp = o.get_str("compression", "zstd", choices=tuple(DEFAULT_LEVELS) + tuple(ALIASES) + ("lzo",))
    comp = ALIASES.get(comp, comp)
    if comp == "lzo":
        try:
            import lzo  # type: ignore[import-not-found]  # noqa: F401
        except ImportError:
            raise SpecError("lzo compression needs the python-lzo package, which is not installed "
                            "(gzip, xz, lz4 and zstd need nothing more)", where=f"{where}.compression") from None
        raise SpecError("lzo compression is not implemented; use lz4 for speed or zstd",
                        where=f"{where}.compression")
    lo, hi = LEVEL_RANGES[comp]
    cfg = {
        "compression": comp,
        "level": o.get_int("compression_level", None, lo, hi),
        "no_fragments": o.get_bool("no_fragments", False),
        "always_fragments": o.get_bool("always_fragments", False),
        "dedup": o.get_bool("dedup", True),
        "exportable": o.get_bool("exportable", True),
        "xattrs": o.get_bool("xattrs", True),
        "pad": o.get_bool("pad", True),
    }
    o.finish()
    if cfg["no_fragments"] and cfg["always_fragments"]:
        raise SpecError("no_fragments and always_fragments contradict each other", where=f"{where}.always_fragments")
    cfg["fragments"] = "none" if cfg["no_fragments"] else "always" if cfg["always_fragments"] else "small"
    bs = params.block_size or 131072
    if bs & (bs - 1) or not 4096 <= bs <= 1 << 20:
        raise SpecError(f"squashfs block size must be a power of two from 4KiB to 1MiB, got {bs}",
                        where=f"{params.where}.block_size")
    cfg["block_size"] = bs
    if params.label:
        raise SpecError("squashfs has no volume label", where=f"{params.where}.label")
    if params.uuid:
        raise SpecError("squashfs has no UUID", where=f"{params.where}.uuid")
    return cfg


def _table_with_index(meta: MetaWriter, entries: bytes, pos: int) -> tuple[bytes, int]:
    """A lookup table (fragment, export, id): metadata blocks then the u64 index of their
    absolute positions. Returns (bytes to write at pos, position of the index)."""
    meta.add(entries)
    blocks = meta.finish()
    index = b"".join(struct.pack("<Q", pos + s) for s in meta.block_starts)
    return blocks + index, pos + len(blocks)


def write(tree: Tree, out: ImageFile, params: FsParams) -> int:
    # the plan and the directory pass recurse once per level; a path of 4096 bytes can nest
    # about 2000 deep, past Python's default limit
    old = sys.getrecursionlimit()
    sys.setrecursionlimit(max(old, 10000))
    try:
        return _write(tree, out, params)
    finally:
        sys.setrecursionlimit(old)


def _write(tree: Tree, out: ImageFile, params: FsParams) -> int:
    cfg = params.opts if params.opts is not None else _parse_options(params)
    bs = cfg["block_size"]
    codec = Codec(cfg["compression"], cfg["level"], bs)

    # -- plan: inode numbers in post-order ---------------------------------
    order: list[Node] = []
    number: dict[int, int] = {}

    def plan(d: Node) -> None:
        for _, child in d.sorted_children():
            if child.kind is Kind.DIR:
                plan(child)
            elif id(child) not in number:
                order.append(child)
                number[id(child)] = len(order)
        order.append(d)
        number[id(d)] = len(order)

    plan(tree.root)
    inode_count = len(order)

    # -- data ----------------------------------------------------------------
    limits = [x for x in (params.size, out.limit) if x is not None]
    limit = min(limits) if limits else None
    opts_block = codec.options()
    start = SUPERBLOCK.size
    if opts_block is not None:
        start += 2 + len(opts_block)
    dw = DataWriter(out, codec, bs, params.thread_count(), start, limit)
    seen: dict | None = {} if cfg["dedup"] else None
    recs: dict[int, FileRec] = {}
    total_bytes = sum(n.size for n in order if n.kind is Kind.FILE)
    done_bytes = 0
    try:
        for node in order:
            if node.kind is Kind.FILE:
                recs[id(node)] = dw.add_file(node, cfg["fragments"], seen)
                done_bytes += node.size
                params.report(done_bytes, total_bytes)
        dw.finish()
    finally:
        if dw.pool is not None:
            dw.pool.shutdown(cancel_futures=True)
    for rec in recs.values():
        if rec.dup_of is not None:
            o = rec.dup_of
            rec.sizes, rec.blocks_start, rec.frag, rec.frag_off, rec.sparse = (
                o.sizes, o.blocks_start, o.frag, o.frag_off, o.sparse)
    params.log(f"squashfs: {inode_count} inodes, {len(dw.fragments)} fragment blocks, "
               f"data {format_size(dw.pos)}")

    # -- metadata --------------------------------------------------------------
    ids = IdTable()
    xt = XattrTable(codec, params) if cfg["xattrs"] else None
    inodes, dirs = MetaWriter(codec), MetaWriter(codec)
    refs: dict[int, int] = {}

    def header(node: Node, itype: int) -> bytes:
        return INODE_HEADER.pack(itype, node.mode & 0o7777, ids.get(node.uid), ids.get(node.gid),
                                 min(max(node.mtime, 0), U32), number[id(node)])

    def xattr_of(node: Node) -> int:
        return xt.get(node.xattrs) if xt is not None and node.xattrs else NO_XATTR

    def write_leaf(node: Node) -> None:
        nlink = tree.nlink(node)
        xi = xattr_of(node)
        refs[id(node)] = inodes.ref()
        k = node.kind
        if k is Kind.FILE:
            rec = recs[id(node)]
            start = rec.blocks_start or 0
            sizes = struct.pack(f"<{len(rec.sizes)}I", *rec.sizes)
            if start <= U32 and rec.size <= U32 and nlink == 1 and xi == NO_XATTR and not rec.sparse:
                inodes.add(header(node, 2) + FILE_INODE.pack(start, rec.frag, rec.frag_off, rec.size) + sizes)
            else:
                inodes.add(header(node, 9) + LFILE_INODE.pack(start, rec.size, rec.sparse, nlink, rec.frag,
                                                              rec.frag_off, xi) + sizes)
        elif k is Kind.SYMLINK:
            target = encode_name(node.target or "")
            body = SYMLINK_INODE.pack(nlink, len(target)) + target
            if xi == NO_XATTR:
                inodes.add(header(node, 3) + body)
            else:
                inodes.add(header(node, 10) + body + struct.pack("<I", xi))
        elif k in (Kind.BLK, Kind.CHR):
            rdev = encode_rdev(*node.rdev)
            basic = 4 if k is Kind.BLK else 5
            if xi == NO_XATTR:
                inodes.add(header(node, basic) + DEV_INODE.pack(nlink, rdev))
            else:
                inodes.add(header(node, basic + 7) + LDEV_INODE.pack(nlink, rdev, xi))
        else:
            basic = 6 if k is Kind.FIFO else 7
            if xi == NO_XATTR:
                inodes.add(header(node, basic) + IPC_INODE.pack(nlink))
            else:
                inodes.add(header(node, basic + 7) + LIPC_INODE.pack(nlink, xi))

    def listing(d: Node, ustart: int) -> tuple[bytes, list[tuple[int, int, bytes]]]:
        """The directory's listing, as it will sit at uncompressed position ustart of the
        directory table, and its index: (offset of a header in the listing, uncompressed position
        of that header, first name) for each header that starts a new metadata block. As
        mksquashfs does, a header run never crosses into a new metadata block, so every block
        of a large directory starts with a header the kernel's lookup can jump to."""
        out_b = bytearray()
        run: list[bytes] = []
        index: list[tuple[int, int, bytes]] = []
        base = block = 0
        head_at = 0
        first = b""

        def flush() -> None:
            nonlocal head_at
            if run:
                head_at = len(out_b)
                upos = ustart + head_at
                if not index or index[-1][1] // METADATA_SIZE != upos // METADATA_SIZE:
                    index.append((head_at, upos, first))
                out_b.extend(DIR_HEADER.pack(len(run) - 1, block, base))
                out_b.extend(b"".join(run))
                run.clear()

        run_bytes = 0
        for name, child in d.sorted_children():
            ref = refs[id(child)]
            num = number[id(child)]
            cblock, coff = ref >> 16, ref & 0xFFFF
            raw = encode_name(name)
            esize = DIR_ENTRY.size + len(raw)
            here = ustart + len(out_b) + DIR_HEADER.size + run_bytes
            crosses = run and (ustart + len(out_b)) // METADATA_SIZE != (here + esize) // METADATA_SIZE
            if not run or len(run) == 256 or cblock != block or not -32768 <= num - base <= 32767 or crosses:
                flush()
                base, block, first, run_bytes = num, cblock, raw, 0
            run.append(DIR_ENTRY.pack(coff, num - base, BASIC_TYPE[child.kind], len(raw) - 1) + raw)
            run_bytes += esize
        flush()
        return bytes(out_b), index if len(index) > 1 else []

    def write_dir(d: Node, parent: int) -> None:
        for _, child in d.sorted_children():
            if child.kind is Kind.DIR:
                write_dir(child, number[id(d)])
            elif id(child) not in refs:
                write_leaf(child)
        dref = dirs.ref()
        lst, index = listing(d, dirs.tell())
        dirs.add(lst)
        nlink = tree.nlink(d)
        xi = xattr_of(d)
        fsize = len(lst) + 3
        refs[id(d)] = inodes.ref()
        if fsize <= 0xFFFF and xi == NO_XATTR and not index:
            inodes.add(header(d, 1) + DIR_INODE.pack(dref >> 16, nlink, fsize, dref & 0xFFFF, parent))
        else:
            idx = b"".join(struct.pack("<III", off, dirs.block_start(upos), len(name) - 1) + name
                           for off, upos, name in index)
            inodes.add(header(d, 8) + LDIR_INODE.pack(nlink, fsize, dref >> 16, parent, len(index),
                                                      dref & 0xFFFF, xi) + idx)

    write_dir(tree.root, inode_count + 1)
    root_ref = refs[id(tree.root)]

    pos = dw.pos
    chunks: list[tuple[int, bytes]] = []
    inode_bytes = inodes.finish()
    inode_start = pos
    chunks.append((pos, inode_bytes))
    pos += len(inode_bytes)
    dir_bytes = dirs.finish()
    dir_start = pos
    chunks.append((pos, dir_bytes))
    pos += len(dir_bytes)

    frag_entries = b"".join(FRAGMENT_ENTRY.pack(s, z, 0) for s, z in dw.fragments)
    data, frag_table = _table_with_index(MetaWriter(codec), frag_entries, pos)
    chunks.append((pos, data))
    pos += len(data)

    export_table = NO_TABLE
    if cfg["exportable"]:
        by_number = [0] * inode_count
        for node in order:
            by_number[number[id(node)] - 1] = refs[id(node)]
        data, export_table = _table_with_index(MetaWriter(codec), struct.pack(f"<{inode_count}Q", *by_number),
                                               pos)
        chunks.append((pos, data))
        pos += len(data)

    data, id_table = _table_with_index(MetaWriter(codec), struct.pack(f"<{len(ids.ids)}I", *ids.ids), pos)
    chunks.append((pos, data))
    pos += len(data)

    xattr_table = NO_TABLE
    if xt is not None and xt.ids:
        kv = xt.kv.finish()
        kv_start = pos
        chunks.append((pos, kv))
        pos += len(kv)
        idm = MetaWriter(codec)
        idm.add(b"".join(XATTR_ID.pack(*e) for e in xt.ids))
        id_blocks = idm.finish()
        chunks.append((pos, id_blocks))
        id_pos = pos
        pos += len(id_blocks)
        xattr_table = pos
        hdr = XATTR_TABLE_HEADER.pack(kv_start, len(xt.ids), 0) + b"".join(
            struct.pack("<Q", id_pos + s) for s in idm.block_starts)
        chunks.append((pos, hdr))
        pos += len(hdr)

    bytes_used = pos
    total = (bytes_used + 4095) // 4096 * 4096 if cfg["pad"] else bytes_used
    if limit is not None and total > limit:
        raise CapacityError(f"the squashfs image needs {format_size(total)}, more than the "
                            f"{format_size(limit)} it was given")
    for off, blob in chunks:
        out.pwrite(blob, off)

    flags = DUPLICATES if cfg["dedup"] else 0
    if cfg["fragments"] == "none":
        flags |= NO_FRAGMENTS
    elif cfg["fragments"] == "always":
        flags |= ALWAYS_FRAGMENTS
    if cfg["exportable"]:
        flags |= EXPORTABLE
    if xattr_table == NO_TABLE:
        flags |= NO_XATTRS
    if opts_block is not None:
        flags |= COMPRESSOR_OPTIONS
        out.pwrite(struct.pack("<H", len(opts_block) | META_UNCOMPRESSED) + opts_block, SUPERBLOCK.size)
    sb = SUPERBLOCK.pack(MAGIC, inode_count, min(max(params.timestamp, 0), U32), bs, len(dw.fragments),
                         codec.id, bs.bit_length() - 1, flags, len(ids.ids), 4, 0, root_ref, bytes_used,
                         id_table, xattr_table, inode_start, dir_start, frag_table, export_table)
    out.pwrite(sb, 0)
    # bytes a rewound duplicate left past the end, and the padding, must read as zeros
    end_dirty = max(dw.hwm, bytes_used)
    if end_dirty > bytes_used:
        out.pwrite(bytes(end_dirty - bytes_used), bytes_used)
    if total > bytes_used:
        out.pwrite(b"\0", total - 1)
    out.truncate(total)
    params.log(f"squashfs: {format_size(bytes_used)} used, image {format_size(total)}")
    return total
