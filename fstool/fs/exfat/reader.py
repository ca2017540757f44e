"""exFAT reader: boot region, FAT chains and NoFatChain runs, entry sets, up-case table.

Every structure read is checked before it is trusted: the boot checksum, the
boot sector's geometry against the image size, each entry set's SetChecksum and
NameHash, the up-case table's checksum, and every cluster run against the
heap. A FAT chain that leaves the heap, reaches a free or bad cluster, or loops,
and a directory tree that loops back on itself all raise `ImageError`. FAT
sectors are read on demand in bounded blocks; directories are read whole but are
at most 256 MiB by the specification (and by this reader's check).
"""
from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Iterator

from ...errors import ImageError, InputError
from ...image import Region
from ...sizes import format_size
from ..base import ListedDirReader
from .common import (ATTR_DIRECTORY, BITMAP_ENTRY, BOOT, BOOT_SIGNATURE, ENTRY,
                     EXT_BOOT_SIGNATURE, FAT_BAD, FILE_ENTRY, FIRST_CLUSTER, FLAG_NO_FAT_CHAIN,
                     FS_NAME, GUID_ENTRY, LABEL_ENTRY, MAX_CLUSTERS, MAX_DIR_BYTES, NAME_ENTRY,
                     STREAM_ENTRY, TYPE_BITMAP, TYPE_END, TYPE_FILE, TYPE_GUID, TYPE_IN_USE,
                     TYPE_LABEL, TYPE_NAME, TYPE_STREAM, TYPE_UPCASE, UPCASE_ENTRY, boot_checksum,
                     decompress_upcase, format_serial, from_exfat_time, name_hash, set_checksum,
                     table_checksum, upcase_units)

READ_CHUNK = 1 << 20
FAT_BLOCK = 64 << 10
FAT_CACHE_BLOCKS = 64


@dataclass
class _Boot:
    partition_offset: int
    volume_length: int
    fat_offset: int
    fat_length: int
    heap_offset: int
    clusters: int
    root_cluster: int
    serial: int
    revision: int
    flags: int
    sector_shift: int
    cluster_shift: int
    fats: int
    percent: int


@dataclass
class _Entry:
    """One file or directory as its entry set describes it."""

    name: str
    attr: int
    first: int
    size: int
    contiguous: bool
    mtime: int

    @property
    def is_dir(self) -> bool:
        return bool(self.attr & ATTR_DIRECTORY)


def _parse_boot(sec: bytes, where: str) -> _Boot:
    (jump, name, zero, poff, vlen, foff, flen, hoff, count, root, serial, rev, flags, sshift,
     cshift, fats, _drive, percent, _res, _code, sig) = BOOT.unpack_from(sec, 0)
    if name != FS_NAME:
        raise ImageError("not an exFAT volume (no EXFAT file system name)", where=where)
    if sig != BOOT_SIGNATURE:
        raise ImageError("exFAT boot sector has no 0x55AA signature", where=where)
    if any(zero):
        raise ImageError("exFAT boot sector: the MustBeZero field is not zero", where=where)
    if not 9 <= sshift <= 12 or cshift > 25 - sshift:
        raise ImageError(f"invalid exFAT sector or cluster size (shifts {sshift}, {cshift})", where=where)
    if fats not in (1, 2):
        raise ImageError(f"invalid exFAT FAT count {fats}", where=where)
    if rev >> 8 != 1:
        raise ImageError(f"unsupported exFAT revision {rev >> 8}.{rev & 0xFF:02d}", where=where)
    return _Boot(poff, vlen, foff, flen, hoff, count, root, serial, rev, flags, sshift, cshift,
                 fats, percent)


def probe(region: Region) -> bool:
    """True if region starts with an exFAT boot sector."""
    if region.length < 512:
        return False
    sec = region.pread(512, 0)
    return sec[3:11] == FS_NAME and sec[510:512] == b"\x55\xaa"


class ExfatReader(ListedDirReader):
    """An exFAT volume opened read-only."""

    fs_type = "exfat"

    def __init__(self, region: Region):
        self.region = region
        self.where = region.path
        b = _parse_boot(region.pread(512, 0), self.where)
        self.boot = b
        ss = self.sector_size = 1 << b.sector_shift
        self.cluster_size = ss << b.cluster_shift
        if b.volume_length * ss > region.length:
            raise ImageError(f"the volume is {b.volume_length * ss} bytes but the image holds only "
                             f"{region.length}: truncated", where=self.where)
        self._check_boot_region()
        if not (24 <= b.fat_offset and b.fat_length * ss >= (b.clusters + 2) * 4
                and b.fat_offset + b.fat_length * b.fats <= b.heap_offset
                and b.heap_offset + (b.clusters << b.cluster_shift) <= b.volume_length
                and 0 < b.clusters <= MAX_CLUSTERS):
            raise ImageError("exFAT boot sector describes an impossible layout (FAT "
                             f"{b.fat_offset}+{b.fat_length}, heap {b.heap_offset}, "
                             f"{b.clusters} clusters, {b.volume_length} sectors)", where=self.where)
        if not self._in_heap(b.root_cluster):
            raise ImageError(f"exFAT root directory cluster {b.root_cluster} is outside the heap",
                             where=self.where)
        self._fat_cache: dict[int, bytes] = {}
        self._dir_cache: dict[tuple[int, int], list[_Entry]] = {}
        self.label = ""
        self.guid: uuid.UUID | None = None
        self.bitmap: tuple[int, int] | None = None
        self.upcase: list[int] | None = None
        self._root = self._read_root()

    # -- boot region ----------------------------------------------------------
    def _check_boot_region(self) -> None:
        ss = self.sector_size
        data = self.region.pread(12 * ss, 0)
        for i in range(1, 9):
            if int.from_bytes(data[(i + 1) * ss - 4:(i + 1) * ss], "little") != EXT_BOOT_SIGNATURE:
                raise ImageError(f"exFAT extended boot sector {i} has no signature", where=self.where)
        want = boot_checksum(data[:11 * ss])
        stored = data[11 * ss:]
        if any(int.from_bytes(stored[i:i + 4], "little") != want for i in range(0, ss, 4)):
            raise ImageError("exFAT boot region checksum does not match (corrupt boot sectors)",
                             where=self.where)

    # -- clusters -------------------------------------------------------------
    def _in_heap(self, c: int) -> bool:
        return FIRST_CLUSTER <= c < self.boot.clusters + FIRST_CLUSTER

    def _cluster_off(self, c: int) -> int:
        return self.boot.heap_offset * self.sector_size + (c - FIRST_CLUSTER) * self.cluster_size

    def fat_entry(self, cluster: int) -> int:
        off = self.boot.fat_offset * self.sector_size + cluster * 4
        blk, inner = divmod(off, FAT_BLOCK)
        data = self._fat_cache.get(blk)
        if data is None:
            end = (self.boot.fat_offset + self.boot.fat_length) * self.sector_size
            start = blk * FAT_BLOCK
            data = self.region.pread(min(FAT_BLOCK, end - start), start)
            if len(self._fat_cache) >= FAT_CACHE_BLOCKS:
                self._fat_cache.pop(next(iter(self._fat_cache)))
            self._fat_cache[blk] = data
        return int.from_bytes(data[inner:inner + 4], "little")

    def _runs(self, first: int, size: int, contiguous: bool, what: str) -> Iterator[tuple[int, int]]:
        """(byte offset, byte length) of the runs holding size bytes from cluster first."""
        cs = self.cluster_size
        need = (size + cs - 1) // cs
        if need == 0:
            return
        if not self._in_heap(first):
            raise ImageError(f"{what}: first cluster {first:#x} is outside the heap", where=self.where)
        if contiguous:
            if first + need > self.boot.clusters + FIRST_CLUSTER:
                raise ImageError(f"{what}: {need} contiguous clusters from {first:#x} run past the "
                                 "end of the heap", where=self.where)
            yield self._cluster_off(first), need * cs
            return
        c, run_start, run_len = first, first, 0
        for i in range(need):
            if not self._in_heap(c):
                raise ImageError(f"{what}: cluster chain reaches invalid cluster {c:#x}", where=self.where)
            if c != run_start + run_len:
                yield self._cluster_off(run_start), run_len * cs
                run_start, run_len = c, 0
            run_len += 1
            if i == need - 1:
                break
            nxt = self.fat_entry(c)
            if nxt == FAT_BAD:
                raise ImageError(f"{what}: cluster chain reaches a bad cluster", where=self.where)
            if nxt == 0:
                raise ImageError(f"{what}: cluster chain reaches a free cluster", where=self.where)
            if nxt == 0xFFFFFFFF:
                raise ImageError(f"{what}: cluster chain is shorter than the size ({size} bytes)",
                                 where=self.where)
            c = nxt
        yield self._cluster_off(run_start), run_len * cs

    def _chain_length(self, first: int, what: str) -> int:
        """Clusters in a FAT chain (for the root directory, which has no size); loops refused."""
        c, n = first, 0
        while True:
            if not self._in_heap(c):
                raise ImageError(f"{what}: cluster chain reaches invalid cluster {c:#x}", where=self.where)
            n += 1
            if n > self.boot.clusters or n * self.cluster_size > MAX_DIR_BYTES:
                raise ImageError(f"{what}: cluster chain loops or is too long", where=self.where)
            nxt = self.fat_entry(c)
            if nxt == 0xFFFFFFFF:
                return n
            if nxt in (0, FAT_BAD):
                raise ImageError(f"{what}: cluster chain reaches a free or bad cluster", where=self.where)
            c = nxt

    def _read_runs(self, first: int, size: int, contiguous: bool, what: str) -> bytes:
        out = bytearray()
        for off, length in self._runs(first, size, contiguous, what):
            out += self.region.pread(min(length, size - len(out)), off)
        return bytes(out)

    # -- directories ----------------------------------------------------------
    def _read_root(self) -> list[_Entry]:
        b = self.boot
        n = self._chain_length(b.root_cluster, "/")
        data = self._read_runs(b.root_cluster, n * self.cluster_size, False, "/")
        upcase_at = None
        for pos in range(0, len(data), ENTRY):
            t = data[pos]
            if t == TYPE_END:
                break
            if t == TYPE_LABEL:
                _t, count, units, _r = LABEL_ENTRY.unpack_from(data, pos)
                if count > 11:
                    raise ImageError(f"exFAT volume label of {count} characters", where=self.where)
                self.label = units[:count * 2].decode("utf-16-le", errors="replace")
            elif t == TYPE_BITMAP:
                _t, flags, _r, first, length = BITMAP_ENTRY.unpack_from(data, pos)
                if flags & 1 == 0:
                    if length < (b.clusters + 7) // 8 or not self._in_heap(first):
                        raise ImageError("exFAT allocation bitmap entry is invalid", where=self.where)
                    self.bitmap = (first, length)
            elif t == TYPE_UPCASE:
                upcase_at = UPCASE_ENTRY.unpack_from(data, pos)
            elif t == TYPE_GUID:
                e = data[pos:pos + ENTRY]
                _t, _n, csum, _f, guid, _r = GUID_ENTRY.unpack(e)
                if csum != set_checksum(e):
                    raise ImageError("exFAT volume GUID entry checksum does not match", where=self.where)
                self.guid = uuid.UUID(bytes_le=guid)
        if self.bitmap is None:
            raise ImageError("exFAT root directory has no allocation bitmap entry", where=self.where)
        if upcase_at is None:
            raise ImageError("exFAT root directory has no up-case table entry", where=self.where)
        _t, _r1, csum, _r2, first, length = upcase_at
        if not 0 < length <= 0x20000 or length % 2:
            raise ImageError(f"exFAT up-case table of {length} bytes is invalid", where=self.where)
        table = self._read_runs(first, length, False, "up-case table")
        if table_checksum(table) != csum:
            raise ImageError("exFAT up-case table checksum does not match", where=self.where)
        self.upcase = decompress_upcase(table)
        return self._parse_dir(data, "/")

    def _parse_dir(self, data: bytes, what: str) -> list[_Entry]:
        """The file entry sets of a directory's bytes, each checked."""
        out: list[_Entry] = []
        pos, end = 0, len(data)
        while pos < end:
            t = data[pos]
            if t == TYPE_END:
                break
            if t != TYPE_FILE:
                if t & TYPE_IN_USE and t in (TYPE_STREAM, TYPE_NAME):
                    raise ImageError(f"{what}: a {t:#04x} entry outside a file entry set", where=self.where)
                pos += ENTRY  # unused entries, volume label/bitmap/up-case/GUID, benign primaries
                continue
            count = data[pos + 1]
            size = (count + 1) * ENTRY
            if count < 2 or pos + size > end:
                raise ImageError(f"{what}: file entry set with {count} secondary entries", where=self.where)
            es = data[pos:pos + size]
            pos += size
            (_t, _n, csum, attr, _r, _ct, mtime, _at, _c10, m10, _cu, mutc, _au,
             _r2) = FILE_ENTRY.unpack_from(es, 0)
            if csum != set_checksum(es):
                raise ImageError(f"{what}: entry set checksum does not match", where=self.where)
            (st, flags, _r1, nlen, nhash, _r2, _valid, _r3, first,
             length) = STREAM_ENTRY.unpack_from(es, ENTRY)
            if st != TYPE_STREAM:
                raise ImageError(f"{what}: file entry without a stream extension", where=self.where)
            units = b""
            for i in range(2, count + 1):
                nt, _f, part = NAME_ENTRY.unpack_from(es, i * ENTRY)
                if nt != TYPE_NAME:
                    break
                units += part
            if nlen == 0 or len(units) < nlen * 2:
                raise ImageError(f"{what}: name of {nlen} characters does not fit its entries",
                                 where=self.where)
            units = units[:nlen * 2]
            if name_hash(upcase_units(units, self.upcase)) != nhash:
                raise ImageError(f"{what}: name hash does not match", where=self.where)
            name = units.decode("utf-16-le", errors="surrogatepass")
            try:
                name.encode("utf-8")
            except UnicodeEncodeError:
                raise ImageError(f"{what}: a name is not valid UTF-16", where=self.where) from None
            if "/" in name or "\0" in name or name in (".", ".."):
                raise ImageError(f"{what}: invalid name {name!r}", where=self.where)
            out.append(_Entry(name, attr, first, length, bool(flags & FLAG_NO_FAT_CHAIN),
                              from_exfat_time(mtime, m10, mutc)))
        return out

    def _read_dir(self, e: _Entry, what: str) -> list[_Entry]:
        key = (e.first, e.size)
        cached = self._dir_cache.get(key)
        if cached is not None:
            return cached
        if e.size > MAX_DIR_BYTES or e.size % self.cluster_size:
            raise ImageError(f"{what}: directory size {e.size} is invalid", where=self.where)
        entries = self._parse_dir(self._read_runs(e.first, e.size, e.contiguous, what), what)
        self._dir_cache[key] = entries
        return entries

    def _children(self, e: _Entry, what: str) -> list[_Entry]:
        return self._read_dir(e, what)

    def _case_match(self, entries: list[_Entry], comp: str) -> _Entry | None:
        """exFAT names are case-insensitive through the volume's up-case table."""
        try:
            key = upcase_units(comp.encode("utf-16-le"), self.upcase)
        except UnicodeEncodeError:
            return None
        return next((e for e in entries
                     if upcase_units(e.name.encode("utf-16-le", "surrogatepass"), self.upcase) == key), None)

    # -- Reader API -----------------------------------------------------------
    def info(self) -> list[tuple[str, str]]:
        b = self.boot
        size = b.volume_length * self.sector_size
        rows = [
            ("type", "exFAT"),
            ("label", self.label),
            ("volume id", format_serial(b.serial)),
            ("volume guid", str(self.guid) if self.guid else ""),
            ("size", f"{format_size(size)} ({size} bytes)"),
            ("sector size", str(self.sector_size)),
            ("cluster size", str(self.cluster_size)),
            ("clusters", str(b.clusters)),
            ("free clusters", str(b.clusters - self._used_clusters())),
            ("fat offset", str(b.fat_offset)),
            ("fat length", str(b.fat_length)),
            ("cluster heap offset", str(b.heap_offset)),
            ("root cluster", str(b.root_cluster)),
            ("partition offset", str(b.partition_offset)),
            ("revision", f"{b.revision >> 8}.{b.revision & 0xFF:02d}"),
            ("percent in use", "unknown" if b.percent == 0xFF else str(b.percent)),
        ]
        return rows

    def _used_clusters(self) -> int:
        first, _length = self.bitmap
        nbytes = (self.boot.clusters + 7) // 8
        used = 0
        done = 0
        for off, length in self._runs(first, nbytes, False, "allocation bitmap"):
            pos = 0
            while pos < length and done < nbytes:
                k = min(READ_CHUNK, length - pos, nbytes - done)
                chunk = self.region.pread(k, off + pos)
                if done + k == nbytes and self.boot.clusters % 8:
                    chunk = chunk[:-1] + bytes([chunk[-1] & ((1 << self.boot.clusters % 8) - 1)])
                used += int.from_bytes(chunk, "little").bit_count()
                pos += k
                done += k
        return used

    def read_file(self, path: str) -> Iterator[bytes]:
        norm, e = self._lookup(path)
        if e is None or e.is_dir:
            raise InputError("is a directory, not a regular file", where=norm)
        left = e.size
        for off, length in self._runs(e.first, e.size, e.contiguous, norm):
            n = min(length, left)
            pos = 0
            while pos < n:
                k = min(READ_CHUNK, n - pos)
                yield self.region.pread(k, off + pos)
                pos += k
            left -= n


def open(region: Region) -> ExfatReader:  # noqa: A001 - the reader-module interface
    """Open region as an exFAT volume (ImageError if it is not a sound one)."""
    return ExfatReader(region)
