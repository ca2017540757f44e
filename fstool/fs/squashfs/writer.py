"""SquashFS 4.0 writer: plan inode numbers, stream file data, then write the metadata.

Phases, each a function returning a plan:

1. `plan_inodes` -> Numbering: every entry in post-order (a directory's entries, sorted by
   name bytes, then the directory), so inode numbers rise along the inode table and the
   root is the last inode, as mksquashfs lays it out;
2. `write_data` -> DataPlan: every regular file cut into `block_size` blocks, read through
   `FileSource` (holes are never read, all-zero blocks become sparse entries), compressed in
   a thread pool and written in submission order, so the bytes never depend on thread
   timing. A file's tail shorter than a block goes into a shared fragment block. Identical
   files (same size and SHA-256) share one copy: a duplicate's already-written blocks are
   rewound over;
   With a block cache (fstool.cache), a block whose compressed form is cached is not
   compressed again; the bytes are the same either way. The first blocks may come from the
   head start (headstart.py), compressed by a child while the tree was loading;
3. `MetadataWriter.run` -> MetaPlan: the inode and directory tables, in the same post-order,
   on a second thread that follows the data pass file by file (an inode is written once its
   file's blocks are placed);
4. `lay_out_tables` -> TablePlan: the fragment, export (NFS), id and xattr tables after them;
5. `finish`: the tables, the compressor options and the superblock written, the image padded.

Nothing is held whole: at most a window of compressed blocks per thread is in memory, plus
the metadata tables themselves.
"""
from __future__ import annotations

import hashlib
import struct
import sys
import threading
from array import array
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field

from ...errors import CapacityError
from ...image import ImageFile
from ...sizes import format_size
from ...tree import Kind, Node, Tree, encode_name
from ..base import FsParams
from .codec import Codec
from .format import (
    ALWAYS_FRAGMENTS, BLKDEV, BLOCK_SIZE_ENTRY, CHRDEV, COMPRESSOR_OPTIONS, DATA_UNCOMPRESSED,
    DEV_INODE, DIR, DIR_ENTRIES_MAX, DIR_ENTRY, DIR_HEADER, DIR_INDEX, DIR_INODE, DUPLICATES,
    EXPORT_ENTRY, EXPORTABLE, EXTENDED, FIFO, FILE, FILE_INODE, FRAGMENT_ENTRY, ID_ENTRY,
    INODE_HEADER, IPC_INODE, LDEV_INODE, LDIR, LDIR_INODE, LFILE, LFILE_INODE, LIPC_INODE,
    LSYMLINK, MAGIC, META_HEADER, META_UNCOMPRESSED, METADATA_SIZE, NO_FRAGMENT, NO_FRAGMENTS,
    NO_TABLE, NO_XATTR, NO_XATTRS, SOCKET, SUPERBLOCK, SYMLINK, SYMLINK_INODE, TABLE_POINTER,
    XATTR_ID, XATTR_INDEX, XATTR_KEY, XATTR_PREFIXES, XATTR_TABLE_HEADER, XATTR_VAL, encode_rdev,
)
from .options import SquashfsOptions, parse_options

BASIC_TYPE = {Kind.DIR: DIR, Kind.FILE: FILE, Kind.SYMLINK: SYMLINK, Kind.BLK: BLKDEV,
              Kind.CHR: CHRDEV, Kind.FIFO: FIFO, Kind.SOCK: SOCKET}
U32 = 0xFFFFFFFF
# the basic regular-file inode, its header and body as one struct (the two declared records)
BASIC_FILE = struct.Struct("<" + INODE_HEADER.struct.format[1:] + FILE_INODE.struct.format[1:])


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

    def add_table(self, data: bytes, threads: int) -> None:
        """add(data) for a whole table, its full blocks compressed on `threads` threads (each
        block is compressed on its own, so the bytes are add's): the export table of 200,000
        inodes is 196 blocks, compressed after everything else."""
        n = len(data) // METADATA_SIZE * METADATA_SIZE
        if threads < 2 or self.cur or n < 4 * METADATA_SIZE:
            self.add(data)
            return
        blocks = [data[i:i + METADATA_SIZE] for i in range(0, n, METADATA_SIZE)]
        with ThreadPoolExecutor(threads) as pool:
            for block, c in zip(blocks, pool.map(self.codec.compress, blocks)):
                self._append(block, c)
        self.cur += data[n:]

    def _flush(self, block: bytes) -> None:
        self._append(block, self.codec.compress(block))

    def _append(self, block: bytes, c: bytes) -> None:
        self.block_starts.append(len(self.out))
        if len(c) < len(block):
            self.out += META_HEADER.pack(size=len(c)) + c
        else:
            self.out += META_HEADER.pack(size=len(block) | META_UNCOMPRESSED) + block

    def finish(self) -> bytes:
        if self.cur:
            self._flush(bytes(self.cur))
            self.cur = bytearray()
        return bytes(self.out)


@dataclass(eq=False, slots=True)
class FileRec:
    size: int
    sizes: list[int] = field(default_factory=list)
    blocks_start: int | None = None
    frag: int = NO_FRAGMENT
    frag_off: int = 0
    sparse: int = 0
    dup_of: "FileRec | None" = None
    rewound: bool = False


# the block sizes of a file with no blocks (a fragment only): read, never appended to
NO_BLOCKS: list[int] = []
# every empty file's record: no blocks, no fragment, never changed (shared, not one per file)
EMPTY_REC = FileRec(0, sizes=NO_BLOCKS)


def _is_duplicate(rec: FileRec, h, seen: dict) -> bool:
    """dedupe: True (rec now points at the original) when a file of the same size and hash
    came before; else rec is remembered as the original of what follows."""
    key = (rec.size, h.digest())
    orig = seen.get(key)
    if orig is not None:
        rec.dup_of = orig
        return True
    seen[key] = rec
    return False


def _is_duplicate_tail(rec: FileRec, src, tail: bytes, seen: dict) -> bool:
    """dedupe for a file that is all tail (smaller than a block, in a fragment): keyed by size
    and Python's hash of the bytes, a third of sha256's cost, and confirmed by comparing the
    bytes with the original's (read again: only for duplicates). Different files under one
    key all stay candidates, so the outcome never depends on the hash."""
    key = (rec.size, hash(tail))
    cands = seen.get(key)
    if cands is None:
        seen[key] = (rec, src)  # one original (most keys)
        return False
    if isinstance(cands, tuple):
        cands = seen[key] = [cands]
    for orig, orig_src in cands:
        if orig_src.read(0, rec.size) == tail:
            rec.dup_of = orig
            return True
    cands.append((rec, src))
    return False


def tail_in_fragment(fragments: str, size: int, bs: int) -> bool:
    """Whether a file's tail (its last partial block, or all of a file under a block) goes
    into a fragment block: with fragments "always", or "small" for a file under a block.
    The head start (headstart.py) cuts files by the same rule."""
    return fragments == "always" or (fragments == "small" and size < bs)


def iter_blocks(node: Node, bs: int):
    """(data or None for a block wholly inside a hole, length) for each block of the file."""
    src = node.source
    if src is None or src.size == 0:
        return
    size = src.size
    if size <= bs and src.segments is None:
        # one block at most (most files of a root): one open and one read, no hole search;
        # a hole reads as zeros, which is what a block of zeros becomes anyway
        yield src.read(0, size), size
        return
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

    def __init__(self, out: ImageFile, codec: Codec, bs: int, threads: int, start: int, limit: int | None,
                 cache=None):
        self.out, self.codec, self.bs = out, codec, bs
        self.cache = cache  # fstool.cache.BlockCache or None
        self.early = None  # headstart.Early: blocks compressed while the tree was loading
        self.namespace = codec.cache_namespace() if cache is not None else b""
        self.pos = self.hwm = start
        self.limit = limit
        self.pool = ThreadPoolExecutor(threads) if threads > 1 else None
        self.window = max(4, threads * 4)
        self.queue: deque = deque()
        self.frag_buf = bytearray()
        self.fragments: list[tuple[int, int]] = []  # (start, size word)
        self.zero = bytes(bs)
        # how far the data is: files[:files_done] have every block placed (a metadata thread
        # may then write their inodes); a thread waiting on `progress` wants files_done >= goal
        self.files_added = self.files_done = self.files_total = 0
        self.data_queued = 0  # data blocks (not fragment blocks) in the queue
        self.progress = threading.Condition()
        self.goal = -1
        self.stopped = False

    def _compress(self, data: bytes, early: tuple[bytes, bool] | None = None) -> tuple[bytes, bool]:
        """(bytes to store, stored raw) for a block. early: that result, from the head start
        (then only the cache is consulted and filled, as for a block compressed here)."""
        cache = self.cache
        if cache is not None:
            # the cached value is this function's result: b"C" + compressed bytes, or b"R" when
            # the block is stored as it is (compression did not make it smaller)
            key = cache.key(self.namespace, data)
            v = cache.get(key)
            if v is not None and v[:1] == b"C" and len(v) - 1 < len(data):
                return v[1:], False
            if v == b"R":
                return data, True
        if early is not None:
            c, raw = early
        else:
            c = self.codec.compress(data)
            raw = len(c) >= len(data)
        if cache is not None:
            if raw:
                cache.put(key, b"R")
            else:
                cache.put(key, b"C", c)
        return (data, True) if raw else (c, False)

    def _submit(self, data: bytes) -> Future:
        got = None
        early = self.early
        if early is not None:  # compressed before the data pass began, if it is this block
            got = early.take(data)
            if got is None and not early.results:
                self.early = None
        if got is not None and self.cache is None:
            f: Future = Future()
            f.set_result(got)
            return f
        if self.pool is not None:
            return self.pool.submit(self._compress, data, got)
        f = Future()
        f.set_result(self._compress(data, got))
        return f

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
        """Place queued blocks in order: until at most keep are left, and then every one
        already compressed (so a file's inode can follow soon after its last block)."""
        q = self.queue
        while q and (len(q) > keep or q[0][3].done()):
            kind, rec, idx, fut, _seq = q.popleft()
            data, raw = fut.result()
            if kind == "frag":
                start = self._place(data)
                self.fragments[idx] = (start, len(data) | (DATA_UNCOMPRESSED if raw else 0))
                continue
            self.data_queued -= 1
            if rec.dup_of is not None:
                if rec.blocks_start is not None and not rec.rewound:
                    self.pos = rec.blocks_start  # nothing else was written among its blocks
                    rec.rewound = True
                continue
            start = self._place(data)
            if rec.blocks_start is None:
                rec.blocks_start = start
            rec.sizes[idx] = len(data) | (DATA_UNCOMPRESSED if raw else 0)
        self.publish()

    def drain_ready(self) -> None:
        self._drain(self.window)

    def publish(self) -> None:
        """Advance files_done to the first file with a block still queued (or every file
        added), waking a metadata thread that waits for it."""
        done = self.files_added
        if self.data_queued:  # else only fragment blocks wait, and no inode waits for those
            for item in self.queue:
                if item[4] is not None:
                    done = item[4]
                    break
        if done != self.files_done:
            self.files_done = done
            if 0 <= self.goal <= done:
                with self.progress:
                    self.progress.notify_all()

    def wait_for(self, n: int) -> None:
        """Block until the first n files have every block placed (or the data pass failed).
        A thread that has to wait waits for 1024 more files than it needs: waking it for
        every file cost more than the whole metadata pass."""
        if self.files_done >= n:
            if self.stopped:  # the data pass failed: do not finish the tables for nothing
                raise _DataFailed()
            return
        with self.progress:
            self.goal = min(n + 1023, self.files_total)
            try:
                while self.files_done < self.goal:
                    if self.stopped:
                        raise _DataFailed()
                    self.progress.wait(0.05)  # the timeout only guards against a lost wakeup
            finally:
                self.goal = -1

    def stop(self) -> None:
        with self.progress:
            self.stopped = True
            self.progress.notify_all()

    def add_file(self, node: Node, fragments: str, seen: dict | None) -> FileRec:
        """fragments: "none", "small" (files under a block, mksquashfs's default) or "always"
        (every file's tail, mksquashfs -always-use-fragments)."""
        src = node.source
        size = src.size if src is not None else 0
        if size == 0:
            return EMPTY_REC
        bs = self.bs
        use_frag = tail_in_fragment(fragments, size, bs)
        if use_frag and size < bs and src.segments is None:
            # a file smaller than a block, all of it a fragment (most files of a root): the
            # general loop below, without its generator, copies and block checks; no block
            # list of its own (the shared empty one)
            rec = FileRec(size, NO_BLOCKS)
            tail = src.read(0, size)
            if seen is not None and _is_duplicate_tail(rec, src, tail, seen):
                return rec
            self._add_tail(rec, tail)
            return rec
        rec = FileRec(size)
        all_tail = use_frag and size < bs  # deduplicated as above, by its tail
        h = hashlib.sha256() if seen is not None and not all_tail else None
        tail: bytes | None = None
        # a block in a host hole and a block of zeros are the same content and are stored
        # (and hashed, for dedupe) alike: the image depends on the bytes, never on the holes
        for data, blen in iter_blocks(node, bs):
            if blen < bs and use_frag:  # a tail in a hole is a tail of zeros, as mksquashfs reads it
                tail = bytes(data) if data is not None else bytes(blen)
                if h is not None:
                    h.update(b"D%d;" % blen)
                    h.update(tail)
                continue
            if data is None or data == (self.zero if blen == bs else bytes(blen)):
                if h is not None:
                    h.update(b"H%d;" % blen)
                rec.sizes.append(0)
                rec.sparse += blen
                continue
            if h is not None:
                h.update(b"D%d;" % blen)
                h.update(data)
            self._drain(self.window)
            rec.sizes.append(-1)
            self.queue.append(("data", rec, len(rec.sizes) - 1, self._submit(bytes(data)), self.files_added))
            self.data_queued += 1
        if h is not None and rec.size and _is_duplicate(rec, h, seen):
            return rec
        if all_tail and seen is not None and tail is not None and _is_duplicate_tail(rec, src, tail, seen):
            return rec
        if tail is not None:
            self._add_tail(rec, tail)
        return rec

    def _add_tail(self, rec: FileRec, tail: bytes) -> None:
        """Put a file's tail into the current fragment block (flushed first when full)."""
        if len(self.frag_buf) + len(tail) > self.bs:
            self.flush_fragment()
        rec.frag, rec.frag_off = len(self.fragments), len(self.frag_buf)
        self.frag_buf += tail

    def flush_fragment(self) -> None:
        if not self.frag_buf:
            return
        self.fragments.append((0, 0))
        self._drain(self.window)
        self.queue.append(("frag", None, len(self.fragments) - 1, self._submit(bytes(self.frag_buf)), None))
        self.frag_buf = bytearray()

    def finish(self) -> None:
        self.flush_fragment()
        self._drain(0)
        if self.pool is not None:
            self.pool.shutdown()


class _DataFailed(Exception):
    """Raised in the metadata thread when the data pass it waits for has failed."""


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
            self.kv.add(XATTR_KEY.pack(type=t, size=len(short)) + short + XATTR_VAL.pack(vsize=len(value)) + value)
            total += len(full) + 1 + len(value)
        i = self.index[key] = len(self.ids)
        self.ids.append((ref, len(items), total))
        return i


def _table_with_index(meta: MetaWriter, entries: bytes, pos: int, threads: int = 1) -> tuple[bytes, int]:
    """A lookup table (fragment, export, id): metadata blocks then the u64 index of their
    absolute positions. Returns (bytes to write at pos, position of the index)."""
    meta.add_table(entries, threads)
    blocks = meta.finish()
    index = b"".join(TABLE_POINTER.pack(start=pos + s) for s in meta.block_starts)
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
    cfg: SquashfsOptions = params.opts if params.opts is not None else parse_options(params)
    codec = Codec(cfg.compression, cfg.level, cfg.block_size)
    limits = [x for x in (params.size, out.limit) if x is not None]
    limit = min(limits) if limits else None
    numbering = plan_inodes(tree)
    meta_writer = MetadataWriter(tree, numbering, codec, params, cfg.xattrs)
    data, meta = write_data(numbering, out, params, cfg, codec, limit, meta_writer)
    tables = lay_out_tables(numbering, data, meta, codec, cfg.exportable, params.thread_count())
    return finish(out, params, cfg, codec, numbering, data, meta, tables, limit)


# -- phase 1: inode numbers ------------------------------------------------------------
@dataclass
class Numbering:
    """Every entry in post-order (a directory after its entries); inode numbers from 1 rise
    along it, so the root is the last. Dicts are keyed by the nodes themselves (by identity):
    no id() int per entry."""

    order: list[Node]
    number: dict[Node, int]  # node -> inode number
    names: dict[Node, list[str]] = field(default_factory=dict)  # dir -> its names, sorted by bytes

    @property
    def count(self) -> int:
        return len(self.order)


def plan_inodes(tree: Tree) -> Numbering:
    order: list[Node] = []
    number: dict[Node, int] = {}
    names: dict[Node, list[str]] = {}  # sorted once, read by every later phase

    def visit(d: Node) -> None:
        kids = d.sorted_children()
        names[d] = [name for name, _ in kids]
        for _, child in kids:
            if child.kind is Kind.DIR:
                visit(child)
            elif child not in number:  # a hardlink's first appearance numbers it
                order.append(child)
                number[child] = len(order)
        order.append(d)
        number[d] = len(order)

    visit(tree.root)
    return Numbering(order, number, names)


# -- phase 2: file data ----------------------------------------------------------------
@dataclass
class DataPlan:
    fragments: list[tuple[int, int]]   # (start, size word) of each fragment block
    end: int                           # where the metadata starts
    hwm: int                           # the furthest byte written (a rewound duplicate's)
    options_block: bytes | None        # the compressor options, written after the superblock


def write_data(numbering: Numbering, out: ImageFile, params: FsParams, cfg: SquashfsOptions,
               codec: Codec, limit: int | None, meta: "MetadataWriter") -> tuple[DataPlan, "MetaPlan"]:
    """The data pass, with the metadata pass (meta) on a second thread a few files behind it:
    a file's inode is written once every block of it is placed. The main thread mostly waits
    for compressed blocks, so the inode and directory tables (and their compression) are
    made meanwhile instead of after; each pass runs in its own order, so the bytes are the
    same as one after the other."""
    opts_block = codec.options()
    start = SUPERBLOCK.size
    if opts_block is not None:
        start += META_HEADER.size + len(opts_block)
    dw = DataWriter(out, codec, cfg.block_size, params.thread_count(), start, limit, params.block_cache)
    if params.head_start is not None:
        from .headstart import Early
        dw.early = early = Early(params.head_start.harvest())
    seen: dict | None = {} if cfg.dedup else None
    recs = meta.recs
    meta.dw = dw
    files = [n for n in numbering.order if n.kind is Kind.FILE]
    dw.files_total = len(files)
    total_bytes = sum(n.size for n in files)
    done_bytes = 0
    result: list = []
    failure: list[BaseException] = []

    def run_meta() -> None:
        try:
            result.append(meta.run())
        except _DataFailed:
            pass
        except BaseException as e:  # noqa: BLE001 - raised on the main thread
            failure.append(e)

    t = threading.Thread(target=run_meta, name="fstool-squashfs-meta", daemon=True)
    t.start()
    try:
        for node in files:
            recs[node] = dw.add_file(node, cfg.fragments, seen)
            dw.files_added += 1
            dw.drain_ready()
            if failure:
                break
            done_bytes += node.size
            params.report(done_bytes, total_bytes)
        if not failure:
            dw.finish()
    except BaseException:
        dw.stop()
        t.join()
        raise
    finally:
        if dw.pool is not None:
            dw.pool.shutdown(cancel_futures=True)
    t.join()
    if failure:
        raise failure[0]
    params.log(f"squashfs: {numbering.count} inodes, {len(dw.fragments)} fragment blocks, "
               f"data {format_size(dw.pos)}")
    if params.head_start is not None:
        params.log(f"squashfs: {early.taken} blocks taken from those compressed while the tree "
                   "was loading")
    return DataPlan(dw.fragments, dw.pos, dw.hwm, opts_block), result[0]


# -- phase 3: inodes and directories -----------------------------------------------------
@dataclass
class MetaPlan:
    inodes: bytes          # the inode table, compressed metadata blocks
    dirs: bytes            # the directory table
    refs: array            # inode number - 1 -> inode reference (q: -1 until written)
    root_ref: int
    ids: IdTable
    xattrs: XattrTable | None


class MetadataWriter:
    """Writes the inode and directory tables in one post-order pass: a directory's entries'
    inodes come before its own, so its listing can name their references."""

    def __init__(self, tree: Tree, numbering: Numbering, codec: Codec, params: FsParams, xattrs: bool):
        self.tree, self.number = tree, numbering.number
        self.recs: dict[Node, FileRec] = {}  # filled by the data pass, file by file
        self.dw: DataWriter | None = None  # that data pass (write_data sets it)
        self.files_written = 0
        self.names = numbering.names
        self.inode_count = numbering.count
        self.ids = IdTable()
        self.xt = XattrTable(codec, params) if xattrs else None
        self.inodes, self.dirs = MetaWriter(codec), MetaWriter(codec)
        self.refs = array("q", [-1]) * numbering.count  # 8 bytes per inode, by number

    def run(self) -> MetaPlan:
        root = self.tree.root
        self.write_dir(root, self.inode_count + 1)
        return MetaPlan(self.inodes.finish(), self.dirs.finish(), self.refs,
                        self.refs[self.number[root] - 1], self.ids, self.xt)

    def header(self, node: Node, itype: int) -> bytes:
        return INODE_HEADER.pack(inode_type=itype, mode=node.mode & 0o7777, uid=self.ids.get(node.uid),
                                 guid=self.ids.get(node.gid), mtime=min(max(node.mtime, 0), U32),
                                 inode_number=self.number[node])

    def xattr_of(self, node: Node) -> int:
        return self.xt.get(node.xattrs) if self.xt is not None and node.xattrs else NO_XATTR

    def write_leaf(self, node: Node) -> None:
        """The inode of a non-directory: the basic type when it fits, else the extended one."""
        k = node.kind
        if k is Kind.FILE:
            # files come in the data pass's order: wait until this one's blocks are placed
            self.files_written += 1
            if self.dw is not None:
                self.dw.wait_for(self.files_written)
            rec = self.recs[node]
            if rec.dup_of is not None:
                rec = rec.dup_of
        nlink = self.tree.nlink(node)
        xi = self.xattr_of(node)
        num = self.number[node]
        self.refs[num - 1] = self.inodes.ref()
        add = self.inodes.add
        if k is Kind.FILE:
            start = rec.blocks_start or 0
            sizes = b"".join(map(BLOCK_SIZE_ENTRY.struct.pack, rec.sizes)) if rec.sizes else b""
            if start <= U32 and rec.size <= U32 and nlink == 1 and xi == NO_XATTR and not rec.sparse:
                # the basic inode of most files: header and body packed at once
                ids = self.ids
                add(BASIC_FILE.pack(FILE, node.mode & 0o7777, ids.get(node.uid), ids.get(node.gid),
                                    min(max(node.mtime, 0), U32), num,
                                    start, rec.frag, rec.frag_off, rec.size) + sizes)
            else:
                add(self.header(node, LFILE) + LFILE_INODE.pack(
                    start_block=start, file_size=rec.size, sparse=rec.sparse, nlink=nlink,
                    fragment=rec.frag, offset=rec.frag_off, xattr=xi) + sizes)
        elif k is Kind.SYMLINK:
            target = encode_name(node.target or "")
            body = SYMLINK_INODE.pack(nlink=nlink, symlink_size=len(target)) + target
            if xi == NO_XATTR:
                add(self.header(node, SYMLINK) + body)
            else:
                add(self.header(node, LSYMLINK) + body + XATTR_INDEX.pack(xattr=xi))
        elif k in (Kind.BLK, Kind.CHR):
            rdev = encode_rdev(*node.rdev)
            basic = BASIC_TYPE[k]
            if xi == NO_XATTR:
                add(self.header(node, basic) + DEV_INODE.pack(nlink=nlink, rdev=rdev))
            else:
                add(self.header(node, basic + EXTENDED) + LDEV_INODE.pack(nlink=nlink, rdev=rdev, xattr=xi))
        else:
            basic = BASIC_TYPE[k]
            if xi == NO_XATTR:
                add(self.header(node, basic) + IPC_INODE.pack(nlink=nlink))
            else:
                add(self.header(node, basic + EXTENDED) + LIPC_INODE.pack(nlink=nlink, xattr=xi))

    def listing(self, d: Node, ustart: int) -> tuple[bytes, list[tuple[int, int, bytes]]]:
        """The directory's listing, as it will sit at uncompressed position ustart of the
        directory table, and its index: (offset of a header in the listing, uncompressed position
        of that header, first name) for each header that starts a new metadata block. As
        mksquashfs does, a header run never crosses into a new metadata block, so every block
        of a large directory starts with a header the kernel's lookup can jump to."""
        out_b = bytearray()
        run: list[bytes] = []
        index: list[tuple[int, int, bytes]] = []
        base = block = 0
        first = b""

        def flush() -> None:
            if run:
                head_at = len(out_b)
                upos = ustart + head_at
                if not index or index[-1][1] // METADATA_SIZE != upos // METADATA_SIZE:
                    index.append((head_at, upos, first))
                out_b.extend(DIR_HEADER.pack(count=len(run) - 1, start_block=block, inode_number=base))
                out_b.extend(b"".join(run))
                run.clear()

        run_bytes = 0
        kids, number, refs = d.children, self.number, self.refs
        pack_entry = DIR_ENTRY.struct.pack
        file_kind, dir_kind = Kind.FILE, Kind.DIR
        for name in self.names[d]:
            child = kids[name]
            num = number[child]
            ref = refs[num - 1]
            cblock, coff = ref >> 16, ref & 0xFFFF
            raw = encode_name(name)
            esize = DIR_ENTRY.size + len(raw)
            here = ustart + len(out_b) + DIR_HEADER.size + run_bytes
            crosses = run and (ustart + len(out_b)) // METADATA_SIZE != (here + esize) // METADATA_SIZE
            if (not run or len(run) == DIR_ENTRIES_MAX or cblock != block
                    or not -32768 <= num - base <= 32767 or crosses):
                flush()
                base, block, first, run_bytes = num, cblock, raw, 0
            kind = child.kind
            itype = FILE if kind is file_kind else DIR if kind is dir_kind else BASIC_TYPE[kind]
            run.append(pack_entry(coff, num - base, itype, len(raw) - 1) + raw)
            run_bytes += esize
        flush()
        return bytes(out_b), index if len(index) > 1 else []

    def write_dir(self, d: Node, parent: int) -> None:
        kids = d.children
        for name in self.names[d]:
            child = kids[name]
            if child.kind is Kind.DIR:
                self.write_dir(child, self.number[d])
            elif self.refs[self.number[child] - 1] < 0:  # a hardlink's inode is written once
                self.write_leaf(child)
        dirs = self.dirs
        dref = dirs.ref()
        lst, index = self.listing(d, dirs.tell())
        dirs.add(lst)
        nlink = self.tree.nlink(d)
        xi = self.xattr_of(d)
        fsize = len(lst) + 3  # the kernel counts "." and ".." as 3 bytes
        self.refs[self.number[d] - 1] = self.inodes.ref()
        if fsize <= 0xFFFF and xi == NO_XATTR and not index:
            self.inodes.add(self.header(d, DIR) + DIR_INODE.pack(
                start_block=dref >> 16, nlink=nlink, file_size=fsize, offset=dref & 0xFFFF,
                parent_inode=parent))
        else:
            idx = b"".join(DIR_INDEX.pack(index=off, start_block=dirs.block_start(upos), size=len(name) - 1)
                           + name for off, upos, name in index)
            self.inodes.add(self.header(d, LDIR) + LDIR_INODE.pack(
                nlink=nlink, file_size=fsize, start_block=dref >> 16, parent_inode=parent,
                i_count=len(index), offset=dref & 0xFFFF, xattr=xi) + idx)


# -- phase 4: tables ---------------------------------------------------------------------
@dataclass
class TablePlan:
    """Where each table lands after the data, and the bytes to write there."""

    chunks: list[tuple[int, bytes]] = field(default_factory=list)
    inode_table: int = 0
    directory_table: int = 0
    fragment_table: int = 0
    export_table: int = NO_TABLE
    id_table: int = 0
    xattr_table: int = NO_TABLE
    bytes_used: int = 0


def lay_out_tables(numbering: Numbering, data: DataPlan, meta: MetaPlan, codec: Codec,
                   exportable: bool, threads: int = 1) -> TablePlan:
    t = TablePlan()
    pos = data.end

    def put(blob: bytes) -> int:
        nonlocal pos
        at = pos
        t.chunks.append((at, blob))
        pos += len(blob)
        return at

    t.inode_table = put(meta.inodes)
    t.directory_table = put(meta.dirs)
    frag_entries = b"".join(FRAGMENT_ENTRY.pack(start_block=s, size=z) for s, z in data.fragments)
    blob, t.fragment_table = _table_with_index(MetaWriter(codec), frag_entries, pos, threads)
    put(blob)
    if exportable:  # the references are already in inode-number order: the table is their bytes
        assert EXPORT_ENTRY.size == meta.refs.itemsize == 8
        refs = meta.refs
        if sys.byteorder != "little":
            refs = array("q", refs)
            refs.byteswap()
        blob, t.export_table = _table_with_index(MetaWriter(codec), refs.tobytes(), pos, threads)
        put(blob)
    blob, t.id_table = _table_with_index(MetaWriter(codec), b"".join(ID_ENTRY.pack(id=i) for i in meta.ids.ids), pos)
    put(blob)
    xt = meta.xattrs
    if xt is not None and xt.ids:
        kv_start = put(xt.kv.finish())
        idm = MetaWriter(codec)
        idm.add(b"".join(XATTR_ID.pack(xattr=ref, count=n, size=size) for ref, n, size in xt.ids))
        id_pos = put(idm.finish())
        t.xattr_table = put(XATTR_TABLE_HEADER.pack(xattr_table_start=kv_start, xattr_ids=len(xt.ids))
                            + b"".join(TABLE_POINTER.pack(start=id_pos + s) for s in idm.block_starts))
    t.bytes_used = pos
    return t


# -- phase 5: write the tables and the superblock ------------------------------------------
def finish(out: ImageFile, params: FsParams, cfg: SquashfsOptions, codec: Codec, numbering: Numbering,
           data: DataPlan, meta: MetaPlan, t: TablePlan, limit: int | None) -> int:
    bs = cfg.block_size
    bytes_used = t.bytes_used
    total = (bytes_used + 4095) // 4096 * 4096 if cfg.pad else bytes_used
    if limit is not None and total > limit:
        raise CapacityError(f"the squashfs image needs {format_size(total)}, more than the "
                            f"{format_size(limit)} it was given")
    for off, blob in t.chunks:
        out.pwrite(blob, off)
    flags = DUPLICATES if cfg.dedup else 0
    if cfg.fragments == "none":
        flags |= NO_FRAGMENTS
    elif cfg.fragments == "always":
        flags |= ALWAYS_FRAGMENTS
    if cfg.exportable:
        flags |= EXPORTABLE
    if t.xattr_table == NO_TABLE:
        flags |= NO_XATTRS
    if data.options_block is not None:
        flags |= COMPRESSOR_OPTIONS
        out.pwrite(META_HEADER.pack(size=len(data.options_block) | META_UNCOMPRESSED) + data.options_block,
                   SUPERBLOCK.size)
    sb = SUPERBLOCK.pack(
        magic=MAGIC, inode_count=numbering.count, mkfs_time=min(max(params.timestamp, 0), U32),
        block_size=bs, fragment_count=len(data.fragments), compressor=codec.id,
        block_log=bs.bit_length() - 1, flags=flags, id_count=len(meta.ids.ids), version_major=4,
        version_minor=0, root_inode=meta.root_ref, bytes_used=bytes_used, id_table=t.id_table,
        xattr_table=t.xattr_table, inode_table=t.inode_table, directory_table=t.directory_table,
        fragment_table=t.fragment_table, export_table=t.export_table)
    out.pwrite(sb, 0)
    # bytes a rewound duplicate left past the end, and the padding, must read as zeros
    end_dirty = max(data.hwm, bytes_used)
    if end_dirty > bytes_used:
        out.pwrite(bytes(end_dirty - bytes_used), bytes_used)
    if total > bytes_used:
        out.pwrite(b"\0", total - 1)
    out.truncate(total)
    params.log(f"squashfs: {format_size(bytes_used)} used, image {format_size(total)}")
    return total
