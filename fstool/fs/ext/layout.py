"""ext geometry and sizing: where each group's metadata sits, and how many blocks the
filesystem gets.

Group g covers blocks [first_data_block + g*blocks_per_group, +blocks_per_group); groups 0, 1
and powers of 3, 5, 7 (sparse_super), or only group 1 and the last (sparse_super2), start with a
superblock backup and the descriptor table;
without flex_bg each group then holds its bitmaps and inode table, with flex_bg those of
`flex_size` groups are packed together at the start of the first. For an "auto" size the
smallest block count whose metadata, journal and content fit is found by a fixed point, then
checked by a real allocation; a fixed size that is too small is a CapacityError that says
what would fit.
"""
from __future__ import annotations

from dataclasses import dataclass, replace

from ...errors import CapacityError, SpecError
from ...sizes import format_size
from ...tree import Tree
from .alloc import Allocator, NoSpace
from .extent import place
from .format import DESC_SIZE_64, GROUP_DESC, has_super
from .inode import Content, Ino, Inventory, plan_content
from .journal import journal_inode, journal_size
from .options import ExtOptions
from . import xattr

M32 = 0xFFFFFFFF
SMALL_FS = 512 << 20    # below this mke2fs.conf's "small" type: 1 KiB blocks, 4 KiB per inode
FLOPPY_FS = 3 << 20
MIN_BLOCKS = 64
LAST_GROUP_MIN = 50     # as mke2fs: a last group with fewer spare blocks is dropped


def backup_groups(groups: int) -> tuple[int, int]:
    """s_backup_bgs under sparse_super2, as mke2fs picks them: group 1 and the last group,
    an unused slot 0, the pair in rising order (one group: (0, 0); two: (0, 1))."""
    a, b = min(1, groups - 1), groups - 1
    if b == a:
        b = 0
    return (min(a, b), max(a, b))


class Geometry:
    """Group layout for `blocks` blocks: where each group's metadata sits."""

    def __init__(self, cfg: ExtOptions, bs: int, blocks: int, want_inodes: int, fixed: bool):
        self.bs = bs
        self.fdb = 1 if bs == 1024 else 0
        self.bpg = 8 * bs
        self.isz = cfg.inode_size
        self.desc_size = DESC_SIZE_64 if cfg.bit64 else GROUP_DESC.size
        self.sparse = cfg.sparse_super
        self.sparse2 = cfg.sparse_super2
        self.bgs = (0, 0)
        if blocks - self.fdb < MIN_BLOCKS:
            raise NoSpace(MIN_BLOCKS + self.fdb - blocks)
        groups = -(-(blocks - self.fdb) // self.bpg)
        ipb = bs // self.isz
        ipg_max = min(8 * bs, 65536 - ipb)
        for _ in range(2):
            ipg = -(-want_inodes // groups)
            ipg = -(-ipg // max(8, ipb)) * max(8, ipb)
            if ipg > ipg_max:
                raise NoSpace(-(-want_inodes // ipg_max - groups) * self.bpg, "inodes")
            itb = ipg * self.isz // bs
            gdt = -(-groups * self.desc_size // bs)
            rem = (blocks - self.fdb) % self.bpg
            if rem and groups > 1:
                last = groups - 1
                self.bgs = backup_groups(groups) if self.sparse2 else (0, 0)
                own = (1 + gdt if self.has_super(last) else 0) + (0 if cfg.flex_bg else 2 + itb)
                if rem < own + LAST_GROUP_MIN:
                    if not fixed:
                        raise NoSpace(own + LAST_GROUP_MIN - rem)
                    blocks -= rem  # as mke2fs: drop a last group too small to be useful
                    groups -= 1
                    continue
            break
        self.blocks, self.groups, self.ipg, self.itb, self.gdt = blocks, groups, ipg, itb, gdt
        self.bgs = backup_groups(groups) if self.sparse2 else (0, 0)
        self.inodes = ipg * groups
        if self.inodes > M32:
            raise SpecError("more than 2^32 inodes: raise inode_ratio", where=cfg.where)
        backups: list[tuple[int, int]] = []
        for g in range(groups):
            if self.has_super(g):
                s = self.gstart(g)
                backups.append((s, s + 1 + gdt))
        self.backups = backups
        self.bb = [0] * groups
        self.ib = [0] * groups
        self.it = [0] * groups
        reserved = list(backups)
        if not cfg.flex_bg:
            for g in range(groups):
                pos = self.gstart(g) + (1 + gdt if self.has_super(g) else 0)
                if pos + 2 + itb > self.gstart(g) + self.gsize(g):
                    raise NoSpace(pos + 2 + itb - self.gstart(g) - self.gsize(g))
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
                    raise NoSpace(s + n - blocks)
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

    def has_super(self, g: int) -> bool:
        """Whether group g starts with a superblock and descriptor table (primary or backup)."""
        return has_super(g, self.sparse, self.bgs if self.sparse2 else None)

    def gstart(self, g: int) -> int:
        return self.fdb + g * self.bpg

    def gsize(self, g: int) -> int:
        return min(self.bpg, self.blocks - self.gstart(g))


@dataclass
class Layout:
    """Phase 3: the filesystem's geometry with every block placed."""

    cfg: ExtOptions        # the options in effect (64bit turned on when the size needs it)
    bs: int
    geo: Geometry
    alloc: Allocator       # alloc.runs: the used data blocks
    journal: Ino | None
    jblocks: int


def allocate(inv: Inventory, cfg: ExtOptions, bs: int, geo: Geometry, jblocks: int,
             ts: int) -> tuple[Allocator, Ino | None]:
    """Place the journal first, then each inode's xattr block, data and mapping blocks in
    inode order (fills each Ino's extents and meta, each XBlock's block)."""
    al = Allocator(geo.free)
    journal = None
    if jblocks:
        journal = journal_inode(jblocks, bs, ts)
        journal.extents, journal.meta = place(journal.runs, journal.nblocks, al, bs, cfg.extents)
    for xb in inv.xattrs.blocks:
        xb.block = 0
    for r in inv.inos:
        if r.xblock is not None and not r.xblock.block:
            r.xblock.block = al.alloc(1)[0][0]
        if r.nblocks:
            r.extents, r.meta = place(r.runs, r.nblocks, al, bs, cfg.extents)
        else:
            r.extents, r.meta = (), ()
    return al, journal


def fit(inv: Inventory, cfg: ExtOptions, content: Content, blocks: int, want_inodes: int,
        fixed: bool, ts: int) -> Layout:
    """The layout of a filesystem of `blocks` blocks, or NoSpace."""
    bs = content.bs
    geo = Geometry(cfg, bs, blocks, want_inodes, fixed)
    jb = journal_size(cfg, geo.blocks)
    need = jb + content.blocks
    if need > geo.free_total:
        raise NoSpace(need - geo.free_total)
    try:
        al, journal = allocate(inv, cfg, bs, geo, jb, ts)
    except NoSpace as e:
        raise NoSpace(e.short + 8) from None
    return Layout(cfg, bs, geo, al, journal, jb)


def fit_auto(inv: Inventory, cfg: ExtOptions, content: Content, want_inodes: int, extra_blocks: int,
             ts: int) -> Layout:
    """The smallest layout that fits, with `extra_blocks` of room on top."""
    bs = content.bs
    fdb = 1 if bs == 1024 else 0
    base = content.blocks + extra_blocks + 16 + content.blocks // 200
    n = fdb + base + journal_size(cfg, base) + 8
    for _ in range(200):
        try:
            geo = Geometry(cfg, bs, n, want_inodes, False)
        except NoSpace as e:
            n += e.short
            continue
        need = fdb + geo.meta_blocks + journal_size(cfg, n) + base
        if need > n:
            n = need
            continue
        try:
            lay = fit(inv, cfg, content, n, want_inodes, False, ts)
        except NoSpace as e:
            n += e.short
            continue
        if extra_blocks and lay.alloc.remaining() < extra_blocks:
            n += extra_blocks - lay.alloc.remaining()
            continue
        return lay
    raise CapacityError("could not find a filesystem size that fits (internal limit)")


def smallest_block_size(cfg: ExtOptions, size: int | None) -> int:
    """What choose_block_size can be known to return at least before the tree is read: the
    block size asked for, or the one the size implies (it may still grow for a large xattr
    set or symlink target, to a multiple)."""
    if cfg.bs:
        return cfg.bs
    if cfg.blocks_count is not None:
        return 4096 if cfg.blocks_count * 4096 >= SMALL_FS else 1024
    if size is not None:
        return 1024 if size < SMALL_FS else 4096
    return 1024


def choose_block_size(cfg: ExtOptions, size: int | None, inv: Inventory, headroom: int) -> int:
    """As mke2fs: 1 KiB blocks below 512 MiB, else 4 KiB; bigger when an xattr set or a
    symlink target would not fit in one block."""
    if cfg.bs:
        return cfg.bs
    if cfg.blocks_count is not None or size is not None:
        bs = smallest_block_size(cfg, size)
    else:
        est = inv.data_bytes + headroom + len(inv.inos) * 512 + (16 << 20)
        bs = 1024 if est < SMALL_FS else 4096
    need = max([xattr.block_bytes_needed(xb.entries) for xb in inv.xattrs.blocks]
               + [len(r.target) + 1 for r in inv.inos if r.target is not None] + [0])
    while bs < 4096 and need > bs:
        bs *= 2
    return bs


def size_filesystem(inv: Inventory, tree: Tree, cfg: ExtOptions, size: int | None, headroom: int,
                    limit: int | None, fs_seed: int, ts: int) -> tuple[Content, Layout]:
    """Phases 2 and 3: the block size, each inode's needs, then the geometry and placement
    for a fixed size (`size`, `blocks_count`) or the smallest that fits plus headroom."""
    used_inodes = inv.last_ino
    if size is not None and cfg.blocks_count is not None and cfg.blocks_count * (cfg.bs or 1024) > size:
        raise SpecError(f"blocks_count {cfg.blocks_count} does not fit in the {format_size(size)} "
                        "size", where=f"{cfg.where}.blocks_count")
    bs = choose_block_size(cfg, size, inv, headroom)
    content = plan_content(inv, tree, cfg, bs, fs_seed)
    fixed_blocks = cfg.blocks_count if cfg.blocks_count is not None else (
        size // bs if size is not None else None)
    ratio = cfg.inode_ratio
    if fixed_blocks is not None and fixed_blocks > M32 and not cfg.bit64:
        if cfg.bit64_set or not cfg.extents:
            raise SpecError(f"{fixed_blocks} blocks need the 64bit feature (and extents)",
                            where=cfg.where)
        cfg = replace(cfg, bit64=True)  # as mke2fs: 64bit only when the block count needs it
    if fixed_blocks is None:
        extra = -(-headroom // bs)
        if cfg.inodes_count is not None:
            want = max(cfg.inodes_count, used_inodes)
        else:
            want = used_inodes + max(16, used_inodes // 50) + headroom // (ratio or 16384)
        lay = fit_auto(inv, cfg, content, want, extra, ts)
        if limit is not None and lay.geo.blocks * bs > limit:
            raise CapacityError(f"the {cfg.fs_type} filesystem needs {format_size(lay.geo.blocks * bs)}, "
                                f"more than the {format_size(limit)} it was given")
        return content, lay
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
        lay = fit(inv, cfg, content, fixed_blocks, want, True, ts)
    except NoSpace as e:
        raise _too_small(inv, cfg, content, fixed_blocks, e, ts) from None
    if size is not None and size < lay.geo.blocks * bs:
        raise _too_small(inv, cfg, content, fixed_blocks, NoSpace(lay.geo.blocks - size // bs), ts)
    return content, lay


def _too_small(inv: Inventory, cfg: ExtOptions, content: Content, have_blocks: int, e: NoSpace,
               ts: int) -> CapacityError:
    bs = content.bs
    try:
        need = format_size(fit_auto(inv, cfg, content, inv.last_ino + 16, 0, ts).geo.blocks * bs)
    except CapacityError:
        need = f"about {format_size((have_blocks + e.short) * bs)}"
    if e.what == "inodes":
        need = f"{need} (or fewer inodes: it has too many for its groups)"
    return CapacityError(f"the content does not fit in a {format_size(have_blocks * bs)} "
                         f"{cfg.fs_type} filesystem: it needs {need}")
