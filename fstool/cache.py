"""A content-addressed cache of compressed output units (SquashFS data and fragment blocks,
EROFS segments' physical clusters).

A unit's key is the SHA-256 of a *namespace* (everything that changes the compressed bytes:
format, codec, level, block size, codec options, library versions and a probe compression)
followed by the uncompressed bytes. The value is what the writer would have computed: the
compressed bytes, or a flag saying the block is stored uncompressed. Compression is a pure
function of key, so an image built from a warm, cold, damaged or absent cache is the same bytes;
only the time differs. Metadata is never cached.

Two layers, each optional:
- memory: a bounded LRU dict (the persistent worker keeps it across requests);
- disk (`--cache-dir`, FSTOOL_CACHE_DIR): immutable pack files under `<dir>/packs-v1/`. A
  build appends the entries it computes to a pack of its own under a temporary name and renames
  it into place when it finishes, so other builds see a whole pack or none, and readers take no
  lock (one file per build, not one per block: on ext4 a file costs about a millisecond of
  system time, a pack's append next to nothing). At the start a build reads the record headers
  of every pack (an index of key -> location). Each record carries its key, its length and a
  SHA-256 of its payload: a truncated or altered record is a miss (and the block is stored
  again in the new pack), never wrong bytes. A pack a build read from gets a fresh mtime; a
  build that stored something then removes the least recently used packs until the directory
  fits `--cache-max-size` (two builds evicting at once only race to unlink).
"""
from __future__ import annotations

import contextlib
import contextvars
import hashlib
import os
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Iterator

from .errors import UsageError
from .structs import Record

ENTRY_MAGIC = b"FSTCACH1"
# one record of a pack; its payload follows
ENTRY_HEADER = Record("cache_entry", [
    ("magic", "8s"), ("key", "32s"), ("length", "Q"), ("sha256", "32s")])
LAYOUT = "packs-v1"
PACK_SUFFIX = ".pack"
TMP_SUFFIX = ".pack.tmp"
PACK_MAX = 64 << 20  # a build's new entries go into packs of at most about this size
DEFAULT_MAX_SIZE = 2 << 30
DEFAULT_MEMORY_SIZE = 512 << 20
STALE_TMP_SECONDS = 3600
ENTRY_OVERHEAD = 128  # what a memory entry costs besides its value (key, dict slot, object)

_active: contextvars.ContextVar["BlockCache | None"] = contextvars.ContextVar("fstool_block_cache",
                                                                              default=None)


def current() -> "BlockCache | None":
    """The cache the running build uses (set by the CLI or the worker), or None."""
    return _active.get()


@contextlib.contextmanager
def using(cache: "BlockCache | None") -> Iterator["BlockCache | None"]:
    token = _active.set(cache)
    try:
        yield cache
    finally:
        _active.reset(token)
        if cache is not None:
            cache.flush()


@dataclass
class Stats:
    hits: int = 0
    memory_hits: int = 0
    misses: int = 0
    corrupt: int = 0
    stored: int = 0
    evicted: int = 0

    def line(self) -> str:
        return (f"{self.hits} hits ({self.memory_hits} in memory), {self.misses} misses, "
                f"{self.corrupt} damaged entries ignored, {self.stored} stored, {self.evicted} evicted")


@dataclass
class BlockCache:
    directory: str | None = None
    max_size: int = DEFAULT_MAX_SIZE
    memory_size: int = 0
    stats: Stats = field(default_factory=Stats)

    def __post_init__(self) -> None:
        self._lock = threading.Lock()
        self._mem: OrderedDict[bytes, bytes] = OrderedDict()
        self._mem_bytes = 0
        self._stored_since_flush = 0
        self._index: dict[bytes, list[tuple[str, int, int]]] | None = None
        self._pack = None  # (file, temporary path) of the pack this build is filling
        self._pack_seq = 0
        self._touched: set[str] = set()
        self._root = os.path.join(self.directory, LAYOUT) if self.directory else None
        if self._root is not None:
            try:
                os.makedirs(self._root, exist_ok=True)
            except OSError as e:
                raise UsageError(f"cache directory {self.directory}: {e.strerror or e}") from None

    @property
    def memory_entries(self) -> int:
        return len(self._mem)

    @property
    def memory_bytes(self) -> int:
        return self._mem_bytes

    # -- keys -----------------------------------------------------------------------------
    @staticmethod
    def key(namespace: bytes, data: bytes) -> bytes:
        h = hashlib.sha256(namespace)
        h.update(data)
        return h.digest()

    # -- lookup ---------------------------------------------------------------------------
    def get(self, key: bytes) -> bytes | None:
        if self.memory_size:
            with self._lock:
                v = self._mem.get(key)
                if v is not None:
                    self._mem.move_to_end(key)
                    self.stats.hits += 1
                    self.stats.memory_hits += 1
                    return v
        v = self._disk_get(key) if self._root is not None else None
        with self._lock:
            if v is None:
                self.stats.misses += 1
            else:
                self.stats.hits += 1
        if v is not None:
            self._mem_put(key, v)
        return v

    def put(self, key: bytes, *parts: bytes) -> None:
        """Store the value parts make, one after the other: a caller's marker and payload
        are written as they are, never joined into one more buffer of a block's size."""
        if self.memory_size:
            self._mem_put(key, parts[0] if len(parts) == 1 else b"".join(parts))
        if self._root is not None:
            self._disk_put(key, parts)

    # -- memory layer ---------------------------------------------------------------------
    def _mem_put(self, key: bytes, value: bytes) -> None:
        cost = len(value) + ENTRY_OVERHEAD
        if not self.memory_size or cost > self.memory_size:
            return
        with self._lock:
            old = self._mem.pop(key, None)
            if old is not None:
                self._mem_bytes -= len(old) + ENTRY_OVERHEAD
            self._mem[key] = value
            self._mem_bytes += cost
            while self._mem_bytes > self.memory_size:
                _, v = self._mem.popitem(last=False)
                self._mem_bytes -= len(v) + ENTRY_OVERHEAD

    # -- disk layer: immutable pack files ----------------------------------------------------
    def _load_index(self) -> None:
        """Read the record headers of every pack (not the payloads): key -> locations, the
        newest pack's first. A pack whose records stop making sense is used up to there."""
        index: dict[bytes, list[tuple[str, int, int]]] = {}
        packs = []
        try:
            with os.scandir(self._root) as it:
                for e in it:
                    if e.name.endswith(PACK_SUFFIX):
                        try:
                            packs.append((e.stat().st_mtime_ns, e.name, e.path))
                        except OSError:
                            continue
        except OSError:
            packs = []
        packs.sort()
        hs = ENTRY_HEADER.size
        for _, _, path in packs:
            try:
                with open(path, "rb") as f:
                    size = os.fstat(f.fileno()).st_size
                    off = 0
                    while off + hs <= size:
                        head = os.pread(f.fileno(), hs, off)
                        magic, key, n, _ = ENTRY_HEADER.unpack(head)
                        if magic != ENTRY_MAGIC or off + hs + n > size:
                            self.stats.corrupt += 1  # a damaged record: the rest of this pack is unused
                            break
                        index.setdefault(key, []).insert(0, (path, off, n))
                        off += hs + n
                    else:
                        if off != size:
                            self.stats.corrupt += 1
            except OSError:
                continue
        self._index = index

    def _disk_get(self, key: bytes) -> bytes | None:
        if self._index is None:
            with self._lock:
                if self._index is None:
                    self._load_index()
        hs = ENTRY_HEADER.size
        for path, off, n in self._index.get(key, ()):
            try:
                with open(path, "rb") as f:
                    blob = os.pread(f.fileno(), hs + n, off)
            except OSError:  # evicted by another build meanwhile: a miss
                continue
            ok = len(blob) == hs + n
            if ok:
                magic, k, length, digest = ENTRY_HEADER.unpack(blob)
                payload = blob[hs:]
                ok = (magic == ENTRY_MAGIC and k == key and length == n
                      and hashlib.sha256(payload).digest() == digest)
            if not ok:
                with self._lock:
                    self.stats.corrupt += 1
                continue
            if path not in self._touched:  # LRU, per pack: a pack in use is young
                self._touched.add(path)
                with contextlib.suppress(OSError):
                    os.utime(path)
            return payload
        return None

    def _disk_put(self, key: bytes, parts: tuple[bytes, ...]) -> None:
        """Append the record to this build's pack, which appears under its final name, whole,
        when the build flushes (or when it reaches PACK_MAX)."""
        h = hashlib.sha256()
        for part in parts:
            h.update(part)
        head = ENTRY_HEADER.pack(magic=ENTRY_MAGIC, key=key, length=sum(map(len, parts)), sha256=h.digest())
        with self._lock:
            try:
                if self._pack is None:
                    self._pack_seq += 1
                    tmp = os.path.join(self._root, f".{os.getpid()}-{id(self)}-{self._pack_seq}{TMP_SUFFIX}")
                    self._pack = (open(tmp, "wb"), tmp)
                f, _ = self._pack
                f.write(head)
                for part in parts:
                    f.write(part)
                self.stats.stored += 1
                self._stored_since_flush += 1
                if f.tell() >= PACK_MAX:
                    self._seal()
            except OSError:
                # a full or read-only cache costs time, never the build
                self._discard()

    def _seal(self) -> None:
        f, tmp = self._pack
        self._pack = None
        try:
            f.close()
            name = f"{time.time_ns():020d}-{os.getpid()}-{self._pack_seq}{PACK_SUFFIX}"
            os.replace(tmp, os.path.join(self._root, name))  # atomic: readers see all of it or none
        except OSError:
            with contextlib.suppress(OSError):
                os.unlink(tmp)

    def _discard(self) -> None:
        if self._pack is not None:
            f, tmp = self._pack
            self._pack = None
            with contextlib.suppress(OSError):
                f.close()
            with contextlib.suppress(OSError):
                os.unlink(tmp)

    def flush(self) -> None:
        """After a build: publish its pack, then bring the directory back under max_size,
        least recently used packs first."""
        if self._root is None:
            return
        with self._lock:
            if self._pack is not None:
                self._seal()
            stored, self._stored_since_flush = self._stored_since_flush, 0
        self._touched.clear()
        self._index = None  # the next build sees the packs as they are then
        if stored:
            self.stats.evicted += evict(self._root, self.max_size)


def evict(root: str, max_size: int) -> int:
    """Remove least recently used packs until the cache holds at most max_size bytes, and
    temporary packs a killed build left behind. Returns how many packs went."""
    packs = []
    total = 0
    now = time.time()
    try:
        with os.scandir(root) as it:
            found = list(it)
    except OSError:
        return 0
    for e in found:
        try:
            st = e.stat(follow_symlinks=False)
        except OSError:
            continue
        if e.name.endswith(TMP_SUFFIX):
            if now - st.st_mtime > STALE_TMP_SECONDS:
                with contextlib.suppress(OSError):
                    os.unlink(e.path)
            continue
        if e.name.endswith(PACK_SUFFIX):
            packs.append((st.st_mtime_ns, e.path, st.st_size))
            total += st.st_size
    packs.sort()
    removed = 0
    for _, path, size in packs:
        if total <= max_size:
            break
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)
            removed += 1
        total -= size
    return removed


def from_options(directory: str | None, max_size: int | None) -> BlockCache | None:
    """The CLI's cache: --cache-dir, else FSTOOL_CACHE_DIR, else none."""
    directory = directory or os.environ.get("FSTOOL_CACHE_DIR") or None
    if directory is None:
        return None
    return BlockCache(directory=directory, max_size=DEFAULT_MAX_SIZE if max_size is None else max_size)
