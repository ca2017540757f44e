"""A content-addressed cache of compressed output units (SquashFS data and fragment blocks).

A unit's key is the SHA-256 of a *namespace* (everything that changes the compressed bytes:
format, codec, level, block size, codec options, library versions and a probe compression)
followed by the uncompressed bytes. The value is what the writer would have computed: the
compressed bytes, or a flag saying the block is stored uncompressed. Compression is a pure
function of key, so an image built from a warm, cold, damaged or absent cache is the same bytes;
only the time differs. Metadata is never cached.

Two layers, each optional:
- memory: a bounded LRU dict (the persistent worker keeps it across requests);
- disk (`--cache-dir`, FSTOOL_CACHE_DIR): one file per unit under `<dir>/blocks-v1/<2 hex>/`,
  written to a temporary name and renamed into place, so a reader sees a whole entry or none;
  readers take no lock. Each entry carries its key, its length and a SHA-256 of its payload: a
  truncated or altered entry is a miss (then overwritten), never wrong bytes. A hit touches the
  entry's mtime; when a build stored something, the oldest entries are removed until the
  directory fits `--cache-max-size` (two builds evicting at once only race to unlink).
"""
from __future__ import annotations

import contextlib
import contextvars
import hashlib
import os
import struct
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Iterator

from .errors import UsageError

ENTRY_MAGIC = b"FSTCACH1"
# magic, key, payload length, SHA-256 of the payload; the payload follows
ENTRY_HEADER = struct.Struct("<8s32sQ32s")
LAYOUT = "blocks-v1"
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

    def put(self, key: bytes, value: bytes) -> None:
        self._mem_put(key, value)
        if self._root is not None:
            self._disk_put(key, value)

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

    # -- disk layer -----------------------------------------------------------------------
    def _path(self, key: bytes) -> str:
        h = key.hex()
        return os.path.join(self._root, h[:2], h[2:])

    def _disk_get(self, key: bytes) -> bytes | None:
        path = self._path(key)
        try:
            with open(path, "rb") as f:
                blob = f.read()
        except OSError:
            return None
        hs = ENTRY_HEADER.size
        ok = len(blob) >= hs
        if ok:
            magic, k, n, digest = ENTRY_HEADER.unpack_from(blob)
            payload = blob[hs:]
            ok = (magic == ENTRY_MAGIC and k == key and n == len(payload)
                  and hashlib.sha256(payload).digest() == digest)
        if not ok:
            with self._lock:
                self.stats.corrupt += 1
            return None
        with contextlib.suppress(OSError):
            os.utime(path)  # LRU: a hit makes the entry young
        return payload

    def _disk_put(self, key: bytes, value: bytes) -> None:
        path = self._path(key)
        tmp = f"{path}.{os.getpid()}.{threading.get_ident()}.tmp"
        blob = ENTRY_HEADER.pack(ENTRY_MAGIC, key, len(value), hashlib.sha256(value).digest()) + value
        try:
            os.makedirs(os.path.dirname(path), exist_ok=True)
            with open(tmp, "wb") as f:
                f.write(blob)
            os.replace(tmp, path)  # atomic: readers see the old entry, the new one, or none
        except OSError:
            # a full or read-only cache costs time, never the build
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            return
        with self._lock:
            self.stats.stored += 1
            self._stored_since_flush += 1

    def flush(self) -> None:
        """After a build: bring the directory back under max_size, oldest entries first."""
        if self._root is None or not self._stored_since_flush:
            return
        self._stored_since_flush = 0
        self.stats.evicted += evict(self._root, self.max_size)


def evict(root: str, max_size: int) -> int:
    """Remove least recently used entries until the cache holds at most max_size bytes, and
    temporary files a killed build left behind. Returns how many entries went."""
    entries = []
    total = 0
    now = time.time()
    try:
        subdirs = list(os.scandir(root))
    except OSError:
        return 0
    for sub in subdirs:
        if not sub.is_dir(follow_symlinks=False):
            continue
        try:
            it = list(os.scandir(sub.path))
        except OSError:
            continue
        for e in it:
            try:
                st = e.stat(follow_symlinks=False)
            except OSError:
                continue
            if e.name.endswith(".tmp"):
                if now - st.st_mtime > STALE_TMP_SECONDS:
                    with contextlib.suppress(OSError):
                        os.unlink(e.path)
                continue
            entries.append((st.st_mtime_ns, e.path, st.st_size))
            total += st.st_size
    if total <= max_size:
        return 0
    entries.sort()
    removed = 0
    for _, path, size in entries:
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
