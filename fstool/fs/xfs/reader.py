"""Read XFS v5 images (ours and mkfs.xfs's): info, stat, listdir, file bytes, symlinks, xattrs.

Invariants: every structure read is checked (magic, CRC, owner where it has one)
and refused with one-line ImageErrors; block maps are bounded by the image size,
btree walks by their level count and a visited set, directory walks by a set of
directory inodes already entered, so a malformed image cannot make a reader
loop or allocate without bound. File bytes come out in chunks of at most 1 MiB.
"""
from __future__ import annotations

import struct
import uuid as _uuid
from typing import Iterator

from ...errors import ImageError, InputError
from ...tree import Kind, split_path
from ..base import Reader, REntry
from .attrs import ACL_XATTRS, acl_from_disk
from .format import (ATTR3_LEAF_HDR_SIZE, ATTR3_LEAF_MAGIC, ATTR3_RMT_MAGIC, ATTR_LEAF_ENT,
                     ATTR_LOCAL, ATTR_PREFIX, ATTR_ROOT, ATTR_SF_ENT, ATTR_SF_HDR, BLOCK_TAIL, BMAP_MAGIC,
                     BMDR_HDR, BT_LONG, DA3_BLKINFO, DA3_CRC_OFF, DA3_NODE_MAGIC,
                     DIFLAG2_BIGTIME, DIFLAG2_NREXT64, DINODE, DINODE_CRC_OFF, DINODE_MAGIC, DIR2_LEAF_OFFSET,
                     DIR3_BLK_HDR, DIR3_BLOCK_MAGIC, DIR3_DATA_HDR_SIZE, DIR3_DATA_MAGIC,
                     FMT_BTREE, FMT_DEV, FMT_EXTENTS, FMT_LOCAL, INCOMPAT_FTYPE, KNOWN_INCOMPAT,
                     RMT_CRC_OFF, RMT_HDR, SB, SB_CRC_OFF, SB_MAGIC, SYMLINK_MAGIC, Geometry,
                     crc_ok, decode_dev, from_bigtime, unpack_bmbt)

CHUNK = 1 << 20
MAX_DEPTH = 4096
_KINDS = {0o040000: Kind.DIR, 0o100000: Kind.FILE, 0o120000: Kind.SYMLINK, 0o020000: Kind.CHR,
          0o060000: Kind.BLK, 0o010000: Kind.FIFO, 0o140000: Kind.SOCK}


def probe(region) -> bool:
    if region.length < 512:
        return False
    return struct.unpack(">I", region.pread(4, 0))[0] == SB_MAGIC


def open(region) -> "XfsReader":  # noqa: A001 - the registry's name
    return XfsReader(region)


class Inode:
    __slots__ = ("ino", "core", "raw", "dfork", "afork")

    def __init__(self, ino: int, core, raw: bytes, dfork: bytes, afork: bytes | None):
        self.ino, self.core, self.raw, self.dfork, self.afork = ino, core, raw, dfork, afork

    @property
    def kind(self) -> Kind:
        k = _KINDS.get(self.core.mode & 0o170000)
        if k is None:
            raise ImageError(f"inode {self.ino} has an unknown file type (mode {self.core.mode:o})")
        return k


class XfsReader(Reader):
    fs_type = "xfs"

    def __init__(self, region):
        self.r = region
        self.where = region.path
        raw = region.pread(512, 0)
        sb = SB.unpack(raw)
        if sb.magicnum != SB_MAGIC:
            raise ImageError("not an XFS filesystem (bad superblock magic)", where=self.where)
        if sb.versionnum & 0xF != 5:
            raise ImageError(f"XFS v{sb.versionnum & 0xF} filesystems are not supported (v5 only)",
                             where=self.where)
        if sb.sectsize < 512 or sb.sectsize > 32768 or sb.sectsize & (sb.sectsize - 1):
            raise ImageError(f"bad sector size {sb.sectsize}", where=self.where)
        raw = region.pread(sb.sectsize, 0)
        if not crc_ok(raw, SB_CRC_OFF):
            raise ImageError("superblock checksum mismatch", where=self.where)
        if sb.features_incompat & ~KNOWN_INCOMPAT:
            raise ImageError(f"unsupported incompatible features 0x{sb.features_incompat:x}",
                             where=self.where)
        bs = sb.blocksize
        if bs < 512 or bs > 65536 or bs & (bs - 1) or sb.inodesize not in (256, 512, 1024, 2048):
            raise ImageError(f"bad block or inode size ({bs}, {sb.inodesize})", where=self.where)
        if not sb.agblocks or not sb.agcount or sb.dblocks > sb.agcount * sb.agblocks:
            raise ImageError("bad allocation group geometry", where=self.where)
        self.sb = sb
        self.g = Geometry(bs, sb.agblocks, sb.agcount, sb.inodesize, sb.sectsize)
        if self.g.agblklog != sb.agblklog:
            raise ImageError("superblock agblklog does not match agblocks", where=self.where)
        self.g.dblocks = sb.dblocks
        self.dirbs = bs << sb.dirblklog
        self.ftype = bool(sb.features_incompat & INCOMPAT_FTYPE)
        if sb.dblocks * bs > region.length:
            raise ImageError(f"image is truncated: {region.length} bytes, the filesystem needs "
                             f"{sb.dblocks * bs}", where=self.where)

    # -- blocks and inodes --------------------------------------------------------------
    def _fsb_off(self, fsb: int) -> int:
        agno, agbno = self.g.split_fsb(fsb)
        if agno >= self.g.agcount or agbno >= self.g.agblocks:
            raise ImageError(f"block {fsb} is outside the filesystem", where=self.where)
        return self.g.byte(agno, agbno)

    def _block(self, fsb: int, n: int = 1) -> bytes:
        return self.r.pread(self.g.bs * n, self._fsb_off(fsb))

    def _inode(self, ino: int) -> Inode:
        g = self.g
        agno, agbno, _ = g.split_ino(ino)
        if agno >= g.agcount or agbno >= g.agblocks:
            raise ImageError(f"inode {ino} is outside the filesystem", where=self.where)
        raw = self.r.pread(g.isize, g.ino_byte(ino))
        core = DINODE.unpack(raw)
        if core.magic != DINODE_MAGIC or core.version != 3:
            raise ImageError(f"inode {ino}: bad magic or version", where=self.where)
        if not crc_ok(raw, DINODE_CRC_OFF):
            raise ImageError(f"inode {ino}: checksum mismatch", where=self.where)
        if core.ino != ino:
            raise ImageError(f"inode {ino}: records inode number {core.ino}", where=self.where)
        lit = g.isize - DINODE.size
        fo = core.forkoff * 8
        if fo >= lit:
            raise ImageError(f"inode {ino}: bad fork offset", where=self.where)
        dsize = fo if fo else lit
        dfork = raw[DINODE.size:DINODE.size + dsize]
        afork = raw[DINODE.size + fo:] if fo else None
        return Inode(ino, core, raw, dfork, afork)

    def _extents(self, node: Inode, attr: bool = False) -> list[tuple[int, int, int, int]]:
        """(startoff, fsb, count, unwritten) of a fork, sorted by startoff."""
        fmt = node.core.aformat if attr else node.core.format
        fork = node.afork if attr else node.dfork
        c = node.core
        if c.flags2 & DIFLAG2_NREXT64:  # large extent counts: 64-bit data, 32-bit attr counters
            n = c.nextents if attr else struct.unpack_from(">Q", node.raw, DINODE.offsets["pad"])[0]
        else:
            n = c.anextents if attr else c.nextents
        if fork is None:
            return []
        if fmt == FMT_EXTENTS:
            if n * 16 > len(fork):
                raise ImageError(f"inode {node.ino}: {n} extents do not fit in the fork", where=self.where)
            return [unpack_bmbt(fork, i * 16) for i in range(n)]
        if fmt != FMT_BTREE:
            raise ImageError(f"inode {node.ino}: fork format {fmt} holds no extents", where=self.where)
        level, numrecs = BMDR_HDR.unpack_from(fork, 0)
        maxrecs = (len(fork) - BMDR_HDR.size) // 16
        if not 1 <= level <= 9 or numrecs > maxrecs:
            raise ImageError(f"inode {node.ino}: bad bmbt root", where=self.where)
        ptrs = [struct.unpack_from(">Q", fork, 4 + maxrecs * 8 + i * 8)[0] for i in range(numrecs)]
        out: list = []
        seen: set[int] = set()
        limit = self.sb.dblocks
        for p in ptrs:
            self._bmbt_walk(node, p, level - 1, out, seen, limit)
        return out

    def _bmbt_walk(self, node: Inode, fsb: int, level: int, out: list, seen: set, limit: int) -> None:
        if fsb in seen or len(seen) > limit:
            raise ImageError(f"inode {node.ino}: bmbt loops", where=self.where)
        seen.add(fsb)
        blk = self._block(fsb)
        h = BT_LONG.unpack(blk)
        if h.magic != BMAP_MAGIC or h.level != level or not crc_ok(blk, 64) or h.owner != node.ino:
            raise ImageError(f"inode {node.ino}: bad bmbt block {fsb}", where=self.where)
        cap = (self.g.bs - BT_LONG.size) // 16
        if h.numrecs > cap:
            raise ImageError(f"inode {node.ino}: bad bmbt block {fsb}", where=self.where)
        if level == 0:
            out.extend(unpack_bmbt(blk, BT_LONG.size + 16 * i) for i in range(h.numrecs))
            return
        for i in range(h.numrecs):
            self._bmbt_walk(node, struct.unpack_from(">Q", blk, BT_LONG.size + cap * 8 + 8 * i)[0],
                            level - 1, out, seen, limit)

    def _read_fork(self, node: Inode, lblk: int, n: int, exts, attr: bool = False) -> bytes:
        """n logical blocks from lblk (holes as zeros)."""
        bs = self.g.bs
        out = bytearray(n * bs)
        for off, fsb, cnt, unw in exts:
            lo, hi = max(off, lblk), min(off + cnt, lblk + n)
            if lo < hi and not unw:
                out[(lo - lblk) * bs:(hi - lblk) * bs] = self._block(fsb + lo - off, hi - lo)
        return bytes(out)

    # -- directories ----------------------------------------------------------------
    def _dir_entries(self, node: Inode) -> list[tuple[bytes, int]]:
        core = node.core
        if core.format == FMT_LOCAL:
            return self._sf_dir(node)
        exts = self._extents(node)
        bs, dirbs = self.g.bs, self.dirbs
        per = dirbs // bs
        leaf_db = DIR2_LEAF_OFFSET // bs
        out = []
        for off, fsb, cnt, unw in exts:
            for lb in range(off - off % per, min(off + cnt, leaf_db), per):
                if lb < off:
                    continue
                blk = self._read_fork(node, lb, per, exts)
                self._dir_block(node, blk, lb, out)
        return out

    def _sf_dir(self, node: Inode) -> list[tuple[bytes, int]]:
        d = node.dfork[:node.core.size]
        try:
            count, i8 = d[0], d[1]
            isz = 8 if i8 else 4
            parent = int.from_bytes(d[2:2 + isz], "big")
            out = [(b"..", parent)]
            pos = 2 + isz
            for _ in range(count):
                nl = d[pos]
                name = d[pos + 3:pos + 3 + nl]
                pos += 3 + nl + (1 if self.ftype else 0)
                ino = int.from_bytes(d[pos:pos + isz], "big")
                if len(name) != nl or pos + isz > len(d):
                    raise IndexError
                pos += isz
                out.append((name, ino))
        except IndexError:
            raise ImageError(f"inode {node.ino}: truncated shortform directory", where=self.where) from None
        return out

    def _dir_block(self, node: Inode, blk: bytes, lb: int, out: list) -> None:
        h = DIR3_BLK_HDR.unpack(blk)
        if h.magic not in (DIR3_BLOCK_MAGIC, DIR3_DATA_MAGIC) or not crc_ok(blk, 4) or h.owner != node.ino:
            raise ImageError(f"directory inode {node.ino}: bad data block {lb}", where=self.where)
        end = len(blk)
        if h.magic == DIR3_BLOCK_MAGIC:
            count, _ = BLOCK_TAIL.unpack_from(blk, len(blk) - 8)
            end = len(blk) - 8 - 8 * count
        pos = DIR3_DATA_HDR_SIZE
        while pos < end:
            if struct.unpack_from(">H", blk, pos)[0] == 0xFFFF:
                ln = struct.unpack_from(">H", blk, pos + 2)[0]
                if ln < 8 or ln % 8:
                    raise ImageError(f"directory inode {node.ino}: bad free entry", where=self.where)
                pos += ln
                continue
            ino, nl = struct.unpack_from(">QB", blk, pos)
            if nl == 0:
                raise ImageError(f"directory inode {node.ino}: bad entry", where=self.where)
            out.append((blk[pos + 9:pos + 9 + nl], ino))
            pos += (8 + 1 + nl + (1 if self.ftype else 0) + 2 + 7) & ~7

    def _lookup(self, path: str) -> tuple[str, Inode]:
        try:
            parts = split_path(path)
        except InputError as e:
            raise ImageError(str(e), where=self.where) from None
        if len(parts) > MAX_DEPTH:
            raise ImageError("path too deep", where=self.where)
        node = self._inode(self.sb.rootino)
        for i, comp in enumerate(parts):
            if node.kind is not Kind.DIR:
                raise InputError("not a directory", where=f"{self.where}:/{'/'.join(parts[:i])}")
            want = comp.encode("utf-8", "surrogateescape")
            for name, ino in self._dir_entries(node):
                if name == want:
                    node = self._inode(ino)
                    break
            else:
                raise InputError("no such file or directory",
                                 where=f"{self.where}:/{'/'.join(parts[:i + 1])}")
        return "/" + "/".join(parts), node

    # -- xattrs ---------------------------------------------------------------------
    def _xattrs(self, node: Inode) -> dict[str, bytes]:
        if node.afork is None:
            return {}
        out: dict[str, bytes] = {}
        if node.core.aformat == FMT_LOCAL:
            a = node.afork
            total, count, _ = ATTR_SF_HDR.unpack_from(a, 0)
            pos = ATTR_SF_HDR.size
            for _ in range(count):
                if pos + 3 > len(a):
                    raise ImageError(f"inode {node.ino}: truncated shortform xattrs", where=self.where)
                nl, vl, flags = ATTR_SF_ENT.unpack_from(a, pos)
                name = a[pos + 3:pos + 3 + nl]
                self._put_attr(out, flags, bytes(name), a[pos + 3 + nl:pos + 3 + nl + vl])
                pos += 3 + nl + vl
            return out
        exts = self._extents(node, attr=True)
        blk = self._read_fork(node, 0, 1, exts)
        seen = set()
        for _ in range(16):  # descend a node form to its first leaf
            info = DA3_BLKINFO.unpack(blk)
            if info.magic != DA3_NODE_MAGIC:
                break
            before = struct.unpack_from(">I", blk, 64 + 4)[0]
            blk = self._read_fork(node, before, 1, exts)
        lb = None
        while True:
            info = DA3_BLKINFO.unpack(blk)
            if info.magic != ATTR3_LEAF_MAGIC or not crc_ok(blk, DA3_CRC_OFF) or info.owner != node.ino:
                raise ImageError(f"inode {node.ino}: bad xattr leaf block", where=self.where)
            count = struct.unpack_from(">H", blk, DA3_BLKINFO.size)[0]
            for i in range(count):
                h, idx, flags, _ = ATTR_LEAF_ENT.unpack_from(blk, ATTR3_LEAF_HDR_SIZE + 8 * i)
                if flags & 0x80:  # incomplete
                    continue
                if flags & ATTR_LOCAL:
                    vl, nl = struct.unpack_from(">HB", blk, idx)
                    name = blk[idx + 3:idx + 3 + nl]
                    value = blk[idx + 3 + nl:idx + 3 + nl + vl]
                else:
                    vblk, vl, nl = struct.unpack_from(">IIB", blk, idx)
                    name = blk[idx + 9:idx + 9 + nl]
                    value = self._remote_value(node, exts, vblk, vl)
                self._put_attr(out, flags, bytes(name), value)
            if not info.forw or info.forw in seen or len(seen) > 1 << 16:
                break
            seen.add(info.forw)
            lb = info.forw
            blk = self._read_fork(node, lb, 1, exts)
        return out

    def _remote_value(self, node: Inode, exts, vblk: int, vl: int) -> bytes:
        space = self.g.bs - RMT_HDR.size
        nblk = -(-vl // space)
        if vl > 1 << 20:
            raise ImageError(f"inode {node.ino}: xattr value too large", where=self.where)
        raw = self._read_fork(node, vblk, nblk, exts)
        out = bytearray()
        for k in range(nblk):
            b = raw[k * self.g.bs:(k + 1) * self.g.bs]
            h = RMT_HDR.unpack(b)
            if h.magic != ATTR3_RMT_MAGIC or not crc_ok(b, RMT_CRC_OFF) or h.bytes > space:
                raise ImageError(f"inode {node.ino}: bad remote xattr block", where=self.where)
            out += b[RMT_HDR.size:RMT_HDR.size + h.bytes]
        return bytes(out[:vl])

    @staticmethod
    def _attr_name(flags: int, name: bytes) -> str:
        prefix = ATTR_PREFIX.get(flags & 0x06, "user.")
        return prefix + name.decode("utf-8", "surrogateescape")

    def _put_attr(self, out: dict, flags: int, name: bytes, value: bytes) -> None:
        """One xattr as Linux shows it: XFS's SGI_ACL_* become system.posix_acl_*."""
        if flags & 0x06 == ATTR_ROOT and name in ACL_XATTRS:
            acl = acl_from_disk(value)
            if acl is not None:
                out[ACL_XATTRS[name]] = acl
                return
        out[self._attr_name(flags, name)] = bytes(value)

    # -- entries --------------------------------------------------------------------
    def _symlink(self, node: Inode) -> bytes:
        size = node.core.size
        if size > 1024:
            raise ImageError(f"symlink inode {node.ino} is {size} bytes long", where=self.where)
        if node.core.format == FMT_LOCAL:
            return bytes(node.dfork[:size])
        exts = self._extents(node)
        nblk = sum(c for _, _, c, _ in exts)
        raw = self._read_fork(node, 0, nblk, exts)
        if RMT_HDR.unpack(raw).magic != SYMLINK_MAGIC:
            # mkfs.xfs 6.1 -p writes remote symlinks without their v5 header
            return raw[:size]
        out = bytearray()
        for k in range(nblk):
            b = raw[k * self.g.bs:(k + 1) * self.g.bs]
            h = RMT_HDR.unpack(b)
            if h.magic != SYMLINK_MAGIC or not crc_ok(b, RMT_CRC_OFF):
                raise ImageError(f"symlink inode {node.ino}: bad remote block", where=self.where)
            out += b[RMT_HDR.size:RMT_HDR.size + h.bytes]
        return bytes(out[:size])

    def _entry(self, path: str, node: Inode) -> REntry:
        c = node.core
        kind = node.kind
        if c.flags2 & DIFLAG2_BIGTIME:
            mtime = from_bigtime(c.mtime)[0]
        else:
            mtime = struct.unpack(">i", (c.mtime >> 32).to_bytes(4, "big"))[0]
        e = REntry(path=path, kind=kind, mode=c.mode & 0o7777, uid=c.uid, gid=c.gid, mtime=mtime,
                   nlink=c.nlink, inode=node.ino, xattrs=self._xattrs(node))
        if kind is Kind.FILE:
            e.size = c.size
        elif kind is Kind.SYMLINK:
            t = self._symlink(node)
            e.size = len(t)
            e.target = t.decode("utf-8", "surrogateescape")
        elif kind in (Kind.CHR, Kind.BLK) and c.format == FMT_DEV:
            e.rdev = decode_dev(struct.unpack_from(">I", node.dfork, 0)[0])
        return e

    def stat(self, path: str) -> REntry:
        p, node = self._lookup(path)
        return self._entry(p, node)

    def listdir(self, path: str) -> list[REntry]:
        p, node = self._lookup(path)
        if node.kind is not Kind.DIR:
            raise InputError("not a directory", where=f"{self.where}:{p}")
        return self._list(p, node)

    def _list(self, p: str, node: Inode) -> list[REntry]:
        base = p.rstrip("/")
        out = []
        for name, ino in sorted(self._dir_entries(node)):
            if name in (b".", b".."):
                continue
            out.append(self._entry(f"{base}/{name.decode('utf-8', 'surrogateescape')}", self._inode(ino)))
        return out

    def walk(self, path: str = "/") -> Iterator[REntry]:
        top = self.stat(path)
        stack = [top]
        entered: set[int] = set()
        while stack:
            e = stack.pop()
            yield e
            if e.kind is Kind.DIR:
                if e.inode in entered:
                    raise ImageError(f"directory loop at {e.path}", where=self.where)
                entered.add(e.inode)
                stack.extend(reversed(self._list(e.path, self._inode(e.inode))))

    def read_file(self, path: str) -> Iterator[bytes]:
        p, node = self._lookup(path)
        if node.kind is not Kind.FILE:
            raise InputError("not a regular file", where=f"{self.where}:{p}")
        return self._read(node)

    def _read(self, node: Inode) -> Iterator[bytes]:
        size = node.core.size
        if node.core.format == FMT_LOCAL:
            yield bytes(node.dfork[:size])
            return
        exts = self._extents(node)
        bs = self.g.bs
        pos = 0
        for off, fsb, cnt, unw in exts:
            start = off * bs
            if start >= size:
                break
            while pos < start:  # hole
                n = min(CHUNK, start - pos)
                yield bytes(n)
                pos += n
            end = min(size, (off + cnt) * bs)
            self._fsb_off(fsb)
            self._fsb_off(fsb + cnt - 1)
            base = self._fsb_off(fsb)
            while pos < end:
                n = min(CHUNK, end - pos)
                yield bytes(n) if unw else self.r.pread(n, base + pos - start)
                pos += n
        while pos < size:
            n = min(CHUNK, size - pos)
            yield bytes(n)
            pos += n

    def info(self) -> list[tuple[str, str]]:
        sb = self.sb
        feats = ["crc"]
        if sb.features_incompat & 1:
            feats.append("ftype")
        if sb.features_incompat & 2:
            feats.append("sparse")
        if sb.features_incompat & 8:
            feats.append("bigtime")
        if sb.features_incompat & 0x20:
            feats.append("nrext64")
        for bit, name in ((1, "finobt"), (2, "rmapbt"), (4, "reflink"), (8, "inobtcount")):
            if sb.features_ro_compat & bit:
                feats.append(name)
        return [
            ("label", sb.fname.split(b"\0", 1)[0].decode("utf-8", "replace")),
            ("uuid", str(_uuid.UUID(bytes=sb.uuid))),
            ("block size", str(sb.blocksize)),
            ("blocks", str(sb.dblocks)),
            ("free blocks", str(sb.fdblocks)),
            ("allocation groups", f"{sb.agcount} x {sb.agblocks} blocks"),
            ("inode size", str(sb.inodesize)),
            ("inodes", str(sb.icount)),
            ("free inodes", str(sb.ifree)),
            ("log", f"internal, {sb.logblocks} blocks at {sb.logstart}" if sb.logstart else "external"),
            ("features", " ".join(feats)),
        ]
