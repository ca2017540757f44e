"""newc cpio writer (initramfs): one pass over the tree, streamed, optionally compressed.

Order and numbering are fixed by the tree alone: entries in `Tree.walk()` order (pre-order,
names sorted by bytes), the root as ".", inode numbers counted from 0 in order of first
appearance (as GNU `cpio --reproducible` renumbers), device numbers of the archive 0, `check` 0
(or the byte sum for 070702). A file with several names is written as GNU cpio and the kernel
expect it: every name carries the same inode number and link count, the data rides on the
last name only, the others have size 0 (init/initramfs.c links them as they arrive and fills the
data in when the last one comes).

An uncompressed archive goes straight into the image with `pwrite`/`copy_from` and file holes
stay holes; a compressed one streams through the compressor, file data read in bounded chunks.
`early` archives (an uncompressed microcode cpio, say) are copied first, each padded to 512 bytes,
as dracut concatenates them.
"""
from __future__ import annotations

import os
from dataclasses import dataclass

from ...errors import CapacityError, InputError, SpecError
from ...image import ImageFile
from ...sizes import format_size
from ...tree import CHUNK, Kind, Node, Tree, encode_name
from ..base import FsParams, OptionReader
from .compress import ALIASES, LEVELS, check_codec, compressor
from .format import MAGIC_CRC, MAGIC_NEWC, TRAILER, Header, pad

FORMATS = {"newc": MAGIC_NEWC, "newc-crc": MAGIC_CRC, "crc": MAGIC_CRC}
BLOCK = 512  # GNU cpio pads the archive to its 512-byte I/O block; concatenation keeps alignment
FLUSH = 1 << 20


@dataclass
class CpioOptions:
    magic: bytes = MAGIC_NEWC
    compression: str | None = None
    level: int | None = None
    early: tuple[str, ...] = ()
    block: int = BLOCK


def _parse_options(params: FsParams) -> CpioOptions:
    where = f"{params.where}.options"
    o = OptionReader(params.options, where)
    fmt = o.get_str("format", "newc", choices=tuple(FORMATS))
    comp = o.get_str("compression", "none",
                     choices=("none", "gzip", "xz", "zstd", "lz4") + tuple(ALIASES))
    comp = ALIASES.get(comp, comp)
    level = None
    if comp != "none":
        lo, hi, _ = LEVELS[comp]
        level = o.get_int("compression_level", None, lo, hi)
        try:
            check_codec(comp)
        except SpecError as e:
            raise SpecError(str(e), where=f"{where}.compression") from None
    elif o.has("compression_level"):
        raise SpecError("compression_level needs a compression", where=f"{where}.compression_level")
    early: list[str] = []
    for key in ("early", "prepend"):
        if not o.has(key):
            continue
        v = o.options[key]
        items = [v] if isinstance(v, str) else v
        if not isinstance(items, list) or not all(isinstance(s, str) and s for s in items):
            raise SpecError("expected a path or a list of paths to uncompressed cpio archives",
                            where=f"{where}.{key}")
        for s in items:
            for p in s.split(":") if isinstance(v, str) else [s]:
                early.append(os.path.abspath(p))
    for p in early:
        try:
            with open(p, "rb") as f:
                magic = f.read(6)
        except OSError as e:
            raise SpecError(f"cannot read early archive: {e.strerror}", where=f"{where}.early: {p}") from None
        if magic not in (MAGIC_NEWC, MAGIC_CRC):
            raise SpecError("early archive is not an uncompressed newc cpio (it must start with 070701 "
                            "or 070702; the kernel only reads early microcode uncompressed)",
                            where=f"{where}.early: {p}")
    block = o.get_int("pad", BLOCK, 4, 1 << 20)
    if block & (block - 1):
        raise SpecError(f"pad must be a power of two, got {block}", where=f"{where}.pad")
    o.finish()
    if params.label:
        raise SpecError("a cpio archive has no volume label", where=f"{params.where}.label")
    if params.uuid:
        raise SpecError("a cpio archive has no UUID", where=f"{params.where}.uuid")
    if params.block_size:
        raise SpecError("a cpio archive has no block size (the padding is the `pad` option)",
                        where=f"{params.where}.block_size")
    return CpioOptions(FORMATS[fmt], None if comp == "none" else comp, level, tuple(early), block)


class _Plain:
    """Bytes placed at increasing offsets of the image; holes are left unwritten."""

    def __init__(self, out: ImageFile, pos: int):
        self.out, self.pos = out, pos
        self.buf = bytearray()

    def write(self, data) -> None:
        self.buf += data
        if len(self.buf) >= FLUSH:
            self._flush()

    def _flush(self) -> None:
        if self.buf:
            self.out.pwrite(self.buf, self.pos)
            self.pos += len(self.buf)
            self.buf = bytearray()

    def file(self, src, sparse: bool) -> None:
        self._flush()
        fd = os.open(src.path, os.O_RDONLY)
        try:  # one open: a host file's holes are found on it (FileSource.segments_on)
            for foff, length, soff in src.segments_on(fd):
                self.out.copy_from(fd, soff, length, self.pos + foff)
        finally:
            os.close(fd)
        self.pos += src.size

    def close(self) -> int:
        self._flush()
        return self.pos


class _Compressed:
    """Bytes fed through a compressor; its output appended to the image."""

    def __init__(self, out: ImageFile, pos: int, comp):
        self.out, self.pos, self.comp = out, pos, comp
        self.buf = bytearray()
        self.pending = bytearray()

    def write(self, data) -> None:
        self.pending += data
        if len(self.pending) >= FLUSH:
            self._feed()

    def _feed(self) -> None:
        if self.pending:
            self._emit(self.comp.compress(bytes(self.pending)))
            self.pending = bytearray()

    def _emit(self, data: bytes) -> None:
        self.buf += data
        if len(self.buf) >= FLUSH:
            self.out.pwrite(self.buf, self.pos)
            self.pos += len(self.buf)
            self.buf = bytearray()

    def file(self, src, sparse: bool) -> None:
        self._feed()
        zero = None
        for _, data, n in src.iter_chunks(CHUNK):
            if data is None:
                zero = zero or bytes(CHUNK)
                while n > 0:
                    k = min(n, CHUNK)
                    self._emit(self.comp.compress(zero[:k]))
                    n -= k
            else:
                self._emit(self.comp.compress(data))

    def close(self) -> int:
        self._feed()
        self._emit(self.comp.flush())
        if self.buf:
            self.out.pwrite(self.buf, self.pos)
            self.pos += len(self.buf)
        return self.pos


def _byte_sum(src) -> int:
    """The 070702 `check`: the sum of the file's bytes modulo 2^32 (holes add nothing)."""
    total = 0
    for _, data, _n in src.iter_chunks(CHUNK):
        if data is not None:
            total += sum(data)
    return total & 0xFFFFFFFF


def members(tree: Tree):
    """(name bytes, node, inode number, carries data) for every entry, in archive order.

    A file reached under several names is written as GNU cpio writes it: its earlier names are
    held back and come, with size 0 and latest first, just before the last one, which carries
    the data. Inode
    numbers still count in walk order, so the output equals `cpio -o -H newc --reproducible` fed
    the same name list."""
    # keyed by node (identity): no id() int per entry
    remaining: dict[Node, int] = {}  # a hardlinked file's names still to come
    inodes: dict[Node, int] = {}
    held: dict[Node, list[bytes]] = {}
    for path, node in tree.walk():
        name = b"." if path == "/" else encode_name(path[1:])
        ino = inodes.setdefault(node, len(inodes))
        if node.kind is not Kind.FILE:
            yield name, node, ino, True
            continue
        left = remaining.pop(node, None)
        left = (tree.nlink(node) if left is None else left) - 1  # its names, tree.nlink counts
        if left:
            remaining[node] = left
            held.setdefault(node, []).append(name)
        else:
            # GNU cpio keeps deferred links on a stack: the latest held-back name comes first
            for early in reversed(held.pop(node, [])):
                yield early, node, ino, False
            yield name, node, ino, True


def _header(opts: CpioOptions, ino: int, node: Node, nlink: int, size: int, namesize: int,
            check: int, where: str) -> bytes:
    rdev = node.rdev if node.kind in (Kind.CHR, Kind.BLK) else (0, 0)
    for what, v in (("mtime", node.mtime), ("uid", node.uid), ("gid", node.gid),
                    ("device major", rdev[0]), ("device minor", rdev[1])):
        if not 0 <= v <= 0xFFFFFFFF:
            raise CapacityError(f"{what} {v} does not fit in a newc header (0 to 2^32-1)", where=where)
    return Header(opts.magic, ino, node.st_mode, node.uid, node.gid, nlink, node.mtime, size,
                  0, 0, rdev[0], rdev[1], namesize, check).pack()


def write_archive(tree: Tree, sink, opts: CpioOptions, params: FsParams) -> None:
    """Write every member and the trailer into sink (uncompressed stream positions)."""
    stream = 0  # position in the uncompressed archive, for the padding
    total = sum(n.size for _, n, _i, data in members(tree) if data and n.kind is Kind.FILE)
    done = 0

    def put(data: bytes) -> None:
        nonlocal stream
        sink.write(data)
        stream += len(data)

    for name, node, ino, carries in members(tree):
        nlink = tree.nlink(node)
        if node.kind is Kind.SYMLINK:
            body = encode_name(node.target or "")
        else:
            body = b""
        size = len(body)
        src = None
        if node.kind is Kind.FILE and carries and node.size:
            src = node.source
            size = node.size
        if size > 0xFFFFFFFF:
            raise CapacityError(f"file is {format_size(size)}; newc cpio stores at most 4 GiB - 1 "
                                "bytes per file", where=f"{params.where}: /{os.fsdecode(name)}")
        check = 0
        if opts.magic == MAGIC_CRC:
            # GNU cpio sums regular files' data only (a symlink's target counts 0): match it
            check = _byte_sum(src) if src is not None else 0
        head = _header(opts, ino, node, nlink, size, len(name) + 1, check,
                       f"{params.where}: /{os.fsdecode(name)}") + name + b"\0"
        put(head + bytes(pad(stream + len(head))))
        if src is not None:
            sink.file(src, params.sparse)
            stream += size
            done += size
            params.report(done, total)
        else:
            put(body)
        put(bytes(pad(stream)))
    trailer = Header(opts.magic, 0, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, len(TRAILER) + 1, 0).pack() + TRAILER + b"\0"
    put(trailer)
    put(bytes(pad(stream, opts.block)))


def write(tree: Tree, out: ImageFile, params: FsParams) -> int:
    opts = params.opts if params.opts is not None else _parse_options(params)
    if params.headroom:
        raise SpecError("a cpio archive has no free space to add (headroom)", where=f"{params.where}.headroom")
    if params.verbose:
        dropped = sum(1 for _, n in tree.walk() if n.xattrs)
        if dropped:
            params.log(f"cpio: newc has no xattrs; dropped those of {dropped} entries")
    pos = 0
    for path in opts.early:
        n = os.path.getsize(path)
        fd = os.open(path, os.O_RDONLY)
        try:
            out.copy_from(fd, 0, n, pos)
        except OSError as e:
            raise InputError(e.strerror or str(e), where=path) from None
        finally:
            os.close(fd)
        # the kernel looks for the next archive's magic on a 4-byte boundary; pad as GNU cpio does
        pos += n
        tail = pad(pos, opts.block)
        if tail:
            out.pwrite(bytes(tail), pos)
            pos += tail
    if opts.compression is None:
        sink = _Plain(out, pos)
    else:
        sink = _Compressed(out, pos, compressor(opts.compression, opts.level))
    write_archive(tree, sink, opts, params)
    end = sink.close()
    if params.size is not None:
        if end > params.size:
            raise CapacityError(f"the archive needs {format_size(end)} ({end} bytes) but size is "
                                f"{format_size(params.size)}; leave size unset (auto)", where=params.where)
        end = params.size  # zeros after the archive: the kernel's unpacker skips them
    out.truncate(end)
    params.log(f"cpio: {format_size(end)}" + (f", {opts.compression}" if opts.compression else ""))
    return end
