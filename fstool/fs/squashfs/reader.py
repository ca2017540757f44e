"""SquashFS 4.0 reader: superblock, inodes, directories, file data, xattrs.

Every offset read from the image is checked against the image's size and the
table it should lie in before it is used, so a corrupt image gives an
ImageError naming what is wrong, never a wrong answer or a traceback.
"""
from __future__ import annotations

from typing import Iterator

from ...errors import ImageError
from ...tree import Kind, split_path
from ..base import Reader, REntry
from .codec import codec_for_id
from .format import (
    BLKDEV, BLOCK_SIZE_ENTRY, CHRDEV, DATA_UNCOMPRESSED, DIR, DIR_ENTRIES_MAX, DIR_ENTRY,
    DIR_HEADER, DIR_TYPES, EXTENDED, FIFO, FILE, FILE_TYPES, FRAGMENT_ENTRY, ID_ENTRY,
    INODE_HEADER, INODE_STRUCT_MAP, LBLKDEV, LCHRDEV, LSYMLINK, MAGIC, META_HEADER,
    META_UNCOMPRESSED, METADATA_SIZE, NO_FRAGMENT, NO_TABLE, NO_XATTR, SOCKET, SUPERBLOCK,
    SYMLINK, TABLE_POINTER, XATTR_ID, XATTR_INDEX, XATTR_KEY, XATTR_OOL_REF, XATTR_TABLE_HEADER,
    XATTR_VAL, XATTR_VALUE_OOL, decode_rdev,
)

KINDS = {DIR: Kind.DIR, FILE: Kind.FILE, SYMLINK: Kind.SYMLINK, BLKDEV: Kind.BLK, CHRDEV: Kind.CHR,
         FIFO: Kind.FIFO, SOCKET: Kind.SOCK}
PREFIXES = {0: "user.", 1: "trusted.", 2: "security."}


def probe(region) -> bool:
    if region.length < SUPERBLOCK.size:
        return False
    return SUPERBLOCK.unpack(region.pread(SUPERBLOCK.size, 0)).magic == MAGIC


def open(region) -> "SquashfsReader":  # noqa: A001 - the registry's name
    return SquashfsReader(region)


class Inode:
    __slots__ = ("type", "mode", "uid", "gid", "mtime", "number", "nlink", "size", "start", "offset",
                 "frag", "frag_off", "blocks", "target", "rdev", "xattr", "parent")

    def __init__(self) -> None:
        self.xattr = NO_XATTR
        self.nlink, self.size, self.start, self.offset = 1, 0, 0, 0
        self.frag, self.frag_off, self.blocks = NO_FRAGMENT, 0, []
        self.target, self.rdev, self.parent = None, (0, 0), 0


class SquashfsReader(Reader):
    fs_type = "squashfs"

    def __init__(self, region):
        self.r = region
        self.where = getattr(region, "path", "<image>")
        sb = SUPERBLOCK.unpack(region.pread(SUPERBLOCK.size, 0))._asdict()
        if sb["magic"] != MAGIC:
            raise ImageError("not a squashfs image", where=self.where)
        if (sb["version_major"], sb["version_minor"]) != (4, 0):
            raise ImageError(f"squashfs version {sb['version_major']}.{sb['version_minor']} is not 4.0",
                             where=self.where)
        bs = sb["block_size"]
        if bs & (bs - 1) or not 4096 <= bs <= 1 << 20 or 1 << sb["block_log"] != bs:
            raise ImageError(f"bad block size {bs}", where=self.where)
        if sb["bytes_used"] > region.length:
            raise ImageError(f"truncated: the superblock says {sb['bytes_used']} bytes, the image has "
                             f"{region.length}", where=self.where)
        for k in ("inode_table", "directory_table", "id_table", "fragment_table"):
            if sb[k] > sb["bytes_used"]:
                raise ImageError(f"{k} offset {sb[k]} is past the end", where=self.where)
        self.sb = sb
        self.bs = bs
        self.codec = codec_for_id(sb["compressor"], bs)
        self._meta_cache: dict[int, tuple[bytes, int]] = {}
        self.ids = [e.id for e in self._read_table(sb["id_table"], sb["id_count"], ID_ENTRY)]
        self.frags = self._read_table(sb["fragment_table"], sb["fragment_count"], FRAGMENT_ENTRY)
        self.root = self._inode(sb["root_inode"])
        if self.root.type not in DIR_TYPES:
            raise ImageError("the root inode is not a directory", where=self.where)

    # -- low level ------------------------------------------------------------
    def _meta_block(self, pos: int) -> tuple[bytes, int]:
        """(uncompressed block, position of the next block)."""
        hit = self._meta_cache.get(pos)
        if hit is not None:
            return hit
        if pos + META_HEADER.size > self.sb["bytes_used"]:
            raise ImageError(f"metadata block at {pos} is past the end", where=self.where)
        hdr = META_HEADER.unpack(self.r.pread(META_HEADER.size, pos)).size
        n = hdr & ~META_UNCOMPRESSED
        start = pos + META_HEADER.size
        if n == 0 or n > METADATA_SIZE or start + n > self.sb["bytes_used"]:
            raise ImageError(f"bad metadata block header at {pos}", where=self.where)
        raw = self.r.pread(n, start)
        data = raw if hdr & META_UNCOMPRESSED else self.codec.decompress(raw, METADATA_SIZE)
        out = (data, start + n)
        if len(self._meta_cache) > 4096:
            self._meta_cache.clear()
        self._meta_cache[pos] = out
        return out

    def _read_meta(self, table: int, ref: int, n: int) -> bytes:
        """n bytes of a metadata stream starting at reference ref inside table."""
        return self._Stream(self, table, ref).read(n)

    class _Stream:
        """Sequential reads from a metadata stream (inodes of variable length)."""

        def __init__(self, rd: "SquashfsReader", table: int, ref: int):
            self.rd, self.pos, self.off = rd, table + (ref >> 16), ref & 0xFFFF

        def read(self, n: int) -> bytes:
            out = bytearray()
            while len(out) < n:
                block, nxt = self.rd._meta_block(self.pos)
                if self.off > len(block):
                    raise ImageError(f"metadata offset {self.off} beyond its block at {self.pos}",
                                     where=self.rd.where)
                take = block[self.off:self.off + n - len(out)]
                out += take
                self.off += len(take)
                if self.off >= len(block):
                    self.pos, self.off = nxt, 0
                if not take and len(out) < n:
                    raise ImageError("metadata stream ends early", where=self.rd.where)
            return bytes(out)

    def _table_index(self, index_pos: int, nblocks: int) -> list[int]:
        """The absolute positions of a table's metadata blocks, read from its index."""
        n = TABLE_POINTER.size * nblocks
        if index_pos + n > self.sb["bytes_used"]:
            raise ImageError(f"table index at {index_pos} is past the end", where=self.where)
        return [p.start for p in TABLE_POINTER.iter_unpack(self.r.pread(n, index_pos))]

    def _read_table(self, index_pos: int, count: int, record) -> list:
        """The `count` records of a lookup table (ids, fragments) whose index is at index_pos."""
        if count == 0:
            return []
        total = count * record.size
        nblocks = (total + METADATA_SIZE - 1) // METADATA_SIZE
        data = bytearray()
        for p in self._table_index(index_pos, nblocks):
            block, _ = self._meta_block(p)
            data += block
        if len(data) < total:
            raise ImageError("lookup table is short", where=self.where)
        return list(record.iter_unpack(bytes(data[:total])))

    def _id(self, i: int) -> int:
        if i >= len(self.ids):
            raise ImageError(f"id index {i} out of range", where=self.where)
        return self.ids[i]

    def _inode(self, ref: int) -> Inode:
        s = self._Stream(self, self.sb["inode_table"], ref)
        h = INODE_HEADER.unpack(s.read(INODE_HEADER.size))
        t, number = h.inode_type, h.inode_number
        rec = INODE_STRUCT_MAP.get(t)
        if rec is None:
            raise ImageError(f"unknown inode type {t} at reference {ref:#x}", where=self.where)
        ino = Inode()
        ino.type, ino.mode, ino.mtime, ino.number = t, h.mode, h.mtime, number
        ino.uid, ino.gid = self._id(h.uid), self._id(h.guid)
        f = rec.unpack(s.read(rec.size))
        ino.nlink = f.nlink if t != FILE else 1
        if t > SOCKET:  # the extended types carry an xattr index (a symlink's follows its target)
            ino.xattr = getattr(f, "xattr", NO_XATTR)
        if t in DIR_TYPES:
            ino.start, ino.size, ino.offset, ino.parent = f.start_block, f.file_size, f.offset, f.parent_inode
        elif t in FILE_TYPES:
            ino.start, ino.size, ino.frag, ino.frag_off = f.start_block, f.file_size, f.fragment, f.offset
            n = ino.size // self.bs if ino.frag != NO_FRAGMENT else (ino.size + self.bs - 1) // self.bs
            if n > (self.sb["bytes_used"] + 1) * 1024:
                raise ImageError(f"inode {number}: absurd file size {ino.size}", where=self.where)
            ino.blocks = [b.size for b in BLOCK_SIZE_ENTRY.iter_unpack(s.read(BLOCK_SIZE_ENTRY.size * n))]
        elif t in (SYMLINK, LSYMLINK):
            size = f.symlink_size
            if size > 65536:
                raise ImageError(f"inode {number}: symlink target of {size} bytes", where=self.where)
            ino.target = s.read(size).decode("utf-8", "surrogateescape")
            ino.size = size
            if t == LSYMLINK:
                ino.xattr = XATTR_INDEX.unpack(s.read(XATTR_INDEX.size)).xattr
        elif t in (BLKDEV, CHRDEV, LBLKDEV, LCHRDEV):
            ino.rdev = decode_rdev(f.rdev)
        return ino

    def _entries(self, ino: Inode) -> list[tuple[str, Inode]]:
        if ino.type not in DIR_TYPES:
            raise ImageError("not a directory")
        size = ino.size - 3
        if size <= 0:
            return []
        data = self._read_meta(self.sb["directory_table"], (ino.start << 16) | ino.offset, size)
        out = []
        pos = 0
        prev = b""
        while pos < size:
            count, start, base = DIR_HEADER.unpack(data, pos)
            pos += DIR_HEADER.size
            if count >= DIR_ENTRIES_MAX:
                raise ImageError(f"directory header claims {count + 1} entries", where=self.where)
            for _ in range(count + 1):
                off, delta, _t, nsize = DIR_ENTRY.unpack(data, pos)
                pos += DIR_ENTRY.size
                raw = bytes(data[pos:pos + nsize + 1])
                pos += nsize + 1
                if pos > size:
                    raise ImageError("directory listing overruns its size", where=self.where)
                # mksquashfs writes entries sorted by name bytes, each once; unsquashfs refuses
                # anything else, and so a crafted listing cannot repeat one entry millions of times
                if raw <= prev:
                    raise ImageError(f"directory entries are not sorted and unique ({raw!r} after "
                                     f"{prev!r})", where=self.where)
                if b"/" in raw or raw in (b".", b".."):
                    raise ImageError(f"invalid name {raw!r} in a directory", where=self.where)
                prev = raw
                name = raw.decode("utf-8", "surrogateescape")
                out.append((name, self._inode((start << 16) | off)))
        return out

    def _xattrs(self, idx: int) -> dict[str, bytes]:
        if idx == NO_XATTR or self.sb["xattr_table"] == NO_TABLE:
            return {}
        head = XATTR_TABLE_HEADER.unpack(self.r.pread(XATTR_TABLE_HEADER.size, self.sb["xattr_table"]))
        kv_start, count = head.xattr_table_start, head.xattr_ids
        if idx >= count:
            raise ImageError(f"xattr index {idx} out of range", where=self.where)
        nblocks = (count * XATTR_ID.size + METADATA_SIZE - 1) // METADATA_SIZE
        ptrs = self._table_index(self.sb["xattr_table"] + XATTR_TABLE_HEADER.size, nblocks)
        byte = idx * XATTR_ID.size
        ids = self._Stream(self, 0, (ptrs[byte // METADATA_SIZE] << 16) | (byte % METADATA_SIZE))
        xid = XATTR_ID.unpack(ids.read(XATTR_ID.size))
        s = self._Stream(self, kv_start, xid.xattr)
        out = {}
        for _ in range(xid.count):
            t, nsize = XATTR_KEY.unpack(s.read(XATTR_KEY.size))
            name = PREFIXES.get(t & 0xFF, "unknown.") + s.read(nsize).decode("utf-8", "surrogateescape")
            value = s.read(XATTR_VAL.unpack(s.read(XATTR_VAL.size)).vsize)
            if t & XATTR_VALUE_OOL:
                vs = self._Stream(self, kv_start, XATTR_OOL_REF.unpack(value).ref)
                value = vs.read(XATTR_VAL.unpack(vs.read(XATTR_VAL.size)).vsize)
            out[name] = value
        return out

    # -- Reader API -------------------------------------------------------------
    def _lookup(self, path: str) -> Inode:
        ino = self.root
        for comp in split_path(path):
            if ino.type not in DIR_TYPES:
                raise ImageError(f"{path}: not a directory")
            for name, child in self._entries(ino):
                if name == comp:
                    ino = child
                    break
            else:
                raise ImageError(f"{path}: no such file or directory")
        return ino

    def _entry(self, path: str, ino: Inode) -> REntry:
        kind = KINDS[ino.type if ino.type <= SOCKET else ino.type - EXTENDED]
        return REntry(path=path, kind=kind, mode=ino.mode & 0o7777, uid=ino.uid, gid=ino.gid,
                      size=ino.size if kind is not Kind.DIR else ino.size, mtime=ino.mtime, nlink=ino.nlink,
                      inode=ino.number, target=ino.target, rdev=ino.rdev, xattrs=self._xattrs(ino.xattr))

    def info(self) -> list[tuple[str, str]]:
        sb = self.sb
        return [("version", "4.0"), ("compression", self.codec.name), ("block size", str(self.bs)),
                ("inodes", str(sb["inode_count"])), ("fragments", str(sb["fragment_count"])),
                ("ids", str(sb["id_count"])), ("bytes used", str(sb["bytes_used"])),
                ("created", str(sb["mkfs_time"])),
                ("exportable", "yes" if sb["export_table"] != NO_TABLE else "no"),
                ("xattrs", "yes" if sb["xattr_table"] != NO_TABLE else "no")]

    def stat(self, path: str) -> REntry:
        norm = "/" + "/".join(split_path(path))
        return self._entry(norm, self._lookup(norm))

    def listdir(self, path: str) -> list[REntry]:
        norm = "/" + "/".join(split_path(path))
        ino = self._lookup(norm)
        if ino.type not in DIR_TYPES:
            raise ImageError(f"{norm}: not a directory")
        base = norm.rstrip("/")
        return [self._entry(f"{base}/{name}", child) for name, child in self._entries(ino)]

    def read_file(self, path: str) -> Iterator[bytes]:
        ino = self._lookup(path)
        if ino.type not in FILE_TYPES:
            raise ImageError(f"{path}: not a regular file")
        pos = ino.start
        remaining = ino.size
        for word in ino.blocks:
            n = min(self.bs, remaining)
            size = word & ~DATA_UNCOMPRESSED
            if size == 0:
                yield bytes(n)
            else:
                if pos + size > self.sb["bytes_used"] or size > self.bs:
                    raise ImageError(f"{path}: data block at {pos} is outside the image", where=self.where)
                raw = self.r.pread(size, pos)
                data = raw if word & DATA_UNCOMPRESSED else self.codec.decompress(raw, self.bs)
                if len(data) < n:
                    raise ImageError(f"{path}: short data block at {pos}", where=self.where)
                yield data[:n]
                pos += size
            remaining -= n
        if remaining > 0:
            if ino.frag >= len(self.frags):
                raise ImageError(f"{path}: fragment {ino.frag} out of range", where=self.where)
            start, word, _ = self.frags[ino.frag]  # start_block, size, unused
            size = word & ~DATA_UNCOMPRESSED
            if start + size > self.sb["bytes_used"] or size > self.bs:
                raise ImageError(f"{path}: fragment block outside the image", where=self.where)
            raw = self.r.pread(size, start)
            data = raw if word & DATA_UNCOMPRESSED else self.codec.decompress(raw, self.bs)
            piece = data[ino.frag_off:ino.frag_off + remaining]
            if len(piece) != remaining:
                raise ImageError(f"{path}: fragment too short", where=self.where)
            yield piece
