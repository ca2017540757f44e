"""ext2/ext3/ext4 writer: plan every inode and block in memory, then write it all sparsely.

Steps, each deterministic (no clock, no randomness, no host ordering):

1. collect: inode numbers in `Tree.walk()` order (root 2, lost+found 11, the rest
   from 12; a hardlinked Node gets one inode), directory listings sorted by name
   bytes, xattr sets (in the inode when they fit, else one shared block per
   distinct set), and each file's data extents found with SEEK_DATA/SEEK_HOLE
   (holes are never allocated, never read);
2. size: the block size, the group geometry and the journal size; for an "auto"
   size the smallest block count whose metadata, journal and content fit (a
   fixed point, then checked by a real allocation);
3. allocate: one forward-only cursor over the free blocks (everything but the
   superblock backups, group descriptors, bitmaps and inode tables): the
   journal first, then each inode's blocks in inode order, then its extent-tree
   or indirect blocks; so the used blocks of the data area are a prefix;
4. write: metadata blocks are built in memory and written in coalesced runs;
   file bytes go straight from the source to the image with copy_file_range.
   Nothing else is written, so free space, unused inode tables and the journal
   body stay holes.

Invariants: the primary and backup superblocks and descriptors agree; free
counts in the superblock and descriptors match the bitmaps; with metadata_csum
every checksummed structure is written with its checksum; directories larger
than one block are HTrees when dir_index is on.
"""
from __future__ import annotations

import os
import uuid as _uuid
from array import array
from dataclasses import dataclass

from ...errors import CapacityError, InputError, SpecError
from ...ids import derive_uuid
from ...image import ImageFile
from ...sizes import format_size
from ...tree import Kind, Node, Tree, encode_name
from ..base import FsParams, OptionReader
from .format import (
    BG_INODE_UNINIT, BG_INODE_ZEROED, BLOCK_PTR_SIZE, COMPAT_DIR_INDEX, COMPAT_EXT_ATTR,
    COMPAT_HAS_JOURNAL, CRC32C_CHKSUM, DEFM_ACL, DEFM_XATTR_USER, DESC_SIZE_64, DIRENT,
    DIRENT_TAIL, DIRENT_TAIL_FT, DX_COUNTLIMIT, DX_ENTRY, DX_MAX_LEVELS, DX_NODE,
    DX_NODE_COUNT_OFFSET, DX_ROOT, DX_ROOT_COUNT_OFFSET, DX_ROOT_INFO_LENGTH, DX_TAIL,
    ERRORS_CONTINUE, EXT_INIT_MAX_LEN, EXTENT_HEADER, EXTENT_INDEX, EXTENT_LEAF, EXTENT_MAGIC,
    EXTENT_ROOT_MAX, EXTENT_TAIL, EXTENTS_FL, EXTRA_ISIZE, FIRST_INO, FLAGS_SIGNED_HASH, FT_BLK,
    FT_CHR, FT_DIR, FT_FIFO, FT_REG, FT_SOCK, FT_SYMLINK, GOOD_OLD_INODE_SIZE, GROUP_DESC,
    GROUP_DESC_HI, HASH_HALF_MD4, HUGE_FILE_FL, I_BLOCK_SIZE, INCOMPAT_64BIT, INCOMPAT_EXTENTS,
    INCOMPAT_FILETYPE, INCOMPAT_FLEX_BG, INCOMPAT_LARGEDIR, IND_BLOCK, INDEX_FL, INODE,
    INODE_EXTRA, JBD2_CRC32C_CHKSUM, JBD2_INCOMPAT_64BIT, JBD2_INCOMPAT_CSUM_V3, JBD2_MAGIC,
    JBD2_MIN_BLOCKS, JBD2_SUPERBLOCK, JBD2_SUPERBLOCK_V2, JNL_BACKUP_BLOCKS, JOURNAL_INO, LPF_INO,
    MAGIC, NDIR_BLOCKS, RO_COMPAT_DIR_NLINK, RO_COMPAT_EXTRA_ISIZE, RO_COMPAT_HUGE_FILE,
    RO_COMPAT_LARGE_FILE, RO_COMPAT_METADATA_CSUM, RO_COMPAT_SPARSE_SUPER, ROOT_INO,
    SB_CHECKSUM_OFFSET, STATE_CLEAN, SUPERBLOCK, SUPERBLOCK_OFFSET, XATTR_END, XATTR_ENTRY,
    XATTR_HEADER, XATTR_IBODY_HEADER, XATTR_MAGIC, acl_to_disk, csum, default_journal_blocks,
    dx_hash, encode_dev, encode_time, extents_per_block, fs_csum_seed, has_super,
    indirect_bounds, inode_csum_seed, split_xattr_name, xattr_block_hash, xattr_entry_hash,
)

M32 = 0xFFFFFFFF
SMALL_FS = 512 << 20    # below this mke2fs.conf's "small" type: 1 KiB blocks, 4 KiB per inode
FLOPPY_FS = 3 << 20
FT = {Kind.FILE: FT_REG, Kind.DIR: FT_DIR, Kind.CHR: FT_CHR, Kind.BLK: FT_BLK, Kind.FIFO: FT_FIFO,
      Kind.SOCK: FT_SOCK, Kind.SYMLINK: FT_SYMLINK}
MAX_LINKS = 65000
XATTR_REFCOUNT_MAX = 1024


class _NoSpace(Exception):
    """Internal: the planned block count is too small by about `short` blocks."""

    def __init__(self, short: int, what: str = "blocks"):
        super().__init__(short)
        self.short = max(1, short)
        self.what = what


# -- options ---------------------------------------------------------------------------
@dataclass
class Config:
    fs_type: str
    bs: int | None
    inode_size: int
    inodes_count: int | None
    inode_ratio: int | None
    reserved_pct: int
    blocks_count: int | None
    journal_blocks: int | None
    extents: bool
    csum: bool
    dir_index: bool
    journal: bool
    flex_bg: bool
    flex_size: int
    bit64: bool
    bit64_set: bool
    huge_file: bool
    dir_nlink: bool
    extra_isize: bool
    sparse_super: bool
    label: bytes
    uuid: bytes
    hash_seed: bytes
    timestamp: int
    where: str


def _parse_options(params: FsParams) -> Config:
    where = f"{params.where}.options"
    opt = OptionReader(params.options, where=where)
    t = params.fs_type
    ext4 = t == "ext4"

    def feature(*names: str, default: bool) -> bool:
        val = None
        for n in names:
            v = opt.get_bool(n)
            if v is not None:
                val = v
        return default if val is None else val

    extents = feature("extents", "extent", default=ext4)
    cfg = Config(
        fs_type=t, bs=params.block_size,
        inode_size=opt.get_int("inode_size", 256),
        inodes_count=opt.get_int("inodes_count", None, 16, M32),
        inode_ratio=opt.get_int("inode_ratio", None, 1024, 1 << 26),
        reserved_pct=opt.get_int("reserved_blocks_percent", 5, 0, 50),
        blocks_count=opt.get_int("blocks_count", None, 64, (1 << 48) - 1),
        journal_blocks=params.journal_blocks,
        extents=extents,
        csum=feature("metadata_csum", default=ext4),
        dir_index=feature("dir_index", default=True),
        journal=feature("has_journal", default=t != "ext2"),
        flex_bg=feature("flex_bg", default=ext4),
        flex_size=opt.get_int("flex_bg_size", 16, 1, 1 << 16),
        bit64=feature("64bit", default=False),
        bit64_set=opt.has("64bit"),
        huge_file=feature("huge_file", default=ext4),
        dir_nlink=feature("dir_nlink", default=ext4),
        extra_isize=feature("extra_isize", default=ext4),
        sparse_super=feature("sparse_super", default=True),
        label=b"", uuid=b"", hash_seed=b"", timestamp=params.timestamp, where=where,
    )
    opt.finish()
    if cfg.inode_size not in (128, 256, 512, 1024):
        raise SpecError(f"inode_size must be 128 or 256 (or 512, 1024), got {cfg.inode_size}",
                        where=f"{where}.inode_size")
    if cfg.flex_size & (cfg.flex_size - 1):
        raise SpecError(f"flex_bg_size must be a power of two, got {cfg.flex_size}",
                        where=f"{where}.flex_bg_size")
    if cfg.bs is not None and cfg.bs not in (1024, 2048, 4096):
        raise SpecError(f"ext block size must be 1024, 2048 or 4096, got {cfg.bs}",
                        where=f"{params.where}.block_size")
    if cfg.bit64 and not cfg.extents:
        raise SpecError("64bit needs extents", where=f"{where}.64bit")
    if cfg.inode_size == GOOD_OLD_INODE_SIZE:
        cfg.extra_isize = False
    if cfg.journal_blocks is not None:
        if not cfg.journal:
            raise SpecError("journal_blocks is set but the filesystem has no journal",
                            where=f"{params.where}.journal_blocks")
        if not JBD2_MIN_BLOCKS <= cfg.journal_blocks <= 10_240_000:
            raise SpecError(f"journal_blocks must be between {JBD2_MIN_BLOCKS} and 10240000, got "
                            f"{cfg.journal_blocks}", where=f"{params.where}.journal_blocks")
    label = (params.label or "").encode("utf-8")
    if len(label) > 16:
        raise SpecError(f"ext volume labels are at most 16 bytes; {params.label!r} is {len(label)}",
                        where=f"{params.where}.label")
    cfg.label = label
    if params.uuid:
        try:
            cfg.uuid = _uuid.UUID(params.uuid).bytes
        except ValueError:
            raise SpecError(f"invalid UUID {params.uuid!r}", where=f"{params.where}.uuid") from None
    else:
        cfg.uuid = derive_uuid(params.seed, "ext/uuid").bytes
    cfg.hash_seed = derive_uuid(params.seed, "ext/hash_seed").bytes
    return cfg


# -- inodes ----------------------------------------------------------------------------
class Ino:
    """One inode being planned."""

    __slots__ = ("ino", "node", "kind", "mode", "uid", "gid", "mtime", "mtime_ns", "nlink", "size",
                 "flags", "segs", "runs", "nblocks", "dirblocks", "target", "xin", "xblock",
                 "extents", "meta", "iblock", "nmeta")

    def __init__(self, ino: int, kind: Kind, node: Node | None):
        self.ino, self.kind, self.node = ino, kind, node
        self.mode = self.uid = self.gid = self.mtime = self.mtime_ns = 0
        self.nlink, self.size, self.flags = 1, 0, 0
        self.segs: list[tuple[int, int, int]] = []
        self.runs: list[tuple[int, int]] = []     # logical (start, end) block runs
        self.nblocks = 0                          # data (or directory) blocks
        self.nmeta = 0                            # indirect blocks (exact) or extent-tree estimate
        self.dirblocks: list[bytes] | None = None
        self.target: bytes | None = None
        self.xin = b""                            # in-inode xattr area
        self.xblock: "XBlock | None" = None
        self.extents: list[tuple[int, int, int]] = []
        self.meta: list[int] = []
        self.iblock = bytes(I_BLOCK_SIZE)


class XBlock:
    __slots__ = ("entries", "refcount", "block")

    def __init__(self, entries):
        self.entries, self.refcount, self.block = entries, 0, 0


def _xattr_entries(node: Node) -> list[tuple[int, bytes, bytes]]:
    out = []
    for name, value in node.xattrs.items():
        sp = split_xattr_name(name)
        if sp is None:
            raise InputError(f"xattr {name!r}: ext stores only user., trusted., security. and "
                             f"system. attributes", where=node.origin or None)
        idx, suffix = sp
        if len(suffix) > 255:
            raise InputError(f"xattr name {name!r} is too long", where=node.origin or None)
        if idx in (2, 3):
            try:
                value = acl_to_disk(bytes(value))
            except ValueError as e:
                raise InputError(f"xattr {name}: {e}", where=node.origin or None) from None
        out.append((idx, suffix, bytes(value)))
    out.sort(key=lambda e: (e[0], len(e[1]), e[1]))
    return out


def _pad4(n: int) -> int:
    return (n + 3) & ~3


def _xattr_space(entries) -> tuple[int, int]:
    """(bytes of entry descriptors incl. the 4-byte end marker, bytes of padded values)."""
    return (sum(XATTR_ENTRY.size + _pad4(len(n)) for _, n, _ in entries) + XATTR_END,
            sum(_pad4(len(v)) for _, _, v in entries))


def _xattr_body(entries, size: int, base: int, value_base: int) -> tuple[bytearray, list[int]]:
    """Entries at `base`, values packed down from `size`; value offsets are relative to
    `value_base`. Returns the area and the entry hashes."""
    area = bytearray(size)
    pos, vend = base, size
    hashes = []
    for idx, name, value in entries:
        if value:
            vend -= _pad4(len(value))
            area[vend:vend + len(value)] = value
            voff = vend - value_base
        else:
            voff = 0
        h = xattr_entry_hash(name, value)
        hashes.append(h)
        XATTR_ENTRY.pack_into(area, pos, name_len=len(name), name_index=idx, value_offs=voff,
                              value_size=len(value), hash=h)
        area[pos + XATTR_ENTRY.size:pos + XATTR_ENTRY.size + len(name)] = name
        pos += XATTR_ENTRY.size + _pad4(len(name))
    return area, hashes


# -- directories -------------------------------------------------------------------------
def _rec_len(name_len: int) -> int:
    return (DIRENT.size + name_len + 3) & ~3


def _dirent(ino: int, rec_len: int, name: bytes, ft: int) -> bytes:
    """One directory entry with its name, zero-padded to rec_len."""
    return (DIRENT.pack(inode=ino, rec_len=rec_len, name_len=len(name), file_type=ft) + name
            + bytes(rec_len - DIRENT.size - len(name)))


class DirBuilder:
    """Builds directory blocks: linear when they fit in one block (or without dir_index),
    else an HTree of half_md4 hashes."""

    def __init__(self, bs: int, csum_on: bool, fs_seed: int, dir_index: bool, hash_seed: bytes):
        self.bs, self.csum_on, self.fs_seed, self.dir_index = bs, csum_on, fs_seed, dir_index
        self.seed = tuple(int.from_bytes(hash_seed[i:i + 4], "little") for i in range(0, 16, 4))
        self.usable = bs - (DIRENT_TAIL.size if csum_on else 0)
        tail = DX_TAIL.size if csum_on else 0
        self.root_limit = (bs - DX_ROOT_COUNT_OFFSET - tail) // DX_ENTRY.size
        self.node_limit = (bs - DX_NODE_COUNT_OFFSET - tail) // DX_ENTRY.size
        self.largedir = False

    def _finish_leaf(self, buf: bytearray, last: int, iseed: int) -> bytes:
        """Stretch the last entry to the end of the usable space, add the tail."""
        buf += bytes(self.usable - len(buf))
        rl = self.usable - last
        off = last + DIRENT.offset("rec_len")
        buf[off:off + DIRENT.field_size("rec_len")] = rl.to_bytes(DIRENT.field_size("rec_len"), "little")
        if self.csum_on:
            buf += DIRENT_TAIL.pack(rec_len=DIRENT_TAIL.size, reserved_ft=DIRENT_TAIL_FT,
                                    checksum=csum(iseed, buf[:self.usable]))
        return bytes(buf)

    def _pack_linear(self, entries, iseed: int, first: bytes | None) -> list[bytes]:
        blocks: list[bytes] = []
        buf = bytearray(first or b"")
        last = _rec_len(1) if first else -1  # first: "." then ".."; ".." is the last so far
        for name, ino, ft in entries:
            rl = _rec_len(len(name))
            if len(buf) + rl > self.usable:
                blocks.append(self._finish_leaf(buf, last, iseed))
                buf = bytearray()
            last = len(buf)
            buf += _dirent(ino, rl, name, ft)
        if last < 0:  # an empty block: one unused entry spanning it
            buf = bytearray(DIRENT.pack(rec_len=self.usable))
            last = 0
        blocks.append(self._finish_leaf(buf, last, iseed))
        return blocks

    def empty_block(self, iseed: int) -> bytes:
        buf = bytearray(self.usable)
        DIRENT.pack_into(buf, 0, rec_len=self.usable)
        return self._finish_leaf(buf, 0, iseed)

    def build(self, ino: int, parent: int, entries: list[tuple[bytes, int, int]]) -> tuple[list[bytes], bool]:
        """(blocks, indexed) for a directory whose sorted entries are (name, inode, type)."""
        iseed = inode_csum_seed(self.fs_seed, ino) if self.csum_on else 0
        dots = _dirent(ino, _rec_len(1), b".", FT_DIR) + _dirent(parent, _rec_len(2), b"..", FT_DIR)
        linear = self._pack_linear(entries, iseed, dots)
        if len(linear) == 1 or not self.dir_index:
            return linear, False
        return self._htree(ino, parent, entries, iseed), True

    def _htree(self, ino: int, parent: int, entries, iseed: int) -> list[bytes]:
        bs = self.bs
        hashed = sorted(((dx_hash(n, self.seed, True), n, i, ft) for n, i, ft in entries),
                        key=lambda e: (e[0], e[1]))
        # leaves: (key hash, block bytes)
        leaves: list[tuple[int, bytes]] = []
        buf = bytearray()
        last = -1
        key = 0
        prev_hash = None
        for (h, _minor), name, cino, ft in hashed:
            rl = _rec_len(len(name))
            if len(buf) + rl > self.usable:
                leaves.append((key, self._finish_leaf(buf, last, iseed)))
                buf = bytearray()
                key = h | 1 if h == prev_hash else h  # | 1: the hash continues from the last leaf
            last = len(buf)
            buf += _dirent(cino, rl, name, ft)
            prev_hash = h
        leaves.append((key, self._finish_leaf(buf, last, iseed)))
        # index levels, bottom-up: each level is a list of (key, child position)
        levels: list[list[list[tuple[int, int]]]] = []  # levels[k] = list of nodes (entry lists)
        cur = [(k, ("leaf", j)) for j, (k, _) in enumerate(leaves)]
        while len(cur) > self.root_limit:
            nodes = [cur[i:i + self.node_limit] for i in range(0, len(cur), self.node_limit)]
            levels.append(nodes)
            cur = [(n[0][0], ("node", len(levels) - 1, j)) for j, n in enumerate(nodes)]
        depth = len(levels)
        if depth > 1:
            self.largedir = True
        if depth > DX_MAX_LEVELS - 1:
            raise CapacityError("a directory is too large even for a 3-level HTree")
        # logical block numbers: 0 root, then index nodes from the top level down, then leaves
        lblk = 1
        node_blk: dict[tuple[int, int], int] = {}
        for lv in range(depth - 1, -1, -1):
            for j in range(len(levels[lv])):
                node_blk[(lv, j)] = lblk
                lblk += 1
        leaf0 = lblk

        def target(ref) -> int:
            return leaf0 + ref[1] if ref[0] == "leaf" else node_blk[(ref[1], ref[2])]

        def index_block(head: bytes, count_off: int, limit: int, ents) -> bytes:
            """head, then the count/limit header (which carries entry 0's block), then the
            other entries; with metadata_csum a dx_tail right after the last possible entry."""
            blk = bytearray(bs)
            blk[:count_off] = head
            DX_COUNTLIMIT.pack_into(blk, count_off, limit=limit, count=len(ents), block=target(ents[0][1]))
            pos = count_off + DX_COUNTLIMIT.size
            for k, ref in ents[1:]:
                DX_ENTRY.pack_into(blk, pos, hash=k, block=target(ref))
                pos += DX_ENTRY.size
            if self.csum_on:
                t = count_off + limit * DX_ENTRY.size
                c = csum(iseed, blk[:count_off + len(ents) * DX_ENTRY.size])
                c = csum(c, DX_TAIL.pack())  # the tail, its checksum still zero
                DX_TAIL.pack_into(blk, t, checksum=c)
            return bytes(blk)

        root = DX_ROOT.pack(
            dot_inode=ino, dot_rec_len=_rec_len(1), dot_name_len=1, dot_file_type=FT_DIR,
            dot_name=b".", dotdot_inode=parent, dotdot_rec_len=bs - _rec_len(1), dotdot_name_len=2,
            dotdot_file_type=FT_DIR, dotdot_name=b"..", hash_version=HASH_HALF_MD4,
            info_length=DX_ROOT_INFO_LENGTH, indirect_levels=depth)
        out = [index_block(root[:DX_ROOT_COUNT_OFFSET], DX_ROOT_COUNT_OFFSET, self.root_limit, cur)]
        fake = DX_NODE.pack(fake_rec_len=bs)[:DX_NODE_COUNT_OFFSET]
        for lv in range(depth - 1, -1, -1):
            for ents in levels[lv]:
                out.append(index_block(fake, DX_NODE_COUNT_OFFSET, self.node_limit, ents))
        out.extend(b for _, b in leaves)
        return out


# -- geometry --------------------------------------------------------------------------
class Geometry:
    """Group layout for `blocks` blocks: where each group's metadata sits."""

    def __init__(self, cfg: Config, bs: int, blocks: int, want_inodes: int, fixed: bool):
        self.bs = bs
        self.fdb = 1 if bs == 1024 else 0
        self.bpg = 8 * bs
        self.isz = cfg.inode_size
        self.desc_size = DESC_SIZE_64 if cfg.bit64 else GROUP_DESC.size
        self.sparse = cfg.sparse_super
        if blocks - self.fdb < 64:
            raise _NoSpace(64 + self.fdb - blocks)
        groups = -(-(blocks - self.fdb) // self.bpg)
        ipb = bs // self.isz
        ipg_max = min(8 * bs, 65536 - ipb)
        for _ in range(2):
            ipg = -(-want_inodes // groups)
            ipg = -(-ipg // max(8, ipb)) * max(8, ipb)
            if ipg > ipg_max:
                raise _NoSpace(-(-want_inodes // ipg_max - groups) * self.bpg, "inodes")
            itb = ipg * self.isz // bs
            gdt = -(-groups * self.desc_size // bs)
            rem = (blocks - self.fdb) % self.bpg
            if rem and groups > 1:
                last = groups - 1
                own = (1 + gdt if has_super(last, self.sparse) else 0) + (0 if cfg.flex_bg else 2 + itb)
                if rem < own + 50:
                    if not fixed:
                        raise _NoSpace(own + 50 - rem)
                    blocks -= rem  # as mke2fs: drop a last group too small to be useful
                    groups -= 1
                    continue
            break
        self.blocks, self.groups, self.ipg, self.itb, self.gdt = blocks, groups, ipg, itb, gdt
        self.inodes = ipg * groups
        if self.inodes > M32:
            raise SpecError("more than 2^32 inodes: raise inode_ratio", where=cfg.where)
        backups: list[tuple[int, int]] = []
        for g in range(groups):
            if has_super(g, self.sparse):
                s = self.gstart(g)
                backups.append((s, s + 1 + gdt))
        self.backups = backups
        self.bb = [0] * groups
        self.ib = [0] * groups
        self.it = [0] * groups
        reserved = list(backups)
        if not cfg.flex_bg:
            for g in range(groups):
                pos = self.gstart(g) + (1 + gdt if has_super(g, self.sparse) else 0)
                if pos + 2 + itb > self.gstart(g) + self.gsize(g):
                    raise _NoSpace(pos + 2 + itb - self.gstart(g) - self.gsize(g))
                self.bb[g], self.ib[g], self.it[g] = pos, pos + 1, pos + 2
                reserved.append((pos, pos + 2 + itb))
        else:
            bi = 0
            cursor = 0

            def place(n: int) -> int:
                nonlocal bi, cursor
                s = cursor
                while True:
                    while bi < len(backups) and backups[bi][1] <= s:
                        bi += 1
                    if bi < len(backups) and backups[bi][0] < s + n:
                        s = backups[bi][1]
                        continue
                    break
                if s + n > blocks:
                    raise _NoSpace(s + n - blocks)
                cursor = s + n
                return s

            F = cfg.flex_size
            for f0 in range(0, groups, F):
                gs = range(f0, min(groups, f0 + F))
                cursor = max(cursor, self.gstart(f0))
                bi = 0
                for g in gs:
                    self.bb[g] = place(1)
                for g in gs:
                    self.ib[g] = place(1)
                for g in gs:
                    self.it[g] = place(itb)
                first = self.bb[gs[0]]
                reserved.append((first, cursor))  # may include skipped backups: merged below
        reserved.sort()
        merged: list[list[int]] = []
        for s, e in reserved:
            if merged and s <= merged[-1][1]:
                merged[-1][1] = max(merged[-1][1], e)
            else:
                merged.append([s, e])
        self.reserved = [(s, e) for s, e in merged]
        free = []
        pos = self.fdb
        for s, e in self.reserved:
            if s > pos:
                free.append((pos, s))
            pos = max(pos, e)
        if pos < blocks:
            free.append((pos, blocks))
        self.free = free
        self.meta_blocks = sum(e - s for s, e in self.reserved)
        self.free_total = sum(e - s for s, e in free)

    def gstart(self, g: int) -> int:
        return self.fdb + g * self.bpg

    def gsize(self, g: int) -> int:
        return min(self.bpg, self.blocks - self.gstart(g))


class Allocator:
    """First-fit, forward-only over the free ranges: what it hands out is a prefix of them."""

    def __init__(self, free: list[tuple[int, int]]):
        self.free = free
        self.i = 0
        self.pos = free[0][0] if free else 0
        self.runs: list[list[int]] = []

    def remaining(self) -> int:
        if self.i >= len(self.free):
            return 0
        return self.free[self.i][1] - self.pos + sum(e - s for s, e in self.free[self.i + 1:])

    def alloc(self, n: int) -> list[tuple[int, int]]:
        out: list[tuple[int, int]] = []
        while n > 0:
            if self.i >= len(self.free):
                raise _NoSpace(n)
            s, e = self.free[self.i]
            if self.pos < s:
                self.pos = s
            take = min(n, e - self.pos)
            if take <= 0:
                self.i += 1
                continue
            out.append((self.pos, take))
            if self.runs and self.runs[-1][1] == self.pos:
                self.runs[-1][1] += take
            else:
                self.runs.append([self.pos, self.pos + take])
            self.pos += take
            n -= take
            if self.pos >= e:
                self.i += 1
        return out


# -- block mapping ---------------------------------------------------------------------
def _map_runs(runs: list[tuple[int, int]], phys: list[tuple[int, int]]) -> list[tuple[int, int, int]]:
    """Extents (logical, length, physical) for logical runs laid onto physical runs, each at
    most EXT_INIT_MAX_LEN long."""
    out: list[tuple[int, int, int]] = []
    pi, poff = 0, 0
    for ls, le in runs:
        l = ls
        while l < le:
            ps, pn = phys[pi]
            n = min(le - l, pn - poff, EXT_INIT_MAX_LEN)
            p = ps + poff
            if out and out[-1][0] + out[-1][1] == l and out[-1][2] + out[-1][1] == p \
                    and out[-1][1] + n <= EXT_INIT_MAX_LEN:
                o = out[-1]
                out[-1] = (o[0], o[1] + n, o[2])
            else:
                out.append((l, n, p))
            l += n
            poff += n
            if poff == pn:
                pi, poff = pi + 1, 0
    return out


def _extent_tree_blocks(n_extents: int, bs: int) -> int:
    if n_extents <= EXTENT_ROOT_MAX:
        return 0
    per = extents_per_block(bs)
    total = 0
    n = n_extents
    while n > EXTENT_ROOT_MAX:
        n = -(-n // per)
        total += n
    return total


def _indirect_keys(runs: list[tuple[int, int]], bs: int) -> list[tuple]:
    """The indirect blocks a file with these logical runs needs, parents before children.
    Keys: (1,) single; (2,) double, (2, i) its children; (3,), (3, i), (3, i, j)."""
    P, b1, b2, b3 = indirect_bounds(bs)
    keys: set[tuple] = set()
    for s, e in runs:
        if e > b3:
            raise _TooBig()
        if e > NDIR_BLOCKS and s < b1:
            keys.add((1,))
        if e > b1 and s < b2:
            keys.add((2,))
            lo, hi = max(s, b1) - b1, min(e, b2) - b1
            for i in range(lo // P, (hi - 1) // P + 1):
                keys.add((2, i))
        if e > b2:
            keys.add((3,))
            lo, hi = max(s, b2) - b2, e - b2
            for i in range(lo // (P * P), (hi - 1) // (P * P) + 1):
                keys.add((3, i))
            for k in range(lo // P, (hi - 1) // P + 1):
                keys.add((3, k // P, k % P))
    return sorted(keys, key=lambda k: (k[0], len(k), k))


class _TooBig(Exception):
    pass


# -- the writer ------------------------------------------------------------------------
class ExtWriter:
    def __init__(self, tree: Tree, out: ImageFile, params: FsParams):
        self.tree, self.out, self.params = tree, out, params
        self.cfg = params.opts if params.opts is not None else _parse_options(params)
        self.fs_seed = fs_csum_seed(self.cfg.uuid) if self.cfg.csum else 0
        self.ts = params.timestamp

    # 1. collect ---------------------------------------------------------------------
    def collect(self) -> None:
        cfg = self.cfg
        tree = self.tree
        root = tree.root
        lpf_node = root.children.get("lost+found")
        self.lpf_from_source = lpf_node is not None and lpf_node.kind is Kind.DIR
        self.make_lpf = lpf_node is None
        inos: list[Ino] = []
        num: dict[int, int] = {id(root): ROOT_INO}
        r = Ino(ROOT_INO, Kind.DIR, root)
        inos.append(r)
        nxt = FIRST_INO
        if self.make_lpf or self.lpf_from_source:
            nxt += 1
        for path, node in tree.walk():
            if id(node) in num:
                continue
            if self.lpf_from_source and node is lpf_node:
                n = LPF_INO
            else:
                n = nxt
                nxt += 1
            num[id(node)] = n
            inos.append(Ino(n, node.kind, node))
        self.num = num
        self.last_ino = nxt - 1
        if self.make_lpf:
            lpf = Ino(LPF_INO, Kind.DIR, None)
            lpf.mode, lpf.mtime, lpf.nlink = 0o700, self.ts, 2
            inos.append(lpf)
        inos.sort(key=lambda i: i.ino)
        self.inos = inos
        self.xblocks: dict[tuple, XBlock] = {}
        data_bytes = 0
        for r in inos:
            node = r.node
            if node is None:
                continue
            r.mode, r.uid, r.gid = node.mode & 0o7777, node.uid, node.gid
            r.mtime, r.mtime_ns = node.mtime, node.mtime_ns
            r.nlink = tree.nlink(node)
            if r.kind is Kind.DIR:
                if node is root and self.make_lpf:
                    r.nlink += 1
                if r.nlink > MAX_LINKS:
                    if not cfg.dir_nlink:
                        raise CapacityError(f"a directory with {r.nlink - 2} subdirectories needs "
                                            f"dir_nlink (ext4); ext2/ext3 allow {MAX_LINKS - 2}",
                                            where=node.origin or None)
                    r.nlink = 1
            elif r.nlink > MAX_LINKS:
                raise CapacityError(f"{r.nlink} hard links to one file; ext allows {MAX_LINKS}",
                                    where=node.origin or None)
            if r.kind is Kind.FILE and node.source is not None and node.size:
                r.size = node.size
                r.segs = [s for s in node.source.data_segments() if s[1] > 0]
                data_bytes += sum(s[1] for s in r.segs)
            elif r.kind is Kind.SYMLINK:
                r.target = encode_name(node.target or "")
                r.size = len(r.target)
                if not r.target:
                    raise InputError("empty symlink target", where=node.origin or None)
            if node.xattrs:
                self._plan_xattrs(r, node)
        self.data_bytes = data_bytes

    def _plan_xattrs(self, r: Ino, node: Node) -> None:
        entries = _xattr_entries(node)
        if not entries:
            return
        ent, val = _xattr_space(entries)
        isz = self.cfg.inode_size
        room = isz - GOOD_OLD_INODE_SIZE - EXTRA_ISIZE - XATTR_IBODY_HEADER.size if isz > GOOD_OLD_INODE_SIZE else 0
        if ent + val <= room:
            area, _ = _xattr_body(entries, room, 0, 0)
            r.xin = XATTR_IBODY_HEADER.pack(magic=XATTR_MAGIC) + bytes(area)
            return
        key = tuple(entries)
        xb = self.xblocks.get(key)
        if xb is None or xb.refcount >= XATTR_REFCOUNT_MAX:
            xb = XBlock(entries)
            self.xblocks[key] = xb
            self.xblock_list.append(xb)
        xb.refcount += 1
        r.xblock = xb

    # 2. block-size dependent planning -------------------------------------------------
    def plan_blocks(self, bs: int) -> int:
        """Logical block needs of every inode; returns the content block count."""
        cfg = self.cfg
        self.bs = bs
        db = DirBuilder(bs, cfg.csum, self.fs_seed, cfg.dir_index, cfg.hash_seed)
        self.dirb = db
        total = 0
        for xb in self.xblock_list:
            ent, val = _xattr_space(xb.entries)
            if XATTR_HEADER.size + ent + val > bs:
                raise InputError(f"extended attributes of {ent + val} bytes do not fit in one "
                                 f"{bs}-byte block (ext stores at most one block per inode)")
            total += 1
        max_ind = indirect_bounds(bs)[3]
        for r in self.inos:
            r.nmeta = 0
            if r.kind is Kind.DIR:
                if r.ino == LPF_INO and r.node is None:
                    blocks = db.build(LPF_INO, ROOT_INO, [])[0]
                    want = min(NDIR_BLOCKS, max(2, 16384 // bs))  # as mke2fs: 16 KiB, 2..12 blocks
                    iseed = inode_csum_seed(self.fs_seed, LPF_INO) if cfg.csum else 0
                    blocks += [db.empty_block(iseed)] * (want - len(blocks))
                    indexed = False
                else:
                    parent = self._parent_ino(r)
                    entries = self._dir_entries(r)
                    blocks, indexed = db.build(r.ino, parent, entries)
                r.dirblocks = blocks
                r.flags = INDEX_FL if indexed else 0
                r.nblocks = len(blocks)
                r.runs = [(0, r.nblocks)]
                r.size = r.nblocks * bs
            elif r.kind is Kind.FILE:
                runs: list[list[int]] = []
                for foff, ln, _ in r.segs:
                    b0, b1 = foff // bs, (foff + ln - 1) // bs + 1
                    if runs and b0 <= runs[-1][1]:
                        runs[-1][1] = max(runs[-1][1], b1)
                    else:
                        runs.append([b0, b1])
                r.runs = [(a, b) for a, b in runs]
                r.nblocks = sum(b - a for a, b in runs)
                if runs and runs[-1][1] > (max_ind if not cfg.extents else 1 << 32):
                    raise CapacityError(f"a file of {format_size(r.size)} is too large for {cfg.fs_type} "
                                        f"with {bs}-byte blocks", where=r.node.origin or None)
            elif r.kind is Kind.SYMLINK:
                if len(r.target) < I_BLOCK_SIZE:
                    r.nblocks = 0
                else:
                    if len(r.target) >= bs:
                        raise InputError(f"symlink target of {len(r.target)} bytes is too long for "
                                         f"{bs}-byte blocks", where=r.node.origin or None)
                    r.nblocks = 1
                    r.runs = [(0, 1)]
            if r.nblocks:
                if cfg.extents:
                    est = sum(-(-(b - a) // EXT_INIT_MAX_LEN) for a, b in r.runs)
                    r.nmeta = _extent_tree_blocks(est + (1 if est >= EXTENT_ROOT_MAX else 0), bs)
                else:
                    r.nmeta = len(_indirect_keys(r.runs, bs))
            total += r.nblocks + r.nmeta
        return total

    def _parent_ino(self, r: Ino) -> int:
        return self.parents.get(r.ino, ROOT_INO)

    def _dir_entries(self, r: Ino) -> list[tuple[bytes, int, int]]:
        node = r.node
        entries = []
        for name, child in node.sorted_children():
            entries.append((encode_name(name), self.num[id(child)], FT[child.kind]))
        if node is self.tree.root and self.make_lpf:
            entries.append((b"lost+found", LPF_INO, FT_DIR))
            entries.sort(key=lambda e: e[0])
        return entries

    def compute_parents(self) -> None:
        self.parents: dict[int, int] = {}
        for r in self.inos:
            if r.kind is Kind.DIR and r.node is not None:
                for child in r.node.children.values():
                    if child.kind is Kind.DIR:
                        self.parents[self.num[id(child)]] = r.ino

    # 3. geometry and allocation ---------------------------------------------------------
    def journal_size(self, blocks: int) -> int:
        cfg = self.cfg
        if not cfg.journal:
            return 0
        if cfg.journal_blocks is not None:
            return cfg.journal_blocks
        return default_journal_blocks(blocks)

    def allocate(self, geo: Geometry, jblocks: int) -> Allocator:
        bs = self.bs
        al = Allocator(geo.free)
        self.journal = None
        if jblocks:
            j = Ino(JOURNAL_INO, Kind.FILE, None)
            j.mode, j.mtime, j.nlink = 0o600, self.ts, 1
            j.size = jblocks * bs
            j.nblocks = jblocks
            j.runs = [(0, jblocks)]
            self._place(j, al)
            self.journal = j
        for xb in self.xblock_list:
            xb.block = 0
        for r in self.inos:
            if r.xblock is not None and not r.xblock.block:
                r.xblock.block = al.alloc(1)[0][0]
            if r.nblocks:
                self._place(r, al)
            else:
                r.extents, r.meta = [], []
        return al

    def _place(self, r: Ino, al: Allocator) -> None:
        if not self.cfg.extents:
            self._place_indirect(r, al)
            return
        phys = al.alloc(r.nblocks)
        r.extents = _map_runs(r.runs, phys)
        n = _extent_tree_blocks(len(r.extents), self.bs)
        r.meta = [b for s, c in al.alloc(n) for b in range(s, s + c)] if n else []

    def _place_indirect(self, r: Ino, al: Allocator) -> None:
        """Data and indirect blocks in one run, each indirect block just before the first data
        block it maps (as the kernel lays them out), so a file stays contiguous."""
        keys = _indirect_keys(r.runs, self.bs)
        phys = al.alloc(r.nblocks + len(keys))
        P, b1, b2, _ = indirect_bounds(self.bs)
        pi, poff = 0, 0
        where: dict[tuple, int] = {}
        ext: list[tuple[int, int, int]] = []

        def take(n: int) -> list[tuple[int, int]]:
            nonlocal pi, poff
            out = []
            while n:
                ps, pn = phys[pi]
                m = min(n, pn - poff)
                out.append((ps + poff, m))
                poff += m
                n -= m
                if poff == pn:
                    pi, poff = pi + 1, 0
            return out

        for s, e in r.runs:
            l = s
            while l < e:
                if l < NDIR_BLOCKS:
                    need, end = (), min(e, NDIR_BLOCKS)
                elif l < b1:
                    need, end = ((1,),), min(e, b1)
                elif l < b2:
                    i = (l - b1) // P
                    need, end = ((2,), (2, i)), min(e, b1 + (i + 1) * P)
                else:
                    k = (l - b2) // P
                    need, end = ((3,), (3, k // P), (3, k // P, k % P)), min(e, b2 + (k + 1) * P)
                for key in need:
                    if key not in where:
                        where[key] = take(1)[0][0]
                for p, m in take(end - l):
                    if ext and ext[-1][0] + ext[-1][1] == l and ext[-1][2] + ext[-1][1] == p:
                        ext[-1] = (ext[-1][0], ext[-1][1] + m, ext[-1][2])
                    else:
                        ext.append((l, m, p))
                    l += m
        r.extents = ext
        r.meta = [where[k] for k in keys]

    def plan(self, blocks: int, want_inodes: int, fixed: bool) -> tuple[Geometry, Allocator]:
        geo = Geometry(self.cfg, self.bs, blocks, want_inodes, fixed)
        jb = self.journal_size(geo.blocks)
        need = jb + self.content
        if need > geo.free_total:
            raise _NoSpace(need - geo.free_total)
        try:
            al = self.allocate(geo, jb)
        except _NoSpace as e:
            raise _NoSpace(e.short + 8) from None
        self.jblocks = jb
        return geo, al

    def auto_blocks(self, want_inodes: int, extra_blocks: int, start: int | None = None) -> tuple[Geometry, Allocator]:
        """The smallest plan that fits, with `extra_blocks` of room on top."""
        bs = self.bs
        fdb = 1 if bs == 1024 else 0
        base = self.content + extra_blocks + 16 + self.content // 200
        n = start or (fdb + base + self.journal_size(base) + 8)
        for _ in range(200):
            try:
                geo = Geometry(self.cfg, bs, n, want_inodes, False)
            except _NoSpace as e:
                n += e.short
                continue
            need = fdb + geo.meta_blocks + self.journal_size(n) + base
            if need > n:
                n = need
                continue
            try:
                geo, al = self.plan(n, want_inodes, False)
            except _NoSpace as e:
                n += e.short
                continue
            if extra_blocks and al.remaining() < extra_blocks:
                n += extra_blocks - al.remaining()
                continue
            return geo, al
        raise CapacityError("could not find a filesystem size that fits (internal limit)")

    # 4. write -------------------------------------------------------------------------
    def run(self) -> int:
        cfg, params, out = self.cfg, self.params, self.out
        self.xblock_list: list[XBlock] = []
        self.collect()
        self.compute_parents()
        used_inodes = self.last_ino
        size = params.size
        if size is not None and cfg.blocks_count is not None and cfg.blocks_count * (cfg.bs or 1024) > size:
            raise SpecError(f"blocks_count {cfg.blocks_count} does not fit in the {format_size(size)} "
                            "size", where=f"{cfg.where}.blocks_count")
        if cfg.bs:
            bs = cfg.bs
        elif cfg.blocks_count is not None:
            bs = 4096 if cfg.blocks_count * 4096 >= SMALL_FS else 1024
        elif size is not None:
            bs = 1024 if size < SMALL_FS else 4096
        else:
            est = self.data_bytes + params.headroom + len(self.inos) * 512 + (16 << 20)
            bs = 1024 if est < SMALL_FS else 4096
        if not cfg.bs:  # a block too small for an xattr set or a symlink: take a bigger one
            need = max([XATTR_HEADER.size + sum(_xattr_space(xb.entries)) for xb in self.xblock_list]
                       + [len(r.target) + 1 for r in self.inos if r.target is not None] + [0])
            while bs < 4096 and need > bs:
                bs *= 2
        self.content = self.plan_blocks(bs)
        fixed_blocks = cfg.blocks_count if cfg.blocks_count is not None else (
            size // bs if size is not None else None)
        ratio = cfg.inode_ratio
        if fixed_blocks is not None and fixed_blocks > M32 and not cfg.bit64:
            if cfg.bit64_set or not cfg.extents:
                raise SpecError(f"{fixed_blocks} blocks need the 64bit feature (and extents)",
                                where=cfg.where)
            cfg.bit64 = True  # as mke2fs: 64bit only when the block count needs it
        if fixed_blocks is not None:
            total_bytes = fixed_blocks * bs
            if ratio is None:
                ratio = 8192 if total_bytes < FLOPPY_FS else 4096 if total_bytes < SMALL_FS else 16384
            if cfg.inodes_count is not None:
                want = cfg.inodes_count
                if want < used_inodes:
                    raise CapacityError(f"the content needs {used_inodes} inodes but inodes_count is {want}",
                                        where=f"{cfg.where}.inodes_count")
            else:
                want = max(total_bytes // ratio, used_inodes + 16)
                ipb = bs // cfg.inode_size
                groups = max(1, -(-fixed_blocks // (8 * bs)))
                want = min(want, groups * (min(8 * bs, 65536 - ipb) - 8))
            try:
                geo, al = self.plan(fixed_blocks, want, True)
            except _NoSpace as e:
                raise self._too_small(fixed_blocks, e) from None
            if size is not None and size < geo.blocks * bs:
                raise self._too_small(fixed_blocks, _NoSpace(geo.blocks - size // bs))
        else:
            extra = -(-params.headroom // bs)
            if cfg.inodes_count is not None:
                want = max(cfg.inodes_count, used_inodes)
            else:
                want = used_inodes + max(16, used_inodes // 50) + params.headroom // (ratio or 16384)
            geo, al = self.auto_blocks(want, extra)
            if out.limit is not None and geo.blocks * bs > out.limit:
                raise CapacityError(f"the {cfg.fs_type} filesystem needs {format_size(geo.blocks * bs)}, "
                                    f"more than the {format_size(out.limit)} it was given")
        self.geo = geo
        self.alloc = al
        params.log(f"{cfg.fs_type}: {geo.blocks} blocks of {bs}, {geo.groups} groups, "
                   f"{geo.inodes} inodes ({self.last_ino} used), journal {self.jblocks} blocks")
        self.emit()
        image_size = size if size is not None else geo.blocks * bs
        out.truncate(image_size)
        if not params.sparse:
            _fill_holes(out, image_size)
        return image_size

    def _too_small(self, have_blocks: int, e: _NoSpace) -> CapacityError:
        bs = self.bs
        try:
            geo, _ = self.auto_blocks(self.last_ino + 16, 0)
            need = format_size(geo.blocks * bs)
        except CapacityError:
            need = f"about {format_size((have_blocks + e.short) * bs)}"
        if e.what == "inodes":
            need = f"{need} (or fewer inodes: it has too many for its groups)"
        return CapacityError(f"the content does not fit in a {format_size(have_blocks * bs)} "
                             f"{self.cfg.fs_type} filesystem: it needs {need}")

    # -- emission ---------------------------------------------------------------------
    def emit(self) -> None:
        cfg, geo, bs = self.cfg, self.geo, self.bs
        writes: list[tuple[int, bytes]] = []   # (block, bytes of whole blocks)
        # per-inode blocks
        for r in ([self.journal] if self.journal else []) + self.inos:
            self._inode_blocks(r, writes)
        for xb in self.xblock_list:
            writes.append((xb.block, self._xattr_block(xb)))
        # inode tables
        itables = self._inode_tables()
        for g, data in itables.items():
            writes.append((geo.it[g], data))
        # bitmaps and descriptors, group by group (bitmaps go straight out)
        gd = bytearray()
        free_blocks_total = 0
        bsink, isink = _Sink(self.out, bs), _Sink(self.out, bs)
        for g, bb, ib, (fb, fi, dirs, unused, flags) in self._group_bitmaps():
            free_blocks_total += fb
            bbc = csum(self.fs_seed, bb[:geo.bpg // 8]) if cfg.csum else 0
            ibc = csum(self.fs_seed, ib[:geo.ipg // 8]) if cfg.csum else 0
            lo = dict(block_bitmap=geo.bb[g] & M32, inode_bitmap=geo.ib[g] & M32,
                      inode_table=geo.it[g] & M32, free_blocks=fb & 0xFFFF, free_inodes=fi & 0xFFFF,
                      used_dirs=dirs & 0xFFFF, flags=flags, block_bitmap_csum=bbc & 0xFFFF,
                      inode_bitmap_csum=ibc & 0xFFFF, itable_unused=unused & 0xFFFF)
            d = GROUP_DESC.pack(**lo)
            hi = b""
            if geo.desc_size == DESC_SIZE_64:
                hi = GROUP_DESC_HI.pack(
                    block_bitmap_hi=geo.bb[g] >> 32, inode_bitmap_hi=geo.ib[g] >> 32,
                    inode_table_hi=geo.it[g] >> 32, free_blocks_hi=fb >> 16, free_inodes_hi=fi >> 16,
                    used_dirs_hi=dirs >> 16, itable_unused_hi=unused >> 16,
                    block_bitmap_csum_hi=bbc >> 16, inode_bitmap_csum_hi=ibc >> 16)
            if cfg.csum:  # crc32c(fs seed, le32 group, descriptor with its checksum field zero)
                c = csum(csum(self.fs_seed, g.to_bytes(4, "little")), d + hi)
                d = GROUP_DESC.pack(checksum=c & 0xFFFF, **lo)
            gd += d + hi
            if any(bb):  # an all-zero bitmap is what the hole already reads as
                bsink.add(geo.bb[g], bytes(bb))
            if not flags & BG_INODE_UNINIT:  # an uninitialised group's inode bitmap is never read
                isink.add(geo.ib[g], bytes(ib))
        bsink.flush()
        isink.flush()
        gd += bytes(-len(gd) % bs)
        free_inodes = geo.inodes - self.last_ino
        for g in range(geo.groups):
            if not has_super(g, geo.sparse):
                continue
            s = geo.gstart(g)
            sb = self._superblock(g, free_blocks_total, free_inodes)
            if g == 0:
                blk0 = bytearray(bs if bs > 1024 else 1024)
                if bs > 1024:
                    blk0[SUPERBLOCK_OFFSET:SUPERBLOCK_OFFSET + 1024] = sb
                    writes.append((0, bytes(blk0) + bytes(gd)))
                else:
                    writes.append((1, sb + bytes(gd)))
            else:
                writes.append((s, sb + bytes(bs - len(sb)) + bytes(gd)))
        self._flush(writes)
        self._copy_data()

    def _flush(self, writes: list[tuple[int, bytes]]) -> None:
        bs = self.bs
        writes.sort(key=lambda w: w[0])
        run_start, parts, run_end, run_len = None, [], None, 0
        limit = 8 << 20
        for blk, data in writes:
            if run_start is not None and blk == run_end and run_len < limit:
                parts.append(data)
                run_end = blk + len(data) // bs
                run_len += len(data)
                continue
            if run_start is not None:
                self.out.pwrite(b"".join(parts), run_start * bs)
            run_start, parts, run_end, run_len = blk, [data], blk + len(data) // bs, len(data)
        if run_start is not None:
            self.out.pwrite(b"".join(parts), run_start * bs)

    def _iseed(self, ino: int) -> int:
        return inode_csum_seed(self.fs_seed, ino) if self.cfg.csum else 0

    def _inode_blocks(self, r: Ino, writes: list) -> None:
        """Fill r.iblock and queue r's directory, symlink, journal and mapping blocks."""
        cfg, bs = self.cfg, self.bs
        k = r.kind
        if k in (Kind.CHR, Kind.BLK):
            b0, b1 = encode_dev(*r.node.rdev)
            r.iblock = (b0.to_bytes(BLOCK_PTR_SIZE, "little") + b1.to_bytes(BLOCK_PTR_SIZE, "little")
                        + bytes(I_BLOCK_SIZE - 2 * BLOCK_PTR_SIZE))
            return
        if k in (Kind.FIFO, Kind.SOCK):
            return
        if k is Kind.SYMLINK and r.nblocks == 0:
            r.iblock = r.target + bytes(I_BLOCK_SIZE - len(r.target))
            return
        # content blocks
        if r.dirblocks is not None:
            self._put_logical(r, r.dirblocks, writes)
        elif k is Kind.SYMLINK:
            self._put_logical(r, [r.target + bytes(bs - len(r.target))], writes)
        elif r is self.journal:
            self._put_logical(r, [self._journal_sb()], writes)
        if cfg.extents:
            r.flags |= EXTENTS_FL
            r.iblock = self._extent_tree(r, writes)
        else:
            r.iblock = self._indirect(r, writes)

    def _put_logical(self, r: Ino, blocks: list[bytes], writes: list) -> None:
        for l, n, p in r.extents:
            for i in range(n):
                if l + i < len(blocks):
                    writes.append((p + i, blocks[l + i]))

    def _extent_tree(self, r: Ino, writes: list) -> bytes:
        bs = self.bs
        ext = r.extents

        def node(entries: list[bytes], max_: int, depth: int) -> bytes:
            return (EXTENT_HEADER.pack(magic=EXTENT_MAGIC, entries=len(entries), max=max_, depth=depth)
                    + b"".join(entries))

        def root(entries: list[bytes], depth: int) -> bytes:
            body = node(entries, EXTENT_ROOT_MAX, depth)
            return body + bytes(I_BLOCK_SIZE - len(body))

        # level 0: the leaves
        items = [EXTENT_LEAF.pack(block=l, len=n, start_hi=p >> 32, start_lo=p & M32) for l, n, p in ext]
        if len(items) <= EXTENT_ROOT_MAX:
            return root(items, 0)
        per = extents_per_block(bs)
        iseed = self._iseed(r.ino)
        meta = list(r.meta)
        mi = 0
        firsts = [l for l, _, _ in ext]
        depth = 0
        while len(items) > EXTENT_ROOT_MAX:
            new_items, new_firsts = [], []
            for i in range(0, len(items), per):
                chunk = items[i:i + per]
                blk = meta[mi]
                mi += 1
                body = bytearray(node(chunk, per, depth))
                body += bytes(EXTENT_HEADER.size + per * EXTENT_LEAF.size - len(body))
                body += EXTENT_TAIL.pack(checksum=csum(iseed, body) if self.cfg.csum else 0)
                body += bytes(bs - len(body))
                writes.append((blk, bytes(body)))
                new_items.append(EXTENT_INDEX.pack(block=firsts[i], leaf_lo=blk & M32, leaf_hi=blk >> 32))
                new_firsts.append(firsts[i])
            items, firsts = new_items, new_firsts
            depth += 1
        assert mi == len(meta), (mi, len(meta))
        return root(items, depth)

    def _indirect(self, r: Ino, writes: list) -> bytes:
        bs = self.bs
        P, b1, b2, _ = indirect_bounds(bs)
        keys = _indirect_keys(r.runs, bs)
        blk_of = dict(zip(keys, r.meta))
        tables: dict[tuple, array] = {k: array("I", bytes(bs)) for k in keys}
        iblock = array("I", bytes(I_BLOCK_SIZE))
        for l, n, p in r.extents:
            while n > 0:
                if l < NDIR_BLOCKS:
                    m = min(n, NDIR_BLOCKS - l)
                    iblock[l:l + m] = array("I", range(p, p + m))
                elif l < b1:
                    i = l - NDIR_BLOCKS
                    m = min(n, P - i)
                    tables[(1,)][i:i + m] = array("I", range(p, p + m))
                elif l < b2:
                    rel = l - b1
                    i, j = divmod(rel, P)
                    m = min(n, P - j)
                    tables[(2, i)][j:j + m] = array("I", range(p, p + m))
                else:
                    rel = l - b2
                    i, rest = divmod(rel, P * P)
                    j, kk = divmod(rest, P)
                    m = min(n, P - kk)
                    tables[(3, i, j)][kk:kk + m] = array("I", range(p, p + m))
                l, n, p = l + m, n - m, p + m
        for key in keys:
            if len(key) == 1:  # (1,), (2,), (3,): i_block[IND_BLOCK], [DIND_BLOCK], [TIND_BLOCK]
                iblock[IND_BLOCK - 1 + key[0]] = blk_of[key]
            else:
                tables[key[:-1]][key[-1]] = blk_of[key]
        for key in keys:
            writes.append((blk_of[key], tables[key].tobytes()))
        return iblock.tobytes()

    def _xattr_block(self, xb: XBlock) -> bytes:
        bs = self.bs
        area, hashes = _xattr_body(xb.entries, bs, XATTR_HEADER.size, 0)
        fields = dict(magic=XATTR_MAGIC, refcount=xb.refcount, blocks=1, hash=xattr_block_hash(hashes))
        XATTR_HEADER.pack_into(area, 0, **fields)
        if self.cfg.csum:
            c = csum(csum(self.fs_seed, xb.block.to_bytes(8, "little")), area)
            XATTR_HEADER.pack_into(area, 0, checksum=c, **fields)
        return bytes(area)

    def _journal_sb(self) -> bytes:
        cfg = self.cfg
        incompat = 0
        if cfg.bit64:
            incompat |= JBD2_INCOMPAT_64BIT
        if cfg.csum:
            incompat |= JBD2_INCOMPAT_CSUM_V3
        fields = dict(magic=JBD2_MAGIC, blocktype=JBD2_SUPERBLOCK_V2, blocksize=self.bs,
                      maxlen=self.jblocks, first=1, s_sequence=1, feature_incompat=incompat,
                      uuid=cfg.uuid, nr_users=1, checksum_type=JBD2_CRC32C_CHKSUM if cfg.csum else 0)
        sb = JBD2_SUPERBLOCK.pack(**fields)
        if cfg.csum:
            sb = JBD2_SUPERBLOCK.pack(checksum=csum(0xFFFFFFFF, sb), **fields)
        return sb + bytes(self.bs - len(sb))

    def _pack_inode(self, r: Ino) -> bytes:
        cfg, bs = self.cfg, self.bs
        isz = cfg.inode_size
        nblk = r.nblocks + len(r.meta) + (1 if r.xblock is not None else 0)
        sectors = nblk * (bs // 512)
        flags = r.flags
        if sectors >= 1 << 48:
            flags |= HUGE_FILE_FL
            sectors = nblk
        t, te = encode_time(r.mtime, r.mtime_ns)
        acl = r.xblock.block if r.xblock is not None else 0
        uid, gid = r.uid & M32, r.gid & M32
        base = dict(mode=r.kind.s_ifmt | (r.mode & 0o7777), uid=uid & 0xFFFF, size_lo=r.size & M32,
                    atime=t, ctime=t, mtime=t, gid=gid & 0xFFFF, links_count=r.nlink,
                    blocks_lo=sectors & M32, flags=flags, block=r.iblock, file_acl_lo=acl & M32,
                    size_high=r.size >> 32, blocks_high=(sectors >> 32) & 0xFFFF, file_acl_high=acl >> 32,
                    uid_high=uid >> 16, gid_high=gid >> 16)
        extra = dict(extra_isize=EXTRA_ISIZE, ctime_extra=te, mtime_extra=te, atime_extra=te,
                     crtime=t, crtime_extra=te)
        ino = self._inode_bytes(base, extra, r.xin)
        if cfg.csum:
            c = csum(self._iseed(r.ino), ino)
            base["checksum_lo"] = c & 0xFFFF
            extra["checksum_hi"] = c >> 16
            ino = self._inode_bytes(base, extra, r.xin)
        return ino

    def _inode_bytes(self, base: dict, extra: dict, xin: bytes) -> bytes:
        """The inode: its 128 bytes, then (large inodes) the extra fields and the in-inode
        xattr area, zero-padded to the inode size."""
        raw = INODE.pack(**base)
        if self.cfg.inode_size > GOOD_OLD_INODE_SIZE:
            raw += INODE_EXTRA.pack(**extra) + xin
        return raw + bytes(self.cfg.inode_size - len(raw))

    def _reserved_inode(self, ino: int) -> bytes:
        """Inodes 1..10 that hold nothing: zeros (inode 1 with the fs times), checksummed."""
        base: dict = {}
        if ino == 1:
            t, _ = encode_time(self.ts)
            base = dict(atime=t, ctime=t, mtime=t)
        raw = INODE.pack(**base) + bytes(self.cfg.inode_size - INODE.size)
        if self.cfg.csum:
            base["checksum_lo"] = csum(self._iseed(ino), raw) & 0xFFFF
            raw = INODE.pack(**base) + bytes(self.cfg.inode_size - INODE.size)
        return raw

    def _inode_tables(self) -> dict[int, bytes]:
        geo, isz, bs = self.geo, self.cfg.inode_size, self.bs
        packed: dict[int, bytes] = {}
        for i in range(1, FIRST_INO):
            if i not in (ROOT_INO, JOURNAL_INO) or (i == JOURNAL_INO and self.journal is None):
                packed[i] = self._reserved_inode(i)
        if self.journal is not None:
            packed[JOURNAL_INO] = self._pack_inode(self.journal)
        for r in self.inos:
            packed[r.ino] = self._pack_inode(r)
        tables: dict[int, bytearray] = {}
        for ino in sorted(packed):
            g, idx = divmod(ino - 1, geo.ipg)
            t = tables.get(g)
            if t is None:
                t = tables[g] = bytearray()
            off = idx * isz
            if len(t) < off:
                t += bytes(off - len(t))
            t += packed[ino]
        return {g: bytes(t) + bytes(-len(t) % bs) for g, t in tables.items()}

    def _group_bitmaps(self):
        """(group, block bitmap, inode bitmap, (free blocks, free inodes, dirs, itable_unused,
        flags)) for each group in turn; the used block ranges are disjoint and sorted."""
        geo, bs, cfg = self.geo, self.bs, self.cfg
        used = sorted([tuple(x) for x in geo.reserved] + [tuple(x) for x in self.alloc.runs])
        dirs: dict[int, int] = {}
        for r in self.inos:
            if r.kind is Kind.DIR:
                g = (r.ino - 1) // geo.ipg
                dirs[g] = dirs.get(g, 0) + 1
        ui = 0
        for g in range(geo.groups):
            gs = geo.gstart(g)
            size = geo.gsize(g)
            ge = gs + size
            bb = bytearray(bs)
            while ui < len(used) and used[ui][0] < ge:
                s, e = used[ui]
                lo, hi = max(s, gs), min(e, ge)
                if lo < hi:
                    _set_bits(bb, lo - gs, hi - gs)
                if e > ge:
                    break
                ui += 1
            used_bits = int.from_bytes(bb, "little").bit_count()
            if size < 8 * bs:
                _set_bits(bb, size, 8 * bs)
            n_used = max(0, min(self.last_ino - g * geo.ipg, geo.ipg))
            ib = bytearray(bs)
            _set_bits(ib, 0, n_used)
            _set_bits(ib, geo.ipg, 8 * bs)
            flags = unused = 0
            if cfg.csum:
                flags = BG_INODE_ZEROED | (BG_INODE_UNINIT if n_used == 0 else 0)
                unused = geo.ipg - n_used
            yield g, bb, ib, (size - used_bits, geo.ipg - n_used, dirs.get(g, 0), unused, flags)

    def _features(self) -> tuple[int, int, int]:
        cfg = self.cfg
        compat = COMPAT_EXT_ATTR
        if cfg.dir_index:
            compat |= COMPAT_DIR_INDEX
        if self.journal is not None:
            compat |= COMPAT_HAS_JOURNAL
        incompat = INCOMPAT_FILETYPE
        if cfg.extents:
            incompat |= INCOMPAT_EXTENTS
        if cfg.bit64:
            incompat |= INCOMPAT_64BIT
        if cfg.flex_bg:
            incompat |= INCOMPAT_FLEX_BG
        if self.dirb.largedir:
            incompat |= INCOMPAT_LARGEDIR
        ro = RO_COMPAT_LARGE_FILE
        if cfg.sparse_super:
            ro |= RO_COMPAT_SPARSE_SUPER
        if cfg.huge_file:
            ro |= RO_COMPAT_HUGE_FILE
        if cfg.dir_nlink:
            ro |= RO_COMPAT_DIR_NLINK
        if cfg.extra_isize:
            ro |= RO_COMPAT_EXTRA_ISIZE
        if cfg.csum:
            ro |= RO_COMPAT_METADATA_CSUM
        return compat, incompat, ro

    def _superblock(self, group: int, free_blocks: int, free_inodes: int) -> bytes:
        cfg, geo, bs = self.cfg, self.geo, self.bs
        compat, incompat, ro = self._features()
        ts = self.ts
        N = geo.blocks
        r_blocks = N * cfg.reserved_pct // 100
        jnl = b""
        if self.journal is not None:
            j = self.journal
            # s_jnl_blocks: the journal inode's i_block, then i_size_high, i_size
            jnl = j.iblock + (j.size >> 32).to_bytes(4, "little") + (j.size & M32).to_bytes(4, "little")
        f = dict(
            inodes_count=geo.inodes, blocks_count_lo=N & M32, r_blocks_count_lo=r_blocks & M32,
            free_blocks_count_lo=free_blocks & M32, free_inodes_count=free_inodes,
            first_data_block=geo.fdb, log_block_size=bs.bit_length() - 11,
            log_cluster_size=bs.bit_length() - 11, blocks_per_group=geo.bpg,
            clusters_per_group=geo.bpg, inodes_per_group=geo.ipg, wtime=ts & M32, max_mnt_count=-1,
            magic=MAGIC, state=STATE_CLEAN, errors=ERRORS_CONTINUE, lastcheck=ts & M32, rev_level=1,
            first_ino=FIRST_INO, inode_size=cfg.inode_size, block_group_nr=group & 0xFFFF,
            feature_compat=compat, feature_incompat=incompat, feature_ro_compat=ro, uuid=cfg.uuid,
            volume_name=cfg.label, hash_seed=cfg.hash_seed, def_hash_version=HASH_HALF_MD4,
            desc_size=DESC_SIZE_64 if cfg.bit64 else 0,
            default_mount_opts=DEFM_XATTR_USER | DEFM_ACL, mkfs_time=ts & M32, jnl_blocks=jnl,
            blocks_count_hi=N >> 32, r_blocks_count_hi=r_blocks >> 32, free_blocks_count_hi=free_blocks >> 32,
            flags=FLAGS_SIGNED_HASH, wtime_hi=(ts >> 32) & 0xFF, mkfs_time_hi=(ts >> 32) & 0xFF,
            lastcheck_hi=(ts >> 32) & 0xFF,
        )
        if self.journal is not None:
            f.update(journal_inum=JOURNAL_INO, jnl_backup_type=JNL_BACKUP_BLOCKS)
        if cfg.inode_size > GOOD_OLD_INODE_SIZE:
            f.update(min_extra_isize=EXTRA_ISIZE, want_extra_isize=EXTRA_ISIZE)
        if cfg.flex_bg:
            f["log_groups_per_flex"] = cfg.flex_size.bit_length() - 1
        if cfg.csum:
            f["checksum_type"] = CRC32C_CHKSUM
        sb = SUPERBLOCK.pack(**f)
        if cfg.csum:
            sb = SUPERBLOCK.pack(checksum=csum(0xFFFFFFFF, sb[:SB_CHECKSUM_OFFSET]), **f)
        return sb

    def _copy_data(self) -> None:
        bs, out = self.bs, self.out
        total = sum(r.node.size for r in self.inos if r.kind is Kind.FILE and r.segs)
        done = 0
        for r in self.inos:
            if r.kind is not Kind.FILE or not r.segs:
                continue
            done += r.node.size
            self.params.report(done, total)
            src = r.node.source
            fd = os.open(src.path, os.O_RDONLY)
            try:
                ext = r.extents
                ei = 0
                for foff, ln, soff in r.segs:
                    end = foff + ln
                    # skip extents wholly before this segment
                    while ei < len(ext) and (ext[ei][0] + ext[ei][1]) * bs <= foff:
                        ei += 1
                    j = ei
                    while j < len(ext) and ext[j][0] * bs < end:
                        l, n, p = ext[j]
                        lo = max(foff, l * bs)
                        hi = min(end, (l + n) * bs)
                        if lo < hi:
                            out.copy_from(fd, soff + lo - foff, hi - lo, p * bs + lo - l * bs)
                        j += 1
            finally:
                os.close(fd)


class _Sink:
    """Coalesces writes of whole blocks at rising block numbers into large pwrites."""

    def __init__(self, out: ImageFile, bs: int):
        self.out, self.bs = out, bs
        self.start, self.end, self.parts, self.size = -1, -1, [], 0

    def add(self, block: int, data: bytes) -> None:
        if block != self.end or self.size >= 8 << 20:
            self.flush()
            self.start = self.end = block
        self.parts.append(data)
        self.size += len(data)
        self.end += len(data) // self.bs

    def flush(self) -> None:
        if self.parts:
            self.out.pwrite(b"".join(self.parts), self.start * self.bs)
        self.start, self.end, self.parts, self.size = -1, -1, [], 0


def _fill_holes(out: ImageFile, size: int) -> None:
    """Write zeros over every hole of the image (for `sparse = false`)."""
    from ...tree import SEEK_DATA, SEEK_HOLE
    zero = bytes(1 << 20)
    pos = 0
    while pos < size:
        try:
            hole = os.lseek(out.fd, out.base + pos, SEEK_HOLE) - out.base
        except OSError:
            return
        if hole >= size:
            return
        try:
            data = os.lseek(out.fd, out.base + hole, SEEK_DATA) - out.base
        except OSError:
            data = size
        end = min(data, size)
        while hole < end:
            n = min(len(zero), end - hole)
            out.pwrite(zero[:n], hole)
            hole += n
        pos = end


def _set_bits(bm: bytearray, a: int, b: int) -> None:
    """Set bits [a, b) of a little-endian bitmap."""
    if a >= b:
        return
    fa, fb = (a + 7) >> 3, b >> 3
    if fa > fb:
        for i in range(a, b):
            bm[i >> 3] |= 1 << (i & 7)
        return
    for i in range(a, fa * 8):
        bm[i >> 3] |= 1 << (i & 7)
    if fb > fa:
        bm[fa:fb] = b"\xff" * (fb - fa)
    for i in range(fb * 8, b):
        bm[i >> 3] |= 1 << (i & 7)


def write(tree: Tree, out: ImageFile, params: FsParams) -> int:
    """Write an ext2/ext3/ext4 filesystem of `tree` to `out`; return the image size in bytes."""
    try:
        return ExtWriter(tree, out, params).run()
    except _TooBig:
        raise CapacityError(f"a file is too large for {params.fs_type} with indirect blocks; "
                            "use ext4 (extents) or a larger block size") from None
