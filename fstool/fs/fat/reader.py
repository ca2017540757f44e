"""FAT12/16/32 reader: boot sector, FAT chains, directories with VFAT long names.

The FAT type comes from the cluster count (fatgen103's rule), never from the
type string. Every structure read is checked: a bad BPB, a cluster chain that
leaves the volume, loops, or ends early, and a file larger than its chain all
raise `ImageError` naming the image. FAT sectors are read on demand and cached
in bounded blocks, so huge volumes do not need their FAT in memory.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Iterator

from ...errors import ImageError, InputError
from ...image import Region
from ...sizes import format_size
from ..base import ListedDirReader
from .common import (ATTR_DIRECTORY, ATTR_LONG_NAME, ATTR_LONG_NAME_MASK,
                     ATTR_VOLUME_ID, BAD, BOOT_SIGNATURE, BPB, DELETED, DIRENT, EBPB16, EBPB32,
                     EOC_MIN, FSINFO, FSINFO_LEAD, FSINFO_STRUCT, LFN_LAST, LFNENT, MAX_DIR_ENTRIES,
                     NT_LOWER_BASE, NT_LOWER_EXT, bits_for_clusters, format_volume_id,
                     from_fat_time, lfn_checksum)

READ_CHUNK = 1 << 20
FAT_BLOCK = 64 << 10
FAT_CACHE_BLOCKS = 64


@dataclass
class _Boot:
    sector_size: int
    spc: int
    reserved: int
    fats: int
    root_entries: int
    total: int
    media: int
    fat_sectors: int
    hidden: int
    root_cluster: int
    fsinfo: int
    volume_id: int | None
    label: str | None
    type_string: str


@dataclass
class _DirEntry:
    name: str
    short: str
    attr: int
    cluster: int
    size: int
    mtime: int

    @property
    def is_dir(self) -> bool:
        return bool(self.attr & ATTR_DIRECTORY)

    @property
    def first(self) -> int:  # the first cluster, as the shared reader code (and exFAT) names it
        return self.cluster


def _parse_boot(sec: bytes, where: str) -> _Boot:
    (jump, _oem, ss, spc, reserved, fats, root_entries, tot16, media, fat16, _spt, _heads,
     hidden, tot32) = BPB.unpack_from(sec, 0)
    if sec[510:512] != BOOT_SIGNATURE:
        raise ImageError("no 0x55AA boot sector signature", where=where)
    if not (jump[0] == 0xEB and jump[2] == 0x90) and jump[0] != 0xE9:
        raise ImageError("boot sector does not start with a jump instruction", where=where)
    if ss not in (512, 1024, 2048, 4096):
        raise ImageError(f"invalid bytes per sector {ss}", where=where)
    if spc == 0 or spc & (spc - 1):
        raise ImageError(f"invalid sectors per cluster {spc}", where=where)
    if reserved == 0 or fats == 0:
        raise ImageError(f"invalid BPB: {reserved} reserved sectors, {fats} FATs", where=where)
    total = tot16 or tot32
    if total == 0:
        raise ImageError("invalid BPB: total sector count is 0", where=where)
    root_cluster, fsinfo = 0, 0
    if fat16 == 0:
        (fat32, _flags, _ver, root_cluster, fsinfo, _backup, _res, _drive, _r1, sig, vid,
         label, ftype) = EBPB32.unpack_from(sec, 36)
        fat_sectors = fat32
    else:
        fat_sectors = fat16
        _drive, _r1, sig, vid, label, ftype = EBPB16.unpack_from(sec, 36)
    if fat_sectors == 0:
        raise ImageError("invalid BPB: FAT size is 0", where=where)
    has_ext = sig in (0x28, 0x29)
    lab = None
    if has_ext and sig == 0x29:
        text = label.decode("cp437").rstrip(" ")
        lab = None if text in ("", "NO NAME") else text
    return _Boot(ss, spc, reserved, fats, root_entries, total, media, fat_sectors, hidden,
                 root_cluster, fsinfo, vid if has_ext else None, lab,
                 ftype.decode("cp437").strip() if has_ext and sig == 0x29 else "")


def probe(region: Region) -> bool:
    """True if region starts with a plausible FAT boot sector."""
    if region.length < 512:
        return False
    sec = region.pread(512, 0)
    try:
        b = _parse_boot(sec, region.path)
    except ImageError:
        return False
    root_sectors = (b.root_entries * 32 + b.sector_size - 1) // b.sector_size
    return b.total - b.reserved - b.fats * b.fat_sectors - root_sectors > 0


class FatReader(ListedDirReader):
    """A FAT volume opened read-only."""

    def __init__(self, region: Region):
        self.region = region
        self.where = region.path
        sec = region.pread(512, 0)
        b = _parse_boot(sec, self.where)
        if b.sector_size != 512:
            sec = region.pread(b.sector_size, 0)
        self.boot = b
        ss = b.sector_size
        self.root_sectors = (b.root_entries * 32 + ss - 1) // ss
        self.fat_start = b.reserved * ss
        self.root_start = (b.reserved + b.fats * b.fat_sectors) * ss
        self.data_start = self.root_start + self.root_sectors * ss
        data = b.total - b.reserved - b.fats * b.fat_sectors - self.root_sectors
        if data <= 0:
            raise ImageError("invalid BPB: no room for data clusters", where=self.where)
        self.clusters = data // b.spc
        self.bits = bits_for_clusters(self.clusters)
        self.fs_type = f"fat{self.bits}"
        self.cluster_bytes = b.spc * ss
        if b.total * ss > region.length:
            raise ImageError(f"the volume is {b.total * ss} bytes but the image holds only "
                             f"{region.length}: truncated", where=self.where)
        if (self.clusters + 2) * self.bits > b.fat_sectors * ss * 8:
            raise ImageError(f"the FAT ({b.fat_sectors} sectors) is too small for "
                             f"{self.clusters} clusters", where=self.where)
        if self.bits == 32:
            if b.root_cluster < 2 or b.root_cluster >= self.clusters + 2:
                raise ImageError(f"invalid FAT32 root cluster {b.root_cluster}", where=self.where)
        elif b.root_entries == 0:
            raise ImageError("FAT12/16 volume without root directory entries", where=self.where)
        self._fat_cache: dict[int, bytes] = {}
        self._dir_cache: dict[int, list[_DirEntry]] = {}
        self._root_label: str | None = None
        self._root = self._read_dir(None)

    # -- FAT access -----------------------------------------------------
    def _fat_read(self, off: int, n: int) -> bytes:
        out = b""
        while n > 0:
            blk, inner = divmod(off, FAT_BLOCK)
            data = self._fat_cache.get(blk)
            if data is None:
                start = blk * FAT_BLOCK
                length = min(FAT_BLOCK, self.boot.fat_sectors * self.boot.sector_size - start)
                data = self.region.pread(length, self.fat_start + start)
                if len(self._fat_cache) >= FAT_CACHE_BLOCKS:
                    self._fat_cache.pop(next(iter(self._fat_cache)))
                self._fat_cache[blk] = data
            piece = data[inner:inner + n]
            out += piece
            off += len(piece)
            n -= len(piece)
        return out

    def fat_entry(self, cluster: int) -> int:
        if self.bits == 12:
            raw = int.from_bytes(self._fat_read(cluster + cluster // 2, 2), "little")
            return raw >> 4 if cluster & 1 else raw & 0xFFF
        if self.bits == 16:
            return int.from_bytes(self._fat_read(cluster * 2, 2), "little")
        return int.from_bytes(self._fat_read(cluster * 4, 4), "little") & 0x0FFFFFFF

    def chain(self, start: int, what: str) -> Iterator[int]:
        """The clusters of the chain starting at start; ImageError for any fault."""
        c = start
        # a chain that comes back to a cluster it used loops (fsck.vfat reports it): refuse it
        # before yielding the repeat, so no caller ever returns wrong bytes. A set while the
        # chain is short, a bitmap of the volume once it is long (bounded memory).
        seen: set[int] | bytearray = set()
        while True:
            if not 2 <= c < self.clusters + 2:
                raise ImageError(f"{what}: cluster chain reaches invalid cluster {c:#x}",
                                 where=self.where)
            if isinstance(seen, set):
                if c in seen:
                    raise ImageError(f"{what}: cluster chain loops back to cluster {c}", where=self.where)
                seen.add(c)
                if len(seen) > 4096:
                    bitmap = bytearray((self.clusters + 9) // 8)
                    for x in seen:
                        bitmap[x >> 3] |= 1 << (x & 7)
                    seen = bitmap
            else:
                if seen[c >> 3] & (1 << (c & 7)):
                    raise ImageError(f"{what}: cluster chain loops back to cluster {c}", where=self.where)
                seen[c >> 3] |= 1 << (c & 7)
            yield c
            n = self.fat_entry(c)
            if n >= EOC_MIN[self.bits]:
                return
            if n == BAD[self.bits]:
                raise ImageError(f"{what}: cluster chain reaches a bad cluster", where=self.where)
            if n == 0:
                raise ImageError(f"{what}: cluster chain reaches a free cluster", where=self.where)
            c = n

    def _runs(self, start: int, what: str) -> Iterator[tuple[int, int]]:
        """(byte offset, byte length) of each contiguous run of a chain."""
        run_start = prev = None
        count = 0
        for c in self.chain(start, what):
            if prev is not None and c == prev + 1:
                count += 1
            else:
                if run_start is not None:
                    yield self._cluster_off(run_start), count * self.cluster_bytes
                run_start, count = c, 1
            prev = c
        if run_start is not None:
            yield self._cluster_off(run_start), count * self.cluster_bytes

    def _cluster_off(self, c: int) -> int:
        return self.data_start + (c - 2) * self.cluster_bytes

    # -- directories ----------------------------------------------------
    def _dir_data(self, cluster: int | None, what: str) -> Iterator[bytes]:
        if cluster is None:
            if self.bits == 32:
                cluster = self.boot.root_cluster
            else:
                yield self.region.pread(self.root_sectors * self.boot.sector_size, self.root_start)
                return
        total = 0
        for off, length in self._runs(cluster, what):
            total += length
            if total > MAX_DIR_ENTRIES * 32 + self.cluster_bytes:
                raise ImageError(f"{what}: directory is larger than FAT allows", where=self.where)
            for pos in range(0, length, READ_CHUNK):
                yield self.region.pread(min(READ_CHUNK, length - pos), off + pos)

    def _read_dir(self, cluster: int | None, what: str = "/") -> list[_DirEntry]:
        key = -1 if cluster is None else cluster
        cached = self._dir_cache.get(key)
        if cached is not None:
            return cached
        entries: list[_DirEntry] = []
        lfn: dict[int, bytes] = {}
        expect = 0
        csum = -1
        done = False
        for block in self._dir_data(cluster, what):
            for pos in range(0, len(block), 32):
                raw = block[pos:pos + 32]
                first = raw[0]
                if first == 0:
                    done = True
                    break
                if first == DELETED:
                    lfn, expect = {}, 0
                    continue
                attr = raw[11]
                if attr & ATTR_LONG_NAME_MASK == ATTR_LONG_NAME:
                    order, n1, _a, _t, ck, n2, _c, n3 = LFNENT.unpack(raw)
                    seq = order & 0x1F
                    if order & LFN_LAST:
                        lfn, expect, csum = {seq: n1 + n2 + n3}, seq, ck
                    elif expect and seq == expect - 1 and ck == csum:
                        lfn[seq] = n1 + n2 + n3
                        expect = seq
                    else:
                        lfn, expect = {}, 0
                    continue
                (short_raw, attr, nt, _tenth, _ct, _cd, _ad, hi, wtime, wdate, lo,
                 size) = DIRENT.unpack(raw)
                if attr & ATTR_VOLUME_ID:
                    if cluster is None and not attr & ATTR_DIRECTORY:
                        self._root_label = short_raw.decode("cp437").rstrip(" ")
                    lfn, expect = {}, 0
                    continue
                short = self._short_name(short_raw, nt)
                long_name = None
                if expect == 1 and lfn and lfn_checksum(short_raw) == csum:
                    units = b"".join(lfn[i] for i in sorted(lfn))
                    # a lone surrogate (which Windows lets through) becomes U+FFFD, printable
                    text = units.decode("utf-16-le", errors="replace")
                    long_name = text.split("\0", 1)[0]
                lfn, expect = {}, 0
                if short in (".", ".."):
                    continue
                start = lo | (hi << 16 if self.bits == 32 else 0)
                name = long_name or short
                entries.append(_DirEntry(name, short, attr, start, size, from_fat_time(wdate, wtime)))
            if done:
                break
        self._dir_cache[key] = entries
        return entries

    @staticmethod
    def _short_name(raw: bytes, nt: int) -> str:
        if raw[0] == 0x05:
            raw = b"\xe5" + raw[1:]
        base = raw[:8].decode("cp437").rstrip(" ")
        ext = raw[8:].decode("cp437").rstrip(" ")
        if nt & NT_LOWER_BASE:
            base = base.lower()
        if nt & NT_LOWER_EXT:
            ext = ext.lower()
        return f"{base}.{ext}" if ext else base

    def _children(self, e: _DirEntry, what: str) -> list[_DirEntry]:
        return self._read_dir(e.cluster, what)

    def _case_match(self, entries: list[_DirEntry], comp: str) -> _DirEntry | None:
        """FAT names are case-insensitive: the long name or the short one, case folded."""
        low = comp.casefold()
        return next((e for e in entries if e.name.casefold() == low or e.short.casefold() == low), None)

    # -- Reader API -----------------------------------------------------
    def info(self) -> list[tuple[str, str]]:
        b = self.boot
        label = self._root_label if self._root_label is not None else b.label
        size = b.total * b.sector_size
        rows = [
            ("type", f"FAT{self.bits}"),
            ("label", label or ""),
            ("volume id", format_volume_id(b.volume_id) if b.volume_id is not None else ""),
            ("size", f"{format_size(size)} ({size} bytes)"),
            ("sector size", str(b.sector_size)),
            ("cluster size", str(self.cluster_bytes)),
            ("clusters", str(self.clusters)),
            ("fats", str(b.fats)),
            ("sectors per fat", str(b.fat_sectors)),
            ("reserved sectors", str(b.reserved)),
            ("hidden sectors", str(b.hidden)),
            ("media", f"0x{b.media:02x}"),
        ]
        if self.bits != 32:
            rows.append(("root entries", str(b.root_entries)))
        else:
            rows.append(("root cluster", str(b.root_cluster)))
            free = self._fsinfo_free()
            if free is not None:
                rows.append(("free clusters", str(free)))
        return rows

    def _fsinfo_free(self) -> int | None:
        if not self.boot.fsinfo or self.boot.fsinfo >= self.boot.reserved:
            return None
        sec = self.region.pread(512, self.boot.fsinfo * self.boot.sector_size)
        lead, _r, struct_sig, free, _next, _r2, _trail = FSINFO.unpack(sec)
        if lead != FSINFO_LEAD or struct_sig != FSINFO_STRUCT or free == 0xFFFFFFFF:
            return None
        return free

    def data_map(self, path: str) -> list[tuple[int, int, int]]:
        """(file offset, length, offset in the region) of the file's bytes: clusters in place."""
        norm, e = self._lookup(path)
        if e is None or e.is_dir:
            raise InputError("is a directory, not a regular file", where=norm)
        out, pos, left = [], 0, e.size
        if left and e.cluster == 0:
            raise ImageError(f"{norm}: file of {e.size} bytes has no clusters", where=self.where)
        for off, length in (self._runs(e.cluster, norm) if left else ()):
            n = min(length, left)
            out.append((pos, n, off))
            pos, left = pos + n, left - n
            if left == 0:
                return out
        if left:
            raise ImageError(f"{norm}: cluster chain is shorter than the file size ({e.size} bytes)",
                             where=self.where)
        return out

    def read_file(self, path: str) -> Iterator[bytes]:
        norm, e = self._lookup(path)
        if e is None or e.is_dir:
            raise InputError("is a directory, not a regular file", where=norm)
        left = e.size
        if left == 0:
            return
        if e.cluster == 0:
            raise ImageError(f"{norm}: file of {e.size} bytes has no clusters", where=self.where)
        for off, length in self._runs(e.cluster, norm):
            n = min(length, left)
            pos = 0
            while pos < n:
                k = min(READ_CHUNK, n - pos)
                yield self.region.pread(k, off + pos)
                pos += k
            left -= n
            if left == 0:
                return
        raise ImageError(f"{norm}: cluster chain is shorter than the file size ({e.size} bytes)",
                         where=self.where)


def open(region: Region) -> FatReader:  # noqa: A001 - the reader-module interface
    """Open region as a FAT volume (ImageError if it is not a sound one)."""
    return FatReader(region)
