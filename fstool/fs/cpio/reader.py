"""newc cpio reader: plain, compressed and concatenated archives (what the kernel unpacks).

The image is read as the kernel's `unpack_to_rootfs` reads it: a sequence of uncompressed newc
archives (starting "0707" on a 4-byte boundary), NUL padding, and compressed streams (gzip, xz,
zstd, legacy lz4) each holding more archives. One pass indexes every member; compressed
streams are decompressed once into an anonymous temporary file, so member data is read from there
and memory stays bounded by the index. A later member of the same name replaces an earlier one,
as the kernel's unpacker overwrites. Hardlinked names (same inode number within one archive,
nlink > 1) share the data, which any one of them carries.
"""
from __future__ import annotations

import os
import stat as _stat
import tempfile
from dataclasses import dataclass
from typing import Iterator

from ...errors import ImageError
from ...tree import Kind
from ..base import REntry, Reader
from .compress import decompress_stream, sniff
from .format import HEADER_SIZE, MAGIC_CRC, MAGIC_NEWC, TRAILER, Header, pad

MAX_NAME = 4096
CHUNK = 1 << 20


def probe(region) -> bool:
    if region.length < 6:
        return False
    head = region.pread(min(8, region.length), 0)
    if head[:6] in (MAGIC_NEWC, MAGIC_CRC):
        return True
    if sniff(head) is None:
        return False
    # a compressed stream: only a cpio if it decompresses to one
    try:
        with tempfile.TemporaryFile() as tmp:
            _first_bytes(region, tmp)
            tmp.seek(0)
            return tmp.read(6) in (MAGIC_NEWC, MAGIC_CRC)
    except ImageError:  # too short to hold even the stream's header
        return False


def _first_bytes(region, tmp) -> None:
    """Decompress just enough of the stream at 0 to see what it holds (errors mean "not ours")."""
    small = region.sub(0, min(region.length, 9 << 20))  # one legacy lz4 block fits
    try:
        decompress_stream(small, 0, tmp, 1 << 16)
    except ImageError:
        pass


@dataclass
class _Member:
    entry: REntry
    src: object  # a Region-like (pread) or the temp file holding the data
    offset: int  # where the data starts in src
    group: tuple | None  # hardlink group key


class _Spill:
    """Decompressed bytes in an anonymous temp file, read back with pread."""

    def __init__(self):
        self.f = tempfile.TemporaryFile()
        self.path = "<decompressed>"

    @property
    def length(self) -> int:
        return os.fstat(self.f.fileno()).st_size

    def pread(self, n: int, off: int) -> bytes:
        data = os.pread(self.f.fileno(), n, off)
        if len(data) != n:
            raise ImageError(f"read of {n} bytes at {off} is past the end of the archive: truncated",
                             where=self.path)
        return data


def _safe(path: str) -> str:
    """A member name for an error message: as it is when printable, else quoted (a hostile name
    could break the one-line error with a control character)."""
    return path if path.isprintable() else repr(path)


def _kind(mode: int, where: str) -> Kind:
    try:
        return Kind.from_mode(mode)
    except ValueError:
        raise ImageError(f"unknown file type in mode {mode:o}", where=where) from None


class CpioReader(Reader):
    fs_type = "cpio"

    def __init__(self, region):
        self.region = region
        self.members: dict[str, _Member] = {}
        self.groups: dict[tuple, _Member] = {}  # hardlink group -> the member carrying data
        self.segments: list[str] = []
        self.spills: list[_Spill] = []
        self.count = 0
        self.magics: set[bytes] = set()
        self._dirs = 0
        self._scan()

    # -- indexing ---------------------------------------------------------------
    def _scan(self) -> None:
        r = self.region
        pos = 0
        archive = 0
        while pos < r.length:
            head = r.pread(min(6, r.length - pos), pos)
            if head[:1] == b"\0":
                pos += 1
                # skip a run of padding quickly
                while pos < r.length:
                    chunk = r.pread(min(CHUNK, r.length - pos), pos)
                    stripped = chunk.lstrip(b"\0")
                    pos += len(chunk) - len(stripped)
                    if stripped:
                        break
                continue
            if head in (MAGIC_NEWC, MAGIC_CRC):
                if pos % 4:
                    raise ImageError(f"archive at {pos} does not start on a 4-byte boundary", where=r.path)
                pos = self._archive(r, pos, archive)
                self.segments.append("newc")
                archive += 1
                continue
            name = sniff(r.pread(min(8, r.length - pos), pos))
            if name is None:
                raise ImageError(f"neither a cpio archive nor a compressed stream at offset {pos} "
                                 f"(starts {head!r})", where=r.path)
            spill = _Spill()
            self.spills.append(spill)
            end = decompress_stream(r, pos, spill.f, max(1 << 30, 64 * r.length))
            spill.f.flush()
            self.segments.append(name)
            inner = 0
            while inner < spill.length:
                h = spill.pread(min(6, spill.length - inner), inner)
                if h[:1] == b"\0":
                    inner += 1
                    continue
                if h not in (MAGIC_NEWC, MAGIC_CRC):
                    raise ImageError(f"the {name} stream at {pos} does not hold a newc cpio archive "
                                     f"(at {inner}: {h!r})", where=r.path)
                inner = self._archive(spill, inner, archive)
                archive += 1
            pos = end
        if not self.members:
            raise ImageError("holds no cpio members", where=r.path)
        if "/" not in self.members:  # archives made without "." still have a root
            self.members["/"] = _Member(REntry("/", Kind.DIR, 0o755, nlink=2, inode=self._dir_number()),
                                        None, 0, None)

    def _archive(self, src, pos: int, archive: int) -> int:
        """Index one archive starting at pos of src; the position after its trailer."""
        where = src.path
        while True:
            try:
                h = Header.unpack(src.pread(HEADER_SIZE, pos))
            except ValueError as e:
                raise ImageError(f"bad cpio header at {pos}: {e}", where=where) from None
            self.magics.add(h.magic)
            if not 1 <= h.namesize <= MAX_NAME:
                raise ImageError(f"name size {h.namesize} at {pos} is out of range", where=where)
            raw = src.pread(h.namesize, pos + HEADER_SIZE)
            if raw[-1:] != b"\0":
                raise ImageError(f"name at {pos} is not NUL-terminated", where=where)
            name = raw[:-1]
            data = pos + HEADER_SIZE + h.namesize
            data += pad(data)
            end = data + h.filesize
            if end > src.length:
                raise ImageError(f"member {name!r} runs past the end of the archive", where=where)
            next_pos = end + pad(end)
            if name == TRAILER:
                return next_pos
            self._add(h, name, src, data, archive, where)
            pos = next_pos

    def _add(self, h: Header, name: bytes, src, data: int, archive: int, where: str) -> None:
        parts = [p for p in os.fsdecode(name).split("/") if p not in ("", ".")]
        if any(p == ".." for p in parts):
            raise ImageError(f"member name {name!r} climbs out with '..'", where=where)
        path = "/" + "/".join(parts)
        kind = _kind(h.mode, f"{where}: {_safe(path)}")
        target = None
        if kind is Kind.SYMLINK:
            if h.filesize > 65536:
                raise ImageError(f"symlink {_safe(path)} target is {h.filesize} bytes", where=where)
            target = os.fsdecode(src.pread(h.filesize, data))
        group = (archive, h.ino, h.devmajor, h.devminor) if kind is Kind.FILE and h.nlink > 1 else None
        # inode numbers are per archive: keep those of concatenated archives apart
        ino = (archive << 32) | h.ino
        if kind is Kind.DIR:  # a cpio has no hardlinked directories: number each one apart, as the
            ino = self._dir_number()  # walk's cycle check counts directories by inode number
        e = REntry(path, kind, _stat.S_IMODE(h.mode), h.uid, h.gid, h.filesize if kind is not Kind.DIR else 0,
                   h.mtime, h.nlink, ino, target, (h.rdevmajor, h.rdevminor))
        m = _Member(e, src, data, group)
        if group is not None and (h.filesize or group not in self.groups):
            self.groups[group] = m
        self.count += 1
        parent = path.rsplit("/", 1)[0] or "/"
        if path != "/":
            self._ensure_dirs(parent)
        self.members[path] = m

    def _dir_number(self) -> int:
        self._dirs += 1
        return (1 << 62) | self._dirs

    def _ensure_dirs(self, path: str) -> None:
        """A member whose parent directory was never listed gets an implied one (as cpio -id makes)."""
        while path not in self.members:
            self.members[path] = _Member(REntry(path, Kind.DIR, 0o755, nlink=2, inode=self._dir_number()),
                                         None, 0, None)
            path = path.rsplit("/", 1)[0] or "/"

    # -- the Reader interface ---------------------------------------------------
    def _data_of(self, m: _Member) -> _Member:
        if m.group is not None:
            return self.groups.get(m.group, m)
        return m

    def stat(self, path: str) -> REntry:
        p = "/" + "/".join(x for x in path.split("/") if x)
        m = self.members.get(p)
        if m is None:
            raise ImageError("no such file in the archive", where=f"{self.region.path}:{_safe(p)}")
        e = m.entry
        if e.kind is Kind.FILE:
            e.size = self._data_of(m).entry.size
        return e

    def listdir(self, path: str) -> list[REntry]:
        top = self.stat(path)
        if top.kind is not Kind.DIR:
            raise ImageError("not a directory", where=f"{self.region.path}:{_safe(top.path)}")
        prefix = top.path.rstrip("/") + "/"
        out = [self.stat(p) for p in self.members
               if p.startswith(prefix) and p != "/" and "/" not in p[len(prefix):]]
        return sorted(out, key=lambda e: os.fsencode(e.name))

    def read_file(self, path: str) -> Iterator[bytes]:
        m = self.members.get("/" + "/".join(x for x in path.split("/") if x))
        if m is None or m.entry.kind is not Kind.FILE:
            raise ImageError("not a regular file in the archive", where=f"{self.region.path}:{_safe(path)}")
        d = self._data_of(m)
        size = d.entry.size
        done = 0
        while done < size:
            n = min(CHUNK, size - done)
            yield d.src.pread(n, d.offset + done)
            done += n

    def data_map(self, path: str) -> list[tuple[int, int, int]] | None:
        """(0, size, region offset) of a member of an uncompressed archive; None for one inside a
        compressed stream (its bytes only exist decompressed)."""
        m = self.members.get("/" + "/".join(x for x in path.split("/") if x))
        if m is None or m.entry.kind is not Kind.FILE:
            raise ImageError("not a regular file in the archive", where=f"{self.region.path}:{_safe(path)}")
        d = self._data_of(m)
        if isinstance(d.src, _Spill):
            return None
        return [(0, d.entry.size, d.offset)] if d.entry.size else []

    def info(self) -> list[tuple[str, str]]:
        fmt = " + ".join(self.segments)
        return [("format", "newc-crc (070702)" if MAGIC_CRC in self.magics else "newc (070701)"),
                ("archives", fmt), ("members", str(self.count))]

    def close(self) -> None:
        for s in self.spills:
            s.f.close()
        self.spills = []


def open(region) -> CpioReader:  # noqa: A001  (the reader contract's name)
    return CpioReader(region)
