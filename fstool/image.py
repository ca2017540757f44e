"""Image files: atomic output, sparse positional writes, bounded reads.

Invariants kept here:
- an output is written to a temporary file beside its destination and renamed
  over it only on success: a failed or interrupted build leaves nothing behind;
- writers place bytes with `pwrite` at absolute offsets and never write runs of
  zeros, so unwritten space stays a hole (an 8 GiB disk holding 300 MB of data
  takes about 300 MB on the host);
- readers go through `Region.pread`, which refuses reads outside the region
  with an `ImageError` instead of returning short data.
"""
from __future__ import annotations

import errno
import marshal
import os
import signal
import stat
import sys
import threading
from contextlib import contextmanager
from typing import Iterator

from .errors import ImageError, InputError, OutputError
from .tree import data_extents

COPY_CHUNK = 8 << 20
_local = threading.local()


def _copy_buffer() -> memoryview:
    """This thread's 1 MiB copy buffer (larger ones copied no faster)."""
    buf = getattr(_local, "buf", None)
    if buf is None:
        buf = _local.buf = memoryview(bytearray(1 << 20))
    return buf


class ImageFile:
    """A writable window of a file: offsets are relative to `base`."""

    def __init__(self, fd: int, base: int = 0, limit: int | None = None, path: str = "<image>",
                 device: bool = False):
        self.fd, self.base, self.limit, self.path = fd, base, limit, path
        self.device = device  # a block device: its size is fixed, truncate only checks

    def _check(self, off: int, n: int) -> None:
        if off < 0 or (self.limit is not None and off + n > self.limit):
            raise ImageError(f"write of {n} bytes at {off} is outside the image "
                             f"(size {self.limit})", where=self.path)

    def pwrite(self, data: bytes | bytearray | memoryview, off: int) -> None:
        """Write data at off. All-zero buffers are still written: callers that
        want holes simply do not write."""
        self._check(off, len(data))
        view = memoryview(data)
        pos = 0
        try:
            while pos < len(view):
                pos += os.pwrite(self.fd, view[pos:], self.base + off + pos)
        except OSError as e:
            raise OutputError(e.strerror or str(e), where=self.path) from None

    def copy_from(self, src_fd: int, src_off: int, length: int, off: int, stop=None) -> None:
        """Copy length bytes from src_fd at src_off to off; stop (a threading.Event), once
        set, ends the copy at the next chunk (the build is failing).

        Read into one buffer per thread, then written: measured against copy_file_range on
        the same host and trees (ext4, page cache), 0.175 s against 0.20 s for 250 MB in
        13,500 files and 0.11 against 0.13 s for 300 MB in 3,100: copy_file_range between
        two ext4 files is a splice through 64 KiB pipe buffers, and it cannot share blocks
        with an image whose blocks are not the host's anyway."""
        self._check(off, length)
        buf = _copy_buffer()
        if length <= len(buf):  # most files and pieces: one read, one write, no loop
            view = buf[:length]
            if os.preadv(src_fd, [view], src_off) == length:
                try:
                    if os.pwrite(self.fd, view, self.base + off) == length:
                        return
                except OSError as e:
                    raise OutputError(e.strerror or str(e), where=self.path) from None
                # a short write: the loop below writes it all again
        done = 0
        while done < length:
            if stop is not None and stop.is_set():
                return
            n = min(len(buf), length - done)
            view = buf[:n] if n < len(buf) else buf
            got = os.preadv(src_fd, [view], src_off + done)
            if not got:
                raise InputError(f"source ended early at {src_off + done}")
            self.pwrite(view[:got] if got < n else view, off + done)
            done += got

    def copy_sparse_from(self, src_path: str, length: int, off: int) -> None:
        """Copy a whole image file, skipping its holes."""
        fd = os.open(src_path, os.O_RDONLY)
        try:
            for start, n in data_extents(fd, length):
                self.copy_from(fd, start, n, off + start)
        finally:
            os.close(fd)

    def truncate(self, size: int) -> None:
        """Set the image size (only meaningful when base == 0)."""
        if self.device:
            if self.limit is not None and size > self.limit:
                raise ImageError(f"an image of {size} bytes does not fit on the device "
                                 f"({self.limit} bytes)", where=self.path)
        elif self.base == 0:
            os.ftruncate(self.fd, size)
        elif self.limit is not None and size > self.limit:
            raise ImageError(f"image of {size} bytes exceeds its region of {self.limit}",
                             where=self.path)


class Terminated(BaseException):
    """SIGTERM or SIGHUP arrived while an output was open: clean up, then exit 128 + signum."""

    def __init__(self, signum: int):
        super().__init__(signum)
        self.signum = signum


def check_output_path(dest: str, *, allow_block_device: bool = False) -> None:
    """Refuse an output path that writing would damage: a directory, a symlink, a device,
    a fifo or a socket (a block device only with allow_block_device: `create --force`)."""
    try:
        st = os.lstat(dest)
    except FileNotFoundError:
        return
    except OSError as e:
        raise OutputError(e.strerror or str(e), where=dest) from None
    mode = st.st_mode
    if stat.S_ISREG(mode):
        return
    if stat.S_ISBLK(mode) and allow_block_device:
        return
    what = ("a directory" if stat.S_ISDIR(mode) else "a symlink" if stat.S_ISLNK(mode)
            else "a block device (use --force to write to it)" if stat.S_ISBLK(mode)
            else "a character device" if stat.S_ISCHR(mode) else "a fifo" if stat.S_ISFIFO(mode)
            else "a socket")
    raise OutputError(f"the output is {what}; nothing was written", where=dest)


def _open_unnamed(dest_dir: str) -> tuple[int, bool]:
    """An unnamed file in dest_dir (O_TMPFILE): even SIGKILL leaves nothing behind.
    (fd, True), or (-1, False) where the filesystem cannot do it."""
    flag = getattr(os, "O_TMPFILE", 0)
    if not flag or not os.path.isdir("/proc/self/fd"):
        return -1, False
    try:
        return os.open(dest_dir, flag | os.O_RDWR | os.O_CLOEXEC, 0o644), True
    except OSError as e:
        if e.errno in (errno.EOPNOTSUPP, errno.EISDIR, errno.EINVAL, errno.ENOENT):
            return -1, False
        raise OutputError(e.strerror or str(e), where=dest_dir) from None


@contextmanager
def atomic_output(dest: str) -> Iterator[ImageFile]:
    """Yield an ImageFile on a file that gets dest's name only when it is complete.

    Where the filesystem allows, the file has no name at all until then (O_TMPFILE,
    linked in at the end), so a killed build leaves nothing; elsewhere it is a hidden
    temporary file beside dest, removed on any exception, SIGINT, SIGTERM or SIGHUP.
    """
    check_output_path(dest)
    dest_dir = os.path.dirname(os.path.abspath(dest)) or "."
    if not os.path.isdir(dest_dir):
        raise OutputError("output directory does not exist", where=dest_dir)
    fd, unnamed = _open_unnamed(dest_dir)
    tmp: str | None = None
    if not unnamed:
        import tempfile  # only here, where O_TMPFILE is missing (3 ms to import)
        try:
            fd, tmp = tempfile.mkstemp(prefix="." + os.path.basename(dest) + ".", suffix=".tmp",
                                       dir=dest_dir)
        except OSError as e:
            raise OutputError(e.strerror or str(e), where=dest_dir) from None
    old = {}

    def _on_signal(signum, frame):  # an exception, so the cleanup below runs
        raise Terminated(signum)

    try:
        for sig in (signal.SIGTERM, signal.SIGHUP):
            try:
                old[sig] = signal.signal(sig, _on_signal)
            except ValueError:  # not the main thread
                pass
        os.fchmod(fd, 0o644)
        yield ImageFile(fd, path=dest)
        try:
            os.fsync(fd) if os.environ.get("FSTOOL_FSYNC") else None
            if unnamed:  # linkat(AT_SYMLINK_FOLLOW) of the /proc magic link names the file
                name = f".{os.path.basename(dest)}.{os.getpid()}.tmp"
                dfd = os.open(dest_dir, os.O_RDONLY | os.O_DIRECTORY)
                try:
                    os.link(f"/proc/self/fd/{fd}", name, dst_dir_fd=dfd, follow_symlinks=True)
                finally:
                    os.close(dfd)
                tmp = os.path.join(dest_dir, name)
            os.close(fd)
            fd = -1
            os.replace(tmp, dest)
        except OSError as e:
            raise OutputError(e.strerror or str(e), where=dest) from None
        tmp = None
    finally:
        if fd >= 0:
            os.close(fd)
        if tmp is not None:
            try:
                os.unlink(tmp)
            except FileNotFoundError:
                pass
        for sig, h in old.items():
            signal.signal(sig, h)


BLKZEROOUT = 0x127F  # _IO(0x12, 127): zero a byte range of a block device


def is_block_device(path: str) -> bool:
    try:
        return stat.S_ISBLK(os.lstat(path).st_mode)  # a symlink to one is refused, as outputs are
    except OSError:
        return False


def mounted_from(path: str) -> str | None:
    """Where the block device at path (or a partition of it) is mounted, or None."""
    rdev = os.stat(path).st_rdev
    major, minor = os.major(rdev), os.minor(rdev)
    holders = {(major, minor)}
    sysdir = f"/sys/dev/block/{major}:{minor}"
    try:
        for name in os.listdir(os.path.realpath(sysdir)):
            dev = os.path.join(sysdir, name, "dev")
            if os.path.exists(dev):
                a, b = open(dev).read().strip().split(":")
                holders.add((int(a), int(b)))
    except OSError:
        pass
    try:
        with open("/proc/self/mountinfo") as f:
            for line in f:
                fields = line.split()
                a, b = fields[2].split(":")
                if (int(a), int(b)) in holders:
                    return fields[4]
    except OSError:
        pass
    return None


@contextmanager
def device_output(dest: str) -> Iterator[ImageFile]:
    """Write straight onto block device dest (opened exclusively, so the kernel refuses one in
    use), zeroed first so no old data shows through the holes writers leave."""
    where = mounted_from(dest)
    if where is not None:
        raise OutputError(f"is mounted on {where}: refusing to write to it", where=dest)
    try:
        fd = os.open(dest, os.O_RDWR | os.O_EXCL | os.O_CLOEXEC)
    except OSError as e:
        raise OutputError(f"cannot open it exclusively ({e.strerror}): in use?", where=dest) from None
    try:
        size = os.lseek(fd, 0, os.SEEK_END)
        try:
            import fcntl
            import struct as _struct
            fcntl.ioctl(fd, BLKZEROOUT, _struct.pack("QQ", 0, size))
        except OSError:
            write_zeros(ImageFile(fd, limit=size, path=dest), 0, size)
        yield ImageFile(fd, limit=size, path=dest, device=True)
        os.fsync(fd)
    finally:
        os.close(fd)


@contextmanager
def open_output(dest: str, *, force: bool = False) -> Iterator[ImageFile]:
    """atomic_output for a file; device_output for a block device given with force (without
    it, atomic_output refuses the device, naming --force)."""
    if force and is_block_device(dest):
        with device_output(dest) as out:
            yield out
    else:
        with atomic_output(dest) as out:
            yield out


class Region:
    """A read-only window [offset, offset+length) of an image file."""

    def __init__(self, path: str, offset: int = 0, length: int | None = None, fd: int | None = None):
        self.path = path
        self._own = fd is None
        try:
            self.fd = os.open(path, os.O_RDONLY) if fd is None else fd
        except OSError as e:
            raise InputError(e.strerror or str(e), where=path) from None
        st = os.fstat(self.fd)
        total = os.lseek(self.fd, 0, os.SEEK_END) if stat.S_ISBLK(st.st_mode) else st.st_size
        self.offset = offset
        self.length = total - offset if length is None else length
        if offset < 0 or self.length < 0 or offset + self.length > total:
            raise ImageError(f"region {offset}+{self.length} lies outside the file ({total} bytes)",
                             where=path)

    def pread(self, n: int, off: int) -> bytes:
        """Exactly n bytes at off (relative to the region), or ImageError."""
        if n < 0 or off < 0 or off + n > self.length:
            raise ImageError(f"read of {n} bytes at {off} is past the end of the image "
                             f"({self.length} bytes): truncated or corrupt", where=self.path)
        data = os.pread(self.fd, n, self.offset + off)
        if len(data) != n:
            raise ImageError(f"short read at {off}", where=self.path)
        return data

    def sub(self, offset: int, length: int) -> "Region":
        if offset < 0 or length < 0 or offset + length > self.length:
            raise ImageError(f"partition {offset}+{length} lies outside the image", where=self.path)
        return Region(self.path, self.offset + offset, length, fd=self.fd)

    def close(self) -> None:
        if self._own and self.fd >= 0:
            os.close(self.fd)
            self.fd = -1

    def __enter__(self) -> "Region":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


class Stop(threading.Event):
    """in_background's stop event (set: the build is failing), with `main_done`, set once the
    main thread's block has ended (so the background work may take a second thread)."""

    def __init__(self) -> None:
        super().__init__()
        self.main_done = threading.Event()


_QUIET = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)


def fork_helper() -> int:
    """os.fork for a helper child, which never sees SIGINT, SIGTERM or SIGHUP (blocked in it
    for its whole life): a Python handler run in the child, even in the instant before its
    try block, would unwind into the parent's frames there (their cleanup, or the build
    itself, run twice). The parent kills its children with SIGKILL when it stops early."""
    old = signal.pthread_sigmask(signal.SIG_BLOCK, _QUIET)
    try:
        pid = os.fork()
    except BaseException:
        signal.pthread_sigmask(signal.SIG_SETMASK, old)
        raise
    if pid != 0:  # the parent: its own mask back
        signal.pthread_sigmask(signal.SIG_SETMASK, old)
    return pid


def reap_helper(pid: int, kill: bool = True) -> int:
    """Wait for a helper child made by fork_helper, killed first (SIGKILL) unless kill is
    False; returns its wait status."""
    if kill:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    return os.waitpid(pid, 0)[1]


def may_fork() -> bool:
    """Whether this process may fork a helper: only when it runs no other thread (the child
    gets just the forking one, and a lock another thread held would stay held there)."""
    return hasattr(os, "fork") and threading.active_count() == 1


class ChildResult:
    """work() run in a forked child, its result (anything marshal takes) sent back down a
    pipe: for helpers whose work is Python that would hold the GIL on a thread. result()
    waits for it, or gives None when the child failed (the caller then does the work
    itself, so the outcome never depends on the child); close() kills and reaps a child
    whose result is no longer wanted. OSError from the constructor: no child could be made."""

    def __init__(self, work):
        rfd, wfd = os.pipe()
        try:
            pid = fork_helper()
        except OSError:
            os.close(rfd)
            os.close(wfd)
            raise
        if pid == 0:  # the child: the work, its result, then out without any cleanup
            status = 1
            try:
                os.close(rfd)
                view = memoryview(marshal.dumps(work()))
                while view:
                    view = view[os.write(wfd, view):]
                status = 0
            finally:
                os._exit(status)
        os.close(wfd)
        self.pid, self.rfd = pid, rfd

    def result(self):
        chunks = []
        try:
            while chunk := os.read(self.rfd, 1 << 20):
                chunks.append(chunk)
        finally:
            os.close(self.rfd)
            self.rfd = -1
            status = reap_helper(self.pid, kill=False)
            self.pid = 0
        try:
            return marshal.loads(b"".join(chunks)) if status == 0 else None
        except (EOFError, ValueError, TypeError):
            return None

    def close(self) -> None:
        if self.pid:
            reap_helper(self.pid)
            self.pid = 0
        if self.rfd >= 0:
            os.close(self.rfd)
            self.rfd = -1


@contextmanager
def in_background(fn, *, fork: bool = False) -> Iterator[None]:
    """Run fn(stop) on a second thread while the block runs, and wait for it at the end; its
    error is raised then. fn checks `stop` (a threading.Event) between files: it is set when
    the block fails, so a failed build does not keep copying. Writers start their file data
    this way once every block is placed, and encode metadata meanwhile: the copy thread spends
    most of its time in read and write calls, which release the GIL, while Python packs inodes
    on the other core, and since the two write disjoint blocks at fixed offsets the bytes are
    the same as one after the other.

    fork=True (fn only writes the image and reads its sources: a file copy) runs fn in a
    child process where this one may fork: no GIL is shared with the metadata any more (ext
    4 KiB, 250 MB in 15,000 files: the build ends 0.06 s sooner, 0.58 s against 0.65). A
    child that fails is followed by fn here, whose error is raised (the copy is written again
    to the same blocks: the same bytes)."""
    child = None
    if fork and may_fork():
        try:
            child = ChildResult(lambda: fn(_finished()) or True)
        except OSError:  # no room for a child (a memory or process limit): a thread then
            pass
    if child is not None:
        try:
            yield
            done = child.result()
        except BaseException:  # the block failed (or a signal came): the child goes too
            child.close()
            raise
        if done is not True:
            fn(_finished())
        return
    stop = Stop()
    failure: list[BaseException] = []

    def run() -> None:
        try:
            fn(stop)
        except BaseException as e:  # noqa: BLE001 - handed to the main thread
            failure.append(e)

    t = threading.Thread(target=run, name="fstool-data", daemon=True)
    t.start()
    try:
        try:
            with io_thread_switching():
                yield
        finally:
            stop.main_done.set()
        t.join()  # a signal (SIGTERM: Terminated) may arrive while waiting here too
    except BaseException:
        stop.set()
        t.join()
        raise
    if failure:
        raise failure[0]


def _finished() -> Stop:
    """A Stop for fn run with nothing beside it (in a child, or after one failed)."""
    stop = Stop()
    stop.main_done.set()
    return stop


@contextmanager
def io_thread_switching() -> Iterator[None]:
    """While a second thread mostly waits on system calls (copying, reading) and the first
    runs Python, hand the GIL over every 0.2 ms instead of every 5: the I/O thread needs it
    for a few microseconds between two calls, and at Python's default it copied little until
    the first thread was done (ext, 250 MB: the copy ended 0.21 s after the metadata; 0.15 s
    at 0.2 ms)."""
    before = sys.getswitchinterval()
    sys.setswitchinterval(min(before, 0.0002))
    try:
        yield
    finally:
        sys.setswitchinterval(before)


def for_each_in_order(items: list, fn, stop=None, threads: int = 1) -> None:
    """fn(item) for each item, on `threads` threads that take the items in list order (for
    page-cache copies: two threads overlap one's read with the other's write; a host file's
    writes to one image file are serialized by the kernel anyway). Stops between items once
    `stop` is set. The error raised is the one of the first failing item in list order, as one
    thread would raise it: every item before it is still done, no later one is started once
    it has failed. Under in_background (stop is its Stop), the other threads start once the
    main thread's block has ended: three threads on two cores slowed both the copy and the
    metadata."""
    n = len(items)
    if threads <= 1 or n < 2:
        for item in items:
            if stop is not None and stop.is_set():
                return
            fn(item)
        return
    lock = threading.Lock()
    state = {"next": 0, "fail_at": n}
    errors: dict[int, BaseException] = {}

    def work(helper: bool = False) -> None:
        if helper and isinstance(stop, Stop):
            stop.main_done.wait()
        while True:
            with lock:
                i = state["next"]
                if i >= state["fail_at"] or (stop is not None and stop.is_set()):
                    return
                state["next"] = i + 1
            try:
                fn(items[i])
            except BaseException as e:  # noqa: BLE001 - the first in list order is raised
                with lock:
                    errors[i] = e
                    state["fail_at"] = min(state["fail_at"], i)
                return

    helpers = [threading.Thread(target=work, args=(True,), name="fstool-data", daemon=True)
               for _ in range(threads - 1)]
    for t in helpers:
        t.start()
    try:
        work()
    except BaseException:  # a signal on this thread: start nothing more
        with lock:
            state["fail_at"] = -1
        raise
    finally:
        for t in helpers:
            t.join()
    if errors:
        raise errors[min(errors)]


class Tally:
    """Bytes done out of a total, told to report(done, total) as they add up, from any of
    for_each_in_order's threads (report may be None: nothing is told)."""

    def __init__(self, report, total: int):
        self.report, self.total, self.done = report, total, 0
        self.lock = threading.Lock()

    def add(self, n: int) -> None:
        if self.report is not None:
            with self.lock:
                self.done += n
                self.report(self.done, self.total)


def copy_sources(out: ImageFile, items, sparse: bool = True, report=None, stop=None,
                 threads: int = 1) -> None:
    """Copy many files' data into out: items are (FileSource, offset in out). Each data extent
    moves through ImageFile.copy_from; holes stay holes (or become written zeros when not sparse).
    With threads=2 two threads copy (for_each_in_order): 300 MB in 3,000 files, 0.097 s
    against 0.122 s on one. report(done_bytes, total_bytes) is called after each file."""
    items = [(src, off) for src, off in items if src is not None and src.size]
    tally = Tally(report, sum(src.size for src, _ in items))

    def copy_one(item) -> None:
        src, off = item
        pos = 0
        fd = os.open(src.path, os.O_RDONLY)  # one open: a host file's holes are found on it
        try:
            for foff, length, soff in src.segments_on(fd):
                if foff > pos and not sparse:
                    write_zeros(out, off + pos, foff - pos)
                out.copy_from(fd, soff, length, off + foff, stop)
                pos = foff + length
        finally:
            os.close(fd)
        if pos < src.size and not sparse:
            write_zeros(out, off + pos, src.size - pos)
        tally.add(src.size)

    for_each_in_order(items, copy_one, stop, threads)


def write_zeros(out: ImageFile, off: int, n: int) -> None:
    """Write n zero bytes at off (where a hole is not wanted), at most COPY_CHUNK at a time."""
    zero = bytes(min(n, COPY_CHUNK))
    while n > 0:
        k = min(n, len(zero))
        out.pwrite(memoryview(zero)[:k], off)
        off, n = off + k, n - k
