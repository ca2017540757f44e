"""Content-defined holes: a file's data segments as its bytes say, not as the host stores it.

A writer that leaves holes in sparse files (ext, EROFS, F2FS, XFS) must not take them from
the host's SEEK_DATA map alone: the same bytes can sit in a sparse file on one machine and a
dense one on another (a remote executor stages every input whole; `cp`, `git` and tar
extraction each decide differently), and Bazel's action key has the content, never the
holes. So an image block is a hole exactly when every byte of the file in it is zero, as
`mke2fs -d` decides (it skips zero blocks): host holes are only a shortcut that saves
reading bytes known to be zero.

Zero blocks are found by reading the data in chunks and searching each for a block-sized
run of zeros (`bytes.find`, absent from almost every chunk of real data), so only chunks
holding one are looked at block by block. Reading costs about 0.3 s per GB from the page
cache (measured: 250 MB, 15,000 files, 0.145 s against 0.07 s for the SEEK_DATA map alone);
mapping the files instead was slower (page faults).
"""
from __future__ import annotations

import contextlib
import contextvars
import os
import threading
from collections import OrderedDict
from typing import Iterable, Iterator

from .image import ChildResult, io_thread_switching, may_fork
from .tree import FileSource, pread_exact

CHUNK = 4 << 20  # bytes read at a time
SMALL = 256 << 10  # files up to this size are read whole, host holes and all
_ZEROS: dict[int, bytes] = {}


def _zero(n: int) -> bytes:
    z = _ZEROS.get(n)
    if z is None:
        z = _ZEROS[n] = bytes(n)
    return z


class ScanMemory:
    """Scans kept across the persistent worker's requests, keyed by the content digest Bazel
    gives for each input (its WorkRequest's `inputs`): a file whose digest was scanned before
    is not read again. Safe because a scan is a function of the bytes alone (holes included,
    see above) and the digest names the bytes. Bounded: least recently used first out."""

    def __init__(self, max_entries: int = 1 << 20):
        self.max_entries = max_entries
        self.scans: OrderedDict[tuple, tuple] = OrderedDict()
        self.reused = self.scanned = 0
        self.lock = threading.Lock()  # a scan_ahead thread shares it with the writer's

    def get(self, key: tuple):
        with self.lock:
            hit = self.scans.get(key)
            if hit is not None:
                self.scans.move_to_end(key)
                self.reused += 1
            return hit

    def put(self, key: tuple, segs: list) -> None:
        with self.lock:
            self.scanned += 1
            self.scans[key] = tuple(segs)
            while len(self.scans) > self.max_entries:
                self.scans.popitem(last=False)


# (absolute path -> content digest of this request's inputs, the worker's ScanMemory)
_known: contextvars.ContextVar[tuple[dict[str, str], ScanMemory] | None] = contextvars.ContextVar(
    "fstool_input_digests", default=None)


@contextlib.contextmanager
def known_digests(digests: dict[str, str], memory: ScanMemory) -> Iterator[None]:
    """While the block runs, a host file at one of these absolute paths has that digest."""
    token = _known.set((digests, memory))
    try:
        yield
    finally:
        _known.reset(token)


_MAIN, _AHEAD = 0, 1  # who scans a file in scan_ahead: the writer's thread, or the helper


class _Ahead:
    """The state of one scan_ahead: the helper thread walks the files from the last one back,
    the writer asks from the first on, and whoever reaches a file first scans it."""

    def __init__(self, sources: list[FileSource], bs: int):
        self.sources, self.bs = sources, bs
        self.owner: dict[int, int] = {}  # id(source) -> _MAIN or _AHEAD (dict.setdefault: atomic)
        self.done: dict[int, object] = {}  # id(source) -> segments, or the error its scan raised
        self.cond = threading.Condition()
        self.stop = False

    def run(self) -> None:
        for src in reversed(self.sources):
            if self.stop:
                return
            k = id(src)
            if self.owner.setdefault(k, _AHEAD) != _AHEAD:
                return  # the writer has got this far: everything before is its own
            try:
                res: object = _segments(src, self.bs, -1)
            except Exception as e:  # noqa: BLE001 - raised in the writer, when it asks for this file
                res = e
            with self.cond:
                self.done[k] = res
                self.cond.notify_all()

    def take(self, src: FileSource, bs: int):
        """The scan of src, or None when the writer must scan it itself."""
        k = id(src)
        if bs != self.bs or self.owner.setdefault(k, _MAIN) == _MAIN:
            return None
        with self.cond:
            self.cond.wait_for(lambda: k in self.done)
            res = self.done.pop(k)
        self.owner[k] = _MAIN  # asked again (one source under two entries): scanned on the spot
        if isinstance(res, Exception):
            raise res
        return res


_ahead: contextvars.ContextVar[_Ahead | None] = contextvars.ContextVar("fstool_scan_ahead", default=None)


PER_FILE = 16 << 10  # what opening and closing a file costs, in bytes read (for the split)
PARENT_SHARE = 0.45  # the writer also builds its inodes meanwhile
FORK_MIN = 16 << 20  # less work than this is not worth a process


class _Forked:
    """scan_ahead's helper as a child process, which scans the last files (about 55% of the
    work) while the writer scans the first ones, and sends the results down a pipe. A child,
    not a thread: a scan is mostly Python and bytes.find, which hold the GIL, and a helper
    thread gained nothing (250 MB in 13,500 files: 0.127 s against 0.124 s alone; with the
    child, 0.075 s). The child runs only _segments on the files it was given and leaves with
    os._exit; a file it could not scan is scanned again by the writer, which then raises
    that file's error in order, so results and errors are those of one scan in order."""

    def __init__(self, sources: list[FileSource], bs: int, work: int):
        goal = work * PARENT_SHARE  # work: what _work(sources) says
        cut, acc = len(sources), 0
        for i, src in enumerate(sources):
            acc += src.size + PER_FILE
            if acc >= goal:
                cut = i + 1
                break
        theirs = sources[cut:]
        self.bs = bs
        self.theirs = theirs  # kept alive: their ids are the keys below
        self.index = {id(src): i for i, src in enumerate(theirs)}
        self.results: list | None = None
        self.child = ChildResult(lambda: [_scan_or_none(src, bs) for src in theirs])

    def take(self, src: FileSource, bs: int):
        """The child's scan of src, or None when the writer must scan it itself (not the
        child's, asked a second time, or the child could not scan it)."""
        i = self.index.pop(id(src), None) if bs == self.bs else None
        if i is None:
            return None
        if self.results is None:
            self._receive()
        res = self.results[i]
        if res is not None:
            _remember(src, bs, res)
        return res

    def _receive(self) -> None:
        res = self.child.result()
        self.results = res if isinstance(res, list) and len(res) == len(self.theirs) \
            else [None] * len(self.theirs)

    def close(self) -> None:
        self.child.close()  # never asked (the build failed first): killed, not waited for


def _scan_or_none(src: FileSource, bs: int):
    """The child's scan of one file; None when it fails (the writer scans it again, and
    raises its error in order)."""
    try:
        return _segments(src, bs, -1)
    except Exception:  # noqa: BLE001
        return None


def _work(sources: list[FileSource]) -> int:
    """What scanning these costs, in bytes read (opening a file counted as PER_FILE)."""
    return sum(src.size for src in sources) + PER_FILE * len(sources)


def _may_fork(work: int) -> bool:
    """Fork where the process may (image.may_fork) and for enough work to pay for it."""
    return may_fork() and work >= FORK_MIN


@contextlib.contextmanager
def scan_ahead(sources: Iterable[FileSource | None], bs: int) -> Iterator[None]:
    """While the block runs, content_segments(src, bs) finds most of these files' scans done
    by a helper: a child process (_Forked) that scans the last files while the writer scans
    the first, or, where the process cannot fork (other threads run, or little to scan), a
    thread that scans from the last file back until it meets the writer. The results are
    those of scanning in order (an unreadable file's error is raised when the writer asks
    for that file)."""
    todo = [s for s in sources if s is not None and s.size]
    if len(todo) < 2:
        yield
        return
    forked = None
    work = _work(todo)
    if _may_fork(work):
        try:
            forked = _Forked(todo, bs, work)
        except OSError:  # no room for a child (a memory, process or file limit): the thread
            pass
    if forked is not None:
        token = _ahead.set(forked)
        try:
            yield
        finally:
            _ahead.reset(token)
            forked.close()
        return
    ahead = _Ahead(todo, bs)
    t = threading.Thread(target=contextvars.copy_context().run, args=(ahead.run,), name="fstool-scan",
                         daemon=True)
    token = _ahead.set(ahead)
    t.start()
    try:
        with io_thread_switching():
            yield
    finally:
        _ahead.reset(token)
        ahead.stop = True
        t.join()


def content_segments(src: FileSource | None, bs: int, fd: int = -1) -> list[tuple[int, int, int]]:
    """(file_offset, length, source_offset) of the file's data, leaving out every block of bs
    bytes (at file offsets that are multiples of bs) whose bytes are all zero. Pieces of a
    block split between segments are judged each on its own bytes: a block is kept when any
    piece of it holds a non-zero byte. fd, when given, is the file already open (left open)."""
    if src is None or src.size == 0:
        return []
    ahead = _ahead.get()
    if ahead is not None:
        done = ahead.take(src, bs)
        if done is not None:
            return done
    return _segments(src, bs, fd)


def _known_key(src: FileSource, bs: int):
    """(the worker's ScanMemory, the key of src's scan in it), or None."""
    known = _known.get()
    if known is not None and src.segments is None and src.offset == 0:
        digest = known[0].get(os.path.abspath(src.path))
        if digest is not None:
            return known[1], (digest, src.size, bs)
    return None


def _remember(src: FileSource, bs: int, segs: list) -> None:
    """Keep a scan made elsewhere (scan_ahead's child) in the worker's ScanMemory."""
    mk = _known_key(src, bs)
    if mk is not None and mk[0].scans.get(mk[1]) is None:
        mk[0].put(mk[1], segs)


def _segments(src: FileSource, bs: int, fd: int) -> list[tuple[int, int, int]]:
    key = None
    mk = _known_key(src, bs)
    if mk is not None:
        known_memory, key = mk
        hit = known_memory.get(key)
        if hit is not None:
            return list(hit)
    own = fd < 0
    if own:
        fd = os.open(src.path, os.O_RDONLY)
    try:
        out: list[tuple[int, int, int]] = []
        if src.segments is None and src.offset == 0 and src.size <= SMALL:
            # a small host file is read whole, its holes as zeros: the same segments, without
            # the two SEEK_DATA/SEEK_HOLE calls (per file, they cost as much as the read)
            _scan(pread_exact(fd, src.size, 0, src.path), 0, 0, src.size, 0, bs, out)
        else:
            for foff, length, soff in src.segments_on(fd):
                if length > 0:
                    _split(fd, foff, length, soff, bs, out, src.path)
        if key is not None:
            known_memory.put(key, out)
        return out
    finally:
        if own:
            os.close(fd)


def _split(fd: int, foff: int, length: int, soff: int, bs: int,
           out: list[tuple[int, int, int]], path: str | None) -> None:
    """Append the non-zero pieces of one data segment to out, reading it in chunks that end
    on block boundaries (so no block straddles two chunks)."""
    pos = 0
    while pos < length:
        n = length - pos
        if n > CHUNK:
            n = CHUNK - (foff + pos + CHUNK) % bs
        _scan(pread_exact(fd, n, soff + pos, path), 0, foff + pos, n, soff + pos, bs, out)
        pos += n


def _scan(buf, at: int, foff: int, length: int, soff: int, bs: int,
          out: list[tuple[int, int, int]]) -> None:
    """buf[at:at+length] holds file bytes [foff, foff+length) read from source offset soff."""
    zero = _zero(bs)
    end = foff + length
    delta = soff - foff  # source offset minus file offset, along this piece
    if foff % bs == 0 and buf.find(zero, at, at + length) < 0:
        # no block-sized zero run anywhere (most data, and most small files): every whole
        # block is kept, and a partial last block unless all its bytes are zero
        tail = end % bs
        if tail and buf.count(0, at + length - tail, at + length) == tail:
            end -= tail
        if end > foff:
            _keep(out, foff, end, delta)
        return
    pos = foff
    run = -1  # file offset where the current non-zero run began, or -1
    while pos < end:
        nxt = min(end, (pos // bs + 1) * bs)
        i = at + pos - foff
        n = nxt - pos
        if n == bs:
            # a whole block: skip ahead over a stretch with no block-sized zero run at all
            hit = buf.find(zero, i, at + length)
            if hit < 0:  # no zero block up to the segment's end; a partial last block is judged below
                if run < 0:
                    run = pos
                last = end - (end % bs if end % bs else 0)
                pos = max(pos, last) if last > pos else end
                continue
            # every block before the one holding the zero run's start cannot be all zero
            first = foff + (hit - at)
            skip_to = max(pos, first - first % bs)
            if skip_to > pos:
                if run < 0:
                    run = pos
                pos = skip_to
                continue
            is_zero = buf[i:i + bs] == zero
        else:  # a piece of a block at a segment's edge
            piece = buf[i:i + n]
            is_zero = piece.count(0) == n
        if is_zero:
            if run >= 0:
                _keep(out, run, pos, delta)
                run = -1
        elif run < 0:
            run = pos
        pos = nxt
    if run >= 0:
        _keep(out, run, end, delta)


def _keep(out: list[tuple[int, int, int]], a: int, b: int, delta: int) -> None:
    """Append file bytes [a, b) (source offset a + delta), merged into the last segment when
    they continue it in the file and in the source."""
    if out:
        f, n, s = out[-1]
        if f + n == a and s + n == a + delta:
            out[-1] = (f, n + b - a, s)
            return
    out.append((a, b - a, a + delta))
