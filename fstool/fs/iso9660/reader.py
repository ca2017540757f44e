"""ISO 9660 reader: Rock Ridge first, else Joliet, else plain ISO 9660 names.

Directories are read from their extents (records never cross a sector); Rock Ridge entries are
followed through CE continuation areas, NM and SL pieces are joined, CL links are followed to
relocated directories and RE entries hidden (and the relocation directory with them), so the
tree reads as it was written. Multi-extent files (flag 0x80) are joined. Every directory extent is
read once per lookup path, and a directory met twice on one path (a CL/CE cycle) is refused.
"""
from __future__ import annotations

import os
import stat as _stat
from dataclasses import dataclass, field
from typing import Iterator

from ...errors import ImageError
from ...tree import Kind
from ..base import REntry, Reader
from .format import (
    BOOT_ENTRY, DIR_RECORD, FLAG_DIR, FLAG_MULTI_EXTENT, JOLIET_ESCAPE, SECTOR, SL_COMP_CONTINUE,
    SL_COMP_CURRENT, SL_COMP_PARENT, SL_COMP_ROOT, STD_ID, SUSP_HEADER, SYSTEM_AREA, VD_BOOT, VD_PRIMARY,
    VD_SUPPLEMENTARY, VD_TERMINATOR, VOLUME_DESCRIPTOR, VALIDATION_ENTRY, DirRecord, VolumeDescriptor, le_of,
    parse_date7,
)

CHUNK = 1 << 20
MAX_DIR = 64 << 20


def _safe(path: str) -> str:
    """A path for an error message: as it is when printable, else quoted (a hostile name could
    break the one-line error with a control character)."""
    return path if path.isprintable() else repr(path)


def probe(region) -> bool:
    if region.length < (SYSTEM_AREA + 1) * SECTOR:
        return False
    return region.pread(6, SYSTEM_AREA * SECTOR)[1:6] == STD_ID


@dataclass
class _Rec:
    ident: bytes
    lba: int
    size: int
    flags: int
    mtime: int
    su: bytes
    extents: list = field(default_factory=list)  # (lba, size) of every extent (multi-extent files)


class IsoReader(Reader):
    fs_type = "iso9660"

    def __init__(self, region):
        self.region = region
        self.pvd = None
        self.svd = None
        self.boot_catalog = None
        lba = SYSTEM_AREA
        while True:
            raw = region.pread(SECTOR, lba * SECTOR)
            if raw[1:6] != STD_ID:
                raise ImageError(f"volume descriptor at sector {lba} lacks CD001", where=region.path)
            kind = raw[0]
            if kind == VD_PRIMARY and self.pvd is None:
                self.pvd = VolumeDescriptor(*VOLUME_DESCRIPTOR.unpack(raw))
            elif kind == VD_SUPPLEMENTARY:
                vd = VolumeDescriptor(*VOLUME_DESCRIPTOR.unpack(raw))
                if vd.escapes[:3] in (b"%/@", b"%/C", JOLIET_ESCAPE):
                    self.svd = vd
            elif kind == VD_BOOT and raw[7:30] == b"EL TORITO SPECIFICATION":
                self.boot_catalog = int.from_bytes(raw[71:75], "little")
            elif kind == VD_TERMINATOR:
                break
            lba += 1
            if lba > SYSTEM_AREA + 64:
                raise ImageError("no volume descriptor set terminator", where=region.path)
        if self.pvd is None:
            raise ImageError("no primary volume descriptor", where=region.path)
        if le_of(self.pvd.block_size) != SECTOR:
            raise ImageError(f"logical block size {le_of(self.pvd.block_size)} is not 2048", where=region.path)
        root = self._record(self.pvd.root_record, 0)[0]
        self.rr_skip = None
        first = self._records(root)
        if first and first[0].su[:2] == b"SP" and first[0].su[4:6] == b"\xbe\xef":
            self.rr_skip = first[0].su[6]
        if self.rr_skip is not None:
            self.mode, self.root = "rockridge", root
        elif self.svd is not None:
            self.mode, self.root = "joliet", self._record(self.svd.root_record, 0)[0]
        else:
            self.mode, self.root = "iso9660", root
        self._cache: dict[int, list[tuple[str, _Rec, dict]]] = {}

    # -- raw records ---------------------------------------------------------------------------
    def _record(self, raw: bytes, pos: int) -> tuple[_Rec, int]:
        length = raw[pos]
        if length < DIR_RECORD.size or pos + length > len(raw):
            raise ImageError(f"directory record of {length} bytes is malformed", where=self.region.path)
        r = DirRecord(*DIR_RECORD.unpack_from(raw, pos))
        name_end = pos + DIR_RECORD.size + r.name_len
        if name_end > pos + length:
            raise ImageError("directory record name runs past its record", where=self.region.path)
        ident = raw[pos + DIR_RECORD.size:name_end]
        su_start = name_end + (1 if r.name_len % 2 == 0 else 0)
        rec = _Rec(ident, le_of(r.extent), le_of(r.data_length), r.flags, parse_date7(r.recorded),
                   raw[su_start:pos + length])
        rec.extents = [(rec.lba, rec.size)]
        return rec, pos + length

    def _records(self, d: _Rec) -> list[_Rec]:
        if d.size > MAX_DIR or d.lba * SECTOR + d.size > self.region.length:
            raise ImageError(f"directory extent at sector {d.lba} ({d.size} bytes) is outside the image",
                             where=self.region.path)
        raw = self.region.pread(d.size, d.lba * SECTOR)
        out: list[_Rec] = []
        pos = 0
        while pos < len(raw):
            if raw[pos] == 0:  # the rest of this sector is padding
                pos = (pos // SECTOR + 1) * SECTOR
                continue
            rec, pos = self._record(raw, pos)
            if out and out[-1].flags & FLAG_MULTI_EXTENT and out[-1].ident == rec.ident:
                out[-1].extents.append((rec.lba, rec.size))
                out[-1].size += rec.size
                out[-1].flags = rec.flags
                continue
            out.append(rec)
        return out

    def _susp(self, rec: _Rec) -> dict:
        """Rock Ridge fields of a record, following CE continuation areas (at most 64)."""
        out: dict = {"nm": b"", "sl": [], "sl_open": False}
        area = rec.su[self.rr_skip or 0:]
        hops = 0
        while area is not None:
            nxt = None
            pos = 0
            while pos + 4 <= len(area):
                sig, ln, _ver = SUSP_HEADER.unpack_from(area, pos)
                if ln < 4 or pos + ln > len(area):
                    break
                body = area[pos + 4:pos + ln]
                if sig == b"CE" and len(body) >= 24:
                    nxt = (le_of(body[0:8]), le_of(body[8:16]), le_of(body[16:24]))
                elif sig == b"PX" and len(body) >= 32:
                    out["px"] = [le_of(body[i:i + 8]) for i in range(0, len(body) - 7, 8)]
                elif sig == b"PN" and len(body) >= 16:
                    out["dev"] = (le_of(body[0:8]), le_of(body[8:16]))
                elif sig == b"TF" and body:
                    out["tf"] = body
                elif sig == b"NM" and body:
                    if not body[0] & 0x06:
                        out["nm"] += body[1:]
                elif sig == b"SL" and body:
                    p = 1
                    while p + 2 <= len(body):
                        f, n = body[p], body[p + 1]
                        out["sl"].append((f, body[p + 2:p + 2 + n]))
                        p += 2 + n
                elif sig == b"CL" and len(body) >= 8:
                    out["cl"] = le_of(body[0:8])
                elif sig == b"RE":
                    out["re"] = True
                elif sig == b"ST":
                    break
                pos += ln
            area = None
            if nxt is not None:
                hops += 1
                if hops > 64 or nxt[2] > SECTOR:
                    raise ImageError("Rock Ridge continuation chain is too long", where=self.region.path)
                area = self.region.pread(nxt[2], nxt[0] * SECTOR + nxt[1])
        return out

    # -- names and entries -----------------------------------------------------------------------
    def _children(self, d: _Rec) -> list[tuple[str, _Rec, dict]]:
        key = d.lba
        if key in self._cache:
            return self._cache[key]
        out = []
        for rec in self._records(d)[2:]:
            if self.mode == "rockridge":
                rr = self._susp(rec)
                if rr.get("re"):
                    continue  # a relocated directory: reached through its CL link
                if "cl" in rr:
                    rec = _Rec(rec.ident, rr["cl"], 0, FLAG_DIR, rec.mtime, b"")
                    first = self._records(_Rec(b"", rr["cl"], SECTOR, FLAG_DIR, 0, b""))[0]
                    rec.size = first.size
                name = os.fsdecode(rr["nm"]) if rr["nm"] else self._plain(rec.ident)
            elif self.mode == "joliet":
                rr = {}
                name = rec.ident.decode("utf-16-be", "replace").split(";")[0]
            else:
                rr = {}
                name = self._plain(rec.ident)
            if name in ("", ".", "..") or "/" in name:
                raise ImageError(f"bad file name {name!r} in directory at sector {d.lba}", where=self.region.path)
            out.append((name, rec, rr))
        out.sort(key=lambda c: os.fsencode(c[0]))
        self._cache[key] = out
        return out

    @staticmethod
    def _plain(ident: bytes) -> str:
        name = ident.decode("ascii", "replace").split(";")[0]
        return name[:-1] if name.endswith(".") else name

    def _entry(self, path: str, rec: _Rec, rr: dict) -> REntry:
        is_dir = bool(rec.flags & FLAG_DIR)
        px = rr.get("px")
        if px:
            mode = px[0]
            try:
                kind = Kind.from_mode(mode)
            except ValueError:
                raise ImageError(f"unknown file type in mode {mode:o}",
                                 where=f"{self.region.path}:{_safe(path)}") from None
            e = REntry(path, kind, _stat.S_IMODE(mode), px[2], px[3], nlink=px[1], inode=px[4] if len(px) > 4 else 0)
        else:
            e = REntry(path, Kind.DIR if is_dir else Kind.FILE, 0o555 if is_dir else 0o444)
        e.mtime = rec.mtime
        tf = rr.get("tf")
        if tf and tf[0] & 0x02 and not tf[0] & 0x80:
            off = 1 + (7 if tf[0] & 0x01 else 0)
            e.mtime = parse_date7(tf[off:off + 7])
        if e.kind is Kind.FILE:
            e.size = rec.size
        elif e.kind is Kind.SYMLINK:
            e.target = self._link(rr["sl"])
            e.size = len(os.fsencode(e.target))
        elif e.kind in (Kind.CHR, Kind.BLK):
            high, low = rr.get("dev", (0, 0))  # a glibc dev_t in two halves (see susp.pn)
            dev = (high << 32) | low
            e.rdev = (os.major(dev), os.minor(dev))
        return e

    @staticmethod
    def _link(comps) -> str:
        out = b""
        joined = True  # the previous component continues into this one
        for f, data in comps:
            if f & SL_COMP_ROOT:
                out, joined = b"/", True
                continue
            piece = b"." if f & SL_COMP_CURRENT else b".." if f & SL_COMP_PARENT else data
            if out and not joined and not out.endswith(b"/"):
                out += b"/"
            out += piece
            joined = bool(f & SL_COMP_CONTINUE)
        return os.fsdecode(out)

    def _lookup(self, path: str) -> tuple[str, _Rec, dict]:
        parts = [p for p in path.split("/") if p]
        rec, rr, cur = self.root, (self._susp(self._records(self.root)[0]) if self.mode == "rockridge" else {}), "/"
        seen = {rec.lba}
        for p in parts:
            if not rec.flags & FLAG_DIR:
                raise ImageError("not a directory", where=f"{self.region.path}:{_safe(cur)}")
            for name, child, crr in self._children(rec):
                if name == p:
                    rec, rr = child, crr
                    break
            else:
                raise ImageError("no such file or directory", where=f"{self.region.path}:{_safe(path)}")
            cur = cur.rstrip("/") + "/" + p
            if rec.flags & FLAG_DIR:
                if rec.lba in seen:
                    raise ImageError("directory cycle", where=f"{self.region.path}:{_safe(cur)}")
                seen.add(rec.lba)
        return cur, rec, rr

    # -- the Reader interface --------------------------------------------------------------------
    def stat(self, path: str) -> REntry:
        p, rec, rr = self._lookup(path)
        return self._entry(p, rec, rr)

    def listdir(self, path: str) -> list[REntry]:
        p, rec, _ = self._lookup(path)
        if not rec.flags & FLAG_DIR:
            raise ImageError("not a directory", where=f"{self.region.path}:{_safe(p)}")
        base = p.rstrip("/")
        return [self._entry(f"{base}/{name}", child, rr) for name, child, rr in self._children(rec)]

    def walk(self, path: str = "/") -> Iterator[REntry]:
        seen: set[int] = set()
        top = self.stat(path)
        stack = [top]
        while stack:
            e = stack.pop()
            yield e
            if e.kind is Kind.DIR:
                _, rec, _ = self._lookup(e.path)
                if rec.lba in seen:
                    raise ImageError("directory cycle", where=f"{self.region.path}:{_safe(e.path)}")
                seen.add(rec.lba)
                stack.extend(reversed(self.listdir(e.path)))

    def read_file(self, path: str) -> Iterator[bytes]:
        p, rec, rr = self._lookup(path)
        if rec.flags & FLAG_DIR:
            raise ImageError("is a directory", where=f"{self.region.path}:{_safe(p)}")
        for lba, size in rec.extents:
            done = 0
            while done < size:
                n = min(CHUNK, size - done)
                yield self.region.pread(n, lba * SECTOR + done)
                done += n

    def data_map(self, path: str) -> list[tuple[int, int, int]]:
        """(file offset, length, region offset) of each extent: an image used as a source is
        read in place."""
        p, rec, _ = self._lookup(path)
        if rec.flags & FLAG_DIR:
            raise ImageError("is a directory", where=f"{self.region.path}:{_safe(p)}")
        runs, pos = [], 0
        for lba, size in rec.extents:
            if size:
                if lba * SECTOR + size > self.region.length:
                    raise ImageError("file extent lies outside the image", where=f"{self.region.path}:{_safe(p)}")
                runs.append((pos, size, lba * SECTOR))
            pos += size
        return runs

    def info(self) -> list[tuple[str, str]]:
        v = self.pvd
        rows = [("volume id", v.volume_id.decode("ascii", "replace").rstrip()),
                ("size", f"{le_of(v.space_size) * SECTOR} bytes ({le_of(v.space_size)} sectors)"),
                ("names", {"rockridge": "Rock Ridge", "joliet": "Joliet", "iso9660": "ISO 9660"}[self.mode]
                 + (" + Joliet" if self.svd is not None and self.mode == "rockridge" else "")),
                ("created", v.created[:14].decode("ascii", "replace"))]
        if self.boot_catalog is not None:
            rows.append(("el torito", ", ".join(self._boot_entries()) or "catalog without entries"))
        if self.region.pread(2, 510) == b"\x55\xaa":
            rows.append(("system area", "GPT (isohybrid)" if self.region.pread(8, 512) == b"EFI PART"
                         else "MBR (isohybrid)"))
        return rows

    def _boot_entries(self) -> list[str]:
        raw = self.region.pread(SECTOR, self.boot_catalog * SECTOR)
        v = VALIDATION_ENTRY.unpack_from(raw, 0)
        if v[0] != 1 or raw[30:32] != b"\x55\xaa":
            return ["invalid validation entry"]
        out = []
        platform = v[1]
        pos = 32
        while pos + 32 <= SECTOR:
            b = raw[pos]
            if b == 0x88:  # a bootable entry (the default one, or one of a section)
                e = BOOT_ENTRY.unpack_from(raw, pos)
                out.append(f"{'UEFI' if platform == 0xEF else 'BIOS'} image at sector {e[6]}")
            elif b in (0x90, 0x91):  # a section header names the platform of the entries after it
                platform = raw[pos + 1]
            elif b == 0 and pos > 32:
                break
            pos += 32
        return out


def open(region) -> IsoReader:  # noqa: A001  (the reader contract's name)
    return IsoReader(region)
