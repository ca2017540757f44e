"""A head start for the data pass: blocks compressed while the tree is still being loaded.

Loading a large host directory takes a second per 200,000 entries, on one core: the data
pass, which keeps every core busy, cannot start before the tree is whole. Meanwhile a
forked child (at the lowest priority, so the walk it shares the machine with never waits
for it) walks the same directory in the data pass's order, cuts its files into blocks and
fragment blocks as `DataWriter` will, and compresses them, storing each result in shared
memory with the SHA-256 of its input. When the data pass starts, the child is stopped and
the writer takes, in order, every result whose input digest is the one of the block it is
about to compress; at the first block that differs (the tree was changed on the way: an
overlay, an override, a file edited meanwhile) it stops comparing and compresses as usual.
A result is the codec's output for those exact bytes, so the image is the same bytes with
a head start, without one, or with one cut short anywhere.

With a block cache, a block taken from the head start is looked up and stored as one
compressed in the data pass would be, so a cold cache ends up the same.

Only for a single host directory of MIN_ENTRIES entries or more as the source, with two
threads or more, and where this process may fork.
"""
from __future__ import annotations

import hashlib
import mmap
import os
import stat
import struct

from ...image import fork_helper, may_fork as _may_fork, reap_helper

SHM_BYTES = 64 << 20          # the compressed results (virtual: only pages written are used)
MAX_BLOCKS = 4096              # results at most (the table of them sits at the start)
ENTRY = struct.Struct("<QII32s")  # offset, length (0 when raw), stored raw (1) or not, digest
TABLE = 8 + MAX_BLOCKS * ENTRY.size


def start(fs) -> "HeadStart | None":
    """The registry's head-start entry point: a running HeadStart for fs, or None when this
    build cannot use one."""
    from ..base import FsParams

    if len(fs.sources) != 1 or fs.opts is None or not _may_fork():
        return None
    if FsParams(fs_type=fs.type).thread_count() < 2:
        return None
    root = os.path.join(fs.base_dir or os.getcwd(), fs.sources[0])
    try:
        if not stat.S_ISDIR(os.stat(root).st_mode) or not _large(root):
            return None
    except (OSError, ValueError):
        return None  # load_tree names the problem
    try:
        return HeadStart(root, fs.opts)
    except OSError:  # no room for a child or the mapping: no head start
        return None


MIN_ENTRIES = 2000  # a smaller tree loads in a few milliseconds: no head start to win


def _large(root: str, dirs: int = 64) -> bool:
    """Whether the tree under root has MIN_ENTRIES entries, found by listing at most `dirs`
    directories breadth first (a large tree shows it in its first few). A fork costs the
    parent about 5 ms of copied pages while the child lives: not worth it below that."""
    queue, seen = [root], 0
    for d in queue:
        if dirs == 0:
            break
        dirs -= 1
        with os.scandir(d) as it:
            for e in it:
                seen += 1
                if seen >= MIN_ENTRIES:  # a directory of a million names is not listed whole
                    return True
                if e.is_dir(follow_symlinks=False):
                    queue.append(e.path)
    return False


class HeadStart:
    def __init__(self, root: str, cfg, *, nice: int = 19):
        self.shm = mmap.mmap(-1, SHM_BYTES)
        parent = os.getpid()
        try:
            pid = fork_helper()
        except OSError:
            self.shm.close()
            raise
        if pid == 0:  # the child: compress what it can, then leave without any cleanup
            try:
                os.nice(nice)
                _predict(os.fsencode(root), cfg, self.shm, parent)
            finally:
                os._exit(0)
        self.pid = pid

    def harvest(self, wait: bool = False) -> list[tuple[bytes, bytes | None]]:
        """Stop the child (wait=True: let it finish the whole tree, for tests) and take its
        results: (input digest, compressed bytes or None when the block is stored raw)."""
        if self.pid:
            reap_helper(self.pid, kill=not wait)
            self.pid = 0
        shm = self.shm
        if shm.closed:
            return []
        out = []
        # read after the child is gone: every entry up to the count is whole
        count = min(struct.unpack_from("<Q", shm, 0)[0], MAX_BLOCKS)
        for i in range(count):
            off, n, raw, digest = ENTRY.unpack_from(shm, 8 + i * ENTRY.size)
            if off < TABLE or off + n > SHM_BYTES:
                break
            out.append((digest, None if raw else shm[off:off + n]))
        shm.close()
        return out

    def close(self) -> None:
        """The build ended before the data pass took the results."""
        self.harvest()


class Early:
    """The data pass's side: results taken in order while their digests match."""

    def __init__(self, results: list[tuple[bytes, bytes | None]]):
        self.results = results
        self.next = 0
        self.taken = 0

    def take(self, data: bytes) -> tuple[bytes, bool] | None:
        """The result for data (what DataWriter._compress returns), or None: compress it."""
        i = self.next
        if i >= len(self.results):
            self.results = []
            return None
        digest, c = self.results[i]
        if hashlib.sha256(data).digest() != digest:
            self.results = []  # diverged: nothing after this can be expected to match
            return None
        self.next = i + 1
        self.taken += 1
        return (data, True) if c is None else (c, False)


class _Full(Exception):
    pass


def _predict(root: bytes, cfg, shm: mmap.mmap, parent: int) -> None:
    """The child's work: the data pass's blocks in its order (files in post-order, names in
    byte order; a hardlink's first appearance only), each compressed into shm."""
    from .codec import Codec
    from .writer import tail_in_fragment

    codec = Codec(cfg.compression, cfg.level, cfg.block_size)
    bs = cfg.block_size
    zero = bytes(bs)
    count = 0
    pos = TABLE

    def put(block: bytes) -> None:
        nonlocal count, pos
        if count >= MAX_BLOCKS or os.getppid() != parent:
            raise _Full
        c = codec.compress(block)
        raw = len(c) >= len(block)
        n = 0 if raw else len(c)  # a raw block is the data pass's own bytes: nothing to keep
        if pos + n > SHM_BYTES:
            raise _Full
        if n:
            shm[pos:pos + n] = c
        ENTRY.pack_into(shm, 8 + count * ENTRY.size, pos, n, raw, hashlib.sha256(block).digest())
        pos += n
        count += 1
        struct.pack_into("<Q", shm, 0, count)  # last: the entry before it is whole

    frag = bytearray()
    seen: set = set()
    inodes: set = set()

    def add_tail(tail: bytes) -> None:
        nonlocal frag
        if len(frag) + len(tail) > bs:
            put(bytes(frag))
            frag = bytearray()
        frag += tail

    def add_file(path: bytes) -> None:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK)
        try:
            st = os.fstat(fd)
            if not stat.S_ISREG(st.st_mode):  # replaced since it was listed: stop here
                raise _Full
            size = st.st_size
            if size == 0:
                return
            use_frag = tail_in_fragment(cfg.fragments, size, bs)
            if use_frag and size < bs:
                tail = os.pread(fd, size, 0)
                if len(tail) != size:
                    raise _Full  # changed under us: the data pass will differ from here
                key = (size, hashlib.sha256(tail).digest())
                if cfg.dedup:
                    if key in seen:
                        return
                    seen.add(key)
                add_tail(tail)
                return
            h = hashlib.sha256() if cfg.dedup else None
            tail = None
            for off in range(0, size, bs):
                block = os.pread(fd, min(bs, size - off), off)
                if len(block) != min(bs, size - off):
                    raise _Full
                if h is not None:
                    h.update(block)
                if len(block) < bs and use_frag:
                    tail = block
                elif block != (zero if len(block) == bs else bytes(len(block))):
                    put(block)
            if h is not None:
                key = (size, h.digest(), "blocks")
                if key in seen:
                    return
                seen.add(key)
            if tail is not None:
                add_tail(tail)
        finally:
            os.close(fd)

    def visit(d: bytes) -> None:
        with os.scandir(d) as it:
            entries = sorted(it, key=lambda e: e.name)
        for e in entries:
            if e.is_dir(follow_symlinks=False):
                visit(e.path)
            elif e.is_file(follow_symlinks=False):
                ino = e.inode()
                if ino in inodes:  # a hardlink met before
                    continue
                inodes.add(ino)
                add_file(e.path)

    try:
        visit(root)
        if frag:
            put(bytes(frag))
    except (_Full, OSError, RecursionError):
        pass
