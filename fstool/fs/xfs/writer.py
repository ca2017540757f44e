"""The XFS v5 writer: plan every block, then write metadata and stream file data.

Phases:
1. collect the tree's inodes (hardlinks once) in walk order and pick the geometry
   (mkfs.xfs's AG rule, at least two AGs so `xfs_repair -n` can cross-check the
   secondary superblocks; the log in AG agcount/2 right after the AG btree roots);
2. plan: place the root inode chunk where xfs_repair expects it
   (xfs_ialloc_calc_rootino), the other inode chunks next, then per inode its
   xattr blocks, directory/symlink blocks and file extents (first fit, lowest AG
   first, so free space per AG is one or two extents), then bmbt blocks where an
   inode's extent list does not fit in its fork; the tail of every AG is held back
   while planning so the kernel's per-AG finobt reservation finds free blocks;
3. write: AG headers and btrees, the inode chunks, every metadata block, the log
   (one unmount record, the rest zero: a clean log), and copy file data with
   ImageFile.copy_from. Holes in files are holes in the image.
Auto size retries the plan on a larger device until it fits.
Invariant: the output depends only on the tree, the options and params.seed.
"""
from __future__ import annotations

import os
import struct
import uuid as _uuid
from dataclasses import dataclass, field

from ...errors import CapacityError, SpecError
from ...ids import derive_uuid
from ...image import ImageFile, write_zeros
from ...tree import SEEK_DATA, SEEK_HOLE, Kind, Node, Tree, encode_name
from ...zeros import content_segments
from ..base import FsParams, OptionReader
from ..registry import check_tree
from . import attrs as xattr
from .btree import bmbt, bmbt_levels, short_btree, short_btree_blocks
from .dirs import DirPlan, shortform, shortform_size
from .format import (ABTB_MAGIC, ABTC_MAGIC, AGF, AGF_MAGIC, AGFL, AGFL_MAGIC, AGI, AGI_MAGIC,
                     ALLOC_REC, DIFLAG2_BIGTIME, DIFLAG_NEWRTBM, DINODE, DINODE_CRC_OFF,
                     DINODE_MAGIC, FIBT_MAGIC, FMT_BTREE, FMT_DEV, FMT_EXTENTS, FMT_LOCAL, FT,
                     IBT_MAGIC, INCOMPAT_BIGTIME, INCOMPAT_FTYPE, INCOMPAT_SPINODES,
                     INODES_PER_CHUNK, INOBT_KEY, INOBT_REC, LOG_BIG_RECORD_BSIZE, LOG_CLIENT,
                     LOG_FMT_LINUX_LE, LOG_MAGIC, LOG_OP_HDR, LOG_REC_HDR, LOG_UNMOUNT_TRANS,
                     LOG_UNMOUNT_TYPE, MAX_EXTLEN, NULLAGINO, RMT_CRC_OFF, RMT_HDR,
                     RO_COMPAT_FINOBT, RO_COMPAT_INOBTCNT, SB, SB_CRC_OFF, SB_FEATURES2, SB_MAGIC,
                     SB_VERSION, SB_VERSION_ATTR, SB_VERSION_SECTOR, SYMLINK_MAGIC, Geometry, bigtime, encode_dev,
                     pack_bmbt, set_crc)

BS = 4096
AGFL_FILL = 4  # xfs_alloc_min_freelist without rmapbt: (1 + 1) * 2
MIN_AG_BLOCKS = (16 << 20) // BS  # XFS_MIN_AG_BYTES: the kernel refuses smaller AGs
MIN_LAST_AG = 64  # XFS_MIN_AG_BLOCKS: the last AG may be this short
SMALL_FS = (300 << 20) // BS  # mkfs.xfs: below 300 MB the log takes its minimum size
SMALL_LOG = 1024  # blocks; mkfs's computed minimum is 857..931 for these geometries
SMALL_LOG_4K = 2048  # with 4 KiB sectors the log stripe unit raises the minimum to about 1608
REALISTIC_LOG = (64 << 20) // BS
MAX_LOG = (1 << 30) // BS
AG_MAX_BLOCKS = (1 << 40) // BS


@dataclass
class Options:
    agcount: int | None
    agsize: int | None  # blocks
    inode_size: int
    log_size: int | None  # blocks
    imaxpct: int | None  # None: as mkfs.xfs (25 below 1 TiB, 5 below 50 TiB, else 1)
    sector_size: int
    label: bytes
    uuid: bytes | None  # None: derived from the seed when writing
    where: str


def parse_options(params: FsParams) -> Options:
    where = f"{params.where}.options"
    opt = OptionReader(params.options, where=where)
    agcount = opt.get_int("agcount", None, 1, 1 << 20)
    agsize = opt.get_size("agsize")
    inode_size = opt.get_int("inode_size", 512)
    log_size = opt.get_size("log_size")
    imaxpct = opt.get_int("imaxpct", None, 0, 100)
    sector_size = opt.get_int("sector_size", 512)
    opt.finish()
    if params.block_size not in (None, BS):
        raise SpecError(f"xfs supports block_size 4096 only, got {params.block_size}",
                        where=f"{params.where}.block_size")
    if params.journal_blocks is not None:  # the generic key: the log size in 4 KiB blocks
        if log_size is not None:
            raise SpecError("set journal_blocks or options.log_size, not both",
                            where=f"{params.where}.journal_blocks")
        log_size = params.journal_blocks * BS
    log_where = f"{params.where}.journal_blocks" if params.journal_blocks is not None else f"{where}.log_size"
    if inode_size not in (512, 1024, 2048):
        raise SpecError(f"inode_size must be 512, 1024 or 2048 (v5 filesystems), got {inode_size}",
                        where=f"{where}.inode_size")
    if sector_size not in (512, 4096):
        raise SpecError(f"sector_size must be 512 or 4096, got {sector_size}", where=f"{where}.sector_size")
    if agcount is not None and agsize is not None:
        raise SpecError("set agcount or agsize, not both", where=f"{where}.agsize")
    if agsize is not None:
        if agsize % BS or not MIN_AG_BLOCKS * BS <= agsize <= AG_MAX_BLOCKS * BS:
            raise SpecError(f"agsize must be a multiple of 4096 between 16 MiB and 1 TiB, got {agsize}",
                            where=f"{where}.agsize")
        agsize //= BS
    if log_size is not None:
        low = SMALL_LOG if sector_size == 512 else SMALL_LOG_4K
        if log_size % BS or not low * BS <= log_size <= MAX_LOG * BS:
            raise SpecError(f"the log must be a multiple of 4096 bytes between {low * BS >> 20} MiB and "
                            f"1 GiB, got {log_size}", where=log_where)
        log_size //= BS
    label = (params.label or "").encode("utf-8")
    if len(label) > 12:
        raise SpecError(f"xfs labels are at most 12 bytes; {params.label!r} is {len(label)}",
                        where=f"{params.where}.label")
    if params.uuid:
        try:
            u = _uuid.UUID(params.uuid).bytes
        except ValueError:
            raise SpecError(f"invalid UUID {params.uuid!r}", where=f"{params.where}.uuid") from None
    else:
        u = None  # derived from the build's seed by the writer (options are parsed before it exists)
    return Options(agcount, agsize, inode_size, log_size, imaxpct, sector_size, label, u, where)


class _NoSpace(Exception):
    pass


def _ceil(a: int, b: int) -> int:
    return -(-a // b)


class Allocator:
    """First-fit block allocation over the AGs' free extents, lowest address first."""

    def __init__(self, geom: Geometry):
        self.geom = geom
        self.free = [[[0, geom.ag_length(a)]] for a in range(geom.agcount)]
        self.first = 0  # no free space below this AG

    def reserve(self, agno: int, start: int, n: int) -> None:
        for i, (s, e) in enumerate(self.free[agno]):
            if s <= start and start + n <= e:
                repl = [x for x in ([s, start], [start + n, e]) if x[1] > x[0]]
                self.free[agno][i:i + 1] = repl
                return
        raise _NoSpace(f"AG {agno} blocks {start}+{n}")

    def alloc(self, n: int, align: int = 1, agno: int | None = None) -> tuple[int, int]:
        ags = [agno] if agno is not None else range(self.first, self.geom.agcount)
        for a in ags:
            for s, e in self.free[a]:
                st = _ceil(s, align) * align
                if st + n <= e:
                    self.reserve(a, st, n)
                    return a, st
        raise _NoSpace(f"{n} contiguous blocks")

    def alloc_upto(self, n: int) -> tuple[int, int, int]:
        """The first free piece, at most n blocks: (agno, agbno, length)."""
        while self.first < self.geom.agcount:
            fl = self.free[self.first]
            if fl:
                s, e = fl[0]
                got = min(n, e - s, MAX_EXTLEN)
                self.reserve(self.first, s, got)
                return self.first, s, got
            self.first += 1
        raise _NoSpace(f"{n} blocks")

    def release(self, agno: int, start: int, n: int) -> None:
        """Give back blocks held aside (merging with the free extents around them)."""
        fl = self.free[agno]
        fl.append([start, start + n])
        fl.sort()
        merged = [fl[0]]
        for s, e in fl[1:]:
            if s <= merged[-1][1]:
                merged[-1][1] = max(merged[-1][1], e)
            else:
                merged.append([s, e])
        self.free[agno] = merged
        self.first = min(self.first, agno)

    def runs(self, runs: list[tuple[int, int]]) -> list[tuple[int, int, int]]:
        """Place logical runs (lblk, count): extents (lblk, fsb, count)."""
        out = []
        for lblk, count in runs:
            while count:
                a, b, got = self.alloc_upto(count)
                out.append((lblk, self.geom.fsb(a, b), got))
                lblk, count = lblk + got, count - got
        return out


@dataclass(eq=False, slots=True)
class IPlan:
    ino: int
    mode: int
    node: Node | None = None
    nlink: int = 1
    size: int = 0
    dfmt: int = FMT_EXTENTS
    dfork: bytes = b""
    afmt: int = FMT_EXTENTS
    afork: bytes = b""
    forkoff: int = 0
    nextents: int = 0
    anextents: int = 0
    nblocks: int = 0
    flags: int = 0
    time: int = 0
    uid: int = 0
    gid: int = 0
    dfork_space: int = 0  # bytes of the data fork (the literal area less the attr fork)


@dataclass
class Plan:
    geom: Geometry
    logstart: tuple[int, int]
    logblocks: int
    agfl_start: list[int]
    chunks: list[tuple[int, int]] = field(default_factory=list)  # (agno, agbno)
    inodes: list[IPlan] = field(default_factory=list)
    blocks: dict[int, bytes] = field(default_factory=dict)  # device byte offset -> block
    copies: list = field(default_factory=list)  # (FileSource, [(image off, src off, length)])
    ino_extra: dict[int, list[int]] = field(default_factory=dict)  # agno -> extra inobt blocks
    fino_extra: dict[int, list[int]] = field(default_factory=dict)
    alloc: Allocator | None = None


NO_RUNS: tuple[tuple, tuple] = ((), ())  # the runs and segments of a file without data


def _ftype(kind: Kind) -> int:
    return FT[kind.value]


class XfsWriter:
    def __init__(self, tree: Tree, out: ImageFile, params: FsParams):
        self.tree, self.out, self.params = tree, out, params
        self.opts: Options = params.opts if isinstance(params.opts, Options) else parse_options(params)
        self.isize = self.opts.inode_size
        self.chunk_blocks = INODES_PER_CHUNK * self.isize // BS
        self.sect = self.opts.sector_size
        # AG block layout: the four header sectors (sb, agf, agi, agfl), then the btree roots
        hdr = _ceil(4 * self.sect, BS)
        self.bno_root, self.cnt_root, self.ino_root, self.fino_root = hdr, hdr + 1, hdr + 2, hdr + 3
        self.ag_hdr_blocks = hdr + 4
        self.small_log = SMALL_LOG if self.sect == 512 else SMALL_LOG_4K
        self.uuid = self.opts.uuid or derive_uuid(params.seed, "xfs/uuid").bytes

    # -- inputs ------------------------------------------------------------------
    def collect(self) -> None:
        # maps keyed by node (identity): no id() int per entry
        self.nodes: list[Node] = []
        self.parent: dict[Node, Node] = {}
        seen: set[Node] = set()
        stack = [(self.tree.root, self.tree.root)]
        while stack:
            node, parent = stack.pop()
            if node in seen:
                continue
            seen.add(node)
            self.nodes.append(node)
            if node.kind is Kind.DIR:
                self.parent[node] = parent
                for _, child in reversed(node.sorted_children()):
                    stack.append((child, node))
        self._runs: dict[Node, tuple] = {}  # files with data only
        self._ints: dict[int, int] = {}  # one object per distinct mode and time value
        self.xattrs = {n: xattr.split(n.xattrs, f"{self.params.where}: xattrs") for n in self.nodes
                       if n.xattrs}

    def runs_of(self, node: Node) -> tuple[list[tuple[int, int]], list]:
        """A file's data as block runs (lblk, count) and its segments (asked of the host once)."""
        if not (node.source and node.size):
            return NO_RUNS
        got = self._runs.get(node)
        if got is None:
            got = self._runs[node] = self._find_runs(node)
        return got

    def _find_runs(self, node: Node) -> tuple[list[tuple[int, int]], list]:
        segs = content_segments(node.source, BS) if node.source and node.size else []  # zero blocks are holes
        runs: list[list[int]] = []
        for foff, length, _ in segs:
            b0, b1 = foff // BS, _ceil(foff + length, BS)
            if runs and b0 <= runs[-1][1]:
                runs[-1][1] = max(runs[-1][1], b1)
            else:
                runs.append([b0, b1])
        return [(a, b - a) for a, b in runs], segs

    # -- geometry ----------------------------------------------------------------
    def geometry(self, dblocks: int, exact: bool) -> tuple[Geometry, int]:
        o = self.opts
        if o.agsize:
            agblocks = o.agsize
            agcount = _ceil(dblocks, agblocks)
        elif o.agcount:
            agcount = o.agcount
            agblocks = _ceil(dblocks, agcount)
            if agblocks < MIN_AG_BLOCKS and exact:
                raise CapacityError(f"agcount {agcount} makes allocation groups of {agblocks * BS >> 20} "
                                    f"MiB; XFS needs at least 16 MiB each", where=f"{o.where}.agcount")
        else:
            if dblocks >= (4 << 40) // BS:
                shift = None
                agblocks = AG_MAX_BLOCKS
            elif dblocks >= (128 << 20) // BS:
                shift = 2
            else:
                shift = 4
                for limit in (128, 64, 32):
                    if dblocks < (limit << 20) // BS:
                        shift -= 1
            if shift is not None:
                agblocks = dblocks >> shift
                if dblocks & ((1 << shift) - 1):
                    agblocks += 1
            agcount = _ceil(dblocks, agblocks)
            if agcount < 2:  # one AG: xfs_repair cannot check the geometry without -o force_geometry
                agcount, agblocks = 2, _ceil(dblocks, 2)
        agblocks = min(max(agblocks, MIN_AG_BLOCKS), AG_MAX_BLOCKS)
        if dblocks < MIN_AG_BLOCKS:
            raise _NoSpace("one 16 MiB allocation group")
        agcount = _ceil(dblocks, agblocks)
        if not exact:  # auto size: whole AGs, as many as asked for
            if o.agcount:
                agcount = o.agcount
            elif agcount < 2:
                agcount = 2
            dblocks = agcount * agblocks
        last = dblocks - (agcount - 1) * agblocks
        if last < MIN_LAST_AG and agcount > 1:
            agcount -= 1
            dblocks = agcount * agblocks
        geom = Geometry(BS, agblocks, agcount, self.isize, self.sect)
        geom.dblocks = dblocks
        if o.log_size:
            logblocks = o.log_size
        elif dblocks < SMALL_FS:
            logblocks = self.small_log
        else:
            logblocks = min(max(dblocks // 2048, REALISTIC_LOG), MAX_LOG, agblocks - 64)
        return geom, logblocks

    # -- planning ----------------------------------------------------------------
    def finobt_reserve(self, geom: Geometry, agno: int, logblocks: int) -> int:
        """Free blocks the kernel sets aside in an AG at mount for the finobt
        (xfs_inobt_max_size: a tree of minimally full blocks over every inode the AG could
        hold). With less, a read-write mount warns "ENOSPC reserving per-AG metadata pool"."""
        aglen = geom.ag_length(agno) - (logblocks if agno == geom.agcount // 2 else 0)
        n = aglen * geom.inopblock // INODES_PER_CHUNK
        limits = ((BS - 56) // INOBT_REC.size // 2, (BS - 56) // (INOBT_KEY.size + 4) // 2)
        total, level = 0, 0
        while n > 1:
            n = _ceil(n, limits[min(level, 1)])
            total += n
            level += 1
        return total

    def plan(self, geom: Geometry, logblocks: int, keep_free: bool = True) -> Plan:
        bs = BS
        logag = geom.agcount // 2
        if logblocks + self.ag_hdr_blocks + AGFL_FILL + (self.chunk_blocks * 2 if logag == 0 else 0) \
                > geom.ag_length(logag):
            raise _NoSpace("the log")
        al = Allocator(geom)
        agfl_start = []
        for a in range(geom.agcount):
            if geom.ag_length(a) < self.ag_hdr_blocks + AGFL_FILL + 1:
                raise _NoSpace("AG headers")
            al.reserve(a, 0, self.ag_hdr_blocks)
            start = self.ag_hdr_blocks
            if a == logag:
                al.reserve(a, start, logblocks)
                start += logblocks
            al.reserve(a, start, AGFL_FILL)
            agfl_start.append(start)
        plan = Plan(geom, (logag, self.ag_hdr_blocks), logblocks, agfl_start, alloc=al)
        held = []  # the tail of each AG, kept free for the kernel's per-AG reservation
        if keep_free:
            for a in range(geom.agcount):
                n = self.finobt_reserve(geom, a, logblocks) + 8
                start = geom.ag_length(a) - n
                if start <= agfl_start[a] + AGFL_FILL + (2 * self.chunk_blocks if a == 0 else 0):
                    raise _NoSpace("the per-AG reservation")
                al.reserve(a, start, n)
                held.append((a, start, n))
        # the root chunk where xfs_ialloc_calc_rootino expects it
        align = self.chunk_blocks
        first = self.ag_hdr_blocks + AGFL_FILL + (logblocks if logag == 0 else 0)
        root_bno = _ceil(first, align) * align
        al.reserve(0, root_bno, self.chunk_blocks)
        plan.chunks.append((0, root_bno))
        ninodes = len(self.nodes) + 2
        for _ in range(_ceil(ninodes, INODES_PER_CHUNK) - 1):
            plan.chunks.append(al.alloc(self.chunk_blocks, align=align))
        # inode btree blocks beyond the roots (only AGs with more than one leaf of chunks)
        per_ag: dict[int, int] = {}
        for a, _ in plan.chunks:
            per_ag[a] = per_ag.get(a, 0) + 1
        nfree_chunks = 1 if ninodes % INODES_PER_CHUNK else 0
        for a, n in sorted(per_ag.items()):
            extra = short_btree_blocks(bs, n, INOBT_REC.size, INOBT_KEY.size) - 1
            plan.ino_extra[a] = [al.alloc(1, agno=a)[1] for _ in range(extra)]
        last_ag = plan.chunks[-1][0]
        plan.fino_extra[last_ag] = [al.alloc(1, agno=last_ag)[1] for _ in range(
            short_btree_blocks(bs, nfree_chunks, INOBT_REC.size, INOBT_KEY.size) - 1)]

        def ino_at(k: int) -> int:
            a, b = plan.chunks[k // INODES_PER_CHUNK]
            s = k % INODES_PER_CHUNK
            return geom.ino(a, b + s // geom.inopblock, s % geom.inopblock)

        self.ino_of = {self.nodes[0]: ino_at(0)}
        for k, n in enumerate(self.nodes[1:], start=3):
            self.ino_of[n] = ino_at(k)
        ts = bigtime(self.params.timestamp)
        # the realtime bitmap and summary inodes mkfs makes (empty: no rt device), in slots 1
        # and 2 after the root's; they allocate nothing
        realtime = [IPlan(ino_at(k), 0o100000, time=ts, nlink=1, flags=DIFLAG_NEWRTBM if k == 1 else 0)
                    for k in (1, 2)]
        files = []
        same = self._ints.setdefault
        for node in self.nodes:
            mode, time = node.st_mode, bigtime(node.mtime, node.mtime_ns)
            ip = IPlan(self.ino_of[node], same(mode, mode), node, self.tree.nlink(node),
                       time=same(time, time), uid=node.uid, gid=node.gid)
            plan.inodes.append(ip)
            if realtime:  # plan.inodes is in slot order: root, realtime, then the tree's nodes
                plan.inodes += realtime
                realtime = []
            self.plan_inode(plan, ip, files)
        for ip in files:  # file data after all metadata
            self.plan_file(plan, ip)
        for a, start, n in held:
            al.release(a, start, n)
        return plan

    def daddr_map(self, geom: Geometry, exts: list[tuple[int, int, int]]) -> dict[int, int]:
        out = {}
        for lblk, fsb, n in exts:
            a, b = geom.split_fsb(fsb)
            for i in range(n):
                out[lblk + i] = geom.daddr(a, b + i)
        return out

    def put_blocks(self, plan: Plan, exts, blocks: dict[int, bytes]) -> None:
        g = plan.geom
        for lblk, fsb, n in exts:
            base = g.fsb_byte(fsb)
            for i in range(n):
                plan.blocks[base + i * BS] = blocks[lblk + i]

    def fork(self, plan: Plan, ip: IPlan, exts, space: int, nmeta: int) -> tuple[int, bytes, int]:
        """An extent list or a bmbt root for a fork of `space` bytes: (format, bytes, blocks)."""
        recs = [pack_bmbt(l, f, n) for l, f, n in exts]
        if len(recs) * 16 <= space:
            return FMT_EXTENTS, b"".join(recs), nmeta
        nblk = sum(bmbt_levels(BS, len(recs), space))
        fsbs = [plan.geom.fsb(*plan.alloc.alloc(1)) for _ in range(nblk)]
        g = plan.geom
        root, blocks = bmbt(BS, recs, space, fsbs, ip.ino, lambda f: g.daddr(*g.split_fsb(f)), self.uuid)
        for fsb, blk in blocks.items():
            plan.blocks[g.fsb_byte(fsb)] = blk
        return FMT_BTREE, root, nmeta + nblk

    def plan_inode(self, plan: Plan, ip: IPlan, files: list) -> None:
        node, g = ip.node, plan.geom
        lit = g.lit
        devfmt = node.kind in (Kind.CHR, Kind.BLK, Kind.FIFO, Kind.SOCK)
        space = lit
        attrs = self.xattrs.get(node)
        if attrs:
            data_min = 8 if devfmt else 24
            sz = xattr.sf_size(attrs)
            if sz is not None and ((sz + 7) & ~7) <= lit - data_min:
                ip.afmt, ip.afork = FMT_LOCAL, xattr.shortform(attrs)
                ip.forkoff = 1 if devfmt else (lit - ((sz + 7) & ~7)) // 8
            else:
                lp = xattr.LeafPlan(attrs, BS, f"{self.params.where}: xattrs")
                exts = plan.alloc.runs([(0, lp.nblocks)])
                self.put_blocks(plan, exts, lp.render(ip.ino, self.uuid, self.daddr_map(g, exts)))
                asz = 16 * len(exts)
                if asz > lit - data_min:
                    raise CapacityError("xattr blocks too fragmented for the inode", where=self.params.where)
                ip.forkoff = 1 if devfmt else (lit - asz) // 8
                ip.afmt, ip.afork = FMT_EXTENTS, b"".join(pack_bmbt(*e) for e in exts)
                ip.anextents = len(exts)
                ip.nblocks += lp.nblocks
            space = ip.forkoff * 8
        kind = node.kind
        if devfmt:
            ip.dfmt = FMT_DEV
            dev = encode_dev(*node.rdev) if kind in (Kind.CHR, Kind.BLK) else 0
            ip.dfork = struct.pack(">I", dev)
        elif kind is Kind.DIR:
            parent = self.ino_of[self.parent[node]]
            ents = [(encode_name(n), self.ino_of[c], _ftype(c.kind)) for n, c in node.sorted_children()]
            if shortform_size(ents, parent) <= space:
                ip.dfmt, ip.dfork = FMT_LOCAL, shortform(ents, parent)
                ip.size = len(ip.dfork)
            else:
                dp = DirPlan(ents, ip.ino, parent, BS)
                runs = []
                for lb in dp.dablks:
                    if runs and runs[-1][0] + runs[-1][1] == lb:
                        runs[-1][1] += 1
                    else:
                        runs.append([lb, 1])
                exts = plan.alloc.runs([tuple(r) for r in runs])
                self.put_blocks(plan, exts, dp.render(ip.ino, self.uuid, self.daddr_map(g, exts)))
                ip.size = dp.size
                ip.dfmt, ip.dfork, ip.nblocks = self.fork(plan, ip, exts, space, ip.nblocks + len(dp.dablks))
                ip.nextents = len(exts)
        elif kind is Kind.SYMLINK:
            target = encode_name(node.target or "")
            ip.size = len(target)
            if len(target) <= space:
                ip.dfmt, ip.dfork = FMT_LOCAL, target
            else:
                exts = plan.alloc.runs([(0, 1)])
                fsb = exts[0][1]
                buf = bytearray(BS)
                buf[:RMT_HDR.size] = RMT_HDR.pack(magic=SYMLINK_MAGIC, offset=0, bytes=len(target),
                                                  uuid=self.uuid, owner=ip.ino,
                                                  blkno=g.daddr(*g.split_fsb(fsb)))
                buf[RMT_HDR.size:RMT_HDR.size + len(target)] = target
                plan.blocks[g.fsb_byte(fsb)] = bytes(set_crc(buf, RMT_CRC_OFF))
                ip.dfork = pack_bmbt(*exts[0])
                ip.nextents, ip.nblocks = 1, ip.nblocks + 1
        elif kind is Kind.FILE:
            ip.size = node.size
            ip.dfork_space = space
            files.append(ip)

    def plan_file(self, plan: Plan, ip: IPlan) -> None:
        runs, segs = self.runs_of(ip.node)
        exts = plan.alloc.runs(runs)
        g = plan.geom
        ip.nextents = len(exts)
        ip.dfmt, ip.dfork, ip.nblocks = self.fork(plan, ip, exts, ip.dfork_space,
                                                  ip.nblocks + sum(n for _, n in runs))
        # map each data segment onto the extents
        pieces = []
        ei = 0
        for foff, length, soff in segs:
            pos = foff
            while pos < foff + length:
                while exts[ei][0] * BS + exts[ei][2] * BS <= pos:
                    ei += 1
                lblk, fsb, n = exts[ei]
                end = min(foff + length, (lblk + n) * BS)
                pieces.append((g.fsb_byte(fsb) + pos - lblk * BS, soff + pos - foff, end - pos))
                pos = end
        if pieces:
            plan.copies.append((ip.node.source, pieces))

    # -- output ------------------------------------------------------------------
    def inode_bytes(self, g: Geometry, ip: IPlan | None, ino: int) -> bytearray:
        buf = bytearray(self.isize)
        if ip is None:
            buf[:DINODE.size] = DINODE.pack(magic=DINODE_MAGIC, version=3, next_unlinked=NULLAGINO,
                                            ino=ino, uuid=self.uuid)
        else:
            buf[:DINODE.size] = DINODE.pack(
                magic=DINODE_MAGIC, mode=ip.mode, version=3, format=ip.dfmt, uid=ip.uid, gid=ip.gid,
                nlink=ip.nlink, atime=ip.time, mtime=ip.time, ctime=ip.time, size=ip.size,
                nblocks=ip.nblocks, nextents=ip.nextents, anextents=ip.anextents,
                forkoff=ip.forkoff, aformat=ip.afmt, flags=ip.flags, next_unlinked=NULLAGINO,
                flags2=DIFLAG2_BIGTIME, crtime=ip.time, ino=ino, uuid=self.uuid)
            d = DINODE.size
            buf[d:d + len(ip.dfork)] = ip.dfork
            if ip.forkoff:
                a = d + ip.forkoff * 8
                buf[a:a + len(ip.afork)] = ip.afork
        return set_crc(buf, DINODE_CRC_OFF)

    def emit(self, plan: Plan) -> None:
        g, out = plan.geom, self.out
        by_slot = plan.inodes  # the k-th inode slot of the chunks holds plan.inodes[k]
        # inode chunks
        chunk_recs: dict[int, list[tuple[int, int]]] = {}
        for c, (a, b) in enumerate(plan.chunks):
            buf = bytearray()
            nfree, mask = 0, 0
            for s in range(INODES_PER_CHUNK):
                ino = g.ino(a, b + s // g.inopblock, s % g.inopblock)
                k = c * INODES_PER_CHUNK + s
                ip = by_slot[k] if k < len(by_slot) else None
                assert ip is None or ip.ino == ino
                if ip is None:
                    nfree += 1
                    mask |= 1 << s
                buf += self.inode_bytes(g, ip, ino)
            out.pwrite(buf, g.byte(a, b))
            chunk_recs.setdefault(a, []).append((g.agino(g.ino(a, b, 0)), nfree, mask))
        for off, blk in sorted(plan.blocks.items()):
            out.pwrite(blk, off)
        self.icount = INODES_PER_CHUNK * len(plan.chunks)
        self.ifree = self.icount - len(plan.inodes)
        fdblocks = 0
        for a in range(g.agcount):
            fdblocks += self.emit_ag(plan, a, chunk_recs.get(a, []))
        self.emit_sb(plan, fdblocks)
        self.emit_log(plan)
        total = sum(sum(p[2] for p in pieces) for _, pieces in plan.copies)
        done = 0
        for src, pieces in plan.copies:
            fd = os.open(src.path, os.O_RDONLY)
            try:
                for dst, soff, n in pieces:
                    out.copy_from(fd, soff, n, dst)
            finally:
                os.close(fd)
            done += src.size
            self.params.report(min(done, total), total)

    def emit_ag(self, plan: Plan, a: int, chunks: list[tuple[int, int, int]]) -> int:
        g, out, bs = plan.geom, self.out, BS
        length = g.ag_length(a)
        free = plan.alloc.free[a]
        bno = [ALLOC_REC.pack(s, e - s) for s, e in free]
        cnt = [ALLOC_REC.pack(s, e - s) for s, e in sorted(free, key=lambda x: (x[1] - x[0], x[0]))]
        cap = (bs - 56) // 8
        if len(bno) > cap:
            raise CapacityError(f"AG {a} free space is too fragmented", where=self.params.where)
        daddr = lambda b: g.daddr(a, b)  # noqa: E731
        blocks = {}
        # a free-space record is its own key (startblock, blockcount); both trees stay one leaf
        blocks.update(short_btree(bs, ABTB_MAGIC, bno, bno, 8, self.bno_root, [], a, daddr, self.uuid)[0])
        blocks.update(short_btree(bs, ABTC_MAGIC, cnt, cnt, 8, self.cnt_root, [], a, daddr, self.uuid)[0])
        irecs = [INOBT_REC.pack(ag, 0, INODES_PER_CHUNK, nf, m) for ag, nf, m in sorted(chunks)]
        ikeys = [INOBT_KEY.pack(ag) for ag, _, _ in sorted(chunks)]
        iblk, ilevel = short_btree(bs, IBT_MAGIC, irecs, ikeys, 4, self.ino_root, plan.ino_extra.get(a, []),
                                   a, daddr, self.uuid)
        fsel = [i for i, (_, nf, _) in enumerate(sorted(chunks)) if nf]
        fblk, flevel = short_btree(bs, FIBT_MAGIC, [irecs[i] for i in fsel], [ikeys[i] for i in fsel], 4,
                                   self.fino_root, plan.fino_extra.get(a, []), a, daddr, self.uuid)
        blocks.update(iblk)
        blocks.update(fblk)
        for b, blk in blocks.items():
            out.pwrite(blk, g.byte(a, b))
        freeblks = sum(e - s for s, e in free)
        longest = max((e - s for s, e in free), default=0)
        sect = g.sectsize
        agf = bytearray(sect)
        agf[:AGF.size] = AGF.pack(magicnum=AGF_MAGIC, versionnum=1, seqno=a, length=length,
                                  bnoroot=self.bno_root, cntroot=self.cnt_root, bnolevel=1, cntlevel=1,
                                  flfirst=0, fllast=AGFL_FILL - 1, flcount=AGFL_FILL,
                                  freeblks=freeblks, longest=longest, uuid=self.uuid)
        set_crc(agf, AGF.offsets["crc"])
        count = INODES_PER_CHUNK * len(chunks)
        freecount = sum(nf for _, nf, _ in chunks)
        agi = bytearray(sect)
        agi[:AGI.size] = AGI.pack(magicnum=AGI_MAGIC, versionnum=1, seqno=a, length=length, count=count,
                                  root=self.ino_root, level=ilevel, freecount=freecount,
                                  newino=max(c[0] for c in chunks) if chunks else NULLAGINO,
                                  dirino=NULLAGINO, unlinked=b"\xff" * 256, uuid=self.uuid,
                                  free_root=self.fino_root, free_level=flevel,
                                  iblocks=1 + len(plan.ino_extra.get(a, [])),
                                  fblocks=1 + len(plan.fino_extra.get(a, [])))
        set_crc(agi, AGI.offsets["crc"])
        agfl = bytearray(b"\xff" * sect)
        agfl[:AGFL.size] = AGFL.pack(magicnum=AGFL_MAGIC, seqno=a, uuid=self.uuid)
        for i in range(AGFL_FILL):
            struct.pack_into(">I", agfl, AGFL.size + 4 * i, plan.agfl_start[a] + i)
        set_crc(agfl, AGFL.offsets["crc"])
        out.pwrite(agf + agi + agfl, g.byte(a, 0) + sect)
        return freeblks + AGFL_FILL

    def imaxpct(self, g: Geometry) -> int:
        if self.opts.imaxpct is not None:
            return self.opts.imaxpct
        size = g.dblocks * BS
        return 25 if size < 1 << 40 else 5 if size < 50 << 40 else 1

    def emit_sb(self, plan: Plan, fdblocks: int) -> None:
        g = plan.geom
        root = plan.chunks[0]
        rootino = g.ino(root[0], root[1], 0)
        la, lb = plan.logstart
        sb = bytearray(g.sectsize)
        sb[:SB.size] = SB.pack(
            magicnum=SB_MAGIC, blocksize=BS, dblocks=g.dblocks, uuid=self.uuid,
            logstart=g.fsb(la, lb), rootino=rootino, rbmino=rootino + 1, rsumino=rootino + 2,
            rextsize=1, agblocks=g.agblocks, agcount=g.agcount, logblocks=plan.logblocks,
            versionnum=(SB_VERSION | (SB_VERSION_SECTOR if self.sect != 512 else 0)
                        | (SB_VERSION_ATTR if self.xattrs else 0)), sectsize=g.sectsize, inodesize=self.isize, inopblock=g.inopblock,
            fname=self.opts.label, blocklog=g.blocklog, sectlog=g.sectsize.bit_length() - 1, inodelog=g.inodelog,
            inopblog=g.inopblog, agblklog=g.agblklog, imax_pct=self.imaxpct(g),
            icount=self.icount, ifree=self.ifree, fdblocks=fdblocks,
            inoalignmt=self.chunk_blocks, logsunit=self.sect if self.sect != 512 else 1,
            logsectlog=self.sect.bit_length() - 1 if self.sect != 512 else 0,
            logsectsize=self.sect if self.sect != 512 else 0, features2=SB_FEATURES2,
            bad_features2=SB_FEATURES2, features_ro_compat=RO_COMPAT_FINOBT | RO_COMPAT_INOBTCNT,
            features_incompat=INCOMPAT_FTYPE | INCOMPAT_SPINODES | INCOMPAT_BIGTIME,
            spino_align=max(1, (8192 * self.isize // 256) // BS))
        set_crc(sb, SB_CRC_OFF)
        for a in range(g.agcount):
            self.out.pwrite(sb, g.byte(a, 0))

    def emit_log(self, plan: Plan) -> None:
        """A clean log: one record at block 0 holding an unmount op (libxfs_log_header's shape);
        with 4 KiB log sectors the record fills the sector, every 512-byte block stamped with
        the cycle. The rest of the log stays zero (a hole): the kernel reads it as never written."""
        g = plan.geom
        la, lb = plan.logstart
        length = max(1024, self.sect if self.sect != 512 else 0)
        rec = bytearray(length)
        op = LOG_OP_HDR.pack(0xB0C0D0D0, 8, LOG_CLIENT, LOG_UNMOUNT_TRANS, 0)
        body = bytearray(512)
        body[:len(op)] = op
        struct.pack_into("<HHI", body, len(op), LOG_UNMOUNT_TYPE, 0, 0)  # host-endian in mkfs (x86)
        first_word = struct.unpack_from(">I", body, 0)[0]
        struct.pack_into(">I", body, 0, 1)  # the cycle stamped over the first word
        lsn = 1 << 32
        rec[:LOG_REC_HDR.size] = LOG_REC_HDR.pack(
            magicno=LOG_MAGIC, cycle=1, version=2, len=length - 512, lsn=lsn, tail_lsn=lsn, crc=0,
            prev_block=0xFFFFFFFF, num_logops=1, cycle_data0=first_word, fmt=LOG_FMT_LINUX_LE,
            fs_uuid=self.uuid, size=LOG_BIG_RECORD_BSIZE)
        rec[512:1024] = body
        for bb in range(1024, length, 512):
            struct.pack_into(">I", rec, bb, 1)
        self.out.pwrite(rec, g.byte(la, lb))

    # -- driver ------------------------------------------------------------------
    def estimate(self) -> int:
        blocks = _ceil(len(self.nodes) + 2, INODES_PER_CHUNK) * self.chunk_blocks
        for n in self.nodes:
            if n.kind is Kind.FILE:
                runs, _ = self.runs_of(n)
                nb = sum(c for _, c in runs)
                blocks += nb + (len(runs) // 200 + 1 if len(runs) > 16 else 0)
            elif n.kind is Kind.DIR and len(n.children) > 8:
                size = sum(len(encode_name(k)) + 16 for k in n.children)
                blocks += _ceil(size * 5 // 4, BS) + 2
            elif n.kind is Kind.SYMLINK:
                blocks += 1
            if n.xattrs:
                blocks += 1 + sum(len(v) for v in n.xattrs.values()) // 2000
        return blocks

    def run(self) -> int:
        from . import FORMAT
        check_tree(FORMAT, self.tree, self.params.where)  # ids, times, devices, symlinks, names
        self.collect()
        p = self.params
        if p.size is not None:
            dblocks = p.size // BS
            try:
                geom, logblocks = self.geometry(dblocks, exact=True)
                try:
                    plan = self.plan(geom, logblocks)
                except _NoSpace:  # fill the AGs to the brim rather than fail
                    plan = self.plan(geom, logblocks, keep_free=False)
            except _NoSpace as e:
                raise CapacityError(f"the tree does not fit in {p.size} bytes of xfs (no room for {e})",
                                    where=p.where) from None
            size = p.size
        else:
            need = self.estimate() + _ceil(p.headroom, BS)
            dblocks = need + self.small_log + 4 * (self.ag_hdr_blocks + AGFL_FILL + self.chunk_blocks) + 64
            if dblocks >= SMALL_FS:  # mkfs.xfs's log for larger devices
                dblocks = need + self.geometry(dblocks, exact=False)[1] + 4 * 64 + 64
            dblocks = max(dblocks, 2 * (self.small_log + 128), MIN_AG_BLOCKS)
            g0, l0 = self.geometry(dblocks, exact=False)
            dblocks += sum(self.finobt_reserve(g0, a, l0) + 8 for a in range(g0.agcount))
            for attempt in range(60):
                try:
                    geom, logblocks = self.geometry(dblocks, exact=False)
                    plan = self.plan(geom, logblocks)
                    free = sum(e - s for a in range(geom.agcount) for s, e in plan.alloc.free[a])
                    if free * BS >= p.headroom:
                        break
                except _NoSpace:
                    pass
                p.log(f"xfs: {dblocks} blocks are not enough, trying more")
                dblocks = dblocks + max(dblocks // 16, 256)
            else:
                raise CapacityError("could not find an xfs size that holds the tree", where=p.where)
            size = geom.dblocks * BS
        g = plan.geom
        p.log(f"xfs: {g.dblocks} blocks of {BS}, {g.agcount} AGs of {g.agblocks}, "
              f"{len(plan.chunks)} inode chunks, log {plan.logblocks} blocks in AG {plan.logstart[0]}")
        self.out.truncate(size)
        self.emit(plan)
        if not p.sparse:
            _fill_holes(self.out, size)
        return size


def _fill_holes(out: ImageFile, size: int) -> None:
    """`sparse = false`: write zeros over every hole the image file has."""
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
        write_zeros(out, hole, end - hole)
        pos = end


def write(tree: Tree, out: ImageFile, params: FsParams) -> int:
    """Write an XFS v5 filesystem of `tree` to `out`; return the image size in bytes."""
    return XfsWriter(tree, out, params).run()
