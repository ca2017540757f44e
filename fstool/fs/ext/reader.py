"""ext2/ext3/ext4 reader: superblock, group descriptors, inodes, extents and indirect blocks,
linear and HTree directories (read linearly), inline data, xattrs.

Every number read from the image is checked before it is used: block numbers
against the block count, record lengths against their block, extent depths
strictly decreasing, name lengths against their record, so a corrupt image
raises an ImageError naming what is wrong, never loops and never tracebacks.
With metadata_csum every checksum met on the way (superblock, group
descriptors, inodes, extent blocks, directory blocks, HTree nodes, xattr
blocks) is verified.
"""
from __future__ import annotations

import struct
import time
import uuid as _uuid
from typing import Iterator

from ...errors import ImageError, InputError
from ...tree import Kind, split_path
from ..base import Reader, REntry
from .format import (
    BLOCK_PTR_SIZE, COMPAT_HAS_JOURNAL, COMPAT_NAMES, DESC_SIZE_64, DIND_BLOCK, DIRENT,
    DIRENT_TAIL, DIRENT_TAIL_FT, DX_COUNTLIMIT, DX_ENTRY, DX_MAX_LEVELS, DX_NODE_COUNT_OFFSET,
    DX_ROOT, DX_ROOT_INFO_LENGTH, DX_ROOT_INFO_OFFSET, DX_TAIL, EXT_INIT_MAX_LEN, EXTENT_HEADER,
    EXTENT_INDEX, EXTENT_LEAF, EXTENT_MAGIC, EXTENT_TAIL, EXTENTS_FL, FT_DIR, GD_CHECKSUM_OFFSET,
    GOOD_OLD_INODE_SIZE, GROUP_DESC, GROUP_DESC_HI, HUGE_FILE_FL, I_BLOCK_SIZE,
    I_CHECKSUM_HI_OFFSET, I_CHECKSUM_LO_OFFSET, INCOMPAT_64BIT, INCOMPAT_CSUM_SEED,
    INCOMPAT_EXTENTS, INCOMPAT_FLEX_BG, INCOMPAT_INLINE_DATA, INCOMPAT_LARGEDIR, INCOMPAT_NAMES,
    INCOMPAT_RECOVER, IND_BLOCK, INDEX_FL, INLINE_DATA_FL, INODE, INODE_EXTRA, MAGIC, MAGIC_OFFSET,
    N_BLOCKS, NDIR_BLOCKS, READER_INCOMPAT, RO_COMPAT_DIR_NLINK, RO_COMPAT_EXTRA_ISIZE,
    RO_COMPAT_GDT_CSUM, RO_COMPAT_HUGE_FILE, RO_COMPAT_METADATA_CSUM, RO_COMPAT_NAMES, ROOT_INO,
    SB_CHECKSUM_OFFSET, SUPERBLOCK, SUPERBLOCK_OFFSET, TIND_BLOCK, XATTR_END, XATTR_ENTRY,
    XATTR_HEADER, XATTR_IBODY_HEADER, XATTR_INDEX_PREFIX, XATTR_MAGIC, acl_from_disk, crc16, csum,
    decode_dev, decode_time, indirect_bounds, inode_csum_seed,
)

CHUNK = 1 << 20
MAX_DEPTH = 5
MAX_DIR_BYTES = 1 << 30
MAX_PATH_DEPTH = 4096
KIND_OF_FMT = {0o040000: Kind.DIR, 0o100000: Kind.FILE, 0o120000: Kind.SYMLINK, 0o020000: Kind.CHR,
               0o060000: Kind.BLK, 0o010000: Kind.FIFO, 0o140000: Kind.SOCK}


def probe(region) -> bool:
    if region.length < SUPERBLOCK_OFFSET + SUPERBLOCK.size:
        return False
    return int.from_bytes(region.pread(SUPERBLOCK.field_size("magic"), SUPERBLOCK_OFFSET + MAGIC_OFFSET),
                          "little") == MAGIC


def open(region) -> "ExtReader":  # noqa: A001 - the registry's name
    return ExtReader(region)


class Inode:
    __slots__ = ("ino", "mode", "uid", "gid", "size", "mtime", "links", "flags", "block", "file_acl",
                 "blocks", "raw", "extra", "generation")

    def __init__(self, ino: int, raw: bytes, isz: int):
        f = INODE.unpack(raw)
        self.ino, self.raw = ino, raw
        self.mode = f.mode
        self.uid = f.uid | (f.uid_high << 16)
        self.gid = f.gid | (f.gid_high << 16)
        self.size = f.size_lo | (f.size_high << 32)
        self.links = f.links_count
        self.flags = f.flags
        self.block = f.block
        self.generation = f.generation
        self.file_acl = f.file_acl_lo | (f.file_acl_high << 32)
        self.blocks = f.blocks_lo | (f.blocks_high << 32)
        x = INODE_EXTRA.unpack(raw, GOOD_OLD_INODE_SIZE) if isz > GOOD_OLD_INODE_SIZE else None
        self.extra = x.extra_isize if x is not None else 0
        has_mtime_extra = self.extra >= INODE_EXTRA.end("mtime_extra")
        self.mtime = decode_time(f.mtime, x.mtime_extra if has_mtime_extra else None)


class ExtReader(Reader):
    fs_type = "ext2"

    def __init__(self, region):
        self.r = region
        self.where = getattr(region, "path", "<image>")
        if region.length < SUPERBLOCK_OFFSET + SUPERBLOCK.size:
            raise ImageError("too small to hold an ext superblock: truncated", where=self.where)
        raw = region.pread(SUPERBLOCK.size, SUPERBLOCK_OFFSET)
        sb = SUPERBLOCK.unpack(raw)._asdict()
        if sb["magic"] != MAGIC:
            raise ImageError("not an ext2/3/4 filesystem (bad magic)", where=self.where)
        self.sb = sb
        self.incompat, self.ro = sb["feature_incompat"], sb["feature_ro_compat"]
        self.csum_on = bool(self.ro & RO_COMPAT_METADATA_CSUM)
        if self.csum_on:
            want = csum(0xFFFFFFFF, raw[:SB_CHECKSUM_OFFSET])
            if want != sb["checksum"]:
                raise ImageError(f"superblock checksum mismatch (stored {sb['checksum']:#010x}, "
                                 f"computed {want:#010x})", where=self.where)
        unknown = self.incompat & ~READER_INCOMPAT
        if unknown:
            names = [INCOMPAT_NAMES.get(b, hex(b)) for b in range(32) for b in [1 << b] if unknown & b]
            raise ImageError(f"uses features this reader does not support: {', '.join(names)}",
                             where=self.where)
        if sb["log_block_size"] > 6:
            raise ImageError(f"bad block size (log {sb['log_block_size']})", where=self.where)
        self.bs = bs = 1024 << sb["log_block_size"]
        self.blocks = sb["blocks_count_lo"] | ((sb["blocks_count_hi"] << 32) if self.incompat & INCOMPAT_64BIT else 0)
        self.isz = sb["inode_size"] if sb["rev_level"] >= 1 else 128
        if self.isz < 128 or self.isz > bs or self.isz & (self.isz - 1):
            raise ImageError(f"bad inode size {self.isz}", where=self.where)
        self.ipg, self.bpg = sb["inodes_per_group"], sb["blocks_per_group"]
        if not self.ipg or not self.bpg or self.ipg > 8 * bs or self.bpg > 8 * bs:
            raise ImageError("bad group geometry in the superblock", where=self.where)
        fdb = sb["first_data_block"]
        if self.blocks <= fdb:
            raise ImageError("bad block count in the superblock", where=self.where)
        if self.blocks * bs > region.length:
            raise ImageError(f"truncated: the superblock says {self.blocks} blocks of {bs} bytes "
                             f"({self.blocks * bs} bytes), the image has {region.length}", where=self.where)
        self.groups = -(-(self.blocks - fdb) // self.bpg)
        if sb["inodes_count"] > self.groups * self.ipg:
            raise ImageError("inode count larger than the groups hold", where=self.where)
        self.desc_size = sb["desc_size"] if self.incompat & INCOMPAT_64BIT else 32
        if self.desc_size < 32 or self.desc_size > 1024 or self.desc_size & (self.desc_size - 1):
            raise ImageError(f"bad group descriptor size {self.desc_size}", where=self.where)
        if self.incompat & INCOMPAT_CSUM_SEED:
            self.seed = sb["checksum_seed"]
        else:
            self.seed = csum(0xFFFFFFFF, sb["uuid"])
        if self.incompat & (INCOMPAT_EXTENTS | INCOMPAT_64BIT | INCOMPAT_FLEX_BG | INCOMPAT_INLINE_DATA
                            | INCOMPAT_LARGEDIR | INCOMPAT_CSUM_SEED) or self.ro & (
                RO_COMPAT_HUGE_FILE | RO_COMPAT_GDT_CSUM | RO_COMPAT_DIR_NLINK | RO_COMPAT_EXTRA_ISIZE
                | RO_COMPAT_METADATA_CSUM):
            self.fs_type = "ext4"
        elif sb["feature_compat"] & COMPAT_HAS_JOURNAL:
            self.fs_type = "ext3"
        self._read_gdt(fdb)
        self._icache: dict[int, Inode] = {}
        root = self._inode(ROOT_INO)
        if root.mode & 0o170000 != 0o040000:
            raise ImageError("the root inode is not a directory", where=self.where)

    # -- low level --------------------------------------------------------------------
    def _block(self, blk: int, n: int = 1) -> bytes:
        if blk <= 0 or blk + n > self.blocks:
            raise ImageError(f"block {blk} is outside the filesystem ({self.blocks} blocks)",
                             where=self.where)
        return self.r.pread(n * self.bs, blk * self.bs)

    def _read_gdt(self, fdb: int) -> None:
        ds = self.desc_size
        size = self.groups * ds
        start = (fdb + 1) * self.bs
        if start + size > self.r.length:
            raise ImageError("truncated: the group descriptors are past the end", where=self.where)
        raw = self.r.pread(size, start)
        self.gd = []
        gdt_csum = bool(self.ro & RO_COMPAT_GDT_CSUM)
        ck = slice(GD_CHECKSUM_OFFSET, GROUP_DESC.end("checksum"))
        for g in range(self.groups):
            d = raw[g * ds:(g + 1) * ds]
            f = GROUP_DESC.unpack(d)
            it = f.inode_table
            if ds >= DESC_SIZE_64:
                it |= GROUP_DESC_HI.unpack(d, GROUP_DESC.size).inode_table_hi << 32
            unsummed = d[:ck.start] + bytes(ck.stop - ck.start) + d[ck.stop:]  # checksum field zero
            if self.csum_on:
                c = csum(csum(self.seed, g.to_bytes(4, "little")), unsummed) & 0xFFFF
                if c != f.checksum:
                    raise ImageError(f"group descriptor {g} checksum mismatch", where=self.where)
            elif gdt_csum:  # crc16 over uuid, le32 group, the descriptor without its checksum field
                c = crc16(self.sb["uuid"] + g.to_bytes(4, "little") + d[:ck.start])
                c = crc16(d[ck.stop:], c) if ds > GROUP_DESC.size else c
                if c != f.checksum:
                    raise ImageError(f"group descriptor {g} checksum mismatch", where=self.where)
            if it <= 0 or it + self.ipg * self.isz // self.bs > self.blocks:
                raise ImageError(f"group {g}: inode table at block {it} is outside the filesystem",
                                 where=self.where)
            self.gd.append(it)

    def _inode(self, ino: int) -> Inode:
        hit = self._icache.get(ino)
        if hit is not None:
            return hit
        if ino < 1 or ino > self.sb["inodes_count"]:
            raise ImageError(f"inode number {ino} out of range", where=self.where)
        g, idx = divmod(ino - 1, self.ipg)
        off = self.gd[g] * self.bs + idx * self.isz
        raw = self.r.pread(self.isz, off)
        node = Inode(ino, raw, self.isz)
        if self.csum_on:
            buf = bytearray(raw)
            lo = INODE.field_size("checksum_lo")
            stored = INODE.unpack(raw).checksum_lo
            buf[I_CHECKSUM_LO_OFFSET:I_CHECKSUM_LO_OFFSET + lo] = bytes(lo)
            has_hi = self.isz > GOOD_OLD_INODE_SIZE and node.extra >= INODE_EXTRA.end("checksum_hi")
            if has_hi:
                hi = INODE_EXTRA.field_size("checksum_hi")
                stored |= INODE_EXTRA.unpack(raw, GOOD_OLD_INODE_SIZE).checksum_hi << 16
                buf[I_CHECKSUM_HI_OFFSET:I_CHECKSUM_HI_OFFSET + hi] = bytes(hi)
            c = csum(inode_csum_seed(self.seed, ino, node.generation), buf)
            if not has_hi:
                c &= 0xFFFF
            if c != stored:
                raise ImageError(f"inode {ino} checksum mismatch", where=self.where)
        if self.isz > GOOD_OLD_INODE_SIZE and (node.extra > self.isz - GOOD_OLD_INODE_SIZE or node.extra & 3):
            raise ImageError(f"inode {ino}: bad extra size {node.extra}", where=self.where)
        if len(self._icache) > 65536:
            self._icache.clear()
        self._icache[ino] = node
        return node

    def _iseed(self, node: Inode) -> int:
        return inode_csum_seed(self.seed, node.ino, node.generation)

    # -- block maps -------------------------------------------------------------------
    def _extents(self, node: Inode) -> list[tuple[int, int, int, bool]]:
        """(logical, length, physical, initialized) of the file's mapped blocks, sorted."""
        if node.flags & INLINE_DATA_FL:
            return []
        if node.flags & EXTENTS_FL:
            out: list[tuple[int, int, int, bool]] = []
            self._walk_extents(node, node.block, None, out, 0)
            out.sort()
            return out
        return self._indirect_map(node)

    def _walk_extents(self, node: Inode, data: bytes, want_depth: int | None, out: list, visits: int) -> None:
        h = EXTENT_HEADER.unpack(data)
        depth = h.depth
        if h.magic != EXTENT_MAGIC:
            raise ImageError(f"inode {node.ino}: bad extent header", where=self.where)
        if depth > MAX_DEPTH or (want_depth is not None and depth != want_depth):
            raise ImageError(f"inode {node.ino}: bad extent tree depth", where=self.where)
        if h.entries > h.max or EXTENT_HEADER.size + h.max * EXTENT_LEAF.size > len(data):
            raise ImageError(f"inode {node.ino}: bad extent count", where=self.where)
        for i in range(h.entries):
            off = EXTENT_HEADER.size + i * EXTENT_LEAF.size
            if depth == 0:
                lblk, ln, hi, lo = EXTENT_LEAF.unpack(data, off)
                init = ln <= EXT_INIT_MAX_LEN
                if not init:
                    ln -= EXT_INIT_MAX_LEN
                p = lo | (hi << 32)
                if ln == 0 or p <= 0 or p + ln > self.blocks:
                    raise ImageError(f"inode {node.ino}: extent points outside the filesystem",
                                     where=self.where)
                out.append((lblk, ln, p, init))
            else:
                lblk, lo, hi, _ = EXTENT_INDEX.unpack(data, off)
                child = self._block(lo | (hi << 32))
                if self.csum_on:
                    t = EXTENT_HEADER.size + EXTENT_HEADER.unpack(child).max * EXTENT_LEAF.size
                    if t + EXTENT_TAIL.size <= self.bs:
                        stored = EXTENT_TAIL.unpack(child, t).checksum
                        if csum(self._iseed(node), child[:t]) != stored:
                            raise ImageError(f"inode {node.ino}: extent block checksum mismatch",
                                             where=self.where)
                self._walk_extents(node, child, depth - 1, out, visits + 1)

    def _indirect_map(self, node: Inode) -> list[tuple[int, int, int, bool]]:
        P, b1, b2, _ = indirect_bounds(self.bs)
        nblk = -(-node.size // self.bs)
        ptrs = struct.unpack(f"<{N_BLOCKS}I", node.block)
        runs: list[list[int]] = []

        def add(l: int, p: int) -> None:
            if p >= self.blocks:
                raise ImageError(f"inode {node.ino}: block pointer {p} outside the filesystem",
                                 where=self.where)
            if runs and runs[-1][0] + runs[-1][1] == l and runs[-1][2] + runs[-1][1] == p:
                runs[-1][1] += 1
            else:
                runs.append([l, 1, p])

        for i in range(NDIR_BLOCKS):
            if i < nblk and ptrs[i]:
                add(i, ptrs[i])

        def walk(blk: int, level: int, base: int) -> None:
            if blk == 0 or base >= nblk:
                return
            table = struct.unpack(f"<{P}I", self._block(blk))
            span = P ** (level - 1)
            for i, p in enumerate(table):
                if not p:
                    continue
                l = base + i * span
                if l >= nblk:
                    break
                if level == 1:
                    add(l, p)
                else:
                    walk(p, level - 1, l)

        walk(ptrs[IND_BLOCK], 1, NDIR_BLOCKS)
        walk(ptrs[DIND_BLOCK], 2, b1)
        walk(ptrs[TIND_BLOCK], 3, b2)
        return [(l, n, p, True) for l, n, p in runs]

    def _inline_data(self, node: Inode) -> bytes:
        data = node.block
        extra = self._xattrs(node, raw_names=True).get((7, b"data"), b"")
        return (data + extra)[:node.size]

    def _max_size(self, node: Inode) -> int:
        if node.flags & EXTENTS_FL:
            return (1 << 32) * self.bs
        return indirect_bounds(self.bs)[3] * self.bs

    def _read(self, node: Inode) -> Iterator[bytes]:
        size = node.size
        if size > self._max_size(node):
            raise ImageError(f"inode {node.ino}: size {size} is larger than the format allows",
                             where=self.where)
        if node.flags & INLINE_DATA_FL:
            yield self._inline_data(node)
            return
        bs = self.bs
        pos = 0
        for lblk, ln, p, init in self._extents(node):
            start = lblk * bs
            if start >= size:
                break
            if start < pos:
                raise ImageError(f"inode {node.ino}: overlapping extents", where=self.where)
            while pos < start:
                n = min(CHUNK, start - pos)
                yield bytes(n)
                pos += n
            end = min(size, (lblk + ln) * bs)
            while pos < end:
                n = min(CHUNK, end - pos)
                if init:
                    yield self.r.pread(n, p * bs + (pos - start))
                else:
                    yield bytes(n)
                pos += n
        while pos < size:
            n = min(CHUNK, size - pos)
            yield bytes(n)
            pos += n

    # -- directories --------------------------------------------------------------------
    def _dir_entries(self, node: Inode) -> list[tuple[bytes, int, int]]:
        if node.size > MAX_DIR_BYTES:
            raise ImageError(f"directory inode {node.ino} is implausibly large", where=self.where)
        out: list[tuple[bytes, int, int]] = []
        if node.flags & INLINE_DATA_FL:
            data = self._inline_data(node)
            if len(data) < 4:
                raise ImageError(f"inode {node.ino}: bad inline directory", where=self.where)
            # inline: the parent's inode number, then entries in the rest of i_block and on
            # into the system.data xattr
            out.append((b"..", int.from_bytes(data[:BLOCK_PTR_SIZE], "little"), FT_DIR))
            self._parse_dirents(node, data[BLOCK_PTR_SIZE:I_BLOCK_SIZE], out, 0)
            if len(data) > I_BLOCK_SIZE:
                self._parse_dirents(node, data[I_BLOCK_SIZE:], out, 0)
            return out
        bs = self.bs
        nblk = node.size // bs
        indexed = bool(node.flags & INDEX_FL)
        for lblk, ln, p, init in self._extents(node):
            for i in range(ln):
                if lblk + i >= nblk:
                    break
                blk = self._block(p + i) if init else bytes(bs)
                self._parse_block(node, blk, lblk + i, indexed, out)
        return out

    def _parse_block(self, node: Inode, blk: bytes, lblk: int, indexed: bool, out: list) -> None:
        bs = self.bs
        first = DIRENT.unpack(blk)
        is_dx_root = indexed and lblk == 0
        is_dx_node = indexed and first.inode == 0 and first.rec_len == bs and first.name_len == 0
        root = DX_ROOT.unpack(blk) if is_dx_root else None
        if self.csum_on and (is_dx_root or is_dx_node):
            count_off = DX_ROOT_INFO_OFFSET + root.info_length if root is not None else DX_NODE_COUNT_OFFSET
            if count_off + DX_COUNTLIMIT.size <= bs:
                cl = DX_COUNTLIMIT.unpack(blk, count_off)
                t = count_off + cl.limit * DX_ENTRY.size
                if cl.count <= cl.limit and t + DX_TAIL.size <= bs:
                    stored = DX_TAIL.unpack(blk, t).checksum
                    unsummed = blk[t:t + DX_TAIL.offset("checksum")] + bytes(DX_TAIL.field_size("checksum"))
                    c = csum(csum(self._iseed(node), blk[:count_off + cl.count * DX_ENTRY.size]), unsummed)
                    if c != stored:
                        raise ImageError(f"directory inode {node.ino}: htree block {lblk} checksum "
                                         "mismatch", where=self.where)
        elif self.csum_on:
            t = bs - DIRENT_TAIL.size
            tail = DIRENT_TAIL.unpack(blk, t)
            if (tail.reserved_zero1 == 0 and tail.rec_len == DIRENT_TAIL.size and tail.reserved_zero2 == 0
                    and tail.reserved_ft == DIRENT_TAIL_FT):
                if csum(self._iseed(node), blk[:t]) != tail.checksum:
                    raise ImageError(f"directory inode {node.ino}: block {lblk} checksum mismatch",
                                     where=self.where)
        if root is not None:  # only "." and ".." are entries; the rest is the index
            if (root.dot_rec_len != DX_ROOT.offset("dotdot_inode") or root.dot_name_len != 1
                    or root.dotdot_rec_len != bs - DX_ROOT.offset("dotdot_inode") or root.dotdot_name_len != 2
                    or root.info_length != DX_ROOT_INFO_LENGTH or root.indirect_levels > DX_MAX_LEVELS):
                raise ImageError(f"directory inode {node.ino}: bad entry at block 0 (htree root)",
                                 where=self.where)
            out.append((b".", root.dot_inode, FT_DIR))
            out.append((b"..", root.dotdot_inode, FT_DIR))
        elif not is_dx_node:
            self._parse_dirents(node, blk, out, lblk)

    def _parse_dirents(self, node: Inode, blk: bytes, out: list, lblk: int) -> None:
        pos = 0
        n = len(blk)
        while pos < n:
            if pos + DIRENT.size > n:
                raise ImageError(f"directory inode {node.ino}: truncated entry in block {lblk}",
                                 where=self.where)
            ino, rl, nl, ft = DIRENT.unpack(blk, pos)
            if ino == 0 and rl == DIRENT_TAIL.size and nl == 0 and ft == DIRENT_TAIL_FT and pos + rl == n:
                break  # the checksum tail
            if rl < DIRENT.size or rl & 3 or pos + rl > n or (ino and nl + DIRENT.size > rl):
                raise ImageError(f"directory inode {node.ino}: bad entry at block {lblk} offset {pos}",
                                 where=self.where)
            if ino:
                out.append((blk[pos + DIRENT.size:pos + DIRENT.size + nl], ino, ft))
            pos += rl

    def _lookup(self, path: str) -> tuple[str, Inode]:
        try:
            parts = split_path(path)
        except InputError as e:
            raise ImageError(e.message, where=[self.where, *e.where]) from None
        if len(parts) > MAX_PATH_DEPTH:
            raise ImageError("path too deep", where=self.where)
        node = self._inode(ROOT_INO)
        for i, comp in enumerate(parts):
            if node.mode & 0o170000 != 0o040000:
                raise InputError("not a directory", where=f"{self.where}:/{'/'.join(parts[:i])}")
            want = comp.encode("utf-8", "surrogateescape")
            for name, ino, _ in self._dir_entries(node):
                if name == want:
                    node = self._inode(ino)
                    break
            else:
                raise InputError("no such file or directory", where=f"{self.where}:/{'/'.join(parts[:i + 1])}")
        return "/" + "/".join(parts), node

    # -- xattrs ---------------------------------------------------------------------------
    def _xattrs(self, node: Inode, raw_names: bool = False) -> dict:
        out: dict = {}
        start = GOOD_OLD_INODE_SIZE + node.extra
        if self.isz > GOOD_OLD_INODE_SIZE and node.extra and start + XATTR_IBODY_HEADER.size <= self.isz:
            if XATTR_IBODY_HEADER.unpack(node.raw, start).magic == XATTR_MAGIC:
                area = node.raw[start + XATTR_IBODY_HEADER.size:]
                self._parse_xattrs(node, area, 0, 0, out, raw_names)
        if node.file_acl:
            blk = self._block(node.file_acl)
            h = XATTR_HEADER.unpack(blk)
            if h.magic != XATTR_MAGIC or h.blocks != 1:
                raise ImageError(f"inode {node.ino}: bad xattr block {node.file_acl}", where=self.where)
            if self.csum_on:
                buf = bytearray(blk)
                XATTR_HEADER.pack_into(buf, 0, **h._replace(checksum=0)._asdict())
                if csum(csum(self.seed, node.file_acl.to_bytes(8, "little")), buf) != h.checksum:
                    raise ImageError(f"inode {node.ino}: xattr block checksum mismatch", where=self.where)
            self._parse_xattrs(node, blk, XATTR_HEADER.size, 0, out, raw_names)
        return out

    def _parse_xattrs(self, node: Inode, area: bytes, pos: int, vbase: int, out: dict, raw_names: bool) -> None:
        n = len(area)
        while pos + XATTR_END <= n and area[pos:pos + XATTR_END] != bytes(XATTR_END):
            if pos + XATTR_ENTRY.size > n:
                raise ImageError(f"inode {node.ino}: bad xattr entry", where=self.where)
            nl, idx, voff, vino, vsize, _ = XATTR_ENTRY.unpack(area, pos)
            name = area[pos + XATTR_ENTRY.size:pos + XATTR_ENTRY.size + nl]
            if vino:
                value = b""  # value in an EA inode: not followed
            else:
                if vbase + voff + vsize > n:
                    raise ImageError(f"inode {node.ino}: xattr value outside its area", where=self.where)
                value = area[vbase + voff:vbase + voff + vsize]
            pos += XATTR_ENTRY.size + ((nl + 3) & ~3)
            if raw_names:
                out[(idx, name)] = value
                continue
            if idx == 7 and name == b"data":
                continue  # inline data, not a user-visible attribute
            prefix = XATTR_INDEX_PREFIX.get(idx)
            if prefix is None:
                continue
            if idx in (2, 3):
                try:
                    value = acl_from_disk(value)
                except ValueError:
                    raise ImageError(f"inode {node.ino}: bad ACL", where=self.where) from None
            out[prefix + name.decode("utf-8", "surrogateescape")] = value

    # -- Reader API ---------------------------------------------------------------------
    def _entry(self, path: str, node: Inode) -> REntry:
        fmt = node.mode & 0o170000
        kind = KIND_OF_FMT.get(fmt)
        if kind is None:
            raise ImageError(f"inode {node.ino} has an unknown file type {fmt:o}", where=self.where)
        e = REntry(path=path, kind=kind, mode=node.mode & 0o7777, uid=node.uid, gid=node.gid,
                   size=node.size if kind in (Kind.FILE, Kind.SYMLINK, Kind.DIR) else 0,
                   mtime=node.mtime, nlink=node.links, inode=node.ino)
        if kind is Kind.SYMLINK:
            e.target = self._symlink(node).decode("utf-8", "surrogateescape")
        elif kind in (Kind.CHR, Kind.BLK):
            b0, b1 = struct.unpack_from(f"<{N_BLOCKS}I", node.block)[:2]
            e.rdev = decode_dev(b0, b1)
        e.xattrs = self._xattrs(node)
        return e

    def _symlink(self, node: Inode) -> bytes:
        if node.size > 65536:
            raise ImageError(f"symlink inode {node.ino} is implausibly long", where=self.where)
        if node.flags & INLINE_DATA_FL:
            return self._inline_data(node)
        acl_sectors = (self.bs // 512) if node.file_acl else 0
        data_sectors = node.blocks - acl_sectors if not node.flags & HUGE_FILE_FL else node.blocks
        if node.size < I_BLOCK_SIZE and data_sectors == 0:
            return node.block[:node.size]
        return b"".join(self._read(node))

    def stat(self, path: str) -> REntry:
        p, node = self._lookup(path)
        return self._entry(p, node)

    def listdir(self, path: str) -> list[REntry]:
        p, node = self._lookup(path)
        if node.mode & 0o170000 != 0o040000:
            raise InputError("not a directory", where=f"{self.where}:{p}")
        base = p.rstrip("/")
        out = []
        for name, ino, _ in sorted(self._dir_entries(node)):
            if name in (b".", b".."):
                continue
            out.append(self._entry(f"{base}/{name.decode('utf-8', 'surrogateescape')}", self._inode(ino)))
        return out

    def read_file(self, path: str) -> Iterator[bytes]:
        p, node = self._lookup(path)
        if node.mode & 0o170000 != 0o100000:
            raise InputError("not a regular file", where=f"{self.where}:{p}")
        return self._read(node)

    def info(self) -> list[tuple[str, str]]:
        sb = self.sb
        feats = []
        for names, bits in ((COMPAT_NAMES, sb["feature_compat"]), (INCOMPAT_NAMES, self.incompat),
                            (RO_COMPAT_NAMES, self.ro)):
            feats += [n for b, n in sorted(names.items()) if bits & b]
        label = sb["volume_name"].split(b"\0", 1)[0].decode("utf-8", "replace")
        free_blocks = sb["free_blocks_count_lo"] | (
            (sb["free_blocks_count_hi"] << 32) if self.incompat & INCOMPAT_64BIT else 0)
        rows = [
            ("label", label),
            ("uuid", str(_uuid.UUID(bytes=sb["uuid"]))),
            ("block size", str(self.bs)),
            ("blocks", str(self.blocks)),
            ("free blocks", str(free_blocks)),
            ("inodes", str(sb["inodes_count"])),
            ("free inodes", str(sb["free_inodes_count"])),
            ("inode size", str(self.isz)),
            ("groups", str(self.groups)),
            ("features", " ".join(feats)),
        ]
        if sb["feature_compat"] & COMPAT_HAS_JOURNAL and sb["journal_inum"]:
            try:
                j = self._inode(sb["journal_inum"])
                rows.append(("journal", f"inode {sb['journal_inum']}, {j.size // self.bs} blocks"))
            except ImageError:
                rows.append(("journal", "unreadable"))
        if self.incompat & INCOMPAT_RECOVER:
            rows.append(("state", "needs journal recovery"))
        mk = sb["mkfs_time"] | (sb["mkfs_time_hi"] << 32)
        rows.append(("created", time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(mk))))
        return rows
