"""F2FS writer: a Tree to an F2FS image, laid out as mkfs.f2fs lays out the metadata.

Layout (f2fs-tools' mkfs): superblock copies in blocks 0 and 1, then from
segment 0 the two checkpoint packs, the SIT (two copies), the NAT (two copies),
the SSA and the main area. In the main area this writer puts every data block
first (one run per file, directory dentry blocks and symlink targets), then every
node block (inodes, direct and indirect nodes); the segment holding the last data
block is the hot data log and the one holding the last node block the hot node
log; the four other logs get fresh empty segments after them. The SIT and NAT
are written whole in their first copies (the checkpoint's version bitmaps are
zero), the summaries of full segments go to the SSA and those of the logs into
the checkpoint pack, as an unmounted filesystem has them.

Invariants: file data streams with ImageFile.copy_from; whole-hole blocks are not
allocated (NULL_ADDR), so holes stay holes; free segments are never written.
"""
from __future__ import annotations

import os
import re
import struct
from dataclasses import dataclass

from ...errors import CapacityError, InputError, SpecError
from ...ids import derive_u32, derive_uuid, parse_uuid
from ...image import ImageFile
from ...sizes import format_size
from ...tree import Kind, Node, Tree, encode_name
from ...zeros import content_segments
from ..base import FsParams, OptionReader
from .layout import (ADDRS_PER_BLOCK, ADDRS_PER_INODE, BLOCK, BLOCKS_PER_SEG, CHECKPOINT,
                     CHECKSUM_OFFSET, CP_STRUCT_SIZE, CP_UMOUNT_FLAG, CURSEG_COLD_DATA,
                     CURSEG_COLD_NODE, CURSEG_HOT_DATA, CURSEG_HOT_NODE, CURSEG_WARM_DATA,
                     CURSEG_WARM_NODE, DENTRY_BITMAP_SIZE, DENTRY_RESERVED, DIR_ENTRY,
                     FOOTER_OFFSET, FT_BLKDEV, FT_CHRDEV, FT_DIR, FT_FIFO, FT_REG_FILE, FT_SOCK,
                     FT_SYMLINK, INODE, INODE_ADDR_OFFSET, INODE_NID_OFFSET, LOG_BLOCKS_PER_SEG,
                     MAJOR_VER, MAX_DIR_HASH_DEPTH, META_INO, MINOR_VER, NAT_ENTRY,
                     NAT_ENTRY_PER_BLOCK, NIDS_PER_BLOCK, NODE_FOOTER, NODE_INO,
                     NR_DENTRY_IN_BLOCK, ROOT_INO, SIT_ENTRY, SIT_ENTRY_PER_BLOCK, SLOT_LEN,
                     SUM_FOOTER_OFFSET, SUM_TYPE_DATA, SUM_TYPE_NODE, SUMMARY, SUMMARY_FOOTER,
                     SUPER, SUPER_MAGIC, SUPER_OFFSET, bucket_blocks, crc32, dentry_hash,
                     dir_block_index, dir_buckets, XATTR_NODE_OFFSET, XATTR_MAGIC,
                     XATTR_BLOCK_SIZE, XATTR_HEADER, XATTR_ENTRY, XATTR_INDEX, XATTR_ACL, ACL_VERSION,
                     ACL_SHORT_TAGS, INLINE_XATTR, INLINE_DATA, DATA_EXIST, INLINE_XATTR_ADDRS,
                     INLINE_DENTRY, FEATURES, EXTRA_ISIZE, INODE_CHECKSUM_OFFSET, SB_CHECKSUM_OFFSET,
                     EXTRA_ATTR)

MiB = 1 << 20
INLINE_XATTR_BYTES = 4 * INLINE_XATTR_ADDRS
SEG_BYTES = BLOCK * BLOCKS_PER_SEG
MIN_SEGMENTS = 9
_FT = {Kind.FILE: FT_REG_FILE, Kind.DIR: FT_DIR, Kind.CHR: FT_CHRDEV, Kind.BLK: FT_BLKDEV,
       Kind.FIFO: FT_FIFO, Kind.SOCK: FT_SOCK, Kind.SYMLINK: FT_SYMLINK}


def _ceil(n: int, d: int) -> int:
    return (n + d - 1) // d


@dataclass(frozen=True)
class Options:
    overprovision: float | None = None  # mkfs.f2fs -o, percent; None: mkfs.f2fs's best
    inline_data: bool = True  # small files and symlink targets inside their inode
    inline_xattr: bool = True  # 200 bytes of every inode for xattrs (the kernel's default)
    inline_dentry: bool = True  # small directories inside their inode
    features: tuple[str, ...] = ()  # mkfs.f2fs -O: extra_attr, inode_checksum, sb_checksum


def parse_options(params: FsParams) -> Options:
    r = OptionReader(params.options, where=f"{params.where}.options")
    ovp = r.get_str("overprovision", None)
    inline_data = r.get_bool("inline_data", True)
    inline_xattr = r.get_bool("inline_xattr", True)
    inline_dentry = r.get_bool("inline_dentry", True)
    raw = r._raw("features")
    features: tuple[str, ...] = ()
    if raw is not None:
        # a TOML list, or one string ("extra_attr,inode_checksum"; -O splits at commas, so
        # the command line writes "extra_attr:inode_checksum" or "extra_attr+inode_checksum")
        items = re.split(r"[,:+\s]+", raw) if isinstance(raw, str) else raw
        if not isinstance(items, list | tuple) or not all(isinstance(i, str) for i in items):
            raise SpecError("expected a list of feature names", where=f"{params.where}.options.features")
        features = tuple(sorted({i.strip() for i in items if i.strip()}))
        for f in features:
            if f not in FEATURES:
                raise SpecError(f"unknown or unsupported feature {f!r}; supported: "
                                f"{', '.join(sorted(FEATURES))}", where=f"{params.where}.options.features")
        if "inode_checksum" in features and "extra_attr" not in features:
            raise SpecError("inode_checksum needs extra_attr (as mkfs.f2fs says)",
                            where=f"{params.where}.options.features")
    r.finish()
    value = None
    if ovp is not None:
        try:
            value = float(ovp)
        except ValueError:
            raise SpecError(f"expected a percentage, got {ovp!r}",
                            where=f"{params.where}.options.overprovision") from None
        if not 0 < value < 100:
            raise SpecError(f"must be between 0 and 100; got {ovp}",
                            where=f"{params.where}.options.overprovision")
    if params.block_size not in (None, BLOCK):
        raise SpecError("F2FS blocks are 4096 bytes", where=f"{params.where}.block_size")
    return Options(value, inline_data, inline_xattr, inline_dentry, features)


# -- geometry -----------------------------------------------------------------------

@dataclass(frozen=True)
class Geometry:
    block_count: int
    segment_count: int
    seg_sit: int
    seg_nat: int
    seg_ssa: int
    main_segs: int
    cp_payload: int
    overprovision: float
    reserved: int
    ovp_segs: int

    segment0 = BLOCKS_PER_SEG  # the first 2 MiB zone holds the superblocks

    @property
    def cp_blkaddr(self) -> int:
        return self.segment0

    @property
    def sit_blkaddr(self) -> int:
        return self.segment0 + 2 * BLOCKS_PER_SEG

    @property
    def nat_blkaddr(self) -> int:
        return self.sit_blkaddr + self.seg_sit * BLOCKS_PER_SEG

    @property
    def ssa_blkaddr(self) -> int:
        return self.nat_blkaddr + self.seg_nat * BLOCKS_PER_SEG

    @property
    def main_blkaddr(self) -> int:
        return self.ssa_blkaddr + self.seg_ssa * BLOCKS_PER_SEG

    @property
    def user_blocks(self) -> int:
        return (self.main_segs - self.ovp_segs) * BLOCKS_PER_SEG


def _best_overprovision(main_segs: int) -> float:
    """mkfs.f2fs's get_best_overprovision: the ratio that leaves the most user space."""
    if main_segs < 256:
        cand, end, diff = 10.0, 95.0, 5.0
    else:
        cand, end, diff = 0.01, 10.0, 0.01
    best, best_space = 0.0, 0.0
    while cand <= end:
        reserved = 2 * (100 / cand + 1) + 6
        ovp = (main_segs - reserved) * cand / 100
        space = main_segs - reserved - ovp
        if best_space < space:
            best_space, best = space, cand
        cand += diff
    return best


def geometry_for(size: int, opts: Options) -> Geometry:
    """mkfs.f2fs's layout for a device of `size` bytes (512-byte sectors, 2 MiB zones)."""
    segment_count = (size - SEG_BYTES) // SEG_BYTES if size > SEG_BYTES else 0
    if segment_count < MIN_SEGMENTS:
        raise SpecError(f"{format_size(size)} is too small for F2FS (at least {MIN_SEGMENTS + 1} "
                        "segments of 2 MiB)")
    blocks_for_sit = _ceil(segment_count, SIT_ENTRY_PER_BLOCK)
    seg_sit = 2 * _ceil(blocks_for_sit, BLOCKS_PER_SEG)
    valid = (segment_count - (2 + seg_sit)) * BLOCKS_PER_SEG
    seg_nat = _ceil(_ceil(valid, NAT_ENTRY_PER_BLOCK), BLOCKS_PER_SEG)
    sit_bitmap = ((seg_sit // 2) << LOG_BLOCKS_PER_SEG) // 8
    room = CHECKSUM_OFFSET - (CP_STRUCT_SIZE + 1) + 1
    if sit_bitmap > room - 64:
        max_nat_bitmap = room
        cp_payload = _ceil(sit_bitmap, BLOCK)
    else:
        max_nat_bitmap = room - sit_bitmap
        cp_payload = 0
    seg_nat = 2 * min(seg_nat, (max_nat_bitmap * 8) >> LOG_BLOCKS_PER_SEG)
    valid = (segment_count - (2 + seg_sit + seg_nat)) * BLOCKS_PER_SEG
    seg_ssa = _ceil(valid // BLOCKS_PER_SEG + 1, BLOCKS_PER_SEG)
    main_segs = segment_count - (2 + seg_sit + seg_nat + seg_ssa)
    if main_segs <= 6:
        raise SpecError(f"{format_size(size)} is too small for F2FS")
    ovp = opts.overprovision or _best_overprovision(main_segs)
    if ovp <= 0:
        raise SpecError(f"{format_size(size)} is too small for F2FS")
    reserved = int(2 * (100 / ovp + 1) + 6)
    if main_segs - 2 < reserved:
        raise SpecError(f"{format_size(size)} is too small for F2FS")
    ovp_segs = int((main_segs - reserved) * ovp / 100) + reserved
    return Geometry(size // BLOCK, segment_count, seg_sit, seg_nat, seg_ssa, main_segs, cp_payload,
                    ovp, reserved, ovp_segs)


# -- the plan -------------------------------------------------------------------------

@dataclass(eq=False, slots=True)
class _Inode:
    """One inode being planned. Its sequences start as one shared empty tuple (or None) and are
    replaced only where the inode has them: an empty file owns none."""

    ino: int
    node: Node
    kind: Kind
    parent: int
    name: str  # its first name (the tree's own string), encoded when the inode is packed
    links: int = 1
    data: list[int] | tuple = ()  # block index -> data block number (rel) or -1 hole
    dentry_blocks: dict[int, bytearray] | None = None  # a directory without inline dentries
    depth: int = 0
    nodes: list["_NodeBlock"] | tuple = ()  # direct and indirect nodes
    size: int = 0
    xattrs: bytes = b""  # the xattr block's contents, if any
    xattr_nid: int = 0
    inline_xattrs: bytes = b""  # the inline xattr area's contents
    inline: int = 0  # i_inline flags
    inline_data: bytes = b""
    segs: list | None = None  # FILE: its non-zero data segments, found once (_data_of)


def _data_of(rec: "_Inode") -> list:
    """The file's data as its bytes say (zero blocks are holes, whatever the host stores)."""
    if rec.segs is None:
        rec.segs = content_segments(rec.node.source, BLOCK) if rec.node.size else []
    return rec.segs


@dataclass(eq=False, slots=True)
class _NodeBlock:
    nid: int
    ino: int
    ofs: int  # the node offset in the footer
    kind: str  # inode, xattr, direct, indirect
    payload: list[int] | tuple  # direct: data blocks (main-relative, -1 a hole); indirect: child nids


def _inline_dentries(entries: list[tuple[bytes, int, int]], self_ino: int, parent_ino: int,
                     area: int) -> bytes | None:
    """The inline dentry area of a directory (an `area`-byte region of its inode), or None
    if the names do not fit. Slots as in a dentry block, fewer of them; no hash buckets."""
    nr = area * 8 // ((DIR_ENTRY.size + SLOT_LEN) * 8 + 1)
    bitmap = _ceil(nr, 8)
    ents = bitmap + (area - ((DIR_ENTRY.size + SLOT_LEN) * nr + bitmap))
    names = ents + nr * DIR_ENTRY.size
    out = bytearray(area)
    slot = 0
    for name, ino, ftype in [(b".", self_ino, FT_DIR), (b"..", parent_ino, FT_DIR)] + entries:
        n = _ceil(len(name), SLOT_LEN)
        if slot + n > nr:
            return None
        DIR_ENTRY.pack_into(out, ents + slot * DIR_ENTRY.size, dentry_hash(name), ino, len(name), ftype)
        out[names + slot * SLOT_LEN:names + slot * SLOT_LEN + len(name)] = name
        for k in range(slot, slot + n):
            out[k >> 3] |= 1 << (k & 7)
        slot += n
    return bytes(out)


def _dir_blocks(entries: list[tuple[bytes, int, int]], self_ino: int, parent_ino: int
                ) -> tuple[dict[int, bytearray], int]:
    """Dentry blocks of a directory: (block index -> block, hash depth), placed as the kernel
    places them (each name in the bucket its hash picks, at the first level with room)."""
    blocks: dict[int, bytearray] = {}
    used: dict[int, bytearray] = {}  # block index -> slot bitmap (one byte per slot)

    def block(idx: int) -> bytearray:
        if idx not in blocks:
            blocks[idx] = bytearray(BLOCK)
            used[idx] = bytearray(NR_DENTRY_IN_BLOCK)
        return blocks[idx]

    def put(idx: int, slot: int, name: bytes, ino: int, ftype: int, h: int) -> None:
        b = block(idx)
        n = _ceil(len(name), SLOT_LEN)
        for s in range(slot, slot + n):
            used[idx][s] = 1
            b[s >> 3] |= 1 << (s & 7)
        DIR_ENTRY.pack_into(b, DENTRY_BITMAP_SIZE + DENTRY_RESERVED + slot * DIR_ENTRY.size, h, ino,
                            len(name), ftype)
        off = DENTRY_BITMAP_SIZE + DENTRY_RESERVED + NR_DENTRY_IN_BLOCK * DIR_ENTRY.size + slot * SLOT_LEN
        b[off:off + len(name)] = name

    def room(idx: int, n: int) -> int:
        block(idx)
        return used[idx].find(bytes(n))  # the first run of n free slots

    put(0, 0, b".", self_ino, FT_DIR, 0)
    put(0, 1, b"..", parent_ino, FT_DIR, 0)
    depth = 1
    for name, ino, ftype in entries:
        h = dentry_hash(name)
        n = _ceil(len(name), SLOT_LEN)
        for level in range(MAX_DIR_HASH_DEPTH):
            bucket = h % dir_buckets(level)
            first = dir_block_index(level, bucket)
            for idx in range(first, first + bucket_blocks(level)):
                fresh = idx not in blocks
                slot = room(idx, n)
                if slot >= 0:
                    put(idx, slot, name, ino, ftype, h)
                    depth = max(depth, level + 1)
                    break
                if fresh:  # an empty block always has room; keep the probe from leaving junk
                    del blocks[idx], used[idx]
            else:
                continue
            break
        else:  # pragma: no cover - 63 levels of hash buckets
            raise CapacityError("directory is too large for F2FS's hash levels")
    return blocks, depth


def _acl(value: bytes, where: str) -> bytes:
    """A POSIX ACL xattr (version 2, 8-byte entries) in F2FS's on-disk form."""
    if len(value) < 4 or (len(value) - 4) % 8 or int.from_bytes(value[:4], "little") != 2:
        raise InputError("malformed POSIX ACL xattr", where=where)
    out = bytearray(ACL_VERSION.to_bytes(4, "little"))
    for pos in range(4, len(value), 8):
        tag, perm, ident = struct.unpack_from("<HHI", value, pos)
        out += struct.pack("<HH", tag, perm) if tag in ACL_SHORT_TAGS else struct.pack("<HHI", tag, perm, ident)
    return bytes(out)


def xattr_block(xattrs: dict[str, bytes], where: str, inline: int = 0) -> bytes:
    """The xattr buffer (header, entries, end mark), or b"" for none: the first `inline` bytes
    go to the inode's inline xattr area, the rest to an xattr node block."""
    if not xattrs:
        return b""
    entries = []
    for key, value in xattrs.items():
        if key in XATTR_ACL:
            index, name, value = XATTR_ACL[key], b"", _acl(value, f"{where}: {key}")
        else:
            for prefix, index in XATTR_INDEX:
                if key.startswith(prefix):
                    name = os.fsencode(key[len(prefix):])
                    break
            else:
                raise InputError(f"F2FS cannot store the xattr {key!r} (user., trusted., security. "
                                 "and POSIX ACLs only)", where=where)
        entries.append((index, name, value))
    out = bytearray(XATTR_HEADER.pack(XATTR_MAGIC, 1, bytes(16)))
    for index, name, value in sorted(entries):
        e = XATTR_ENTRY.pack(index, len(name), len(value)) + name + value
        out += e + bytes(-len(e) % 4)
    out += bytes(4)
    if len(out) > XATTR_BLOCK_SIZE + inline:
        raise CapacityError(f"xattrs take {len(out)} bytes; F2FS holds {XATTR_BLOCK_SIZE + inline} "
                            "per inode", where=where)
    return bytes(out)


@dataclass
class _Plan:
    """What goes where: inodes by number, data blocks and node blocks counted from the start
    of their own runs in the main area, and the address slots an inode holds itself."""

    inodes: dict[int, _Inode]
    nodes: list[_NodeBlock]
    ndata: int
    next_nid: int
    addrs: int
    extra: int = 0  # i_addr words taken by the extra attributes

    @property
    def data_segs(self) -> int:  # the last one is the hot data log, maybe empty
        return self.ndata // BLOCKS_PER_SEG + 1

    @property
    def node_segs(self) -> int:  # the last one is the hot node log, maybe empty
        return len(self.nodes) // BLOCKS_PER_SEG + 1

    @property
    def used_segs(self) -> int:  # and the four empty logs
        return self.data_segs + self.node_segs + 4

    @property
    def blocks(self) -> int:
        return self.ndata + len(self.nodes)


def _plan_inodes(tree: Tree, opts: Options, dentry_area: int) -> dict[int, _Inode]:
    """Inode numbers (root 3, then one per distinct node in walk order), links, xattrs and
    directory contents."""
    inodes: dict[int, _Inode] = {}
    by_node: dict[Node, _Inode] = {}  # keyed by node (identity): no id() int, no path per entry
    dirs: list[_Inode] = []
    nxt = ROOT_INO
    # Tree.walk's order (pre-order, children by name bytes), carrying each entry's name object
    # and its parent's inode number; paths are made for the walk only
    stack: list[tuple[str, str, Node, int]] = [("/", "", tree.root, ROOT_INO)]
    while stack:
        path, name, node, parent = stack.pop()
        rec = by_node.get(node)
        if rec is None:
            rec = by_node[node] = inodes[nxt] = _Inode(nxt, node, node.kind, parent, name)
            nxt += 1
            if node.kind is Kind.DIR:
                dirs.append(rec)
            _plan_xattrs(rec, path, opts)
        else:
            rec.links += 1
        if node.kind is Kind.DIR:
            base = path.rstrip("/")
            for n, c in reversed(node.sorted_children()):
                stack.append((f"{base}/{n}", n, c, rec.ino))
    for rec in dirs:
        entries = [(encode_name(n), by_node[c].ino, _FT[c.kind]) for n, c in rec.node.sorted_children()]
        inline = _inline_dentries(entries, rec.ino, rec.parent, dentry_area) if opts.inline_dentry else None
        if inline is not None:
            rec.inline |= INLINE_DENTRY
            rec.inline_data = inline
            rec.depth = 1
        else:
            rec.dentry_blocks, rec.depth = _dir_blocks(entries, rec.ino, rec.parent)
        rec.links = 2 + sum(1 for c in rec.node.children.values() if c.kind is Kind.DIR)
    return inodes


def _plan_xattrs(rec: _Inode, path: str, opts: Options) -> None:
    full = xattr_block(rec.node.xattrs, path, INLINE_XATTR_BYTES if opts.inline_xattr else 0)
    if opts.inline_xattr:
        # the inline area and the xattr block hold one buffer, in that order
        rec.inline |= INLINE_XATTR
        rec.inline_xattrs, rec.xattrs = full[:INLINE_XATTR_BYTES], full[INLINE_XATTR_BYTES:]
    else:
        rec.xattrs = full


def _plan_data(inodes: dict[int, _Inode], opts: Options, max_inline: int, sparse: bool) -> int:
    """Sizes, inline contents and data block numbers (from 0, in inode order); returns the
    number of data blocks. Whole-hole blocks get none unless `sparse` is off."""
    ndata = 0
    for rec in inodes.values():
        if rec.kind is Kind.DIR and rec.inline & INLINE_DENTRY:
            rec.size = len(rec.inline_data)  # MAX_INLINE_DATA, as the kernel sizes an inline directory
        elif rec.kind is Kind.DIR:
            top = max(rec.dentry_blocks) + 1
            rec.data = [-1] * top
            for idx in sorted(rec.dentry_blocks):
                rec.data[idx] = ndata
                ndata += 1
            rec.size = top * BLOCK
        elif rec.kind is Kind.SYMLINK:
            target = encode_name(rec.node.target or "")
            rec.size = len(target)
            if opts.inline_data and len(target) <= max_inline:
                rec.inline |= INLINE_DATA | (DATA_EXIST if target else 0)
                rec.inline_data = target
            elif target:
                rec.data = [ndata]
                ndata += 1
        elif rec.kind is Kind.FILE and opts.inline_data and 0 < rec.node.size <= max_inline:
            rec.size = rec.node.size
            rec.inline |= INLINE_DATA | DATA_EXIST
            rec.inline_data = rec.node.source.read(0, rec.size)
        elif rec.kind is Kind.FILE:
            rec.size = rec.node.size
            nblocks = _ceil(rec.size, BLOCK)
            if not nblocks:
                continue  # an empty file keeps the shared empty tuple
            has = bytearray(b"\x01" * nblocks) if not sparse else bytearray(nblocks)
            for foff, length, _s in _data_of(rec):
                for b in range(foff // BLOCK, _ceil(foff + length, BLOCK)):
                    has[b] = 1
            rec.data = []
            for b in range(nblocks):
                if has[b]:
                    rec.data.append(ndata)
                    ndata += 1
                else:
                    rec.data.append(-1)
            while rec.data and rec.data[-1] == -1:  # trailing holes need no address slots
                rec.data.pop()
    return ndata


def plan(tree: Tree, opts: Options, params: FsParams) -> _Plan:
    extra = EXTRA_ISIZE // 4 if "extra_attr" in opts.features else 0
    addrs = ADDRS_PER_INODE - extra - (INLINE_XATTR_ADDRS if opts.inline_xattr else 0)
    max_inline = 4 * (addrs - 1)
    # an inline directory always keeps the default inline xattr area (f2fs get_inline_xattr_addrs)
    dentry_area = 4 * (ADDRS_PER_INODE - extra - INLINE_XATTR_ADDRS - 1)
    inodes = _plan_inodes(tree, opts, dentry_area)
    ndata = _plan_data(inodes, opts, max_inline, params.sparse)
    # Node blocks: every inode first, then each inode's xattr, direct and indirect nodes
    # (their nids follow the last inode number).
    next_nid = max(inodes) + 1
    nodes: list[_NodeBlock] = [_NodeBlock(ino, ino, 0, "inode", ()) for ino in inodes]
    for ino, rec in inodes.items():
        if rec.xattrs:
            rec.xattr_nid = next_nid
            nodes.append(_NodeBlock(next_nid, ino, XATTR_NODE_OFFSET, "xattr", ()))
            next_nid += 1
        if len(rec.data) <= addrs:
            continue  # every address in the inode itself: no direct or indirect node
        rec.nodes = _file_nodes(rec.data[addrs:], ino, next_nid, params.where)
        next_nid += len(rec.nodes)
        nodes += rec.nodes
    return _Plan(inodes, nodes, ndata, next_nid, addrs, extra)


def choose_geometry(p: _Plan, opts: Options, params: FsParams) -> Geometry:
    """The asked size's layout, or for `auto` the smallest whole number of segments that holds
    the plan and the headroom."""
    def fits(g: Geometry) -> bool:
        # every used segment, the four empty logs included, must lie outside the overprovision
        return p.used_segs <= g.main_segs - g.ovp_segs and p.blocks <= g.user_blocks

    def ok(size: int) -> Geometry | None:
        try:
            g = geometry_for(size, opts)
        except SpecError:
            return None
        if not fits(g) or g.user_blocks - p.blocks < _ceil(params.headroom, BLOCK):
            return None
        return g

    if params.size is not None:
        size = params.size // SEG_BYTES * SEG_BYTES
        g = geometry_for(size, opts)
        if not fits(g):
            raise CapacityError(f"the content needs {p.blocks} blocks in {p.used_segs} segments but "
                                f"the {format_size(size)} F2FS image has {g.user_blocks} user blocks "
                                f"in {g.main_segs - g.ovp_segs} segments", where=params.where)
        return g
    lo, hi = 0, 16  # double, then bisect
    while ok(hi * SEG_BYTES) is None:
        lo, hi = hi, hi * 2
        if hi > (1 << 24):
            raise CapacityError("the content is too large for an F2FS image", where=params.where)
    while hi - lo > 1:
        mid = (lo + hi) // 2
        lo, hi = (lo, mid) if ok(mid * SEG_BYTES) is not None else (mid, hi)
    g = ok(hi * SEG_BYTES)
    assert g is not None
    return g


def _write_data(out: ImageFile, p: _Plan, main: int, sparse: bool) -> None:
    """Dentry blocks, symlink targets and file bytes (ImageFile.copy_from, run by run)."""
    copies = []
    for rec in p.inodes.values():
        if rec.kind is Kind.DIR:
            for idx, blk in (rec.dentry_blocks or {}).items():
                out.pwrite(bytes(blk), (main + rec.data[idx]) * BLOCK)
        elif rec.kind is Kind.SYMLINK and rec.data:
            out.pwrite(encode_name(rec.node.target or ""), (main + rec.data[0]) * BLOCK)
        elif rec.kind is Kind.FILE and rec.data:
            for foff, length, soff in _data_of(rec):
                pos, end = foff, foff + length
                while pos < end:
                    b = pos // BLOCK
                    run_end = min(end, (b + 1) * BLOCK)
                    # extend across the following blocks while they follow on disk too
                    while run_end < end and rec.data[run_end // BLOCK] == rec.data[b] + (run_end // BLOCK - b):
                        run_end = min(end, (run_end // BLOCK + 1) * BLOCK)
                    copies.append((rec.node.source, soff + (pos - foff), run_end - pos,
                                   (main + rec.data[b]) * BLOCK + pos % BLOCK))
                    pos = run_end
    _copy_runs(out, copies)
    if not sparse:  # blocks of holes hold zeros on the image too, not just in the file
        for rec in p.inodes.values():
            if rec.kind is Kind.FILE and rec.data and not rec.inline & INLINE_DATA:
                covered = bytearray(len(rec.data))
                for foff, length, _s in _data_of(rec):
                    for b in range(foff // BLOCK, min(len(rec.data), _ceil(foff + length, BLOCK))):
                        covered[b] = 1
                for b, rel in enumerate(rec.data):
                    if rel >= 0 and not covered[b]:
                        out.pwrite(bytes(BLOCK), (main + rel) * BLOCK)


def _inode_checksum(blk: bytearray, ino: int, seed: int) -> None:
    """f2fs_inode_chksum: CRC over the inode number, generation, then the whole node block with
    the checksum field taken as zero."""
    c = crc32(ino.to_bytes(4, "little"), seed)
    c = crc32(bytes(blk[68:72]), c)  # i_generation
    off = INODE_CHECKSUM_OFFSET
    c = crc32(bytes(blk[:off]) + bytes(4) + bytes(blk[off + 4:]), c)
    blk[off:off + 4] = c.to_bytes(4, "little")


def _write_nodes(out: ImageFile, p: _Plan, main: int, node_base: int, cp_ver: int,
                 csum_seed: int | None = None) -> None:
    for k, nb in enumerate(p.nodes):
        rec = p.inodes[nb.ino]
        blk = bytearray(BLOCK)
        if nb.kind == "inode":
            _pack_inode(blk, rec, main, p.addrs, p.extra)
        elif nb.kind == "xattr":
            blk[:len(rec.xattrs)] = rec.xattrs
        elif nb.kind == "direct":
            for i, rel in enumerate(nb.payload):
                if rel >= 0:
                    blk[i * 4:i * 4 + 4] = (main + rel).to_bytes(4, "little")
        else:
            for i, child in enumerate(nb.payload):
                blk[i * 4:i * 4 + 4] = child.to_bytes(4, "little")
        addr = main + node_base + k
        NODE_FOOTER.pack_into(blk, FOOTER_OFFSET, nb.nid, nb.ino, (nb.ofs << 3) & 0xFFFFFFFF, cp_ver,
                              addr + 1)
        if nb.kind == "inode" and csum_seed is not None:
            _inode_checksum(blk, nb.ino, csum_seed)
        out.pwrite(bytes(blk), addr * BLOCK)


@dataclass
class _Segments:
    """Each used segment's log type and block count, and the six logs' (segment, offset)."""

    types: dict[int, int]
    counts: dict[int, int]
    logs: dict[int, tuple[int, int]]


def _segments(p: _Plan) -> _Segments:
    ds, ns, nnode = p.data_segs, p.node_segs, len(p.nodes)
    logs = {CURSEG_HOT_DATA: (p.ndata // BLOCKS_PER_SEG, p.ndata % BLOCKS_PER_SEG),
            CURSEG_HOT_NODE: (ds + nnode // BLOCKS_PER_SEG, nnode % BLOCKS_PER_SEG),
            CURSEG_WARM_NODE: (ds + ns, 0), CURSEG_COLD_NODE: (ds + ns + 1, 0),
            CURSEG_WARM_DATA: (ds + ns + 2, 0), CURSEG_COLD_DATA: (ds + ns + 3, 0)}
    types: dict[int, int] = {}
    counts: dict[int, int] = {}
    for s in range(ds):
        types[s] = CURSEG_HOT_DATA
        counts[s] = min(BLOCKS_PER_SEG, p.ndata - s * BLOCKS_PER_SEG)
    for s in range(ns):
        types[ds + s] = CURSEG_HOT_NODE
        counts[ds + s] = min(BLOCKS_PER_SEG, nnode - s * BLOCKS_PER_SEG)
    for t, (s, _off) in logs.items():
        types[s] = t
        counts.setdefault(s, 0)
    return _Segments(types, counts, logs)


def _summary_block(seg: int, p: _Plan, sg: _Segments, owners: dict[int, tuple[int, int]]) -> bytes:
    """The segment summary: for each block the node that points at it (and where)."""
    b = bytearray(BLOCK)
    node_seg = sg.types[seg] >= CURSEG_HOT_NODE
    for j in range(sg.counts.get(seg, 0)):
        if node_seg:
            SUMMARY.pack_into(b, j * SUMMARY.size, p.nodes[(seg - p.data_segs) * BLOCKS_PER_SEG + j].nid, 0, 0)
        else:
            nid, ofs = owners[seg * BLOCKS_PER_SEG + j]
            SUMMARY.pack_into(b, j * SUMMARY.size, nid, 0, ofs)
    SUMMARY_FOOTER.pack_into(b, SUM_FOOTER_OFFSET, SUM_TYPE_NODE if node_seg else SUM_TYPE_DATA, 0)
    return bytes(b)


def _write_meta(out: ImageFile, p: _Plan, g: Geometry) -> tuple[list[bytes], _Segments]:
    """SSA, SIT and NAT (first copies); returns the six logs' summaries for the checkpoint."""
    sg = _segments(p)
    owners: dict[int, tuple[int, int]] = {}  # data block (main-relative) -> (nid, ofs_in_node)
    for ino, rec in p.inodes.items():
        for i, rel in enumerate(rec.data[:p.addrs]):
            if rel >= 0:
                owners[rel] = (ino, i)
        for nb in rec.nodes:
            if nb.kind == "direct":
                for i, rel in enumerate(nb.payload):
                    if rel >= 0:
                        owners[rel] = (nb.nid, i)
    for seg in sorted(sg.types):
        out.pwrite(_summary_block(seg, p, sg, owners), (g.ssa_blkaddr + seg) * BLOCK)

    def place(blocks: dict[int, bytearray], area: int) -> None:
        # SIT and NAT keep two copies, segment by segment; the zero version bitmaps pick the first
        for bi, b in blocks.items():
            addr = area + (bi // BLOCKS_PER_SEG) * 2 * BLOCKS_PER_SEG + bi % BLOCKS_PER_SEG
            out.pwrite(bytes(b), addr * BLOCK)

    sit: dict[int, bytearray] = {}
    for seg, t in sg.types.items():
        n = sg.counts.get(seg, 0)
        vmap = bytearray(64)
        for j in range(n):
            vmap[j >> 3] |= 0x80 >> (j & 7)
        bi, ei = divmod(seg, SIT_ENTRY_PER_BLOCK)
        SIT_ENTRY.pack_into(sit.setdefault(bi, bytearray(BLOCK)), ei * SIT_ENTRY.size, (t << 10) | n,
                            bytes(vmap), 0)
    place(sit, g.sit_blkaddr)

    nat: dict[int, bytearray] = {}
    node_base = g.main_blkaddr + p.data_segs * BLOCKS_PER_SEG
    def entries():  # (nid, ino, block) of each NAT entry, made one at a time, not listed
        yield NODE_INO, NODE_INO, 1
        yield META_INO, META_INO, 1
        for k, nb in enumerate(p.nodes):
            yield nb.nid, nb.ino, node_base + k

    for nid, ino, addr in entries():
        bi, ei = divmod(nid, NAT_ENTRY_PER_BLOCK)
        NAT_ENTRY.pack_into(nat.setdefault(bi, bytearray(BLOCK)), ei * NAT_ENTRY.size, 0, ino, addr)
    place(nat, g.nat_blkaddr)

    order = (CURSEG_HOT_DATA, CURSEG_WARM_DATA, CURSEG_COLD_DATA,
             CURSEG_HOT_NODE, CURSEG_WARM_NODE, CURSEG_COLD_NODE)
    return [_summary_block(sg.logs[t][0], p, sg, owners) for t in order], sg


def _write_checkpoint(out: ImageFile, p: _Plan, g: Geometry, sg: _Segments, sums: list[bytes],
                      cp_ver: int) -> None:
    """Pack 1 (cp block, payload, the logs' summaries, cp block) and pack 2 at version 0."""
    cp = bytearray(BLOCK)
    node_logs = [sg.logs[CURSEG_HOT_NODE], sg.logs[CURSEG_WARM_NODE], sg.logs[CURSEG_COLD_NODE]]
    data_logs = [sg.logs[CURSEG_HOT_DATA], sg.logs[CURSEG_WARM_DATA], sg.logs[CURSEG_COLD_DATA]]
    CHECKPOINT.pack_into(
        cp, 0, cp_ver, g.user_blocks, p.blocks, g.reserved, g.ovp_segs, g.main_segs - len(sg.types),
        *[s for s, _ in node_logs], *[0xFFFFFFFF] * 5, *[o for _, o in node_logs], *[0] * 5,
        *[s for s, _ in data_logs], *[0xFFFFFFFF] * 5, *[o for _, o in data_logs], *[0] * 5,
        CP_UMOUNT_FLAG, 8 + g.cp_payload, 1 + g.cp_payload, len(p.nodes), len(p.inodes), p.next_nid,
        ((g.seg_sit // 2) << LOG_BLOCKS_PER_SEG) // 8, ((g.seg_nat // 2) << LOG_BLOCKS_PER_SEG) // 8,
        CHECKSUM_OFFSET, 0, bytes(16))

    def finish(c: bytearray) -> bytes:
        c[CHECKSUM_OFFSET:CHECKSUM_OFFSET + 4] = crc32(bytes(c[:CHECKSUM_OFFSET])).to_bytes(4, "little")
        return bytes(c)

    first = finish(cp)
    out.pwrite(b"".join([first] + [bytes(BLOCK)] * g.cp_payload + sums + [first]), g.cp_blkaddr * BLOCK)
    cp[0:8] = bytes(8)
    second = finish(cp)
    base2 = g.cp_blkaddr + BLOCKS_PER_SEG
    out.pwrite(second, base2 * BLOCK)
    out.pwrite(second, (base2 + 7 + g.cp_payload) * BLOCK)


def _write_super(out: ImageFile, g: Geometry, vol_uuid, label: bytes, features: int) -> None:
    sb = bytearray(BLOCK)
    version = b"fstool".ljust(256, b"\0")
    SUPER.pack_into(
        sb, SUPER_OFFSET, SUPER_MAGIC, MAJOR_VER, MINOR_VER, 9, 3, 12, LOG_BLOCKS_PER_SEG, 1, 1,
        SB_CHECKSUM_OFFSET if features & FEATURES["sb_checksum"] else 0,
        g.block_count, g.main_segs, g.segment_count, 2, g.seg_sit, g.seg_nat, g.seg_ssa, g.main_segs,
        g.segment0, g.cp_blkaddr, g.sit_blkaddr, g.nat_blkaddr, g.ssa_blkaddr, g.main_blkaddr,
        ROOT_INO, NODE_INO, META_INO, vol_uuid.bytes, label.ljust(1024, b"\0"), 0, bytes(512),
        g.cp_payload, version, version, features, 0, bytes(16))
    if features & FEATURES["sb_checksum"]:
        at = SUPER_OFFSET + SB_CHECKSUM_OFFSET
        sb[at:at + 4] = crc32(bytes(sb[SUPER_OFFSET:at])).to_bytes(4, "little")
    out.pwrite(bytes(sb), 0)
    out.pwrite(bytes(sb), BLOCK)


def write(tree: Tree, out: ImageFile, params: FsParams) -> int:
    """Write tree as an F2FS image into out; return its size in bytes."""
    opts = params.opts if isinstance(params.opts, Options) else parse_options(params)
    vol_uuid = parse_uuid(params.uuid, f"{params.where}.uuid") if params.uuid else \
        derive_uuid(params.seed, "f2fs-uuid")
    label = (params.label or "").encode("utf-16-le")
    if len(label) // 2 > 512:
        raise SpecError("F2FS volume names hold at most 512 UTF-16 characters", where=params.where)
    p = plan(tree, opts, params)
    g = choose_geometry(p, opts, params)
    params.log(f"F2FS: {g.block_count} blocks, {g.main_segs} main segments ({g.ovp_segs} "
               f"overprovisioned), {p.ndata} data and {len(p.nodes)} node blocks")
    out.truncate(g.block_count * BLOCK)
    cp_ver = derive_u32(params.seed, "f2fs-cp-ver") | 1
    _write_data(out, p, g.main_blkaddr, params.sparse)
    seed = crc32(vol_uuid.bytes, 0xFFFFFFFF) if "inode_checksum" in opts.features else None
    _write_nodes(out, p, g.main_blkaddr, p.data_segs * BLOCKS_PER_SEG, cp_ver, seed)
    sums, sg = _write_meta(out, p, g)
    _write_checkpoint(out, p, g, sg, sums, cp_ver)
    _write_super(out, g, vol_uuid, label, sum(FEATURES[f] for f in opts.features))
    return g.block_count * BLOCK


def _direct_offset(k: int) -> int:
    """The node offset of the k-th direct node, as the kernel's get_node_path numbers them:
    1 and 2 under the inode, 4.. under the first indirect node (3), 5+N.. under the second
    (4+N), and under the double indirect node (5+2N) its i-th indirect node is 6+2N+i(N+1)
    and that one's children follow it."""
    n = NIDS_PER_BLOCK
    if k < 2:
        return 1 + k
    k -= 2
    if k < n:
        return 4 + k
    k -= n
    if k < n:
        return 5 + n + k
    i, j = divmod(k - n, n)
    return 7 + 2 * n + i * (n + 1) + j


def _file_nodes(extra: list[int], ino: int, first_nid: int, where: str) -> list["_NodeBlock"]:
    """Direct, indirect and double indirect nodes for the blocks past the inode's own
    addresses. A stretch of ADDRS_PER_BLOCK holes gets no node at all (nid 0)."""
    n = NIDS_PER_BLOCK
    chunks = [extra[i:i + ADDRS_PER_BLOCK] for i in range(0, len(extra), ADDRS_PER_BLOCK)]
    if len(chunks) > 2 + 2 * n + n * n:
        raise CapacityError("the file is larger than F2FS's node tree addresses", where=where)
    nodes: list[_NodeBlock] = []
    nid_of: dict[int, int] = {}
    nxt = first_nid
    for k, ch in enumerate(chunks):
        if any(r >= 0 for r in ch):
            nid_of[k] = nxt
            nodes.append(_NodeBlock(nxt, ino, _direct_offset(k), "direct", ch))
            nxt += 1

    def indirect(ofs: int, first_k: int) -> int:
        nonlocal nxt
        kids = [nid_of.get(k, 0) for k in range(first_k, first_k + n)]
        if not any(kids):
            return 0
        nodes.append(_NodeBlock(nxt, ino, ofs, "indirect", kids))
        nxt += 1
        return nxt - 1

    indirect(3, 2)
    indirect(4 + n, 2 + n)
    if len(chunks) > 2 + 2 * n:
        kids = [indirect(6 + 2 * n + i * (n + 1), 2 + 2 * n + i * n) for i in range(n)]
        if any(kids):
            nodes.append(_NodeBlock(nxt, ino, 5 + 2 * n, "indirect", kids))
    return nodes


def _copy_runs(out: ImageFile, copies) -> None:
    by_path: dict[str, list] = {}
    for src, soff, n, off in copies:
        by_path.setdefault(src.path, []).append((soff, n, off))
    for path, runs in by_path.items():
        fd = os.open(path, os.O_RDONLY)
        try:
            for soff, n, off in runs:
                out.copy_from(fd, soff, n, off)
        finally:
            os.close(fd)


def _pack_inode(blk: bytearray, rec: _Inode, main: int, addrs: int, extra: int) -> None:
    node = rec.node
    mode = node.st_mode
    nblocks = sum(1 for r in rec.data if r >= 0) + 1 + len(rec.nodes) + (1 if rec.xattr_nid else 0)
    mt, mns = node.mtime, node.mtime_ns
    name = encode_name(rec.name)[:255]
    inline = rec.inline | (EXTRA_ATTR if extra else 0)
    INODE.pack_into(blk, 0, mode, 0, inline, node.uid, node.gid, rec.links, rec.size, nblocks, mt, mt, mt,
                    mns, mns, mns, 0, rec.depth if rec.kind is Kind.DIR else 0, rec.xattr_nid, 0,
                    rec.parent,
                    len(name), name, 0, 0, 0, 0)
    if rec.inline_xattrs:
        end = INODE_ADDR_OFFSET + 4 * ADDRS_PER_INODE
        blk[end - INLINE_XATTR_BYTES:end - INLINE_XATTR_BYTES + len(rec.inline_xattrs)] = rec.inline_xattrs
    if extra:
        blk[INODE_ADDR_OFFSET:INODE_ADDR_OFFSET + 2] = (4 * extra).to_bytes(2, "little")
    base = INODE_ADDR_OFFSET + 4 * extra  # the first address slot after the extra attributes
    if rec.inline & (INLINE_DATA | INLINE_DENTRY):
        start = base + 4  # i_addr[0] stays 0: the inline reserved word
        blk[start:start + len(rec.inline_data)] = rec.inline_data
        return
    if rec.kind in (Kind.CHR, Kind.BLK):
        major, minor = node.rdev
        if major < 256 and minor < 256:
            blk[base:base + 4] = ((major << 8) | minor).to_bytes(4, "little")
        else:
            dev = (minor & 0xFF) | (major << 8) | ((minor & ~0xFF) << 12)
            blk[base + 4:base + 8] = dev.to_bytes(4, "little")
        return
    for i, rel in enumerate(rec.data[:addrs]):
        if rel >= 0:
            blk[base + 4 * i:base + 4 * i + 4] = (main + rel).to_bytes(4, "little")
    slots = {1: 0, 2: 1, 3: 2, 4 + NIDS_PER_BLOCK: 3, 5 + 2 * NIDS_PER_BLOCK: 4}
    for nb in rec.nodes:
        if nb.ofs in slots:
            i = slots[nb.ofs]
            blk[INODE_NID_OFFSET + 4 * i:INODE_NID_OFFSET + 4 * i + 4] = nb.nid.to_bytes(4, "little")

