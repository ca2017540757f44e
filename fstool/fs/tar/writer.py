"""tar writer: a Tree to a ustar + PAX archive, sorted and byte-reproducible, optionally compressed.

Members come in `Tree.walk` order (sorted by name bytes, parents first), the root
as "./". What ustar cannot hold goes in a PAX header: long names and link targets,
ids and sizes out of octal range, nanosecond or negative times, xattrs (as
`SCHILY.xattr.NAME`, which GNU tar and bsdtar both read). The second and later
names of a hardlinked file are hardlink members. Sockets cannot be archived and
are left out with one warning, as GNU tar does. uname/gname stay empty, so
extraction uses the numeric ids.

Invariants: file bytes stream from `FileSource` (kernel-side copies into an
uncompressed archive, with a file's holes left as holes of the archive; a
compressor is fed 1 MiB at a time); no clock, host path or thread timing reaches
the output (gzip header time 0, no name; zstd and xz single-threaded).
"""
from __future__ import annotations

import lzma
import os
import zlib

from ...errors import CapacityError, SpecError, warn
from ...image import ImageFile
from ...tree import CHUNK, Kind, Node, Tree, encode_name
from ..base import FsParams, OptionReader
from .format import (BLK, BLOCK, CHR, DIR, FIFO, HARDLINK, PAX, RECORD, REG, SYMLINK, header,
                     octal, padding, pax_record)

COMPRESSIONS = ("none", "gzip", "zstd", "xz")
DEFAULT_LEVELS = {"gzip": 6, "zstd": 3, "xz": 6}  # each tool's own default
LEVEL_RANGES = {"gzip": (1, 9), "zstd": (1, 22), "xz": (0, 9)}
SUFFIXES = ((".tar.gz", "gzip"), (".tgz", "gzip"), (".tar.zst", "zstd"), (".tzst", "zstd"),
            (".tar.xz", "xz"), (".txz", "xz"))
TYPEFLAG = {Kind.DIR: DIR, Kind.FILE: REG, Kind.SYMLINK: SYMLINK, Kind.CHR: CHR, Kind.BLK: BLK,
            Kind.FIFO: FIFO}


def parse_options(params: FsParams) -> dict:
    where = f"{params.where}.options"
    o = OptionReader(params.options, where)
    comp = o.get_str("compression", None, choices=COMPRESSIONS + ("gz", "zst", "zstandard"))
    comp = {"gz": "gzip", "zst": "zstd", "zstandard": "zstd"}.get(comp, comp)
    level = o.get_int("level", None)
    o.finish()
    if level is not None:
        if comp in (None, "none"):
            raise SpecError("level needs a compression (gzip, zstd or xz)", where=f"{where}.level")
        lo, hi = LEVEL_RANGES[comp]
        if not lo <= level <= hi:
            raise SpecError(f"{comp} levels run from {lo} to {hi}; got {level}", where=f"{where}.level")
    return {"compression": comp, "level": level}


def compression_for(path: str, opts: dict) -> str:
    """The option if given, else what the output name says (.tar.gz, .tar.zst, .tar.xz)."""
    if opts.get("compression"):
        return opts["compression"]
    low = path.lower()
    for suffix, comp in SUFFIXES:
        if low.endswith(suffix):
            return comp
    return "none"


class _Raw:
    """Uncompressed: headers batched, file data copied kernel-side, holes left as holes."""

    def __init__(self, out: ImageFile, sparse: bool):
        self.out, self.sparse, self.flushed, self.buf = out, sparse, 0, bytearray()

    @property
    def pos(self) -> int:
        """Archive bytes so far (written and buffered)."""
        return self.flushed + len(self.buf)

    def write(self, data: bytes) -> None:
        self.buf += data
        if len(self.buf) >= CHUNK:
            self.flush()

    def flush(self) -> None:
        if self.buf:
            self.out.pwrite(self.buf, self.flushed)
            self.flushed += len(self.buf)
            self.buf = bytearray()

    def data(self, src) -> None:
        self.flush()
        fd = os.open(src.path, os.O_RDONLY)
        try:  # one open: a host file's holes are found on it (FileSource.segments_on)
            segs = src.segments_on(fd)
            for foff, n, soff in segs:
                self.out.copy_from(fd, soff, n, self.pos + foff)
        finally:
            os.close(fd)
        if not self.sparse:  # holes written as zeros
            done = 0
            for foff, n, _ in segs + [(src.size, 0, 0)]:
                if foff > done:
                    from ...image import write_zeros
                    write_zeros(self.out, self.pos + done, foff - done)
                done = foff + n
        self.flushed += src.size

    def close(self) -> int:
        self.flush()
        return self.flushed


class _Stream:
    """Compressed: everything goes through one compressor, written out in order."""

    def __init__(self, out: ImageFile, comp: str, level: int | None):
        self.out, self.opos, self.pos = out, 0, 0
        level = level if level is not None else DEFAULT_LEVELS[comp]
        if comp == "gzip":
            # wbits 31: a gzip member; zlib writes header time 0 and no name
            self.c = zlib.compressobj(level, zlib.DEFLATED, 31, 9)
        elif comp == "xz":
            self.c = lzma.LZMACompressor(lzma.FORMAT_XZ, check=lzma.CHECK_CRC64, preset=level)
        else:
            import zstandard
            self.c = zstandard.ZstdCompressor(level=level, threads=0).compressobj()

    def _emit(self, data: bytes) -> None:
        if data:
            self.out.pwrite(data, self.opos)
            self.opos += len(data)

    def write(self, data: bytes) -> None:
        self.pos += len(data)
        self._emit(self.c.compress(data))

    def data(self, src) -> None:
        zeros = b""
        for _off, chunk, n in src.iter_chunks():
            if chunk is None:
                while n:
                    k = min(n, CHUNK)
                    if len(zeros) != k:
                        zeros = bytes(k)
                    self.write(zeros)
                    n -= k
            else:
                self.write(chunk)

    def close(self) -> int:
        self._emit(self.c.flush())
        return self.opos


def _pax_time(sec: int, ns: int) -> bytes:
    total = sec * 1_000_000_000 + ns
    sign = "-" if total < 0 else ""
    whole, frac = divmod(abs(total), 1_000_000_000)
    return f"{sign}{whole}.{frac:09d}".rstrip("0").rstrip(".").encode() if frac else \
        f"{sign}{whole}".encode()


def _member(name: bytes, node: Node, typeflag: bytes, size: int, link: bytes = b"") -> bytes:
    """The header blocks (PAX header first when needed) of one member."""
    recs = []
    long_raw = [v for v in (name, link) if len(v) > 100]
    try:
        for v in long_raw:
            v.decode("utf-8")
    except UnicodeDecodeError:
        # a long name that is not UTF-8 goes raw; libarchive needs this to keep it so (GNU tar
        # keeps it anyway, warning that it does not know the keyword)
        recs.append(pax_record("hdrcharset", b"BINARY"))
    if len(name) > 100:
        recs.append(pax_record("path", name))
    if len(link) > 100:
        recs.append(pax_record("linkpath", link))
    for key, v in (("uid", node.uid), ("gid", node.gid)):
        if octal(v, 8) is None:
            recs.append(pax_record(key, str(v).encode()))
    if octal(size, 12) is None:
        recs.append(pax_record("size", str(size).encode()))
    if node.mtime_ns or octal(node.mtime, 12) is None:
        recs.append(pax_record("mtime", _pax_time(node.mtime, node.mtime_ns)))
    for k in sorted(node.xattrs):
        recs.append(pax_record("SCHILY.xattr." + k, node.xattrs[k]))
    major, minor = node.rdev if node.kind in (Kind.CHR, Kind.BLK) else (0, 0)
    out = b""
    if recs:
        body = b"".join(recs)
        pname = b"PaxHeaders/" + name.rstrip(b"/").rsplit(b"/", 1)[-1][-80:]
        out = header(pname, 0o644, 0, 0, len(body), max(node.mtime, 0), PAX) + body + padding(len(body))
    return out + header(name, node.mode & 0o7777, node.uid, node.gid, size, node.mtime, typeflag,
                        link, major, minor)


def write(tree: Tree, out: ImageFile, params: FsParams) -> int:
    """Write tree as a tar archive into out; return the archive's size in bytes."""
    opts = params.opts if params.opts is not None else parse_options(params)
    comp = compression_for(out.path, opts)
    sink = _Raw(out, params.sparse) if comp == "none" else _Stream(out, comp, opts.get("level"))
    first_name: dict[int, bytes] = {}
    sockets: list[str] = []
    total = sum(n.size for _, n in tree.walk() if n.kind is Kind.FILE)
    done = 0
    for path, node in tree.walk():
        if node.kind is Kind.SOCK:
            sockets.append(path)
            continue
        name = b"./" if path == "/" else encode_name(path[1:]) + (b"/" if node.kind is Kind.DIR else b"")
        if node.kind is not Kind.DIR and tree.nlink(node) > 1:
            if id(node) in first_name:
                sink.write(_member(name, node, HARDLINK, 0, first_name[id(node)]))
                continue
            first_name[id(node)] = name
        if node.kind is Kind.FILE:
            sink.write(_member(name, node, REG, node.size))
            if node.size:
                sink.data(node.source)
                sink.write(padding(node.size))
                done += node.size
                params.report(done, total)
        elif node.kind is Kind.SYMLINK:
            sink.write(_member(name, node, SYMLINK, 0, encode_name(node.target or "")))
        else:
            sink.write(_member(name, node, TYPEFLAG[node.kind], 0))
    end = 2 * BLOCK
    end += -(sink.pos + end) % RECORD
    sink.write(bytes(end))
    size = sink.close()
    if sockets:
        shown = ", ".join(sockets[:5]) + (", ..." if len(sockets) > 5 else "")
        warn(f"left out {len(sockets)} sockets (tar cannot store them): {shown}", where=params.where)
    if params.size is not None and size > params.size:
        raise CapacityError(f"the archive is {size} bytes, more than the {params.size} asked for",
                            where=params.where)
    out.truncate(size)
    return size
