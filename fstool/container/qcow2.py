"""qcow2 version 3 (QEMU's docs/interop/qcow2.txt): write from a sparse raw image, read
as a Region.

Written layout, in 64 KiB clusters: the header (cluster 0), the L1 table, every data
cluster in virtual order, the L2 tables, then the refcount table and its refcount blocks
(16-bit refcounts). Every cluster in use has refcount 1, so every L1/L2 entry carries
the COPIED flag; clusters of the raw image that are holes or all zeros are left
unallocated (they read as zeros), so `qemu-img compare` sees the raw image's bytes.
All fields are big-endian.

Invariants: the writer reads only the raw image's data extents and keeps one 8-byte L2
entry per allocated cluster in memory; the reader refuses backing files, encryption,
external data files and unknown incompatible features with one ImageError line, and
bounds every table it reads by the file's size.
"""
from __future__ import annotations

import os
import struct
import zlib
from typing import Iterator

from ..errors import ImageError
from ..image import ImageFile
from . import block_ranges
from .view import FileBackend

HEADER = struct.Struct(">4sIQIIQIIQQIIQQQQII")
# magic, version, backing_file_offset, backing_file_size, cluster_bits, size, crypt_method,
# l1_size, l1_table_offset, refcount_table_offset, refcount_table_clusters, nb_snapshots,
# snapshots_offset, incompatible_features, compatible_features, autoclear_features,
# refcount_order, header_length
HEADER_EXT = struct.Struct(">II")  # type, length (type 0: end of the extension area)
MAGIC = b"QFI\xfb"
CLUSTER_BITS = 16
COPIED = 1 << 63
COMPRESSED = 1 << 62
ZERO = 1
OFFSET_MASK = 0x00FFFFFFFFFFFE00
INCOMPAT_DIRTY, INCOMPAT_CORRUPT, INCOMPAT_DATA_FILE, INCOMPAT_COMPRESSION, INCOMPAT_EXTL2 = \
    1, 2, 4, 8, 16


def write(src_fd: int, size: int, out: ImageFile, cluster_bits: int = CLUSTER_BITS) -> int:
    """Write the raw image src_fd (size bytes) as qcow2 v3 with 2^cluster_bits-byte clusters
    (qemu-img's default 64 KiB unless asked: `create --cluster-size`); return the file's size."""
    if not 9 <= cluster_bits <= 21:
        raise ImageError(f"qcow2 clusters are 512 bytes to 2 MiB, not {1 << cluster_bits}")
    cs = 1 << cluster_bits
    per_l2 = cs // 8
    vclusters = (size + cs - 1) // cs
    l1_size = max(1, (vclusters + per_l2 - 1) // per_l2)
    l1_clusters = (l1_size * 8 + cs - 1) // cs
    next_host = 1 + l1_clusters  # the first data cluster
    l2: dict[int, list[int]] = {}  # L1 index -> its L2 entries (0: unallocated)
    zero = bytes(cs)
    for first, end in block_ranges(src_fd, size, cs):
        for vc in range(first, end):
            data = os.pread(src_fd, min(cs, size - vc * cs), vc * cs)
            if data == zero[:len(data)]:
                continue  # reads as zeros unallocated: no need to store it
            out.pwrite(data, next_host * cs)
            table = l2.setdefault(vc // per_l2, [0] * per_l2)
            table[vc % per_l2] = (next_host * cs) | COPIED
            next_host += 1
    l1 = [0] * l1_size
    for idx in sorted(l2):
        out.pwrite(struct.pack(f">{per_l2}Q", *l2[idx]), next_host * cs)
        l1[idx] = (next_host * cs) | COPIED
        next_host += 1
    out.pwrite(struct.pack(f">{l1_size}Q", *l1), cs)
    # The refcount structures count themselves: grow them until they cover every cluster.
    per_block = cs // 2  # 16-bit refcounts
    rt_clusters, blocks = 1, 1
    while True:
        total = next_host + rt_clusters + blocks
        need_blocks = (total + per_block - 1) // per_block
        need_rt = (need_blocks * 8 + cs - 1) // cs
        if need_blocks <= blocks and need_rt <= rt_clusters:
            break
        blocks, rt_clusters = max(blocks, need_blocks), max(rt_clusters, need_rt)
    rt_off = next_host * cs
    first_block = next_host + rt_clusters
    table = [(first_block + i) * cs for i in range(blocks)] + [0] * (rt_clusters * cs // 8 - blocks)
    out.pwrite(struct.pack(f">{len(table)}Q", *table), rt_off)
    one = struct.pack(">H", 1)
    for i in range(blocks):
        n = min(per_block, total - i * per_block)
        out.pwrite(one * n, (first_block + i) * cs)
    header = HEADER.pack(MAGIC, 3, 0, 0, cluster_bits, size, 0, l1_size, cs, rt_off, rt_clusters,
                         0, 0, 0, 0, 0, 4, HEADER.size)
    out.pwrite(header + HEADER_EXT.pack(0, 0), 0)
    out.truncate(total * cs)
    return total * cs


def probe(head: bytes) -> bool:
    return head[:4] == MAGIC


class Qcow2Image(FileBackend):
    """A Backend (see view.py) over a qcow2 file (versions 2 and 3)."""

    def _parse(self) -> None:
        self._l2_cache: dict[int, tuple[int, ...]] = {}
        self._open()

    def _bad(self, msg: str) -> ImageError:
        return ImageError(f"qcow2: {msg}", where=self.path)

    def _open(self) -> None:
        flen = os.fstat(self.fd).st_size
        raw = os.pread(self.fd, HEADER.size, 0)
        if len(raw) < 72 or raw[:4] != MAGIC:
            raise self._bad("not a qcow2 image (bad magic or truncated header)")
        version = struct.unpack_from(">I", raw, 4)[0]
        if version not in (2, 3):
            raise self._bad(f"version {version} is not supported (2 and 3 are)")
        if version == 2:
            raw = raw[:72] + bytes(HEADER.size - 72)
        if len(raw) < HEADER.size:
            raise self._bad("truncated header")
        (_, _, backing_off, _, cbits, size, crypt, l1_size, l1_off, _rt_off, _rt_cl, _nsnap,
         _snap_off, incompat, _compat, _autoclear, _rorder, _hlen) = HEADER.unpack(raw)
        if backing_off:
            raise self._bad("has a backing file; convert it with qemu-img first (fstool reads "
                            "self-contained images only)")
        if crypt:
            raise self._bad("is encrypted")
        if not 9 <= cbits <= 21:
            raise self._bad(f"cluster_bits {cbits} is out of range")
        if incompat & INCOMPAT_CORRUPT:
            raise self._bad("is marked corrupt (run qemu-img check -r all)")
        unknown = incompat & ~INCOMPAT_DIRTY
        if unknown:
            names = {INCOMPAT_DATA_FILE: "external data file", INCOMPAT_COMPRESSION: "zstd compression",
                     INCOMPAT_EXTL2: "extended L2 entries"}
            what = ", ".join(names.get(1 << b, f"bit {b}") for b in range(64) if unknown >> b & 1)
            raise self._bad(f"uses features fstool does not read: {what}")
        self.cbits, self.cs, self.size = cbits, 1 << cbits, size
        if l1_size * 8 > flen or l1_off + l1_size * 8 > flen:
            raise self._bad(f"L1 table ({l1_size} entries at {l1_off}) is outside the file")
        need = (size + (self.cs * (self.cs // 8)) - 1) // (self.cs * (self.cs // 8))
        if l1_size < need:
            raise self._bad(f"L1 table has {l1_size} entries, a {size}-byte disk needs {need}")
        self.flen = flen
        self.l1 = struct.unpack(f">{l1_size}Q", os.pread(self.fd, l1_size * 8, l1_off))

    def _l2(self, idx: int) -> tuple[int, ...] | None:
        off = self.l1[idx] & OFFSET_MASK
        if not off:
            return None
        t = self._l2_cache.get(idx)
        if t is None:
            if off + self.cs > self.flen:
                raise self._bad(f"L2 table at {off} is past the end of the file")
            t = struct.unpack(f">{self.cs // 8}Q", os.pread(self.fd, self.cs, off))
            if len(self._l2_cache) > 64:
                self._l2_cache.clear()
            self._l2_cache[idx] = t
        return t

    def _cluster(self, vc: int) -> bytes | None:
        """The bytes of virtual cluster vc, or None when it reads as zeros."""
        per_l2 = self.cs // 8
        table = self._l2(vc // per_l2)
        if table is None:
            return None
        e = table[vc % per_l2]
        if e & COMPRESSED:
            x = 62 - (self.cbits - 8)
            host = e & ((1 << x) - 1)
            sectors = ((e >> x) & ((1 << (self.cbits - 8)) - 1)) + 1
            end = min((host & ~511) + sectors * 512, self.flen)
            if host >= end:
                raise self._bad(f"compressed cluster {vc} at {host} is past the end of the file")
            comp = os.pread(self.fd, end - host, host)
            try:
                data = zlib.decompressobj(-12).decompress(comp, self.cs)
            except zlib.error as err:
                raise self._bad(f"compressed cluster {vc} is corrupt ({err})") from None
            if len(data) != self.cs:
                raise self._bad(f"compressed cluster {vc} expands to {len(data)} bytes")
            return data
        off = e & OFFSET_MASK
        if e & ZERO or not off:
            return None
        if off + self.cs > self.flen:
            # the last cluster of a file may be short; qemu reads past EOF as zeros
            if off >= self.flen:
                raise self._bad(f"cluster {vc} at {off} is past the end of the file")
        data = os.pread(self.fd, self.cs, off)
        return data + bytes(self.cs - len(data))

    def read(self, off: int, n: int) -> bytes:
        out = bytearray()
        end = off + n
        while off < end:
            vc, within = divmod(off, self.cs)
            take = min(end - off, self.cs - within)
            data = self._cluster(vc)
            out += bytes(take) if data is None else data[within:within + take]
            off += take
        return bytes(out)

    def extents(self) -> Iterator[tuple[int, int]]:
        per_l2 = self.cs // 8
        for idx in range(len(self.l1)):
            table = self._l2(idx)
            if table is None:
                continue
            for j, e in enumerate(table):
                if e & COMPRESSED or (e & OFFSET_MASK and not e & ZERO):
                    vc = idx * per_l2 + j
                    start = vc * self.cs
                    if start < self.size:
                        yield start, min(self.cs, self.size - start)

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1
