"""EROFS reader: superblock, compact and extended inodes, directories, xattrs, file data
(flat, inline tail, chunk-based, and compressed when `zdata.py` knows the algorithm).

Every address read from the image goes through `Region.pread`, which refuses reads past
the end; sizes are checked against the image before anything is allocated, and the
walk refuses a directory met twice, so a corrupt image gives one ImageError line,
never a hang or a traceback.
"""
from __future__ import annotations

import struct
from typing import Iterator

from ...errors import ImageError
from ...tree import Kind, Tree, split_path
from ..base import Reader, REntry
from .format import (
    CHUNK_FORMAT_BLKBITS_MASK, CHUNK_FORMAT_INDEXES, COMPAT_SB_CHKSUM, DIRENT, INCOMPAT_COMPR_CFGS, INCOMPAT_FRAGMENTS,
    INCOMPAT_LZ4_0PADDING, INODE_COMPACT, INODE_EXTENDED, INODE_SLOT, KNOWN_INCOMPAT, LAYOUT_CHUNK_BASED,
    LAYOUT_COMPRESSED_COMPACT, LAYOUT_COMPRESSED_FULL, LAYOUT_FLAT_INLINE, LAYOUT_FLAT_PLAIN, MAGIC, NULL_ADDR,
    SB_OFFSET, SUPERBLOCK, XATTR_ENTRY, XATTR_IBODY_HEADER, XATTR_PREFIXES, decode_rdev, sb_checksum,
)

KINDS = {0o040000: Kind.DIR, 0o100000: Kind.FILE, 0o120000: Kind.SYMLINK, 0o020000: Kind.CHR,
         0o060000: Kind.BLK, 0o010000: Kind.FIFO, 0o140000: Kind.SOCK}
READ_CHUNK = 1 << 20


def probe(region) -> bool:
    if region.length < SB_OFFSET + SUPERBLOCK.size:
        return False
    return SUPERBLOCK.unpack(region.pread(SUPERBLOCK.size, SB_OFFSET)).magic == MAGIC


def open(region) -> "ErofsReader":  # noqa: A001 - the registry's name
    return ErofsReader(region)


class Inode:
    __slots__ = ("nid", "extended", "layout", "mode", "kind", "nlink", "size", "uid", "gid", "mtime",
                 "mtime_ns", "u", "ino", "xattr_icount", "isize", "xattr_size", "rdev")


class ErofsReader(Reader):
    fs_type = "erofs"

    def __init__(self, region):
        self.r = region
        self.where = getattr(region, "path", "<image>")
        sb = SUPERBLOCK.unpack(region.pread(SUPERBLOCK.size, SB_OFFSET))
        if sb.magic != MAGIC:
            raise ImageError("not an erofs image", where=self.where)
        if not 9 <= sb.blkszbits <= 16:
            raise ImageError(f"erofs block size 2^{sb.blkszbits} is not supported", where=self.where)
        self.bs = 1 << sb.blkszbits
        if sb.feature_incompat & ~KNOWN_INCOMPAT:
            raise ImageError(f"unknown erofs incompatible features {sb.feature_incompat:#x}", where=self.where)
        if sb.extra_devices:
            raise ImageError("erofs images with extra devices are not supported", where=self.where)
        if sb.feature_compat & COMPAT_SB_CHKSUM:
            n = min(self.bs, region.length) - SB_OFFSET
            raw = bytearray(region.pread(n, SB_OFFSET))
            raw[SUPERBLOCK.offset("checksum"):SUPERBLOCK.end("checksum")] = bytes(4)
            if sb_checksum(bytes(raw)) != sb.checksum:
                raise ImageError("erofs superblock checksum mismatch", where=self.where)
        self.sb = sb
        self.meta = sb.meta_blkaddr * self.bs
        self.xattr_base = sb.xattr_blkaddr * self.bs
        self.long_prefixes: list[tuple[int, bytes]] = []
        if sb.xattr_prefix_count:
            self._load_long_prefixes()
        self._dircache: dict[int, dict[bytes, int]] = {}
        self._packed = None  # fragments: the packed inode, its extent map and last extent decoded
        self._packed_map = None
        self._packed_cache: dict = {}
        self.root = self._inode(sb.root_nid)
        if self.root.kind is not Kind.DIR:
            raise ImageError("the erofs root inode is not a directory", where=self.where)

    # -- records ------------------------------------------------------------------
    def _iloc(self, nid: int) -> int:
        return self.meta + nid * INODE_SLOT

    def _inode(self, nid: int) -> Inode:
        pos = self._iloc(nid)
        if pos + INODE_COMPACT.size > self.r.length:
            raise ImageError(f"inode nid {nid} lies outside the image", where=self.where)
        head = self.r.pread(INODE_COMPACT.size, pos)
        fmt = INODE_COMPACT.unpack(head).format
        ino = Inode()
        ino.nid = nid
        ino.extended = bool(fmt & 1)
        ino.layout = (fmt >> 1) & 7
        if ino.extended:
            d = INODE_EXTENDED.unpack(self.r.pread(INODE_EXTENDED.size, pos))
            ino.nlink, ino.mtime, ino.mtime_ns = d.nlink, d.mtime, d.mtime_nsec
            ino.isize = 64
        else:
            d = INODE_COMPACT.unpack(head)
            nlink = 1 if fmt & 0x10 and (d.mode & 0o170000) != 0o040000 else d.nlink
            ino.nlink, ino.mtime, ino.mtime_ns = nlink, self.sb.epoch + d.mtime, self.sb.fixed_nsec
            ino.isize = 32
        ino.mode, ino.size, ino.u, ino.ino, ino.uid, ino.gid = d.mode, d.size, d.u, d.ino, d.uid, d.gid
        ino.kind = KINDS.get(d.mode & 0o170000)
        if ino.kind is None:
            raise ImageError(f"inode nid {nid} has unknown type in mode {d.mode:o}", where=self.where)
        if ino.layout > LAYOUT_CHUNK_BASED:
            raise ImageError(f"inode nid {nid} has unknown data layout {ino.layout}", where=self.where)
        ino.xattr_icount = d.xattr_icount
        ino.xattr_size = XATTR_IBODY_HEADER.size + 4 * (d.xattr_icount - 1) if d.xattr_icount else 0
        ino.rdev = decode_rdev(d.u) if ino.kind in (Kind.CHR, Kind.BLK) else (0, 0)
        if ino.kind in (Kind.FILE, Kind.DIR, Kind.SYMLINK) and ino.size > self.r.length * 4096 + (1 << 40):
            raise ImageError(f"inode nid {nid}: absurd size {ino.size}", where=self.where)
        return ino

    def _load_long_prefixes(self) -> None:
        # long prefixes live in the packed inode's data or the metadata area; each is a
        # __le16 length followed by base_index and the infix, padded to 4 bytes
        pos = self.sb.xattr_prefix_start * 4 + self.meta
        for _ in range(self.sb.xattr_prefix_count):
            (n,) = struct.unpack("<H", self.r.pread(2, pos))
            if n == 0:
                raise ImageError("empty xattr long prefix", where=self.where)
            raw = self.r.pread(n, pos + 2)
            self.long_prefixes.append((raw[0], raw[1:]))
            pos += -(-(2 + n) // 4) * 4

    def _prefix(self, index: int) -> bytes:
        if index & 0x80:
            k = index & 0x7F
            if k >= len(self.long_prefixes):
                raise ImageError(f"xattr long prefix {k} out of range", where=self.where)
            base, infix = self.long_prefixes[k]
            return XATTR_PREFIXES.get(base, "").encode() + infix
        if index not in XATTR_PREFIXES:
            raise ImageError(f"unknown xattr name index {index}", where=self.where)
        return XATTR_PREFIXES[index].encode()

    def _xattr_entries(self, data: bytes, pos: int, end: int, out: dict, limit: int | None = None) -> int:
        count = 0
        while pos + XATTR_ENTRY.size <= end and (limit is None or count < limit):
            nlen, index, vsize = XATTR_ENTRY.unpack(data, pos)
            if limit is None and nlen == 0 and index == 0 and vsize == 0:
                break
            stop = pos + XATTR_ENTRY.size + nlen + vsize
            if stop > end:
                raise ImageError("xattr entry runs past its area", where=self.where)
            name = self._prefix(index) + data[pos + 4:pos + 4 + nlen]
            out[name.decode("utf-8", "surrogateescape")] = data[pos + 4 + nlen:stop]
            pos = stop + (-stop % 4)
            count += 1
        return pos

    def _xattrs(self, ino: Inode) -> dict[str, bytes]:
        if not ino.xattr_size:
            return {}
        body = self.r.pread(ino.xattr_size, self._iloc(ino.nid) + ino.isize)
        shared = XATTR_IBODY_HEADER.unpack(body).shared_count
        if XATTR_IBODY_HEADER.size + 4 * shared > len(body):
            raise ImageError(f"inode nid {ino.nid}: shared xattr count overruns its body", where=self.where)
        out: dict[str, bytes] = {}
        for k in range(shared):
            (sid,) = struct.unpack_from("<I", body, XATTR_IBODY_HEADER.size + 4 * k)
            pos = self.xattr_base + 4 * sid
            nlen, index, vsize = XATTR_ENTRY.unpack(self.r.pread(4, pos))
            raw = self.r.pread(4 + nlen + vsize, pos)
            self._xattr_entries(raw, 0, len(raw), out, limit=1)
        self._xattr_entries(body, XATTR_IBODY_HEADER.size + 4 * shared, len(body), out)
        return out

    # -- data ---------------------------------------------------------------------
    def _extents(self, ino: Inode) -> Iterator[tuple[int, int, int | None]]:
        """(logical offset, length, physical offset or None for a hole) covering [0, size)
        of a flat or chunk-based inode."""
        bs, size = self.bs, ino.size
        if ino.layout in (LAYOUT_FLAT_PLAIN, LAYOUT_FLAT_INLINE):
            # as the kernel maps it: with FLAT_INLINE the last (possibly full) block is inline
            body = (-(-size // bs) - 1) * bs if ino.layout == LAYOUT_FLAT_INLINE and size else size
            tail = size - body
            if body:
                start = ino.u * bs
                if start + body > self.r.length:
                    raise ImageError(f"inode nid {ino.nid}: data blocks lie outside the image", where=self.where)
                yield 0, body, start
            if tail:
                pos = self._iloc(ino.nid) + ino.isize + ino.xattr_size
                if pos % bs + tail > bs:
                    raise ImageError(f"inode nid {ino.nid}: inline data crosses a block", where=self.where)
                yield body, tail, pos
        elif ino.layout == LAYOUT_CHUNK_BASED:
            fmt = ino.u & 0xFFFF
            csize = bs << (fmt & CHUNK_FORMAT_BLKBITS_MASK)
            unit = 8 if fmt & CHUNK_FORMAT_INDEXES else 4
            base = self._iloc(ino.nid) + ino.isize + ino.xattr_size
            base = -(-base // unit) * unit
            nchunks = -(-size // csize)
            for c0 in range(0, nchunks, 8192):
                n = min(8192, nchunks - c0)
                raw = self.r.pread(n * unit, base + c0 * unit)
                for k in range(n):
                    c = c0 + k
                    if unit == 4:
                        (addr,) = struct.unpack_from("<I", raw, 4 * k)
                        hole = addr == NULL_ADDR
                    else:
                        hi, dev, lo = struct.unpack_from("<HHI", raw, 8 * k)
                        if dev:
                            raise ImageError("chunks on extra devices are not supported", where=self.where)
                        hole = lo == NULL_ADDR
                        addr = lo
                    length = min(csize, size - c * csize)
                    if not hole and addr * bs + length > self.r.length:
                        raise ImageError(f"inode nid {ino.nid}: chunk outside the image", where=self.where)
                    yield c * csize, length, None if hole else addr * bs
        else:
            raise ImageError(f"inode nid {ino.nid}: data layout {ino.layout} is not flat", where=self.where)

    def _packed_read(self, off: int, n: int, nid: int) -> Iterator[bytes]:
        """Bytes [off, off + n) of the packed inode (fragments), where the tails of the files
        stored with `-E fragments` live; it may be compressed itself, but not in fragments."""
        if self._packed is None:
            if not self.sb.feature_incompat & INCOMPAT_FRAGMENTS or not self.sb.packed_nid:
                raise ImageError(f"inode nid {nid} has data in fragments but the image has no packed inode",
                                 where=self.where)
            packed = self._inode(self.sb.packed_nid)
            if packed.kind is not Kind.FILE:
                raise ImageError("the erofs packed inode is not a regular file", where=self.where)
            self._packed = packed
        packed = self._packed
        if off < 0 or off + n > packed.size:
            raise ImageError(f"inode nid {nid}: fragment of {n} bytes at {off} is outside the packed inode "
                             f"({packed.size} bytes)", where=self.where)
        if packed.layout in (LAYOUT_COMPRESSED_FULL, LAYOUT_COMPRESSED_COMPACT):
            if self._packed_map is None:
                from .zdata import ZMap
                self._packed_map = ZMap(self, packed)
            yield from self._packed_map.read(off, n, self._packed_cache)
            return
        end = off + n
        for lo, length, phys in self._extents(packed):
            a, b = max(lo, off), min(lo + length, end)
            while a < b:
                k = min(READ_CHUNK, b - a)
                yield bytes(k) if phys is None else self.r.pread(k, phys + a - lo)
                a += k
            if lo + length >= end:
                break

    def _read_all(self, ino: Inode, limit: int) -> bytes:
        if ino.size > limit:
            raise ImageError(f"inode nid {ino.nid}: {ino.size} bytes where at most {limit} fit", where=self.where)
        return b"".join(self._data(ino))

    def _data(self, ino: Inode) -> Iterator[bytes]:
        if ino.layout in (LAYOUT_COMPRESSED_FULL, LAYOUT_COMPRESSED_COMPACT):
            from .zdata import read_compressed
            yield from read_compressed(self, ino)
            return
        for _lo, length, phys in self._extents(ino):
            done = 0
            while done < length:
                n = min(READ_CHUNK, length - done)
                yield bytes(n) if phys is None else self.r.pread(n, phys + done)
                done += n

    def _names(self, ino: Inode) -> dict[bytes, int]:
        """name -> nid of a directory, from a small cache (lookups of many paths in one big
        directory would otherwise re-read it each time)."""
        got = self._dircache.pop(ino.nid, None)
        if got is None:
            got = {name: nid for name, nid, _t in self._entries(ino)}
        self._dircache[ino.nid] = got
        if len(self._dircache) > 64:
            self._dircache.pop(next(iter(self._dircache)))
        return got

    def _entries(self, ino: Inode) -> list[tuple[bytes, int, int]]:
        """(name, nid, file type) of every entry, . and .. included."""
        if ino.kind is not Kind.DIR:
            raise ImageError(f"inode nid {ino.nid} is not a directory", where=self.where)
        data = self._read_all(ino, self.r.length)
        out = []
        bs = self.bs
        for blk in range(0, len(data), bs):
            block = data[blk:blk + bs]
            if len(block) < DIRENT.size:
                raise ImageError(f"directory nid {ino.nid}: truncated block", where=self.where)
            first = DIRENT.unpack(block).nameoff
            if first % DIRENT.size or not DIRENT.size <= first < len(block) + 1:
                raise ImageError(f"directory nid {ino.nid}: bad first name offset {first}", where=self.where)
            count = first // DIRENT.size
            ents = [DIRENT.unpack(block, DIRENT.size * k) for k in range(count)]
            for k, (nid, off, ftype) in enumerate(ents):
                end = ents[k + 1].nameoff if k + 1 < count else len(block)
                if not first <= off < end <= len(block):
                    raise ImageError(f"directory nid {ino.nid}: bad name offsets", where=self.where)
                name = block[off:end]
                if k + 1 == count:
                    name = name.split(b"\0", 1)[0]
                if not name or b"/" in name or b"\0" in name:
                    raise ImageError(f"directory nid {ino.nid}: invalid name {name[:40]!r}", where=self.where)
                out.append((name, nid, ftype))
        return out

    # -- Reader API ---------------------------------------------------------------
    def _lookup(self, path: str) -> Inode:
        ino = self.root
        for comp in split_path(path):
            if ino.kind is not Kind.DIR:
                raise ImageError(f"{path}: not a directory")
            nid = self._names(ino).get(comp.encode("utf-8", "surrogateescape"))
            if nid is None:
                raise ImageError(f"{path}: no such file or directory")
            ino = self._inode(nid)
        return ino

    def _entry(self, path: str, ino: Inode) -> REntry:
        target = None
        if ino.kind is Kind.SYMLINK:
            target = self._read_all(ino, 65536).decode("utf-8", "surrogateescape")
        return REntry(path=path, kind=ino.kind, mode=ino.mode & 0o7777, uid=ino.uid, gid=ino.gid,
                      size=ino.size, mtime=ino.mtime, nlink=ino.nlink, inode=ino.nid, target=target,
                      rdev=ino.rdev, xattrs=self._xattrs(ino))

    def info(self) -> list[tuple[str, str]]:
        import uuid as _uuid
        sb = self.sb
        name = sb.volume_name.split(b"\0", 1)[0].decode("utf-8", "replace")
        if sb.feature_incompat & INCOMPAT_COMPR_CFGS:  # u1 is the algorithm bitmap
            algs = [a for bit, a in enumerate(("lz4", "lzma", "deflate", "zstd")) if sb.u1 & (1 << bit)]
        else:  # u1 is lz4_max_distance; compressed inodes can only be lz4
            algs = ["lz4"] if sb.feature_incompat & INCOMPAT_LZ4_0PADDING else []
        return [("block size", str(self.bs)), ("blocks", str(sb.blocks)), ("inodes", str(sb.inos)),
                ("uuid", str(_uuid.UUID(bytes=sb.uuid))), ("label", name),
                ("created", str(sb.epoch)), ("root nid", str(sb.root_nid)),
                ("features compat", f"{sb.feature_compat:#x}"), ("features incompat", f"{sb.feature_incompat:#x}"),
                ("compression", ", ".join(algs) if algs else "none")]

    def stat(self, path: str) -> REntry:
        norm = "/" + "/".join(split_path(path))
        return self._entry(norm, self._lookup(norm))

    def listdir(self, path: str) -> list[REntry]:
        norm = "/" + "/".join(split_path(path))
        ino = self._lookup(norm)
        if ino.kind is not Kind.DIR:
            raise ImageError(f"{norm}: not a directory")
        base = norm.rstrip("/")
        out = []
        for name, nid in sorted(self._names(ino).items()):
            if name in (b".", b".."):
                continue
            out.append(self._entry(f"{base}/{name.decode('utf-8', 'surrogateescape')}", self._inode(nid)))
        return out

    def read_file(self, path: str) -> Iterator[bytes]:
        ino = self._lookup(path)
        if ino.kind is not Kind.FILE:
            raise ImageError(f"{path}: not a regular file")
        yield from self._data(ino)


def load_tree(region) -> "Tree":
    """The image as an input tree (an EROFS image as the `source` of another image).

    Flat and chunk-based files point into the image itself (`FileSource` segments at their
    blocks; holes stay holes); compressed files are decompressed once into a temporary
    directory that lives until the process ends. Hardlinks stay hardlinks (one Node per nid).
    """
    import atexit
    import io
    import os
    import shutil
    import tempfile

    from ...tree import FileSource, Node, Tree

    r = ErofsReader(region)
    path = os.path.abspath(region.path)
    nodes: dict[int, Node] = {}
    tmpdir = None

    def node_for(ino: Inode, where: str) -> Node:
        nonlocal tmpdir
        n = Node(ino.kind, mode=ino.mode & 0o7777, uid=ino.uid, gid=ino.gid, mtime=ino.mtime,
                 mtime_ns=ino.mtime_ns, xattrs=r._xattrs(ino), origin=f"{path}:{where}")
        if ino.kind is Kind.FILE:
            if ino.layout in (LAYOUT_COMPRESSED_FULL, LAYOUT_COMPRESSED_COMPACT):
                if tmpdir is None:
                    tmpdir = tempfile.mkdtemp(prefix="fstool-erofs-")
                    atexit.register(shutil.rmtree, tmpdir, True)
                host = os.path.join(tmpdir, str(ino.nid))
                with io.open(host, "wb") as f:  # (this module's `open` is the registry's entry point)
                    for piece in r._data(ino):
                        f.write(piece)
                n.source = FileSource(host, ino.size)
            else:
                segs = tuple((lo, length, region.offset + phys) for lo, length, phys in r._extents(ino)
                             if phys is not None)
                n.source = FileSource(path, ino.size, segments=segs)
        elif ino.kind is Kind.SYMLINK:
            n.target = r._read_all(ino, 65536).decode("utf-8", "surrogateescape")
        elif ino.kind in (Kind.CHR, Kind.BLK):
            n.rdev = ino.rdev
        return n

    root = node_for(r.root, "/")
    seen = {r.root.nid}
    stack = [(r.root, root, "")]
    while stack:
        ino, node, where = stack.pop()
        for name, nid in sorted(r._names(ino).items()):
            if name in (b".", b".."):
                continue
            child = r._inode(nid)
            cpath = f"{where}/{name.decode('utf-8', 'surrogateescape')}"
            if child.kind is Kind.DIR:
                if nid in seen:
                    raise ImageError(f"{cpath}: directory loop (nid {nid} met twice)", where=r.where)
                seen.add(nid)
                cnode = node_for(child, cpath)
                stack.append((child, cnode, cpath))
            else:
                cnode = nodes.get(nid)
                if cnode is None:
                    cnode = nodes[nid] = node_for(child, cpath)
            node.children[os.fsdecode(name)] = cnode
    return Tree(root)
