"""In-place edits of a FAT volume: `fstool add IMG[:N] HOST_SRC DEST` and `fstool rm IMG[:N] PATH`.

Only what the edit needs is written: the directory slots of the entries added or
removed, the clusters allocated or freed (in every FAT copy) and, on FAT32, the
FSInfo free count and hint. Other files' clusters and entries are never touched.
New entries get VFAT long names and a unique short name made as the writer makes
them; clusters are taken first-fit from the lowest free one, so the same edit on
the same image gives the same bytes. Directories grow by a zeroed cluster when full
(a FAT12/16 root, fixed in size, cannot: CapacityError).
"""
from __future__ import annotations

import array
import os
import stat
import sys

from ...errors import CapacityError, ImageError, InputError
from ...image import Region
from ...tree import split_path
from .common import (ATTR_ARCHIVE, ATTR_DIRECTORY, ATTR_LONG_NAME, ATTR_LONG_NAME_MASK,
                     ATTR_READ_ONLY, ATTR_VOLUME_ID, DELETED, DIRENT, EOC, FSINFO,
                     FSINFO_LEAD, FSINFO_STRUCT, MAX_DIR_ENTRIES, to_fat_time)
from .reader import FatReader
from .writer import _basis, _check_long_name, _exact_short, _lfn_entries, _pad83, _upper_key

class FatEditor:
    """A FAT volume (a Region of an image file) opened for writing."""

    def __init__(self, region: Region):
        self.region = region
        self.fd = os.open(region.path, os.O_RDWR)
        self.base = region.offset
        self.r = FatReader(region)
        b = self.r.boot
        self.ss = b.sector_size
        self.fats, self.fat_sectors = b.fats, b.fat_sectors
        self.bits, self.cs = self.r.bits, self.r.cluster_bytes
        self.nclusters = self.r.clusters

    def close(self) -> None:
        os.fsync(self.fd)
        os.close(self.fd)

    # -- raw access ----------------------------------------------------------
    def _write(self, data: bytes, off: int) -> None:
        view, done = memoryview(data), 0
        while done < len(view):
            done += os.pwrite(self.fd, view[done:], self.base + off + done)

    def _invalidate(self) -> None:
        self.r._fat_cache.clear()
        self.r._dir_cache.clear()
        self.r._root = self.r._read_dir(None)

    def _set(self, cluster: int, value: int) -> None:
        """Set a FAT entry in every copy of the FAT."""
        for i in range(self.fats):
            fat = self.r.fat_start + i * self.fat_sectors * self.ss
            if self.bits == 32:
                old = int.from_bytes(self.r.region.pread(4, fat + cluster * 4), "little")
                self._write(((old & 0xF0000000) | value).to_bytes(4, "little"), fat + cluster * 4)
            elif self.bits == 16:
                self._write(value.to_bytes(2, "little"), fat + cluster * 2)
            else:
                off = fat + cluster * 3 // 2
                pair = int.from_bytes(self.r.region.pread(2, off), "little")
                pair = (pair & 0x000F) | (value << 4) if cluster & 1 else (pair & 0xF000) | value
                self._write(pair.to_bytes(2, "little"), off)
        self.r._fat_cache.clear()

    def _iter_free(self):
        """Free cluster numbers in order, reading the first FAT in 64 KiB pieces."""
        fat, last = self.r.fat_start, self.nclusters + 1
        if self.bits == 12:
            for c in range(2, last + 1):
                if self.r.fat_entry(c) == 0:
                    yield c
            return
        width = self.bits // 8
        per = (64 << 10) // width
        for first in range(0, last + 1, per):
            n = min(per, last + 1 - first)
            arr = array.array("I" if width == 4 else "H", self.r.region.pread(n * width, fat + first * width))
            if sys.byteorder == "big":
                arr.byteswap()
            for i, v in enumerate(arr):
                c = first + i
                if c >= 2 and (v & 0x0FFFFFFF if width == 4 else v) == 0:
                    yield c

    def _free_clusters(self, n: int) -> list[int]:
        """The n lowest free clusters (first fit: the same edit gives the same bytes)."""
        out = []
        for c in self._iter_free():
            out.append(c)
            if len(out) == n:
                return out
        raise CapacityError(f"needs {n} free clusters of {self.cs} bytes; the volume has {len(out)}",
                            where=self.region.path)

    def _alloc(self, n: int, after: int | None = None) -> list[int]:
        clusters = self._free_clusters(n)
        for a, b in zip(clusters, clusters[1:]):
            self._set(a, b)
        self._set(clusters[-1], EOC[self.bits])
        if after is not None:
            self._set(after, clusters[0])
        return clusters

    def _update_fsinfo(self) -> None:
        b = self.r.boot
        if self.bits != 32 or not b.fsinfo or b.fsinfo >= b.reserved:
            return
        off = b.fsinfo * self.ss
        sec = self.r.region.pread(512, off)
        lead, r1, sig, _free, _hint, r2, trail = FSINFO.unpack(sec)
        if lead != FSINFO_LEAD or sig != FSINFO_STRUCT:
            return
        count, first = 0, None
        for c in self._iter_free():
            count += 1
            first = c if first is None else first
        self._write(FSINFO.pack(lead, r1, sig, count, first if first is not None else 0xFFFFFFFF,
                                r2, trail), off)

    # -- directories ---------------------------------------------------------
    def _slots(self, cluster: int | None) -> list[int]:
        """Byte offsets of every 32-byte slot of a directory (None: the root)."""
        if cluster is None and self.bits != 32:
            return [self.r.root_start + i * 32 for i in range(self.r.boot.root_entries)]
        start = self.r.boot.root_cluster if cluster is None else cluster
        out = []
        for c in self.r.chain(start, "directory"):
            base = self.r._cluster_off(c)
            out.extend(base + i * 32 for i in range(self.cs // 32))
        return out

    def _entries(self, cluster: int | None):
        """(long or short name, short bytes, attr, first cluster, size, slot offsets) per entry."""
        slots = self._slots(cluster)
        run: list[int] = []
        out = []
        for off in slots:
            raw = self.r.region.pread(32, off)
            if raw[0] == 0:
                break
            if raw[0] == DELETED:
                run = []
                continue
            if raw[11] & ATTR_LONG_NAME_MASK == ATTR_LONG_NAME:
                run.append(off)
                continue
            short, attr, *_rest, hi, _wt, _wd, lo, size = DIRENT.unpack(raw)
            if attr & ATTR_VOLUME_ID or short[:2] in (b". ", b".."):
                run = []
                continue
            out.append((short, attr, lo | (hi << 16 if self.bits == 32 else 0), size, run + [off]))
            run = []
        return out

    def _dir_cluster(self, path: str) -> tuple[str, int | None]:
        norm, e = self.r._lookup(path)
        if e is not None and not e.is_dir:
            raise InputError("not a directory", where=norm)
        return norm, None if e is None else e.cluster

    def _place(self, cluster: int | None, records: list[bytes], where: str) -> None:
        """Write records into the first run of free slots long enough, growing the directory."""
        need = len(records)
        while True:
            slots = self._slots(cluster)
            run: list[int] = []
            for off in slots:
                first = self.r.region.pread(1, off)[0]
                if first in (0, DELETED):
                    run.append(off)
                    if len(run) == need:
                        for o, rec in zip(run, records):
                            self._write(rec, o)
                        return
                else:
                    run = []
            if cluster is None and self.bits != 32:
                raise CapacityError("the FAT12/16 root directory is full", where=where)
            if len(slots) + self.cs // 32 > MAX_DIR_ENTRIES:
                raise CapacityError(f"directory would exceed {MAX_DIR_ENTRIES} entries", where=where)
            last = list(self.r.chain(self.r.boot.root_cluster if cluster is None else cluster,
                                     "directory"))[-1]
            new = self._alloc(1, after=last)[0]
            self._write(bytes(self.cs), self.r._cluster_off(new))

    def _records(self, cluster: int | None, name: str, attr: int, first: int, size: int,
                 mtime: int, where: str) -> list[bytes]:
        """The long-name entries and the 8.3 entry for a new child of a directory."""
        existing = self.r._read_dir(cluster, where)
        if any(_upper_key(x.name) == _upper_key(name) or x.short.upper() == name.upper()
               for x in existing):
            raise InputError("already exists (FAT names are case-insensitive); rm it first",
                             where=where)
        used = {e[0] for e in self._entries(cluster)}
        units = _check_long_name(name, where)
        short = _exact_short(name.upper()) if name.isascii() else None
        if short is None or short in used:
            primary, ext, _lossy = _basis(name)
            n = 1
            while True:
                tail = f"~{n}"
                short = _pad83(primary[:8 - len(tail)] + tail, ext)
                if short not in used:
                    break
                n += 1
        lfn = [] if _exact_short(name) == short else _lfn_entries(units, short)
        date, hms, tenth = to_fat_time(mtime)
        rec = DIRENT.pack(short, attr, 0, tenth, hms, date, date,
                          first >> 16 if self.bits == 32 else 0, hms, date, first & 0xFFFF, size)
        return lfn + [rec]

    # -- the edits -------------------------------------------------------------
    def add(self, host: str, dest: str) -> None:
        """Copy host (a file or a directory tree) to image path dest; an existing directory at
        dest receives host under its own name, as cp does."""
        try:
            exists = self.r.stat(dest)
        except InputError:
            exists = None
        if exists is not None and not exists.kind.value == "dir":
            raise InputError("already exists; rm it first", where=exists.path)
        if exists is not None:
            norm, cluster = self._dir_cluster(dest)
            self._add(host, norm, cluster, os.path.basename(os.path.normpath(host)))
        else:
            parts = split_path(dest)
            if not parts:
                raise InputError("cannot replace the root directory", where=dest)
            norm, cluster = self._dir_cluster("/" + "/".join(parts[:-1]))
            self._add(host, norm, cluster, parts[-1])
        self._update_fsinfo()

    def _add(self, host: str, parent: str, cluster: int | None, name: str) -> None:
        where = f"{parent.rstrip('/')}/{name}"
        st = os.stat(host)
        if stat.S_ISREG(st.st_mode):
            if st.st_size > 0xFFFFFFFF:
                raise CapacityError("FAT files must be under 4 GiB", where=host)
            n = -(-st.st_size // self.cs)
            clusters = self._alloc(n) if n else []
            self._copy(host, clusters, st.st_size)
            attr = ATTR_ARCHIVE | (0 if st.st_mode & 0o200 else ATTR_READ_ONLY)
            recs = self._records(cluster, name, attr, clusters[0] if clusters else 0, st.st_size,
                                 int(st.st_mtime), where)
            self._place(cluster, recs, where)
        elif stat.S_ISDIR(st.st_mode):
            new = self._alloc(1)[0]
            date, hms, tenth = to_fat_time(int(st.st_mtime))
            dot = DIRENT.pack(b".          ", ATTR_DIRECTORY, 0, tenth, hms, date, date,
                              new >> 16 if self.bits == 32 else 0, hms, date, new & 0xFFFF, 0)
            up = 0 if cluster is None else cluster
            dotdot = DIRENT.pack(b"..         ", ATTR_DIRECTORY, 0, tenth, hms, date, date,
                                 up >> 16 if self.bits == 32 else 0, hms, date, up & 0xFFFF, 0)
            self._write((dot + dotdot).ljust(self.cs, b"\0"), self.r._cluster_off(new))
            recs = self._records(cluster, name, ATTR_DIRECTORY, new, 0, int(st.st_mtime), where)
            self._place(cluster, recs, where)
            self._invalidate()
            for child in sorted(os.listdir(host), key=os.fsencode):
                self._add(os.path.join(host, child), where, new, child)
        else:
            raise InputError("FAT stores only files and directories", where=host)
        self._invalidate()

    def _copy(self, host: str, clusters: list[int], size: int) -> None:
        fd = os.open(host, os.O_RDONLY)
        try:
            pos = 0
            for c in clusters:
                n = min(self.cs, size - pos)
                data = os.pread(fd, n, pos)
                if len(data) != n:
                    raise InputError("file shrank while reading", where=host)
                self._write(data.ljust(self.cs, b"\0") if n < self.cs else data,
                            self.r._cluster_off(c))
                pos += n
        finally:
            os.close(fd)

    def rm(self, path: str) -> None:
        """Remove a file or an empty directory."""
        norm, e = self.r._lookup(path)
        if e is None:
            raise InputError("cannot remove the root directory", where=path)
        if e.is_dir and self.r._read_dir(e.cluster, norm):
            raise InputError("directory is not empty", where=norm)
        parent = norm.rsplit("/", 1)[0] or "/"
        _, pcluster = self._dir_cluster(parent)
        target = next((x for x in self._entries(pcluster)
                       if self.r._short_name(x[0], 0).upper() == e.short.upper()), None)
        if target is None:
            raise ImageError("directory entry not found where the reader found it", where=norm)
        for off in target[4]:
            self._write(bytes([DELETED]), off)
        if e.cluster:
            for c in list(self.r.chain(e.cluster, norm)):
                self._set(c, 0)
        self._invalidate()
        self._update_fsinfo()
