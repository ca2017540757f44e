"""In-place edits of an ext2/3/4 filesystem: `fstool add IMG[:N] HOST_SRC DEST` and
`fstool rm IMG[:N] PATH`.

An edit is planned whole in memory, then written: every block it changes (bitmaps, group
descriptors, the superblock, inode table blocks, directory and mapping blocks) is read into
a cache, changed there, and only the blocks whose bytes differ are written back, after the new
files' data. Anything that stops the edit (no space, an unsupported feature, a journal that
needs recovery, a name that exists) is raised while planning, so the image is untouched.

Allocation is deterministic: inodes are the first free ones, group by group; a new file's
blocks are the first free run long enough to hold it (else the first free blocks in order).
Like the kernel, only the primary superblock and descriptor table are updated (e2fsck and
the kernel read those; the backups keep the geometry, which does not change). A directory
that gains an entry is linear: an HTree index on it is dropped (its index blocks rewritten as
empty leaves, INDEX_FL cleared), which e2fsck and the kernel read as the same directory.
Checksums (metadata_csum: inodes, bitmaps, descriptors, directory leaves, extent blocks,
xattr blocks, the superblock; or uninit_bg's crc16) are recomputed for what changes.
"""
from __future__ import annotations

import os
from types import SimpleNamespace

from ...errors import CapacityError, ImageError, InputError
from ...image import Region
from ...inputs.hostdir import load_dir, node_from_stat
from ...tree import Kind, Node, split_path
from ...zeros import content_segments
from . import xattr
from .dir import DirBuilder
from .extent import extent_tree, extent_tree_blocks, indirect_keys, indirect_map, map_runs
from .format import (
    BG_BLOCK_UNINIT, BG_INODE_UNINIT, COMPAT_DIR_INDEX, COMPAT_EXT_ATTR, DESC_SIZE_64, DIRENT, DIRENT_TAIL,
    DIRENT_TAIL_FT, EXTENT_HEADER, EXTENT_INDEX, EXTENTS_FL, FLAGS_SIGNED_HASH,
    EXT_INIT_MAX_LEN, GD_CHECKSUM_OFFSET, GOOD_OLD_INODE_SIZE, GROUP_DESC, GROUP_DESC_HI,
    HASH_HALF_MD4, HUGE_FILE_FL,
    I_BLOCK_SIZE, I_CHECKSUM_HI_OFFSET, I_CHECKSUM_LO_OFFSET, INCOMPAT_64BIT, INCOMPAT_CSUM_SEED,
    INCOMPAT_EXTENTS, INCOMPAT_FILETYPE, INCOMPAT_FLEX_BG, INCOMPAT_LARGEDIR, INCOMPAT_NAMES,
    INCOMPAT_RECOVER, INDEX_FL, INLINE_DATA_FL, INODE, INODE_EXTRA, RO_COMPAT_BTREE_DIR,
    RO_COMPAT_DIR_NLINK, RO_COMPAT_EXTRA_ISIZE, RO_COMPAT_GDT_CSUM, RO_COMPAT_HUGE_FILE,
    RO_COMPAT_LARGE_FILE, RO_COMPAT_METADATA_CSUM, RO_COMPAT_NAMES, RO_COMPAT_SPARSE_SUPER,
    SB_CHECKSUM_OFFSET, STATE_CLEAN, SUPERBLOCK, SUPERBLOCK_OFFSET, XATTR_HEADER,
    XATTR_MAGIC, crc16, csum, dirent_rec_len, encode_dev, inode_csum_seed, pack_dirent,
)
from .inode import FT, MAX_LINKS, Ino, pack_inode
from .reader import ExtReader

M32 = 0xFFFFFFFF
EDIT_INCOMPAT = (INCOMPAT_FILETYPE | INCOMPAT_EXTENTS | INCOMPAT_64BIT | INCOMPAT_FLEX_BG
                 | INCOMPAT_CSUM_SEED | INCOMPAT_LARGEDIR)
EDIT_RO = (RO_COMPAT_SPARSE_SUPER | RO_COMPAT_LARGE_FILE | RO_COMPAT_BTREE_DIR | RO_COMPAT_HUGE_FILE
           | RO_COMPAT_GDT_CSUM | RO_COMPAT_DIR_NLINK | RO_COMPAT_EXTRA_ISIZE
           | RO_COMPAT_METADATA_CSUM)
S_IFMT = 0o170000
S_IFDIR = 0o040000
S_IFLNK = 0o120000
S_IFREG = 0o100000
CHUNK = 1 << 20
STATE_ERRORS = 2  # s_state: errors detected


def _free_runs(bm: bytes, nbits: int) -> list[tuple[int, int]]:
    """[start, end) runs of zero bits among the first nbits of a little-endian bitmap."""
    v = int.from_bytes(bm[:(nbits + 7) // 8], "little") & ((1 << nbits) - 1)
    inv = ~v & ((1 << nbits) - 1)
    out = []
    pos = 0
    while pos < nbits:
        t = inv >> pos
        if not t:
            break
        s = pos + (t & -t).bit_length() - 1
        u = v >> s
        e = s + (u & -u).bit_length() - 1 if u else nbits
        out.append((s, e))
        pos = e
    return out


class ExtEditor:
    """An ext filesystem (a Region of an image file) opened for an in-place edit."""

    def __init__(self, region: Region):
        self.region = region
        self.r = r = ExtReader(region)
        sb = r.sb
        self.where = r.where
        if r.incompat & INCOMPAT_RECOVER:
            raise ImageError("the journal needs recovery; mount the filesystem once or run e2fsck "
                             "before editing it", where=self.where)
        if not sb["state"] & STATE_CLEAN or sb["state"] & STATE_ERRORS:
            raise ImageError("the filesystem is not clean; run e2fsck before editing it",
                             where=self.where)
        if sb["last_orphan"]:
            raise ImageError("the filesystem has orphan inodes; run e2fsck before editing it",
                             where=self.where)
        bad = [INCOMPAT_NAMES.get(1 << b, hex(1 << b)) for b in range(32)
               if r.incompat & ~EDIT_INCOMPAT & (1 << b)]
        bad += [RO_COMPAT_NAMES.get(1 << b, hex(1 << b)) for b in range(32)
                if r.ro & ~EDIT_RO & (1 << b)]
        if bad:
            raise ImageError(f"editing in place is not supported with {', '.join(bad)}",
                             where=self.where)
        self.bs = r.bs
        self.fdb = sb["first_data_block"]
        self.csum_on = r.csum_on
        self.gdt_csum = bool(r.ro & RO_COMPAT_GDT_CSUM) and not self.csum_on
        self.filetype = bool(r.incompat & INCOMPAT_FILETYPE)
        self.extents = bool(r.incompat & INCOMPAT_EXTENTS)
        self.dir_nlink = bool(r.ro & RO_COMPAT_DIR_NLINK)
        self.cache: dict[int, bytearray] = {}
        self.orig: dict[int, bytes] = {}
        self.copies: list[tuple[str, int, int, int]] = []  # (host path, source offset, bytes, image byte)
        self.zeros: list[tuple[int, int]] = []  # (image byte, bytes): the tails of last blocks
        self.free: list[list[tuple[int, int]]] | None = None  # per group, absolute [s, e) runs
        self.cfg = SimpleNamespace(inode_size=r.isz, csum=self.csum_on)
        hashing = (sb["feature_compat"] & COMPAT_DIR_INDEX and sb["def_hash_version"] == HASH_HALF_MD4
                   and sb["flags"] & FLAGS_SIGNED_HASH)
        self.dirs = DirBuilder(self.bs, self.csum_on, r.seed, bool(hashing), sb["hash_seed"])
        self.delta_blocks = 0
        self.delta_inodes = 0

    def close(self) -> None:
        pass

    # -- the block cache ------------------------------------------------------------------
    def blk(self, n: int) -> bytearray:
        b = self.cache.get(n)
        if b is None:
            if n < 0 or n >= self.r.blocks:
                raise ImageError(f"block {n} is outside the filesystem", where=self.where)
            raw = self.region.pread(self.bs, n * self.bs)
            self.orig[n] = raw
            b = self.cache[n] = bytearray(raw)
        return b

    def _span(self, off: int, n: int) -> tuple[bytearray, int]:
        """(the cached block holding byte off of the filesystem, off within it); n bytes fit."""
        blk, o = divmod(off, self.bs)
        assert o + n <= self.bs
        return self.blk(blk), o

    def commit(self) -> None:
        """Write the data copies, then every changed metadata block."""
        fd = os.open(self.region.path, os.O_RDWR)
        try:
            base = self.region.offset
            for path, soff, n, dst in self.copies:
                src = os.open(path, os.O_RDONLY)
                try:
                    done = 0
                    while done < n:
                        data = os.pread(src, min(CHUNK, n - done), soff + done)
                        if not data:
                            raise InputError("file shrank while reading", where=path)
                        os.pwrite(fd, data, base + dst + done)
                        done += len(data)
                finally:
                    os.close(src)
            for dst, n in self.zeros:
                os.pwrite(fd, bytes(n), base + dst)
            for n in sorted(self.cache):
                assert len(self.cache[n]) == self.bs, n
                if bytes(self.cache[n]) != self.orig[n]:
                    os.pwrite(fd, bytes(self.cache[n]), base + n * self.bs)
            os.fsync(fd)
        finally:
            os.close(fd)

    # -- group descriptors and bitmaps ----------------------------------------------------
    def _gd_at(self, g: int) -> tuple[bytearray, int]:
        ds = self.r.desc_size
        return self._span((self.fdb + 1) * self.bs + g * ds, ds)

    def gd(self, g: int) -> dict:
        b, o = self._gd_at(g)
        f = GROUP_DESC.unpack(b, o)._asdict()
        if self.r.desc_size >= DESC_SIZE_64:
            f.update(GROUP_DESC_HI.unpack(b, o + GROUP_DESC.size)._asdict())
        return f

    def _hi(self, f: dict, name: str) -> int:
        return f[name] | (f.get(name + "_hi", 0) << (32 if name in ("block_bitmap", "inode_bitmap",
                                                                     "inode_table") else 16))

    def put_gd(self, g: int, f: dict) -> None:
        """Store descriptor g with its bitmap checksums and its own checksum recomputed."""
        b, o = self._gd_at(g)
        wide = self.r.desc_size >= DESC_SIZE_64
        if self.csum_on:
            bbc = csum(self.r.seed, self.blk(self._hi(f, "block_bitmap"))[:self.r.bpg // 8])
            ibc = csum(self.r.seed, self.blk(self._hi(f, "inode_bitmap"))[:self.r.ipg // 8])
            f["block_bitmap_csum"], f["inode_bitmap_csum"] = bbc & 0xFFFF, ibc & 0xFFFF
            if wide:
                f["block_bitmap_csum_hi"], f["inode_bitmap_csum_hi"] = bbc >> 16, ibc >> 16
        f["checksum"] = 0
        lo = {k: f[k] for k in GROUP_DESC.fields}
        d = bytearray(GROUP_DESC.pack(**lo))
        if wide:
            d += GROUP_DESC_HI.pack(**{k: f[k] for k in GROUP_DESC_HI.fields})
            d += b[o + len(d):o + self.r.desc_size]
        if self.csum_on:
            c = csum(csum(self.r.seed, g.to_bytes(4, "little")), d) & 0xFFFF
        elif self.gdt_csum:
            ck = GD_CHECKSUM_OFFSET + 2
            c = crc16(bytes(self.r.sb["uuid"]) + g.to_bytes(4, "little") + bytes(d[:GD_CHECKSUM_OFFSET]))
            if len(d) > GROUP_DESC.size:
                c = crc16(bytes(d[ck:]), c)
        else:
            c = 0
        d[GD_CHECKSUM_OFFSET:GD_CHECKSUM_OFFSET + 2] = c.to_bytes(2, "little")
        b[o:o + len(d)] = d

    def _add_count(self, f: dict, name: str, delta: int) -> None:
        v = self._hi(f, name) + delta
        f[name] = v & 0xFFFF
        if self.r.desc_size >= DESC_SIZE_64:
            f[name + "_hi"] = v >> 16

    def gsize(self, g: int) -> int:
        return min(self.r.bpg, self.r.blocks - (self.fdb + g * self.r.bpg))

    def _load_free(self) -> None:
        """The free block runs of every group whose block bitmap is initialised."""
        self.free = []
        for g in range(self.r.groups):
            f = self.gd(g)
            if f["flags"] & BG_BLOCK_UNINIT:
                self.free.append([])  # not allocated from (its bitmap is not on disk)
                continue
            start = self.fdb + g * self.r.bpg
            bm = self.blk(self._hi(f, "block_bitmap"))
            self.free.append([(start + s, start + e) for s, e in _free_runs(bm, self.gsize(g))])

    def _mark_blocks(self, s: int, n: int, used: bool) -> None:
        """Set (used) or clear the bits of blocks [s, s+n), group by group, with the counts."""
        while n > 0:
            g, i = divmod(s - self.fdb, self.r.bpg)
            m = min(n, self.r.bpg - i)
            f = self.gd(g)
            if f["flags"] & BG_BLOCK_UNINIT:
                raise ImageError(f"block {s} lies in group {g}, marked unused", where=self.where)
            bm = self.blk(self._hi(f, "block_bitmap"))
            for k in range(i, i + m):
                bit = bm[k >> 3] >> (k & 7) & 1
                if bit == used:
                    raise ImageError(f"block {s + k - i} is already {'used' if used else 'free'} "
                                     "in its bitmap", where=self.where)
                bm[k >> 3] ^= 1 << (k & 7)
            self._add_count(f, "free_blocks", -m if used else m)
            self.put_gd(g, f)
            self.delta_blocks += -m if used else m
            s, n = s + m, n - m

    def alloc(self, n: int, near: int | None = None) -> list[tuple[int, int]]:
        """n blocks as (start, count) runs: right after `near` when free, else the first free
        run that holds them all, else the first free blocks in order."""
        if self.free is None:
            self._load_free()
        runs = [r for g in self.free for r in g]
        out: list[tuple[int, int]] = []
        if near is not None:
            for s, e in runs:
                if s <= near < e:
                    if e - near >= n:
                        out = [(near, n)]
                    break
        if not out:
            for s, e in runs:
                if e - s >= n:
                    out = [(s, n)]
                    break
        if not out:
            left = n
            for s, e in runs:
                take = min(left, e - s)
                out.append((s, take))
                left -= take
                if not left:
                    break
            if left:
                have = sum(e - s for s, e in runs)
                raise CapacityError(f"no space left: the edit needs {n} more blocks of {self.bs} "
                                    f"bytes, {have} are free", where=self.where)
        for s, c in out:
            self._take(s, c)
        return out

    def _take(self, s: int, c: int) -> None:
        self._mark_blocks(s, c, True)
        while c > 0:
            g = (s - self.fdb) // self.r.bpg
            runs = self.free[g]
            for i, (a, b) in enumerate(runs):
                if a <= s < b:
                    m = min(c, b - s)
                    runs[i:i + 1] = [x for x in ((a, s), (s + m, b)) if x[0] < x[1]]
                    s, c = s + m, c - m
                    break
            else:
                raise AssertionError("allocating a block that is not free")

    def release(self, s: int, n: int) -> None:
        """Free blocks [s, s+n) (their free-run lists are not reused within one edit)."""
        self._mark_blocks(s, n, False)

    # -- inodes -----------------------------------------------------------------------------
    def _ino_at(self, ino: int) -> tuple[bytearray, int]:
        g, idx = divmod(ino - 1, self.r.ipg)
        it = self._hi(self.gd(g), "inode_table")
        return self._span(it * self.bs + idx * self.r.isz, self.r.isz)

    def inode(self, ino: int) -> bytearray:
        b, o = self._ino_at(ino)
        return bytearray(b[o:o + self.r.isz])

    def put_inode(self, ino: int, raw: bytearray) -> None:
        """Store an inode with its checksum recomputed (metadata_csum)."""
        isz = self.r.isz
        if self.csum_on:
            raw[I_CHECKSUM_LO_OFFSET:I_CHECKSUM_LO_OFFSET + 2] = bytes(2)
            has_hi = False
            if isz > GOOD_OLD_INODE_SIZE:
                extra = INODE_EXTRA.unpack(raw, GOOD_OLD_INODE_SIZE).extra_isize
                has_hi = extra >= INODE_EXTRA.end("checksum_hi")
                if has_hi:
                    raw[I_CHECKSUM_HI_OFFSET:I_CHECKSUM_HI_OFFSET + 2] = bytes(2)
            gen = INODE.unpack(raw).generation
            c = csum(inode_csum_seed(self.r.seed, ino, gen), raw)
            raw[I_CHECKSUM_LO_OFFSET:I_CHECKSUM_LO_OFFSET + 2] = (c & 0xFFFF).to_bytes(2, "little")
            if has_hi:
                raw[I_CHECKSUM_HI_OFFSET:I_CHECKSUM_HI_OFFSET + 2] = (c >> 16).to_bytes(2, "little")
        b, o = self._ino_at(ino)
        b[o:o + isz] = raw

    def _iseed(self, ino: int) -> int:
        if not self.csum_on:
            return 0
        return inode_csum_seed(self.r.seed, ino, INODE.unpack(self.inode(ino)).generation)

    def alloc_inode(self, is_dir: bool) -> int:
        ipg = self.r.ipg
        for g in range(self.r.groups):
            f = self.gd(g)
            if self._hi(f, "free_inodes") == 0:
                continue
            bmn = self._hi(f, "inode_bitmap")
            bm = self.blk(bmn)
            if f["flags"] & BG_INODE_UNINIT:  # its bitmap was never written: all free
                bm[:] = bytes(self.bs)
                for k in range(ipg, 8 * self.bs):
                    bm[k >> 3] |= 1 << (k & 7)
                f["flags"] &= ~BG_INODE_UNINIT
            first = self.r.sb["first_ino"] - 1 if g == 0 else 0
            runs = _free_runs(bm, ipg)
            idx = next((max(s, first) for s, e in runs if e > first), None)
            if idx is None:
                continue
            bm[idx >> 3] |= 1 << (idx & 7)
            self._add_count(f, "free_inodes", -1)
            if is_dir:
                self._add_count(f, "used_dirs", 1)
            if self.csum_on or self.gdt_csum:
                unused = self._hi(f, "itable_unused")
                if idx >= ipg - unused:
                    self._add_count(f, "itable_unused", (ipg - idx - 1) - unused)
            self.put_gd(g, f)
            self.delta_inodes -= 1
            ino = g * ipg + idx + 1
            if ino > self.r.sb["inodes_count"]:
                break
            return ino
        raise CapacityError("no free inode left", where=self.where)

    def free_inode(self, ino: int, is_dir: bool) -> None:
        g, idx = divmod(ino - 1, self.r.ipg)
        f = self.gd(g)
        bm = self.blk(self._hi(f, "inode_bitmap"))
        if not bm[idx >> 3] >> (idx & 7) & 1:
            raise ImageError(f"inode {ino} is already free in its bitmap", where=self.where)
        bm[idx >> 3] &= ~(1 << (idx & 7))
        self._add_count(f, "free_inodes", 1)
        if is_dir:
            self._add_count(f, "used_dirs", -1)
        self.put_gd(g, f)
        self.delta_inodes += 1
        b, o = self._ino_at(ino)
        b[o:o + self.r.isz] = bytes(self.r.isz)

    def finish(self) -> None:
        """The superblock's free counts, then its checksum."""
        b, o = self._span(SUPERBLOCK_OFFSET, SUPERBLOCK.size)
        f = SUPERBLOCK.unpack(b, o)._asdict()
        fb = f["free_blocks_count_lo"] | (f["free_blocks_count_hi"] << 32 if self.r.incompat & INCOMPAT_64BIT else 0)
        fb += self.delta_blocks
        f["free_blocks_count_lo"] = fb & M32
        if self.r.incompat & INCOMPAT_64BIT:
            f["free_blocks_count_hi"] = fb >> 32
        f["free_inodes_count"] += self.delta_inodes
        sb = SUPERBLOCK.pack(**f)
        if self.csum_on:
            f["checksum"] = csum(0xFFFFFFFF, sb[:SB_CHECKSUM_OFFSET])
            sb = SUPERBLOCK.pack(**f)
        b[o:o + SUPERBLOCK.size] = sb

    # -- block maps ---------------------------------------------------------------------------
    def _mapping(self, ino: int, raw: bytes) -> tuple[list[tuple[int, int, int]], list[int]]:
        """(extents (logical, length, physical), the mapping blocks) of an inode."""
        node = self.r._inode(ino)
        if node.flags & INLINE_DATA_FL:
            raise ImageError(f"inode {ino} has inline data", where=self.where)
        ext = []
        for l, n, p, init in self.r._extents(node):
            if not init:
                raise ImageError(f"inode {ino} has unwritten extents: not supported here",
                                 where=self.where)
            ext.append((l, n, p))
        meta: list[int] = []
        if node.flags & EXTENTS_FL:
            def walk(data: bytes) -> None:
                h = EXTENT_HEADER.unpack(data)
                if h.depth:
                    for i in range(h.entries):
                        _, lo, hi, _ = EXTENT_INDEX.unpack(data, EXTENT_HEADER.size + i * EXTENT_INDEX.size)
                        meta.append(lo | hi << 32)
                        walk(self.blk(lo | hi << 32))
            walk(node.block)
        else:
            meta = self._indirect_blocks(node.block)
        return ext, meta

    def _indirect_blocks(self, iblock: bytes) -> list[int]:
        ptrs = [int.from_bytes(iblock[i * 4:i * 4 + 4], "little") for i in range(15)]
        out: list[int] = []
        per = self.bs // 4

        def walk(b: int, level: int) -> None:
            if not b:
                return
            out.append(b)
            if level > 1:
                data = self.blk(b)
                for i in range(per):
                    walk(int.from_bytes(data[i * 4:i * 4 + 4], "little"), level - 1)
        for lvl, i in ((1, 12), (2, 13), (3, 14)):
            walk(ptrs[i], lvl)
        return out

    def _is_fast_symlink(self, raw: bytes) -> bool:
        f = INODE.unpack(raw)
        if f.mode & S_IFMT != S_IFLNK or f.flags & (EXTENTS_FL | INLINE_DATA_FL):
            return False
        xb = 1 if (f.file_acl_lo | f.file_acl_high << 32) else 0
        return (f.blocks_lo - xb * (self.bs // 512)) == 0

    def _set_mapping(self, ino: int, raw: bytearray, ext: list[tuple[int, int, int]],
                     old_meta: list[int]) -> int:
        """Rebuild an inode's extent tree (or indirect blocks) for ext; returns the change in
        mapping blocks. Old mapping blocks are freed, new ones allocated."""
        for b in old_meta:
            self.release(b, 1)
        runs: list[tuple[int, int]] = []
        for l, n, _ in sorted(ext):
            if runs and runs[-1][1] == l:
                runs[-1] = (runs[-1][0], l + n)
            else:
                runs.append((l, l + n))
        writes: list[tuple[int, bytes]] = []
        f = INODE.unpack(raw)._asdict()
        if f["flags"] & EXTENTS_FL or (self.extents and not old_meta and f["block"] == bytes(60)):
            n = extent_tree_blocks(len(ext), self.bs)
            meta = [s + i for s, c in (self.alloc(n) if n else []) for i in range(c)]
            f["block"] = extent_tree(sorted(ext), meta, self.bs, self._iseed(ino), self.csum_on, writes)
            f["flags"] |= EXTENTS_FL
        else:
            keys = indirect_keys(runs, self.bs)
            meta = [s + i for s, c in (self.alloc(len(keys)) if keys else []) for i in range(c)]
            f["block"] = indirect_map(runs, sorted(ext), meta, self.bs, writes)
        for b, data in writes:
            self.blk(b)[:] = data
        raw[:INODE.size] = INODE.pack(**f)
        return len(meta) - len(old_meta)

    def _add_sectors(self, raw: bytearray, blocks: int) -> None:
        f = INODE.unpack(raw)._asdict()
        # i_blocks counts 512-byte sectors, or file system blocks under HUGE_FILE_FL
        per = 1 if f["flags"] & HUGE_FILE_FL else self.bs // 512
        v = (f["blocks_lo"] | f["blocks_high"] << 32) + blocks * per
        f["blocks_lo"], f["blocks_high"] = v & M32, v >> 32
        raw[:INODE.size] = INODE.pack(**f)

    # -- directories --------------------------------------------------------------------------
    def _entries(self, ino: int) -> list[tuple[bytes, int, int]]:
        return [e for e in self.r._dir_entries(self.r._inode(ino)) if e[0] not in (b".", b"..")]

    def _leaf_tail(self, blk: int, dir_ino: int) -> None:
        if self.csum_on:
            b = self.blk(blk)
            t = self.bs - DIRENT_TAIL.size
            b[t:] = DIRENT_TAIL.pack(rec_len=DIRENT_TAIL.size, reserved_ft=DIRENT_TAIL_FT,
                                     checksum=csum(self._iseed(dir_ino), b[:t]))

    def _unindex(self, dir_ino: int, raw: bytearray) -> None:
        """Drop a directory's HTree index: its root and index blocks become plain leaves."""
        node = self.r._inode(dir_ino)
        usable = self.bs - (DIRENT_TAIL.size if self.csum_on else 0)
        for l, n, p, _ in self.r._extents(node):
            for i in range(n):
                b = self.blk(p + i)
                d = DIRENT.unpack(b)
                if l + i == 0:  # "." then ".." stretched over the rest (the index goes)
                    dd = DIRENT.unpack(b, d.rec_len)
                    dots = (pack_dirent(d.inode, 12, b".", d.file_type)
                            + pack_dirent(dd.inode, usable - 12, b"..", dd.file_type))
                    b[:len(dots)] = dots
                    b[len(dots):usable] = bytes(usable - len(dots))
                    self._leaf_tail(p + i, dir_ino)
                elif d.inode == 0 and d.rec_len == self.bs:  # an index node
                    b[:] = bytes(self.bs)
                    DIRENT.pack_into(b, 0, rec_len=usable)
                    self._leaf_tail(p + i, dir_ino)
        f = INODE.unpack(raw)._asdict()
        f["flags"] &= ~INDEX_FL
        raw[:INODE.size] = INODE.pack(**f)

    def _insert(self, dir_ino: int, name: bytes, ino: int, ft: int) -> None:
        """Add the entry name -> ino to a directory (in the first slot with room, else in a
        new block at its end)."""
        raw = self.inode(dir_ino)
        f = INODE.unpack(raw)
        if f.flags & INDEX_FL:
            self._unindex(dir_ino, raw)
            self.put_inode(dir_ino, raw)
            self.r._icache.pop(dir_ino, None)
            raw = self.inode(dir_ino)
        need = dirent_rec_len(len(name))
        usable = self.bs - (DIRENT_TAIL.size if self.csum_on else 0)
        ft = ft if self.filetype else 0
        node = self.r._inode(dir_ino)
        nblk = node.size // self.bs
        ext, meta = self._mapping(dir_ino, raw)
        for l, n, p in ext:
            for i in range(n):
                if l + i >= nblk:
                    continue
                b = self.blk(p + i)
                pos = 0
                while pos < usable:
                    d = DIRENT.unpack(b, pos)
                    if d.rec_len < 8:
                        raise ImageError(f"directory inode {dir_ino}: bad entry", where=self.where)
                    used = dirent_rec_len(d.name_len) if d.inode else 0
                    if d.rec_len - used >= need:
                        if d.inode:
                            b[pos:pos + DIRENT.size] = DIRENT.pack(
                                inode=d.inode, rec_len=used, name_len=d.name_len, file_type=d.file_type)
                            pos += used
                            rl = d.rec_len - used
                        else:
                            rl = d.rec_len
                        b[pos:pos + rl] = pack_dirent(ino, rl, name, ft)
                        self._leaf_tail(p + i, dir_ino)
                        self.put_inode(dir_ino, raw)
                        return
                    pos += d.rec_len
        # a new block at the end, next to the last one when it is free
        last = max(ext, key=lambda e: e[0]) if ext else None
        near = last[2] + last[1] if last else None
        (p, _), = self.alloc(1, near)
        b = self.blk(p)
        b[:] = bytes(self.bs)
        b[:usable] = pack_dirent(ino, usable, name, ft)
        self._leaf_tail(p, dir_ino)
        ext = ext + [(nblk, 1, p)]
        merged: list[tuple[int, int, int]] = []
        for l, n, q in sorted(ext):
            if merged and merged[-1][0] + merged[-1][1] == l and merged[-1][2] + merged[-1][1] == q \
                    and merged[-1][1] + n <= EXT_INIT_MAX_LEN:
                merged[-1] = (merged[-1][0], merged[-1][1] + n, merged[-1][2])
            else:
                merged.append((l, n, q))
        dmeta = self._set_mapping(dir_ino, raw, merged, meta)
        self._add_sectors(raw, 1 + dmeta)
        fields = INODE.unpack(raw)._asdict()
        size = (nblk + 1) * self.bs
        fields["size_lo"], fields["size_high"] = size & M32, size >> 32
        raw[:INODE.size] = INODE.pack(**fields)
        self.put_inode(dir_ino, raw)
        self.r._icache.pop(dir_ino, None)

    def _remove_entry(self, dir_ino: int, name: bytes) -> None:
        node = self.r._inode(dir_ino)
        usable = self.bs - (DIRENT_TAIL.size if self.csum_on else 0)
        nblk = node.size // self.bs
        indexed = bool(node.flags & INDEX_FL)
        for l, n, p, _ in self.r._extents(node):
            for i in range(n):
                if l + i >= nblk or (indexed and l + i == 0):
                    continue
                b = self.blk(p + i)
                pos, prev = 0, None
                while pos < usable:
                    d = DIRENT.unpack(b, pos)
                    if d.rec_len < 8:
                        break
                    if d.inode and b[pos + DIRENT.size:pos + DIRENT.size + d.name_len] == name:
                        if prev is None:
                            DIRENT.pack_into(b, pos, inode=0, rec_len=d.rec_len, name_len=0, file_type=0)
                            b[pos + DIRENT.size:pos + d.rec_len] = bytes(d.rec_len - DIRENT.size)
                        else:
                            pd = DIRENT.unpack(b, prev)
                            DIRENT.pack_into(b, prev, inode=pd.inode, rec_len=pd.rec_len + d.rec_len,
                                             name_len=pd.name_len, file_type=pd.file_type)
                            b[pos:pos + d.rec_len] = bytes(d.rec_len)
                        self._leaf_tail(p + i, dir_ino)
                        return
                    prev = pos
                    pos += d.rec_len
        raise ImageError("directory entry not found where the reader found it", where=self.where)

    def _bump_links(self, ino: int, delta: int) -> None:
        raw = self.inode(ino)
        f = INODE.unpack(raw)._asdict()
        n = f["links_count"]
        if n == 1 and f["mode"] & S_IFMT == S_IFDIR and self.dir_nlink:
            return  # past the link limit (dir_nlink): stays 1
        n += delta
        if n >= MAX_LINKS:
            if not self.dir_nlink:
                raise CapacityError("too many subdirectories for ext without dir_nlink",
                                    where=self.where)
            n = 1
        f["links_count"] = n
        raw[:INODE.size] = INODE.pack(**f)
        self.put_inode(ino, raw)
        self.r._icache.pop(ino, None)

    # -- add ----------------------------------------------------------------------------------
    def add(self, host: str, dest: str) -> None:
        """Copy host (a file, symlink, device or a directory tree) to image path dest; an
        existing directory at dest receives host under its own name, as cp does."""
        parts = split_path(dest)
        try:
            norm, node = self.r._lookup(dest)
        except InputError:
            norm, node = None, None
        if node is not None and node.mode & S_IFMT != S_IFDIR:
            raise InputError("already exists; rm it first", where=norm)
        if node is not None:
            parent = node.ino
            name = os.path.basename(os.path.normpath(host))
            if any(e[0] == name.encode("utf-8", "surrogateescape") for e in self._entries(parent)):
                raise InputError("already exists; rm it first", where=f"{norm.rstrip('/')}/{name}")
        else:
            if not parts:
                raise InputError("cannot replace the root directory", where=dest)
            pnorm, pnode = self.r._lookup("/" + "/".join(parts[:-1]))
            if pnode.mode & S_IFMT != S_IFDIR:
                raise InputError("not a directory", where=pnorm)
            parent, name = pnode.ino, parts[-1]
        st = os.lstat(host)
        top = load_dir(host).root if os.path.isdir(host) and not os.path.islink(host) \
            else node_from_stat(host, st)
        if self.free is None:
            self._load_free()
        self._add_tree(top, parent, name.encode("utf-8", "surrogateescape"))
        self.finish()
        self.commit()

    def _add_tree(self, top: Node, parent: int, name: bytes) -> None:
        # inode numbers first (pre-order; a hardlinked node once), then each inode's blocks
        order: list[tuple[Node, int]] = []  # (node, parent inode)
        num: dict[int, int] = {}
        stack = [(top, parent)]
        while stack:
            node, par = stack.pop()
            if id(node) in num:
                continue
            num[id(node)] = self.alloc_inode(node.kind is Kind.DIR)
            order.append((node, par))
            if node.kind is Kind.DIR:
                for _, child in reversed(node.sorted_children()):
                    stack.append((child, num[id(node)]))
        names: dict[int, int] = {}
        for node, _ in order:
            if node.kind is Kind.DIR:
                for _, child in node.sorted_children():
                    names[id(child)] = names.get(id(child), 0) + 1
        for node, par in order:
            self._write_inode(node, num, par, names.get(id(node), 1))
        self._insert(parent, name, num[id(top)], FT[top.kind])
        if top.kind is Kind.DIR:
            self._bump_links(parent, 1)

    def _write_inode(self, node: Node, num: dict[int, int], parent: int, nlink: int) -> None:
        ino = num[id(node)]
        bs = self.bs
        r = Ino(ino, node.kind, node)
        r.mode, r.uid, r.gid, r.mtime, r.mtime_ns = node.mode & 0o7777, node.uid, node.gid, node.mtime, node.mtime_ns
        r.nlink = nlink
        blocks: list[bytes] | None = None
        runs: list[tuple[int, int]] = []
        if node.kind is Kind.DIR:
            subdirs = sum(1 for c in node.children.values() if c.kind is Kind.DIR)
            r.nlink = 2 + subdirs
            if r.nlink >= MAX_LINKS:
                if not self.dir_nlink:
                    raise CapacityError("too many subdirectories for ext without dir_nlink",
                                        where=node.where())
                r.nlink = 1
            entries = [(n.encode("utf-8", "surrogateescape"), num[id(c)], FT[c.kind] if self.filetype else 0)
                       for n, c in node.sorted_children()]
            blocks, indexed = self.dirs.build(ino, parent, entries)
            if self.dirs.largedir and not self.r.incompat & INCOMPAT_LARGEDIR:
                raise CapacityError("the directory needs a 3-level HTree (large_dir), which this "
                                    "image does not have", where=node.where())
            r.flags = INDEX_FL if indexed else 0
            runs = [(0, len(blocks))]
            r.size = len(blocks) * bs
        elif node.kind is Kind.FILE:
            r.size = node.size
            segs = content_segments(node.source, bs) if node.size else []
            acc: list[list[int]] = []
            for foff, ln, _ in segs:
                b0, b1 = foff // bs, (foff + ln - 1) // bs + 1
                if acc and b0 <= acc[-1][1]:
                    acc[-1][1] = max(acc[-1][1], b1)
                else:
                    acc.append([b0, b1])
            runs = [(a, b) for a, b in acc]
            if not self.extents and runs and runs[-1][1] > (12 + bs // 4 + (bs // 4) ** 2):
                raise CapacityError("the file is too large for this image's block map",
                                    where=node.where())
        elif node.kind is Kind.SYMLINK:
            tgt = (node.target or "").encode("utf-8", "surrogateescape")
            if not tgt or len(tgt) >= bs:
                raise InputError("symlink target empty or longer than a block", where=node.where())
            r.size = len(tgt)
            if len(tgt) < I_BLOCK_SIZE:
                r.iblock = tgt + bytes(I_BLOCK_SIZE - len(tgt))
            else:
                blocks = [tgt + bytes(bs - len(tgt))]
                runs = [(0, 1)]
        elif node.kind in (Kind.CHR, Kind.BLK):
            b0, b1 = encode_dev(*node.rdev)
            r.iblock = b0.to_bytes(4, "little") + b1.to_bytes(4, "little") + bytes(I_BLOCK_SIZE - 8)
        if node.xattrs:
            if not self.r.sb["feature_compat"] & COMPAT_EXT_ATTR:
                raise InputError("has extended attributes; the image lacks ext_attr", where=node.where())
            r.xin, r.xblock = xattr.place(node, self.r.isz, xattr.XattrBlocks())
            if r.xblock is not None:
                if xattr.block_bytes_needed(r.xblock.entries) > bs:
                    raise InputError("extended attributes do not fit in one block", where=node.where())
                r.xblock.block = self.alloc(1)[0][0]
                self.blk(r.xblock.block)[:] = xattr.block(r.xblock, bs, self.csum_on, self.r.seed)
        nblocks = sum(b - a for a, b in runs)
        if nblocks:
            phys = self.alloc(nblocks)
            r.extents = map_runs(runs, phys)
            writes: list[tuple[int, bytes]] = []
            if self.extents:
                n = extent_tree_blocks(len(r.extents), bs)
                r.meta = [s + i for s, c in (self.alloc(n) if n else []) for i in range(c)]
                r.flags |= EXTENTS_FL
                r.iblock = extent_tree(r.extents, r.meta, bs, inode_csum_seed(self.r.seed, ino)
                                       if self.csum_on else 0, self.csum_on, writes)
            else:
                keys = indirect_keys(runs, bs)
                r.meta = [s + i for s, c in (self.alloc(len(keys)) if keys else []) for i in range(c)]
                r.iblock = indirect_map(runs, r.extents, r.meta, bs, writes)
            for b, data in writes:
                self.blk(b)[:] = data
            if blocks is not None:
                for l, n, p in r.extents:
                    for i in range(n):
                        self.blk(p + i)[:] = blocks[l + i]
            else:
                self._queue_data(node, r.extents)
        elif self.extents and node.kind in (Kind.FILE, Kind.DIR):
            r.flags |= EXTENTS_FL
            r.iblock = extent_tree([], [], bs, 0, self.csum_on, [])
        r.nblocks = nblocks
        raw = bytearray(pack_inode(r, self.cfg, bs, self.r.seed))
        self.put_inode(ino, raw)

    def _queue_data(self, node: Node, extents: list[tuple[int, int, int]]) -> None:
        """Each extent's bytes, from the host file (holes inside read as zeros), the last
        block's tail zeroed in the image."""
        src = node.source
        bs = self.bs
        for l, n, p in extents:
            lo = l * bs
            hi = min((l + n) * bs, src.size)
            self.copies.append((src.path, src.offset + lo, hi - lo, p * bs))
            if hi < (l + n) * bs:  # the tail of the last block: zeros, not what was there
                self.zeros.append((p * bs + hi - lo, (l + n) * bs - hi))

    # -- rm -----------------------------------------------------------------------------------
    def rm(self, path: str) -> None:
        """Remove a file, symlink, device or a directory with everything in it."""
        norm, node = self.r._lookup(path)
        parts = split_path(path)
        if not parts:
            raise InputError("cannot remove the root directory", where=path)
        _, parent = self.r._lookup("/" + "/".join(parts[:-1]))
        name = parts[-1].encode("utf-8", "surrogateescape")
        if self.free is None:
            self._load_free()
        drops: dict[int, int] = {}   # inode -> names removed
        dirs: list[int] = []
        stack = [node.ino]
        seen: set[int] = set()
        while stack:
            ino = stack.pop()
            n = self.r._inode(ino)
            if n.mode & S_IFMT == S_IFDIR:
                if ino in seen:
                    raise ImageError(f"directory inode {ino} is linked twice", where=self.where)
                seen.add(ino)
                dirs.append(ino)
                for _, child, _ in self._entries(ino):
                    if self.r._inode(child).mode & S_IFMT != S_IFDIR:
                        drops[child] = drops.get(child, 0) + 1
                    stack.append(child)
        self._remove_entry(parent.ino, name)
        if node.mode & S_IFMT == S_IFDIR:
            self._bump_links(parent.ino, -1)
        else:
            drops[node.ino] = drops.get(node.ino, 0) + 1
        for ino in dirs:
            self._free_all(ino, True)
        for ino, k in sorted(drops.items()):
            raw = self.inode(ino)
            f = INODE.unpack(raw)._asdict()
            if f["links_count"] > k:
                f["links_count"] -= k
                raw[:INODE.size] = INODE.pack(**f)
                self.put_inode(ino, raw)
            else:
                self._free_all(ino, False)
        self.finish()
        self.commit()

    def _free_all(self, ino: int, is_dir: bool) -> None:
        raw = self.inode(ino)
        f = INODE.unpack(raw)
        if not self._is_fast_symlink(raw) and f.mode & S_IFMT in (S_IFDIR, S_IFREG, S_IFLNK):
            ext, meta = self._mapping(ino, raw)
            for _, n, p in ext:
                self.release(p, n)
            for b in meta:
                self.release(b, 1)
        acl = f.file_acl_lo | f.file_acl_high << 32
        if acl:
            b = self.blk(acl)
            h = XATTR_HEADER.unpack(b)._asdict()
            if h["magic"] != XATTR_MAGIC:
                raise ImageError(f"inode {ino}: bad xattr block", where=self.where)
            if h["refcount"] > 1:
                h["refcount"] -= 1
                h["checksum"] = 0
                XATTR_HEADER.pack_into(b, 0, **h)
                if self.csum_on:
                    h["checksum"] = csum(csum(self.r.seed, acl.to_bytes(8, "little")), b)
                    XATTR_HEADER.pack_into(b, 0, **h)
            else:
                self.release(acl, 1)
        self.free_inode(ino, is_dir)
