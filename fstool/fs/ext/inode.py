"""ext inodes: numbering the tree, each inode's block needs, and the packed inode tables.

Invariants: inode numbers follow `Tree.walk()` order (root 2, lost+found 11, the rest from
12; a hardlinked Node gets one inode); directory listings are sorted by name bytes; a file's
data runs come from its source's data segments (holes are never allocated, never read); an
inode's checksum (metadata_csum) covers the whole inode with both checksum halves zero.
"""
from __future__ import annotations

import heapq
from dataclasses import dataclass
from typing import Iterator

from ...errors import CapacityError, InputError
from ...sizes import format_size
from ...tree import Kind, Node, Tree, encode_name
from ...zeros import content_segments, scan_ahead
from . import xattr
from .dir import DirBuilder
from .extent import EMPTY_INDIRECT, mapping_blocks
from .format import (
    EXTRA_ISIZE, FIRST_INO, FT_BLK, FT_CHR, FT_DIR, FT_FIFO, FT_REG, FT_SOCK, FT_SYMLINK,
    GOOD_OLD_INODE_SIZE, HUGE_FILE_FL, I_BLOCK_SIZE, INDEX_FL, INODE, INODE_EXTRA, JOURNAL_INO,
    LPF_INO, NDIR_BLOCKS, ROOT_INO, csum, encode_time, indirect_bounds, inode_csum_seed,
)
from .options import ExtOptions

M32 = 0xFFFFFFFF
MAX_LINKS = 65000
FT = {Kind.FILE: FT_REG, Kind.DIR: FT_DIR, Kind.CHR: FT_CHR, Kind.BLK: FT_BLK, Kind.FIFO: FT_FIFO,
      Kind.SOCK: FT_SOCK, Kind.SYMLINK: FT_SYMLINK}
LPF_BYTES = 16384  # as mke2fs: lost+found gets 16 KiB of empty blocks (2..12 blocks)

MIN_BLOCK = 1024  # the smallest ext block size


class Ino:
    """One inode being planned. Its lists start as one shared empty tuple and are replaced
(never appended to) when the inode has content: a million empty files own no lists."""

    __slots__ = ("ino", "node", "kind", "mode", "uid", "gid", "mtime", "mtime_ns", "nlink", "size",
                 "flags", "segs", "runs", "nblocks", "dirblocks", "target", "xin", "xblock",
                 "extents", "meta", "iblock", "nmeta")

    def __init__(self, ino: int, kind: Kind, node: Node | None):
        self.ino, self.kind, self.node = ino, kind, node
        self.mode = self.uid = self.gid = self.mtime = self.mtime_ns = 0
        self.nlink, self.size, self.flags = 1, 0, 0
        self.segs: list[tuple[int, int, int]] | tuple = ()
        self.runs: list[tuple[int, int]] | tuple = ()  # logical (start, end) block runs
        self.nblocks = 0                          # data (or directory) blocks
        self.nmeta = 0                            # indirect blocks (exact) or extent-tree estimate
        self.dirblocks: list[bytes] | None = None
        self.target: bytes | None = None
        self.xin = b""                            # in-inode xattr area
        self.xblock: xattr.XBlock | None = None
        self.extents: list[tuple[int, int, int]] | tuple = ()  # placed: (logical, length, physical)
        self.meta: list[int] | tuple = ()         # placed: extent-tree or indirect blocks
        self.iblock = EMPTY_INDIRECT  # all zero until the inode maps something


@dataclass
class Inventory:
    """Phase 1: every inode of the tree, numbered, with its metadata and data runs."""

    inos: list[Ino]              # sorted by inode number (without the journal)
    num: dict[Node, int]         # node -> inode number (keyed by identity, no id() ints)
    last_ino: int                # the highest inode number used
    make_lpf: bool               # lost+found is made here (the tree has none)
    parents: dict[int, int]      # directory inode -> its parent's
    xattrs: xattr.XattrBlocks    # the shared xattr blocks
    data_bytes: int              # bytes of file data (holes excluded)


def collect(tree: Tree, cfg: ExtOptions, ts: int, grain: int = MIN_BLOCK) -> Inventory:
    """Every inode of the tree, numbered, with its metadata and its files' data segments.
    grain: a block size the final one is a multiple of (layout.smallest_block_size); the
    segments leave out the all-zero pieces of that size, which tells for every larger block
    whether it holds data."""
    root = tree.root
    lpf_node = root.children.get("lost+found")
    lpf_from_source = lpf_node is not None and lpf_node.kind is Kind.DIR
    make_lpf = lpf_node is None and cfg.lost_found
    inos: list[Ino] = [Ino(ROOT_INO, Kind.DIR, root)]
    num: dict[Node, int] = {root: ROOT_INO}
    nxt = FIRST_INO
    if make_lpf or lpf_from_source:
        nxt += 1
    for _path, node in tree.walk():
        if node in num:
            continue
        if lpf_from_source and node is lpf_node:
            n = LPF_INO
        else:
            n = nxt
            nxt += 1
        num[node] = n
        inos.append(Ino(n, node.kind, node))
    if make_lpf:
        lpf = Ino(LPF_INO, Kind.DIR, None)
        lpf.mode, lpf.mtime, lpf.nlink = 0o700, ts, 2
        inos.append(lpf)
    inos.sort(key=lambda i: i.ino)
    shared = xattr.XattrBlocks()
    data_bytes = 0
    # the files' zero blocks are found by a second thread as well (fstool.zeros.scan_ahead)
    with scan_ahead((r.node.source for r in inos if r.kind is Kind.FILE and r.node is not None), grain):
        for r in inos:
            node = r.node
            if node is None:
                continue
            mode = node.mode  # the node's own int when it is only permission bits (no copy per inode)
            r.mode, r.uid, r.gid = mode if mode <= 0o7777 else mode & 0o7777, node.uid, node.gid
            r.mtime, r.mtime_ns = node.mtime, node.mtime_ns
            r.nlink = tree.nlink(node)
            if r.kind is Kind.DIR:
                if node is root and make_lpf:
                    r.nlink += 1
                if r.nlink > MAX_LINKS:
                    if not cfg.dir_nlink:
                        raise CapacityError(f"a directory with {r.nlink - 2} subdirectories needs "
                                            f"dir_nlink (ext4); ext2/ext3 allow {MAX_LINKS - 2}",
                                            where=node.where())
                    r.nlink = 1
            elif r.nlink > MAX_LINKS:
                raise CapacityError(f"{r.nlink} hard links to one file; ext allows {MAX_LINKS}",
                                    where=node.where())
            if r.kind is Kind.FILE and node.source is not None and node.size:
                r.size = node.size
                # non-zero pieces of grain bytes: right for every multiple of it (a block is
                # allocated when any piece of it holds data), and what the bytes say, whatever
                # the host's holes
                r.segs = content_segments(node.source, grain)
                data_bytes += sum(s[1] for s in r.segs)
            elif r.kind is Kind.SYMLINK:
                r.target = encode_name(node.target or "")
                r.size = len(r.target)
                if not r.target:
                    raise InputError("empty symlink target", where=node.where())
            if node.xattrs:
                r.xin, r.xblock = xattr.place(node, cfg.inode_size, shared)
    parents: dict[int, int] = {}
    for r in inos:
        if r.kind is Kind.DIR and r.node is not None:
            for child in r.node.children.values():
                if child.kind is Kind.DIR:
                    parents[num[child]] = r.ino
    return Inventory(inos, num, nxt - 1, make_lpf, parents, shared, data_bytes)


def _dir_entries(inv: Inventory, tree: Tree, r: Ino) -> list[tuple[bytes, int, int]]:
    entries = [(encode_name(name), inv.num[child], FT[child.kind])
               for name, child in r.node.sorted_children()]
    if r.node is tree.root and inv.make_lpf:
        entries.append((b"lost+found", LPF_INO, FT_DIR))
        entries.sort(key=lambda e: e[0])
    return entries


@dataclass
class Content:
    """Phase 2, for one block size: what every inode needs, in blocks."""

    bs: int
    blocks: int           # data, directory, xattr and (estimated) mapping blocks
    dirs: DirBuilder      # dirs.largedir: a directory needed a 3-level HTree


def plan_content(inv: Inventory, tree: Tree, cfg: ExtOptions, bs: int, fs_seed: int) -> Content:
    """Each inode's logical runs and block counts at block size bs (directories are built here)."""
    db = DirBuilder(bs, cfg.csum, fs_seed, cfg.dir_index, cfg.hash_seed)
    total = 0
    for xb in inv.xattrs.blocks:
        ent, val = xattr.space(xb.entries)
        if xattr.block_bytes_needed(xb.entries) > bs:
            raise InputError(f"extended attributes of {ent + val} bytes do not fit in one "
                             f"{bs}-byte block (ext stores at most one block per inode)")
        total += 1
    max_ind = indirect_bounds(bs)[3]
    for r in inv.inos:
        r.nmeta = 0
        if r.kind is Kind.DIR:
            if r.ino == LPF_INO and r.node is None:
                blocks = db.build(LPF_INO, ROOT_INO, [])[0]
                want = min(NDIR_BLOCKS, max(2, LPF_BYTES // bs))
                blocks += [db.empty_block(db.iseed(LPF_INO))] * (want - len(blocks))
                indexed = False
            else:
                blocks, indexed = db.build(r.ino, inv.parents.get(r.ino, ROOT_INO), _dir_entries(inv, tree, r))
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
            r.runs = [(a, b) for a, b in runs] if runs else ()
            r.nblocks = sum(b - a for a, b in runs)
            if runs and runs[-1][1] > (max_ind if not cfg.extents else 1 << 32):
                raise CapacityError(f"a file of {format_size(r.size)} is too large for {cfg.fs_type} "
                                    f"with {bs}-byte blocks", where=r.node.where())
        elif r.kind is Kind.SYMLINK:
            if len(r.target) < I_BLOCK_SIZE:  # a fast symlink: the target sits in i_block
                r.nblocks = 0
            else:
                if len(r.target) >= bs:
                    raise InputError(f"symlink target of {len(r.target)} bytes is too long for "
                                     f"{bs}-byte blocks", where=r.node.where())
                r.nblocks = 1
                r.runs = [(0, 1)]
        if r.nblocks:
            r.nmeta = mapping_blocks(r.runs, bs, cfg.extents)
        total += r.nblocks + r.nmeta
    return Content(bs, total, db)


# -- packing ----------------------------------------------------------------------------
def _inode_bytes(isz: int, base: dict, extra: dict, xin: bytes) -> bytes:
    """The inode: its 128 bytes, then (large inodes) the extra fields and the in-inode
    xattr area, zero-padded to the inode size."""
    raw = INODE.pack(**base)
    if isz > GOOD_OLD_INODE_SIZE:
        raw += INODE_EXTRA.pack(**extra) + xin
    return raw + bytes(isz - len(raw))


def pack_inode(r: Ino, cfg: ExtOptions, bs: int, fs_seed: int) -> bytes:
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
    raw = _inode_bytes(isz, base, extra, r.xin)
    if cfg.csum:
        c = csum(inode_csum_seed(fs_seed, r.ino), raw)
        base["checksum_lo"] = c & 0xFFFF
        extra["checksum_hi"] = c >> 16
        raw = _inode_bytes(isz, base, extra, r.xin)
    return raw


def reserved_inode(ino: int, cfg: ExtOptions, fs_seed: int, ts: int) -> bytes:
    """Inodes 1..10 that hold nothing: zeros (inode 1 with the fs times), checksummed."""
    base: dict = {}
    if ino == 1:
        t, _ = encode_time(ts)
        base = dict(atime=t, ctime=t, mtime=t)
    pad = bytes(cfg.inode_size - INODE.size)
    raw = INODE.pack(**base) + pad
    if cfg.csum:
        base["checksum_lo"] = csum(inode_csum_seed(fs_seed, ino), raw) & 0xFFFF
        raw = INODE.pack(**base) + pad
    return raw


def inode_tables(inos: list[Ino], journal: Ino | None, cfg: ExtOptions, bs: int, fs_seed: int,
                 ts: int, ipg: int) -> Iterator[tuple[int, bytearray]]:
    """(group, its inode table up to the last used inode, padded to whole blocks), group by
    group in rising order: one group's table is in memory at a time, each inode packed straight
    into it. `inos` are sorted by inode number (Inventory's invariant)."""
    isz = cfg.inode_size
    fixed: list[tuple[int, bytes | Ino]] = [
        (i, reserved_inode(i, cfg, fs_seed, ts)) for i in range(1, FIRST_INO)
        if i not in (ROOT_INO, JOURNAL_INO) or (i == JOURNAL_INO and journal is None)]
    if journal is not None:
        fixed.append((JOURNAL_INO, journal))
        fixed.sort(key=lambda x: x[0])
    group, table = -1, bytearray()
    for ino, item in heapq.merge(fixed, ((r.ino, r) for r in inos), key=lambda x: x[0]):
        g, idx = divmod(ino - 1, ipg)
        if g != group:
            if group >= 0:
                table += bytes(-len(table) % bs)
                yield group, table
            group, table = g, bytearray()
        off = idx * isz
        if len(table) < off:
            table += bytes(off - len(table))
        table += item if isinstance(item, bytes) else pack_inode(item, cfg, bs, fs_seed)
    if group >= 0:
        table += bytes(-len(table) % bs)
        yield group, table
