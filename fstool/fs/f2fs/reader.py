"""F2FS reader: superblock, the newer valid checkpoint, NAT (journal first), inodes with
inline data, inline dentries, extra attributes and inline xattrs, hashed dentry blocks.

Every block address is checked against the main area and every node block's footer
against the nid asked for, so a corrupt image raises `ImageError` instead of
reading garbage; a directory reached twice in a walk is refused (no loops).
"""
from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import Iterator

from ...errors import ImageError, InputError
from ...image import Region
from ...sizes import format_size
from ...tree import Kind, split_path
from ..base import REntry, Reader
from .layout import (ACL_SHORT_TAGS, ADDRS_PER_BLOCK, ADDRS_PER_INODE, BLOCK, CHECKPOINT,
                     DENTRY_BITMAP_SIZE, DENTRY_RESERVED, DIR_ENTRY, INODE, INODE_NID_OFFSET,
                     NAT_ENTRY, NAT_ENTRY_PER_BLOCK, NIDS_PER_BLOCK, NODE_FOOTER, NR_DENTRY_IN_BLOCK,
                     SLOT_LEN, SUM_JOURNAL_OFFSET, SUPER, SUPER_MAGIC, SUPER_OFFSET, XATTR_ACL,
                     XATTR_BLOCK_SIZE, XATTR_ENTRY, XATTR_HEADER, XATTR_INDEX, XATTR_MAGIC, crc32,
                     FEATURES, INODE_CHECKSUM_OFFSET, SB_CHECKSUM_OFFSET)

INLINE_XATTR, INLINE_DATA, INLINE_DENTRY, EXTRA_ATTR = 0x01, 0x02, 0x04, 0x20
DEFAULT_INLINE_XATTR_ADDRS = 50
CP_COMPACT_SUM_FLAG = 0x4
NEW_ADDR = 0xFFFFFFFF
READ_CHUNK = 1 << 20
MAX_FILE_BLOCKS = ADDRS_PER_INODE + 2 * ADDRS_PER_BLOCK + 2 * NIDS_PER_BLOCK ** 2 + NIDS_PER_BLOCK ** 3
DIR_CACHE_ENTRIES = 1 << 20  # names kept in memory across directories


@dataclass
class _Inode:
    nid: int
    mode: int
    inline: int
    uid: int
    gid: int
    links: int
    size: int
    mtime: int
    xattr_nid: int
    depth: int
    block: bytes
    extra: int  # i_addr words taken by extra attributes
    inline_xattr: int  # i_addr words taken by inline xattrs

    @property
    def addrs(self) -> int:
        return ADDRS_PER_INODE - self.extra - self.inline_xattr

    def addr(self, i: int) -> int:
        off = INODE.size + 4 * (self.extra + i)
        return int.from_bytes(self.block[off:off + 4], "little")

    def nid_slot(self, i: int) -> int:
        return int.from_bytes(self.block[INODE_NID_OFFSET + 4 * i:INODE_NID_OFFSET + 4 * i + 4], "little")

    @property
    def inline_area(self) -> bytes:
        start = INODE.size + 4 * (self.extra + 1)
        end = INODE.size + 4 * (ADDRS_PER_INODE - self.inline_xattr)
        return self.block[start:end]


def probe(region: Region) -> bool:
    if region.length < 2 * BLOCK:
        return False
    return int.from_bytes(region.pread(4, SUPER_OFFSET), "little") == SUPER_MAGIC


class F2fsReader(Reader):
    fs_type = "f2fs"

    def __init__(self, region: Region):
        self.region = region
        self.where = region.path
        sb = None
        for copy in (0, BLOCK):
            raw = region.pread(SB_CHECKSUM_OFFSET + 4, copy + SUPER_OFFSET)
            f = SUPER.unpack_from(raw, 0)
            if f[-3] & FEATURES["sb_checksum"] and (
                    f[9] != SB_CHECKSUM_OFFSET
                    or crc32(raw[:SB_CHECKSUM_OFFSET]) != int.from_bytes(raw[-4:], "little")):
                continue  # a superblock whose checksum does not match is not used
            if f[0] == SUPER_MAGIC and f[5] == 12 and f[6] == 9:
                sb = f
                break
        if sb is None:
            raise ImageError("no valid F2FS superblock (magic, block size or checksum)", where=self.where)
        (_m, _maj, _min, _lss, _lspb, _lbs, _lbps, _sps, _spz, _cso, self.block_count, _secs,
         self.segment_count, _sc_cp, self.seg_sit, self.seg_nat, self.seg_ssa, self.main_segs,
         self.segment0, self.cp_blkaddr, self.sit_blkaddr, self.nat_blkaddr, self.ssa_blkaddr,
         self.main_blkaddr, self.root_ino, _node_ino, _meta_ino, uuid, name, _ec, _el,
         self.cp_payload, _v, _iv, self.feature, _enc, _salt) = sb
        self.uuid = uuid
        self.csum_seed = crc32(uuid, 0xFFFFFFFF)
        self.label = name.decode("utf-16-le", errors="replace").split("\0", 1)[0]
        if self.block_count * BLOCK > region.length:
            raise ImageError(f"the filesystem is {self.block_count * BLOCK} bytes but the image "
                             f"holds only {region.length}: truncated", where=self.where)
        if not (self.cp_blkaddr < self.sit_blkaddr < self.nat_blkaddr < self.ssa_blkaddr
                < self.main_blkaddr <= self.block_count):
            raise ImageError("F2FS superblock describes an impossible layout", where=self.where)
        self._read_checkpoint()
        self._nodes: dict[int, _Inode] = {}
        self._dirs: dict[int, dict[str, int]] = {}
        self._dir_cached = 0

    # -- checkpoint and NAT ----------------------------------------------------
    def _block(self, addr: int) -> bytes:
        if not 0 <= addr < self.block_count:
            raise ImageError(f"block address {addr:#x} is outside the filesystem", where=self.where)
        return self.region.pread(BLOCK, addr * BLOCK)

    def _read_checkpoint(self) -> None:
        best = None
        for start in (self.cp_blkaddr, self.cp_blkaddr + 512):
            cp = self._block(start)
            f = CHECKPOINT.unpack_from(cp, 0)
            off = f[46]
            if not 0 < off <= BLOCK - 4 or crc32(cp[:off]) != int.from_bytes(cp[off:off + 4], "little"):
                continue
            total = f[39]
            if not 2 <= total <= 512:
                continue
            last = self._block(start + total - 1)
            if last[:8] != cp[:8]:
                continue
            if best is None or f[0] > best[1][0]:
                best = (start, f, cp)
        if best is None:
            raise ImageError("no valid F2FS checkpoint (checksums do not match)", where=self.where)
        self.cp_start, f, cp = best
        self.cp_ver = f[0]
        self.cp_flags = f[38]
        self.start_sum = f[40]
        self.valid_blocks, self.valid_nodes, self.valid_inodes = f[2], f[41], f[42]
        self.free_segs, self.user_blocks = f[5], f[1]
        sit_size, nat_size = f[44], f[45]
        if self.cp_payload:
            self.nat_bitmap = cp[192:192 + nat_size]
        else:
            self.nat_bitmap = cp[192 + sit_size:192 + sit_size + nat_size]
        # the NAT journal lives in the hot data summary
        sums = self._block(self.cp_start + self.start_sum)
        if self.cp_flags & CP_COMPACT_SUM_FLAG:
            journal = sums[:507]
        else:
            journal = sums[SUM_JOURNAL_OFFSET:SUM_JOURNAL_OFFSET + 507]
        n = int.from_bytes(journal[:2], "little")
        self.nat_journal: dict[int, tuple[int, int]] = {}
        for i in range(min(n, 38)):
            nid = int.from_bytes(journal[2 + 13 * i:6 + 13 * i], "little")
            _v, ino, addr = NAT_ENTRY.unpack_from(journal, 6 + 13 * i)
            self.nat_journal[nid] = (ino, addr)

    def _nat(self, nid: int) -> tuple[int, int]:
        if nid in self.nat_journal:
            return self.nat_journal[nid]
        idx, ent = divmod(nid, NAT_ENTRY_PER_BLOCK)
        addr = self.nat_blkaddr + ((idx >> 9) << 10) + (idx & 511)
        if idx >> 3 < len(self.nat_bitmap) and self.nat_bitmap[idx >> 3] & (0x80 >> (idx & 7)):
            addr += 512
        if addr >= self.ssa_blkaddr:
            raise ImageError(f"node id {nid} is beyond the NAT", where=self.where)
        _v, ino, baddr = NAT_ENTRY.unpack_from(self._block(addr), ent * NAT_ENTRY.size)
        return ino, baddr

    def _node(self, nid: int, what: str) -> bytes:
        ino, addr = self._nat(nid)
        if not self.main_blkaddr <= addr < self.block_count:
            raise ImageError(f"{what}: node {nid} has no valid block ({addr:#x})", where=self.where)
        blk = self._block(addr)
        fnid, fino, _flag, _cp, _next = NODE_FOOTER.unpack_from(blk, BLOCK - NODE_FOOTER.size)
        if fnid != nid or fino != ino:
            raise ImageError(f"{what}: node block at {addr:#x} is not node {nid}", where=self.where)
        return blk

    def _inode(self, nid: int, what: str) -> _Inode:
        cached = self._nodes.get(nid)
        if cached is not None:
            return cached
        blk = self._node(nid, what)
        f = INODE.unpack_from(blk, 0)
        mode, _adv, inline, uid, gid, links, size, _blocks, _at, _ct, mtime = f[:11]
        depth, xnid = f[15], f[16]
        extra = 0
        if inline & EXTRA_ATTR:
            extra = int.from_bytes(blk[INODE.size:INODE.size + 2], "little") // 4
        # inline directories keep the default inline xattr area even without the flag
        ixattr = DEFAULT_INLINE_XATTR_ADDRS if inline & (INLINE_XATTR | INLINE_DENTRY) else 0
        if extra + ixattr >= ADDRS_PER_INODE:
            raise ImageError(f"{what}: inode {nid} has impossible extra attributes", where=self.where)
        if self.feature & FEATURES["inode_checksum"] and inline & EXTRA_ATTR and extra * 4 >= 12:
            c = crc32(blk[68:72], crc32(nid.to_bytes(4, "little"), self.csum_seed))
            off = INODE_CHECKSUM_OFFSET
            c = crc32(blk[:off] + bytes(4) + blk[off + 4:], c)
            if c != int.from_bytes(blk[off:off + 4], "little"):
                raise ImageError(f"{what}: inode {nid} checksum does not match", where=self.where)
        node = _Inode(nid, mode, inline, uid, gid, links, size, mtime, xnid, depth, blk, extra, ixattr)
        if len(self._nodes) < 4096:
            self._nodes[nid] = node
        return node

    # -- file data ------------------------------------------------------------
    def _data_runs(self, ino: _Inode, what: str) -> Iterator[tuple[int, int]]:
        """(first block address, block count) runs covering the file's blocks in order, up to
        its size; address 0 is a hole. A missing node is one hole for everything below it."""
        need = (ino.size + BLOCK - 1) // BLOCK
        if need > MAX_FILE_BLOCKS:
            raise ImageError(f"{what}: size {ino.size} is larger than F2FS can address", where=self.where)
        done = 0

        def addrs(words: list[int]) -> Iterator[tuple[int, int]]:
            nonlocal done
            words = words[:need - done]
            start, count = None, 0
            for w in words:
                w = 0 if w == NEW_ADDR else w
                if start is not None and (w == 0 == start or (w and start and w == start + count)):
                    count += 1
                    continue
                if start is not None:
                    yield start, count
                start, count = w, 1
            if start is not None:
                yield start, count
            done += len(words)

        def hole(blocks: int) -> Iterator[tuple[int, int]]:
            nonlocal done
            n = min(blocks, need - done)
            if n > 0:
                done += n
                yield 0, n

        def words_of(nid: int) -> list[int]:
            blk = self._node(nid, what)
            return list(struct.unpack_from(f"<{ADDRS_PER_BLOCK}I", blk, 0))

        def direct(nid: int) -> Iterator[tuple[int, int]]:
            yield from (addrs(words_of(nid)) if nid else hole(ADDRS_PER_BLOCK))

        def indirect(nid: int) -> Iterator[tuple[int, int]]:
            if not nid:
                yield from hole(ADDRS_PER_BLOCK * NIDS_PER_BLOCK)
                return
            for child in words_of(nid):
                if done >= need:
                    return
                yield from direct(child)

        yield from addrs([ino.addr(i) for i in range(min(ino.addrs, need))])
        for slot in (0, 1):
            if done < need:
                yield from direct(ino.nid_slot(slot))
        for slot in (2, 3):
            if done < need:
                yield from indirect(ino.nid_slot(slot))
        if done < need:
            nid = ino.nid_slot(4)
            if not nid:
                yield from hole(need - done)
            else:
                for child in words_of(nid):
                    if done >= need:
                        break
                    yield from indirect(child)

    def _read(self, ino: _Inode, what: str) -> Iterator[bytes]:
        if ino.inline & INLINE_DATA:
            area = ino.inline_area
            if ino.size > len(area):
                raise ImageError(f"{what}: inline data of {ino.size} bytes", where=self.where)
            yield area[:ino.size]
            return
        left = ino.size
        zero = bytes(READ_CHUNK)
        for addr, count in self._data_runs(ino, what):
            if addr and not (self.main_blkaddr <= addr and addr + count <= self.block_count):
                raise ImageError(f"{what}: data block {addr:#x} is outside the main area",
                                 where=self.where)
            pos = 0
            while pos < count * BLOCK and left > 0:
                n = min(READ_CHUNK, count * BLOCK - pos, left)
                yield zero[:n] if not addr else self.region.pread(n, addr * BLOCK + pos)
                pos += n
                left -= n

    # -- directories ----------------------------------------------------------
    @staticmethod
    def _dentries(area: bytes, nr: int, bitmap_size: int, reserved: int) -> Iterator[tuple[bytes, int, int]]:
        ents = bitmap_size + reserved
        names = ents + nr * DIR_ENTRY.size
        slot = 0
        while slot < nr:
            if not area[slot >> 3] & (1 << (slot & 7)):
                slot += 1
                continue
            _h, ino, nlen, ftype = DIR_ENTRY.unpack_from(area, ents + slot * DIR_ENTRY.size)
            n = max(1, (nlen + SLOT_LEN - 1) // SLOT_LEN)
            if nlen == 0 or slot + n > nr:
                slot += 1
                continue
            name = area[names + slot * SLOT_LEN:names + slot * SLOT_LEN + nlen]
            if name not in (b".", b".."):
                yield name, ino, ftype
            slot += n

    def _children(self, ino: _Inode, what: str) -> dict[str, int]:
        cached = self._dirs.get(ino.nid)
        if cached is not None:
            return cached
        out = self._read_children(ino, what)
        self._dir_cached += len(out)
        if self._dir_cached > DIR_CACHE_ENTRIES:
            self._dirs.clear()
            self._dir_cached = len(out)
        self._dirs[ino.nid] = out
        return out

    def _read_children(self, ino: _Inode, what: str) -> dict[str, int]:
        out: dict[str, int] = {}
        if ino.inline & INLINE_DENTRY:
            area = ino.inline_area
            nr = len(area) * 8 // ((DIR_ENTRY.size + SLOT_LEN) * 8 + 1)
            bitmap = (nr + 7) // 8
            reserved = len(area) - ((DIR_ENTRY.size + SLOT_LEN) * nr + bitmap)
            found = list(self._dentries(area, nr, bitmap, reserved))
        else:
            found = []
            for first, count in self._data_runs(ino, what):
                if not first:
                    continue
                if not (self.main_blkaddr <= first and first + count <= self.block_count):
                    raise ImageError(f"{what}: dentry block {first:#x} is outside the main area",
                                     where=self.where)
                for addr in range(first, first + count):
                    found += self._dentries(self._block(addr), NR_DENTRY_IN_BLOCK,
                                            DENTRY_BITMAP_SIZE, DENTRY_RESERVED)
        for name, child, _t in found:
            out[name.decode("utf-8", errors="surrogateescape")] = child
        return out

    def _lookup(self, path: str) -> tuple[str, _Inode]:
        parts = split_path(path)
        ino = self._inode(self.root_ino, "/")
        norm: list[str] = []
        for comp in parts:
            here = "/" + "/".join(norm)
            if ino.mode & 0o170000 != 0o040000:
                raise InputError("not a directory", where=here)
            match = self._children(ino, here).get(comp)
            if match is None:
                raise InputError("no such file or directory", where=here.rstrip("/") + "/" + comp)
            norm.append(comp)
            ino = self._inode(match, "/" + "/".join(norm))
        return "/" + "/".join(norm), ino

    def _xattrs(self, ino: _Inode, what: str) -> dict[str, bytes]:
        buf = b""
        if ino.inline & INLINE_XATTR:
            end = INODE.size + 4 * ADDRS_PER_INODE
            buf = ino.block[end - 4 * ino.inline_xattr:end]
        if ino.xattr_nid:
            buf += self._node(ino.xattr_nid, what)[:XATTR_BLOCK_SIZE]
        if len(buf) < XATTR_HEADER.size:
            return {}
        magic, _ref, _r = XATTR_HEADER.unpack_from(buf, 0)
        if magic != XATTR_MAGIC:
            return {}
        out: dict[str, bytes] = {}
        pos = XATTR_HEADER.size
        names = {i: p for p, i in XATTR_INDEX}
        acls = {i: n for n, i in XATTR_ACL.items()}
        while pos + 4 <= len(buf) and buf[pos:pos + 4] != bytes(4):
            index, nlen, vlen = XATTR_ENTRY.unpack_from(buf, pos)
            name = buf[pos + 4:pos + 4 + nlen]
            value = buf[pos + 4 + nlen:pos + 4 + nlen + vlen]
            if len(value) != vlen:
                raise ImageError(f"{what}: xattr entry runs past its block", where=self.where)
            if index in acls:
                out[acls[index]] = _acl_to_posix(value)
            elif index in names:
                out[names[index] + name.decode("utf-8", errors="surrogateescape")] = value
            pos += (4 + nlen + vlen + 3) // 4 * 4
        return out

    def _rentry(self, path: str, ino: _Inode) -> REntry:
        kind = Kind.from_mode(ino.mode)
        e = REntry(path, kind, ino.mode & 0o7777, uid=ino.uid, gid=ino.gid, size=ino.size,
                   mtime=ino.mtime, nlink=ino.links, inode=ino.nid,
                   xattrs=self._xattrs(ino, path))
        if kind is Kind.SYMLINK:
            e.target = b"".join(self._read(ino, path)).decode("utf-8", errors="surrogateescape")
        elif kind in (Kind.CHR, Kind.BLK):
            old, new = ino.addr(0), ino.addr(1)
            if old:
                e.rdev = (old >> 8 & 0xFF, old & 0xFF)
            else:
                e.rdev = ((new & 0xFFF00) >> 8, (new & 0xFF) | ((new >> 12) & 0xFFF00))
        if kind is not Kind.FILE:
            e.size = 0 if kind is not Kind.SYMLINK else e.size
        return e

    # -- Reader API -----------------------------------------------------------
    def info(self) -> list[tuple[str, str]]:
        import uuid
        size = self.block_count * BLOCK
        return [
            ("type", "F2FS"),
            ("label", self.label),
            ("uuid", str(uuid.UUID(bytes=self.uuid))),
            ("size", f"{format_size(size)} ({size} bytes)"),
            ("block size", str(BLOCK)),
            ("segments", str(self.segment_count)),
            ("main segments", str(self.main_segs)),
            ("free segments", str(self.free_segs)),
            ("user blocks", str(self.user_blocks)),
            ("valid blocks", str(self.valid_blocks)),
            ("valid nodes", str(self.valid_nodes)),
            ("valid inodes", str(self.valid_inodes)),
            ("checkpoint version", f"{self.cp_ver:#x}"),
        ]

    def stat(self, path: str) -> REntry:
        norm, ino = self._lookup(path)
        return self._rentry(norm, ino)

    def listdir(self, path: str) -> list[REntry]:
        norm, ino = self._lookup(path)
        if ino.mode & 0o170000 != 0o040000:
            raise InputError("not a directory", where=norm)
        base = norm.rstrip("/")
        out = [self._rentry(f"{base}/{n}", self._inode(c, f"{base}/{n}"))
               for n, c in self._children(ino, norm).items()]
        out.sort(key=lambda r: r.name.encode("utf-8", errors="surrogateescape"))
        return out

    def read_file(self, path: str) -> Iterator[bytes]:
        norm, ino = self._lookup(path)
        if ino.mode & 0o170000 != 0o100000:
            raise InputError("not a regular file", where=norm)
        yield from self._read(ino, norm)


def _acl_to_posix(value: bytes) -> bytes:
    """F2FS's ACL form back to the POSIX xattr form (version 2, 8-byte entries)."""
    out = bytearray((2).to_bytes(4, "little"))
    pos = 4
    while pos + 4 <= len(value):
        tag, perm = struct.unpack_from("<HH", value, pos)
        if tag in ACL_SHORT_TAGS:
            out += struct.pack("<HHI", tag, perm, 0xFFFFFFFF)
            pos += 4
        else:
            out += struct.pack("<HHI", tag, perm, int.from_bytes(value[pos + 4:pos + 8], "little"))
            pos += 8
    return bytes(out)


def open(region: Region) -> F2fsReader:  # noqa: A001 - the reader-module interface
    return F2fsReader(region)
