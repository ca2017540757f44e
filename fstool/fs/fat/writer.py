"""FAT12/16/32 (vfat) writer: a Tree to a FAT image, in one pass, deterministically.

Layout (fatgen103): reserved sectors (boot sector; on FAT32 also FSInfo at 1
and the backup boot sector and FSInfo at 6 and 7), the FATs, the fixed root
directory region (FAT12/16 only), then the data clusters. Clusters are handed
out contiguously in `Tree.walk()` order (on FAT32 the root directory first), so
every cluster chain is one run and the FAT is a simple pattern.

Names: an entry whose name already is a valid upper-case 8.3 name is stored as
just that; any other name gets VFAT long-name entries (UTF-16) in front of a
generated short name (basis name, `~N` tail when lossy, truncated or taken),
unique in its directory. Names that differ only by case in one directory, names
FAT cannot represent, and non-file/non-directory nodes are input errors.

Invariants: file bytes are streamed from `FileSource.iter_chunks`; holes and
all-zero chunks are never written (unless `sparse` is off), so they stay holes
in the image; the FATs, the root directory region and every directory cluster
are written whole. Free clusters are never written.
"""
from __future__ import annotations

import array
import re
import sys
from dataclasses import dataclass, field
from typing import Iterator

from ...errors import CapacityError, InputError, SpecError, warn
from ...ids import derive_u32
from ...image import ImageFile, copy_sources, in_background, write_zeros
from ...sizes import format_size
from ...tree import Kind, Node, Tree
from ..base import FsParams, OptionReader, follow_file_symlinks, refuse_unstorable, unstorable, walk_plan
from .common import (ATTR_ARCHIVE, ATTR_DIRECTORY, ATTR_LONG_NAME, ATTR_READ_ONLY, ATTR_VOLUME_ID,
                     BOOT_SIGNATURE, BPB, CLUSTER_RANGE, DIRENT, EBPB16, EBPB32, EOC,
                     EXT_BOOT_SIGNATURE, FSINFO, FSINFO_LEAD, FSINFO_STRUCT, FSINFO_TRAIL, LFN_CHARS,
                     LFN_LAST, LFNENT, MAX_DIR_ENTRIES, SECTOR, TYPE_STRING, lfn_checksum,
                     to_fat_time)

MiB = 1 << 20
OEM_NAME = b"FSTOOL  "
SECTORS_PER_TRACK = 32  # the geometry mkfs.fat gives image files
HEADS = 64
FAT32_BACKUP_BOOT = 6
FAT32_FSINFO = 1
DEFAULT_ROOT_ENTRIES = 512
ALIGN_FROM = 8192  # sectors: smaller (floppy-sized) volumes are not aligned, as mkfs.fat
MAX_ROOT_ENTRIES = 0xFFF0  # the 16-bit BPB field, in whole sectors of entries
MAX_SECTORS = 0xFFFFFFFF

# Characters allowed in a short (8.3) name besides A-Z and 0-9.
_SHORT_SPECIAL = "$%'-_@~`!(){}^#&"
_SHORT_CHARS = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789" + _SHORT_SPECIAL)
_SHORT_NAME_RE = re.compile(r"^([A-Z0-9$%'\-_@~`!(){}^#&]{1,8})(?:\.([A-Z0-9$%'\-_@~`!(){}^#&]{1,3}))?$")
# Characters a long name may not hold (besides controls below 0x20).
_LFN_FORBIDDEN = frozenset('"*/:<>?\\|')
_LFN_BAD_RE = re.compile(r'["*/:<>?\\|\x00-\x1f]')
_LABEL_RE = re.compile(r"^[A-Z0-9$%'\-_@~`!(){}^#& ]{1,11}$")

# A tiny real-mode boot program: print a message, wait for a key, reboot.
# Offsets are relative to the start of the code; SI is patched with the message address.
_BOOT_MSG = b"This is not a bootable disk. Press a key to reboot.\r\n\0"
_BOOT_CODE_HEAD = bytes([
    0x31, 0xC0,        # xor ax, ax
    0x8E, 0xD8,        # mov ds, ax
    0xBE, 0x00, 0x00,  # mov si, msg      (patched)
    0xFC,              # cld
    0xAC,              # .next: lodsb
    0x84, 0xC0,        # test al, al
    0x74, 0x09,        # jz .done
    0xB4, 0x0E,        # mov ah, 0x0E
    0xBB, 0x07, 0x00,  # mov bx, 7
    0xCD, 0x10,        # int 0x10
    0xEB, 0xF2,        # jmp .next
    0x31, 0xC0,        # .done: xor ax, ax
    0xCD, 0x16,        # int 0x16
    0xCD, 0x19,        # int 0x19
    0xEB, 0xFE,        # jmp $
])


@dataclass(frozen=True)
class Geometry:
    """Where everything lives on a FAT volume; all counts in sectors unless named."""

    bits: int
    total: int
    spc: int
    reserved: int
    fats: int
    root_entries: int
    fat_sectors: int
    clusters: int

    @property
    def root_sectors(self) -> int:
        return (self.root_entries * 32 + SECTOR - 1) // SECTOR

    @property
    def root_start(self) -> int:
        return self.reserved + self.fats * self.fat_sectors

    @property
    def data_start(self) -> int:
        return self.root_start + self.root_sectors

    @property
    def cluster_bytes(self) -> int:
        return self.spc * SECTOR

    def cluster_offset(self, cluster: int) -> int:
        return (self.data_start + (cluster - 2) * self.spc) * SECTOR


@dataclass
class _Options:
    spc: int | None
    hidden: int | None  # None: the partition's start in 512-byte sectors (params.partition_offset)
    fats: int
    media: int
    reserved: int | None
    follow_symlinks: bool = False
    strict: bool = False  # refuse entries FAT cannot store instead of leaving them out
    align: bool = True  # the data area on a cluster boundary, as mkfs.fat (its -a turns it off)


@dataclass(eq=False, slots=True)
class _Entry:
    """One child of a directory as it will be stored (a file's clusters are found by its
    _Entry, a directory's by its path: no path string per file)."""

    name: str
    node: Node
    short: bytes
    lfn: bytes  # the long-name entries, 32 bytes each, in on-disk order


@dataclass
class _Dir:
    path: str
    node: Node
    parent: "_Dir | None"
    entries: list[_Entry] = field(default_factory=list)
    label: bytes | None = None

    @property
    def is_root(self) -> bool:
        return self.parent is None

    @property
    def slots(self) -> int:
        n = 0 if self.is_root else 2
        n += 1 if self.label is not None else 0
        return n + sum(1 + len(e.lfn) // DIRENT.size for e in self.entries)


class _Layout(Exception):
    """A size cannot hold a legal cluster count for a FAT type (too_small tells which way)."""

    def __init__(self, message: str, too_small: bool):
        super().__init__(message)
        self.too_small = too_small


# -- names -------------------------------------------------------------------

def _pad83(base: str, ext: str) -> bytes:
    return (base.ljust(8) + ext.ljust(3)).encode("ascii")


def _exact_short(name: str) -> bytes | None:
    """The 11-byte short name if name already is a valid upper-case 8.3 name."""
    m = _SHORT_NAME_RE.match(name)
    if not m:
        return None
    return _pad83(m.group(1), m.group(2) or "")


def _basis(name: str) -> tuple[str, str, bool]:
    """fatgen103's basis-name generation: (primary, extension, needs a numeric tail)."""
    lossy = False
    chars = []
    for ch in name.upper():
        if ch in _SHORT_CHARS or ch == ".":
            chars.append(ch)
        elif ch == " ":
            lossy = True  # spaces are dropped
        else:
            chars.append("_")
            lossy = True
    s = "".join(chars)
    stripped = s.lstrip(".")
    if stripped != s:
        lossy = True
    s = stripped
    if "." in s:
        dot = s.rindex(".")
        base, ext = s[:dot], s[dot + 1:]
        if "." in base:
            lossy = True
            base = base.replace(".", "")
    else:
        base, ext = s, ""
    if len(base) > 8 or len(ext) > 3:
        lossy = True
    base, ext = base[:8], ext[:3]
    if not base:
        base, lossy = "_", True
    return base, ext, lossy


def _upper_key(name: str) -> str:
    """Case-folding key for clash detection (one char in, one char out)."""
    up = name.upper()
    if len(up) == len(name) and name.isascii():
        return up
    return "".join(c.upper() if len(c.upper()) == 1 else c for c in name)


def _check_long_name(name: str, path: str) -> bytes:
    """The UTF-16LE form of a name FAT can hold, or InputError."""
    try:
        name.encode("utf-8")
    except UnicodeEncodeError:
        raise InputError("name is not valid UTF-8, and FAT stores names as UTF-16", where=path) from None
    bad = sorted({c for c in name if c in _LFN_FORBIDDEN or ord(c) < 0x20}) if _LFN_BAD_RE.search(name) else None
    if bad:
        raise InputError(f"FAT names cannot contain {', '.join(repr(c) for c in bad)}", where=path)
    if name.endswith((".", " ")):
        raise InputError("FAT names cannot end with '.' or a space", where=path)
    units = name.encode("utf-16-le")
    if len(units) // 2 > 255:
        raise InputError(f"name is {len(units) // 2} UTF-16 units long; FAT allows 255", where=path)
    return units


def _lfn_entries(units: bytes, short: bytes) -> list[bytes]:
    """The long-name entries for a UTF-16LE name, in on-disk order (last part first)."""
    n = len(units) // 2
    count = (n + LFN_CHARS - 1) // LFN_CHARS
    buf = units + (b"\0\0" if n % LFN_CHARS else b"")
    buf = buf.ljust(count * LFN_CHARS * 2, b"\xff")
    csum = lfn_checksum(short)
    out = []
    for i in range(count):
        part = buf[i * 26:(i + 1) * 26]
        order = (i + 1) | (LFN_LAST if i == count - 1 else 0)
        out.append(LFNENT.pack(order, part[0:10], ATTR_LONG_NAME, 0, csum, part[10:22], 0, part[22:26]))
    out.reverse()
    return out


def _name_directory(d: _Dir) -> None:
    """Assign short names (and long-name entries) to a directory's children."""
    assert d.node.children is not None
    base = d.path.rstrip("/")
    children = d.node.sorted_children()
    seen: dict[str, str] = {}
    for name, _ in children:
        key = _upper_key(name)
        if key in seen:
            raise InputError(f"names {seen[key]!r} and {name!r} differ only by case, "
                             "and FAT names are case-insensitive", where=f"{base}/{name}")
        seen[key] = name
    used: set[bytes] = set()
    next_tail: dict[tuple[str, str], int] = {}
    # First pass: names that are 8.3 apart from case keep their own short name.
    reserved: dict[str, bytes] = {}
    for name, _ in children:
        short = _exact_short(name.upper()) if name.isascii() else None
        if short is not None:
            reserved[name] = short
            used.add(short)
    for name, node in children:
        path = f"{base}/{name}"
        units = _check_long_name(name, path)
        if name in reserved:
            short = reserved[name]
            lfn = [] if _exact_short(name) is not None else _lfn_entries(units, short)
        else:
            primary, ext, lossy = _basis(name)
            short = _pad83(primary, ext)
            if lossy or short in used:
                # resume from the last tail this basis got: a directory of many similar names
                # costs one probe each, not a scan from ~1 every time
                for n in range(next_tail.get((primary, ext), 1), 1000000):
                    tail = f"~{n}"
                    short = _pad83(primary[:8 - len(tail)] + tail, ext)
                    if short not in used:
                        next_tail[(primary, ext)] = n + 1
                        break
                else:  # pragma: no cover - a million clashing names
                    raise InputError("too many similar names to give each a short name", where=path)
            used.add(short)
            lfn = _lfn_entries(units, short)
        d.entries.append(_Entry(name, node, short, b"".join(lfn)))


# -- geometry ----------------------------------------------------------------

def _layout(bits: int, total: int, spc: int, reserved: int, fats: int, root_entries: int,
            align: bool = False) -> Geometry:
    """The smallest FAT that covers the clusters left after it (found by iteration); with
    align, its length rounded up to whole clusters (the caller aligns the rest)."""
    root_sectors = (root_entries * 32 + SECTOR - 1) // SECTOR

    def clusters_with(fat_sectors: int) -> int:
        return max(0, (total - reserved - fats * fat_sectors - root_sectors) // spc)

    def fat_needed(clusters: int) -> int:
        return ((clusters + 2) * bits + 8 * SECTOR - 1) // (8 * SECTOR)

    fat_sectors = 1
    while fat_needed(clusters_with(fat_sectors)) > fat_sectors and clusters_with(fat_sectors) > 0:
        fat_sectors = fat_needed(clusters_with(fat_sectors))
    # the jump above may overshoot by a sector or two: take the smallest FAT that still covers
    while fat_sectors > 1 and fat_needed(clusters_with(fat_sectors - 1)) <= fat_sectors - 1:
        fat_sectors -= 1
    if align:
        fat_sectors = -(-fat_sectors // spc) * spc
    return Geometry(bits, total, spc, reserved, fats, root_entries, fat_sectors,
                    clusters_with(fat_sectors))


def _aligned(opts: _Options, total: int, spc: int, reserved: int, root_entries: int) -> tuple[int, int, bool]:
    """(reserved sectors, root entries, align) for _layout: as mkfs.fat, the reserved area
    (unless given), the root directory and the FATs take whole clusters, so the data area
    starts on a cluster boundary; not on volumes of 4 MiB or less, nor with align = false."""
    if not opts.align or total <= ALIGN_FROM:
        return reserved, root_entries, False
    if opts.reserved is None:
        reserved = -(-reserved // spc) * spc
    if root_entries:
        root = -(-(root_entries * 32) // (spc * SECTOR)) * spc * SECTOR // 32
        if root <= MAX_ROOT_ENTRIES:
            root_entries = root
    return reserved, root_entries, True


def _fat32_default_spc(total: int) -> int:
    """fatgen103's FAT32 cluster-size table."""
    for limit, spc in ((532480, 1), (16777216, 8), (33554432, 16), (67108864, 32)):
        if total <= limit:
            return spc
    return 64


def _geometry_for(bits: int, total: int, opts: _Options, root_needed: int) -> Geometry:
    """A legal geometry of type `bits` on `total` sectors, or _Layout saying why not."""
    lo, hi = CLUSTER_RANGE[bits]
    reserved = opts.reserved if opts.reserved is not None else (32 if bits == 32 else 1)
    if bits == 32:
        root_entries = 0
    else:
        root_entries = max(DEFAULT_ROOT_ENTRIES, (root_needed + 15) // 16 * 16)
        if root_entries > MAX_ROOT_ENTRIES:
            raise _Layout(f"the root directory needs {root_needed} entries; FAT{bits} allows "
                          f"{MAX_ROOT_ENTRIES}", True)
    if opts.spc is not None:
        candidates = [opts.spc]
    elif bits == 32:
        first = _fat32_default_spc(total)
        candidates = [first >> i for i in range(first.bit_length())]  # down to 1 if too few
    else:
        candidates = [1 << i for i in range(8)]  # smallest clusters that keep the count legal
    tried = []
    for spc in candidates:
        res, root, align = _aligned(opts, total, spc, reserved, root_entries)
        g = _layout(bits, total, spc, res, opts.fats, root, align)
        if lo <= g.clusters <= hi:
            return g
        tried.append(g)
        if bits == 32 and g.clusters > hi:
            break
    size = format_size(total * SECTOR)
    g = max(tried, key=lambda t: t.clusters)
    if g.clusters < lo:
        raise _Layout(f"{size} is too small for FAT{bits}: it gives {g.clusters} clusters of "
                      f"{format_size(g.cluster_bytes)}, and FAT{bits} needs at least {lo}", True)
    g = min(tried, key=lambda t: t.clusters)
    raise _Layout(f"{size} is too large for FAT{bits}: it gives {g.clusters} clusters of "
                  f"{format_size(g.cluster_bytes)}, and FAT{bits} allows at most {hi}", False)


def _smallest_fat32(opts: _Options) -> int:
    """The smallest whole-MiB size a FAT32 volume with these options can have."""
    size = 32 * MiB
    while size < MAX_SECTORS * SECTOR:
        try:
            _geometry_for(32, size // SECTOR, opts, 0)
            return size
        except _Layout as e:
            if not e.too_small:
                break
        size += MiB
    return size


def _pad_reserved(g: Geometry, align: bool = False) -> Geometry | None:
    """Push a cluster count just over its type's maximum back under it with reserved sectors
    (whole clusters of them: an aligned data area stays aligned)."""
    lo, hi = CLUSTER_RANGE[g.bits]
    for _ in range(8):
        if g.clusters <= hi:
            return g if g.clusters >= lo else None
        extra = (g.clusters - hi) * g.spc
        if extra > max(64, g.total // 100):
            return None
        g = _layout(g.bits, g.total, g.spc, g.reserved + extra, g.fats, g.root_entries, align)
    return None


def _choose_geometry(fs_type: str, total: int, opts: _Options, root_needed: int) -> Geometry:
    """The geometry for a volume of `total` sectors; raises _Layout when none is legal."""
    if fs_type in ("fat12", "fat16", "fat32", "vfat"):  # vfat is FAT32, as in the Rust fstool
        return _geometry_for(32 if fs_type == "vfat" else int(fs_type[3:]), total, opts, root_needed)
    if opts.spc is None:
        size = total * SECTOR
        bits = 12 if size <= 8 * MiB else 16 if size <= 512 * MiB else 32
        order = [bits] + [b for b in (12, 16, 32) if b != bits]
    else:
        order = [12, 16, 32]
    errors: list[_Layout] = []
    for bits in order:
        try:
            return _geometry_for(bits, total, opts, root_needed)
        except _Layout as e:
            errors.append(e)
    if opts.spc is not None:  # a cluster count on the FAT12/16 or FAT16/32 boundary
        for bits in (12, 16):
            reserved = opts.reserved if opts.reserved is not None else 1
            root = max(DEFAULT_ROOT_ENTRIES, (root_needed + 15) // 16 * 16)
            if root > MAX_ROOT_ENTRIES:
                break
            res, root, align = _aligned(opts, total, opts.spc, reserved, root)
            g = _pad_reserved(_layout(bits, total, opts.spc, res, opts.fats, root, align), align)
            if g is not None:
                return g
    if all(e.too_small for e in errors):
        raise _Layout(f"{format_size(total * SECTOR)} is too small for a FAT volume", True)
    raise _Layout(f"{format_size(total * SECTOR)} cannot hold a legal FAT12, FAT16 or FAT32 "
                  "cluster count with these options", False)


# -- parameters --------------------------------------------------------------

def _read_options(params: FsParams) -> _Options:
    r = OptionReader(params.options, where=f"{params.where}.options")
    spc = r.get_int("sectors_per_cluster", None, 1, 128)
    if spc is not None and spc & (spc - 1):
        raise SpecError(f"must be a power of 2 from 1 to 128; got {spc}",
                        where=f"{params.where}.options.sectors_per_cluster")
    hidden = r.get_int("hidden_sectors", None, 0, 0xFFFFFFFF)
    fats = r.get_int("fats", 2, 1, 2)
    media = r.get_int("media", 0xF8, 0xF0, 0xFF)
    if 0xF0 < media < 0xF8:
        raise SpecError(f"must be 0xF0 or 0xF8..0xFF; got {media:#x}",
                        where=f"{params.where}.options.media")
    reserved = r.get_int("reserved_sectors", None, 1, 0xFFFF)
    follow = r.get_bool("follow_symlinks", False)
    strict = r.get_bool("strict", False)
    align = r.get_bool("align", True)
    csize = r.get_size("cluster_size", None)
    r.finish()
    if csize is not None:
        if spc is not None:
            raise SpecError("set cluster_size or sectors_per_cluster, not both",
                            where=f"{params.where}.options.cluster_size")
        if csize < SECTOR or csize > 128 * SECTOR or csize & (csize - 1):
            raise SpecError(f"must be a power of 2 from 512 to 65536 bytes; got {csize}",
                            where=f"{params.where}.options.cluster_size")
        spc = csize // SECTOR
    if spc is None and params.block_size is not None:
        bs = params.block_size
        if bs < SECTOR or bs > 128 * SECTOR or bs & (bs - 1):
            raise SpecError("a FAT cluster size must be a power of 2 from 512 to 65536 bytes; "
                            f"got {bs}", where=f"{params.where}.block_size")
        spc = bs // SECTOR
    return _Options(spc, hidden, fats, media, reserved, follow, strict, align)


def _label_bytes(params: FsParams) -> bytes | None:
    label = params.label
    if label is None or label == "":
        return None
    if len(label) > 11:
        raise SpecError(f"FAT volume label {label!r} is {len(label)} characters; at most 11",
                        where=params.where)
    if label != label.upper() or not _LABEL_RE.match(label) or label.startswith(" "):
        raise SpecError(f"invalid FAT volume label {label!r}: use upper-case letters, digits, "
                        f"spaces and {_SHORT_SPECIAL}", where=params.where)
    return label.ljust(11).encode("ascii")


def _volume_id(params: FsParams) -> int:
    """The volume serial: the spec's, else derived from the seed."""
    if params.volume_id is None:
        return derive_u32(params.seed, "fat-volume-id")
    from ...spec import parse_volume_id  # the one volume-id parser (a no-op on a spec's value)
    return int(parse_volume_id(params.volume_id, f"{params.where}.volume_id"), 16)


# -- planning ----------------------------------------------------------------

@dataclass
class _Plan:
    dirs: dict[str, _Dir]  # by path, in walk order

    def dir_clusters(self, d: _Dir, cluster_bytes: int) -> int:
        return max(1, (d.slots * 32 + cluster_bytes - 1) // cluster_bytes)

    def clusters_needed(self, g_bits: int, cluster_bytes: int) -> int:
        n = 0
        for d in self.dirs.values():
            if not d.is_root or g_bits == 32:
                n += self.dir_clusters(d, cluster_bytes)
            for e in d.entries:
                if e.node.kind is Kind.FILE:
                    n += (e.node.size + cluster_bytes - 1) // cluster_bytes
        return n

    def files(self) -> Iterator[_Entry]:
        for d in self.dirs.values():
            for e in d.entries:
                if e.node.kind is Kind.FILE:
                    yield e

    def walk(self) -> Iterator[tuple[str | _Entry, Node]]:
        """What gets clusters, in Tree.walk order (a directory's entries are in name order):
        (path, node) for a directory, (_Entry, node) for a file."""
        return walk_plan(self.dirs, lambda d: d.entries)


def _leave_out_unstorable(tree: Tree, where: str) -> None:
    """Drop what FAT cannot store (symlinks, devices, fifos, sockets) with one warning that
    counts and names them, as the Rust fstool does (`strict = true` refuses instead)."""
    bad, what, shown = unstorable(tree)
    if not bad:
        return
    for path, _ in bad:
        tree.remove(path)
    tree.invalidate()
    warn(f"left out {len(bad)} entries FAT cannot store ({what}): {shown}", where=where)


def _plan(tree: Tree, label: bytes | None) -> _Plan:
    dirs: dict[str, _Dir] = {}
    for path, node in tree.walk():
        if node.kind is Kind.DIR:
            parent = None
            if path != "/":
                parent = dirs[path.rsplit("/", 1)[0] or "/"]
            d = _Dir(path, node, parent, label=label if path == "/" else None)
            _name_directory(d)
            if d.slots > MAX_DIR_ENTRIES:
                raise InputError(f"directory needs {d.slots} entries; FAT allows {MAX_DIR_ENTRIES}",
                                 where=path)
            dirs[path] = d
        elif node.size > 0xFFFFFFFF:
            raise InputError(f"file is {format_size(node.size)}; FAT files must be under 4 GiB",
                             where=path)
    return _Plan(dirs)


def _fits(g: Geometry, plan: _Plan, headroom: int) -> tuple[bool, int]:
    need = plan.clusters_needed(g.bits, g.cluster_bytes)
    need += (headroom + g.cluster_bytes - 1) // g.cluster_bytes
    return need <= g.clusters, need


def _auto_geometry(params: FsParams, plan: _Plan, opts: _Options, root_needed: int) -> Geometry:
    """The smallest whole-MiB volume that holds the content plus headroom."""
    content = sum(e.node.size for e in plan.files())
    size = max(MiB, (content + params.headroom + MiB - 1) // MiB * MiB)
    for _ in range(100000):
        total = size // SECTOR
        if total > MAX_SECTORS:
            break
        try:
            g = _choose_geometry(params.fs_type, total, opts, root_needed)
        except _Layout as e:
            if not e.too_small:
                raise CapacityError(f"the content ({format_size(content)}) does not fit in any legal "
                                    f"{params.fs_type.upper()} volume: {e}", where=params.where) from None
            size += MiB
            continue
        ok, need = _fits(g, plan, params.headroom)
        if ok:
            return g
        size += max(MiB, ((need - g.clusters) * g.cluster_bytes + MiB - 1) // MiB * MiB)
    raise CapacityError(f"the content ({format_size(content)}) is too large for a FAT volume",
                        where=params.where)


def _root_needed(plan: _Plan) -> int:
    return plan.dirs["/"].slots


# -- writing -----------------------------------------------------------------

def _dirent(short: bytes, attr: int, node: Node, cluster: int, size: int) -> bytes:
    date, hms, tenth = to_fat_time(node.mtime)
    return DIRENT.pack(short, attr, 0, tenth, hms, date, date, cluster >> 16, hms, date,
                       cluster & 0xFFFF, size)


def _attr(node: Node) -> int:
    attr = ATTR_DIRECTORY if node.kind is Kind.DIR else ATTR_ARCHIVE
    if not node.mode & 0o200:
        attr |= ATTR_READ_ONLY
    return attr


def _dir_bytes(d: _Dir, start_of: dict[str | _Entry, int], timestamp: int) -> bytearray:
    out = bytearray()
    if d.is_root:
        if d.label is not None:
            date, hms, tenth = to_fat_time(timestamp)
            out += DIRENT.pack(d.label, ATTR_VOLUME_ID, 0, 0, 0, 0, 0, 0, hms, date, 0, 0)
    else:
        me = start_of[d.path]
        parent = 0 if d.parent is None or d.parent.is_root else start_of[d.parent.path]
        out += _dirent(b".          ", _attr(d.node), d.node, me, 0)
        out += _dirent(b"..         ", _attr(d.node), d.node, parent, 0)
    base = d.path.rstrip("/")
    for e in d.entries:
        out += e.lfn
        if e.node.kind is Kind.DIR:
            out += _dirent(e.short, _attr(e.node), e.node, start_of.get(f"{base}/{e.name}", 0), 0)
        else:
            out += _dirent(e.short, _attr(e.node), e.node, start_of.get(e, 0), e.node.size)
    return out


def _fat_bytes(bits: int, media: int, runs: list[tuple[int, int]], next_free: int) -> bytes:
    """The used part of the FAT: entries 0 .. next_free-1 (every chain is one run)."""
    entries = [0] * next_free
    entries[0] = (0x0FFFFF00 if bits == 32 else 0xFF00 if bits == 16 else 0xF00) | media
    entries[1] = EOC[bits]
    for start, count in runs:
        end = start + count - 1
        entries[start:end] = range(start + 1, end + 1)
        entries[end] = EOC[bits]
    if bits in (16, 32):
        arr = array.array("I" if bits == 32 else "H", entries)
        if sys.byteorder == "big":
            arr.byteswap()
        return arr.tobytes()
    if len(entries) % 2:
        entries.append(0)
    out = bytearray()
    for i in range(0, len(entries), 2):
        a, b = entries[i], entries[i + 1]
        out += bytes((a & 0xFF, (a >> 8) | ((b & 0x0F) << 4), b >> 4))
    return bytes(out)


def _boot_sector(g: Geometry, opts: _Options, vid: int, label: bytes | None,
                 partition_offset: int) -> bytearray:
    bs = bytearray(SECTOR)
    # hidden sectors count the FAT's own 512-byte sectors before it, also on 4K-sector disks
    hidden = opts.hidden if opts.hidden is not None else partition_offset // SECTOR
    fat32 = g.bits == 32
    code_off = 90 if fat32 else 62
    jump = bytes((0xEB, code_off - 2, 0x90))
    small = g.total < 0x10000 and not fat32
    BPB.pack_into(bs, 0, jump, OEM_NAME, SECTOR, g.spc, g.reserved, g.fats, g.root_entries,
                  g.total if small else 0, opts.media, 0 if fat32 else g.fat_sectors,
                  SECTORS_PER_TRACK, HEADS, hidden, 0 if small else g.total)
    drive = 0x00 if opts.media == 0xF0 else 0x80
    vol_label = label if label is not None else b"NO NAME    "
    if fat32:
        EBPB32.pack_into(bs, 36, g.fat_sectors, 0, 0, 2, FAT32_FSINFO, FAT32_BACKUP_BOOT, bytes(12),
                         drive, 0, EXT_BOOT_SIGNATURE, vid, vol_label, TYPE_STRING[32])
    else:
        EBPB16.pack_into(bs, 36, drive, 0, EXT_BOOT_SIGNATURE, vid, vol_label, TYPE_STRING[g.bits])
    code = bytearray(_BOOT_CODE_HEAD)
    msg_addr = 0x7C00 + code_off + len(code)
    code[5:7] = msg_addr.to_bytes(2, "little")
    code += _BOOT_MSG
    bs[code_off:code_off + len(code)] = code
    bs[510:512] = BOOT_SIGNATURE
    return bs


def write(tree: Tree, out: ImageFile, params: FsParams) -> int:
    """Write tree as a FAT volume into out; return the volume size in bytes."""
    if params.uuid:
        raise SpecError("FAT has no UUID; its serial number is volume_id (e.g. \"1234-ABCD\")",
                        where=f"{params.where}.uuid")
    opts = params.opts if params.opts is not None else _read_options(params)
    label = _label_bytes(params)
    vid = _volume_id(params)
    if opts.follow_symlinks:
        follow_file_symlinks(tree)
    if opts.strict:
        refuse_unstorable(tree, "FAT")
    else:
        _leave_out_unstorable(tree, params.where)
    plan = _plan(tree, label)
    root_needed = _root_needed(plan)
    if root_needed > MAX_ROOT_ENTRIES and params.fs_type in ("fat12", "fat16"):
        raise InputError(f"the root directory needs {root_needed} entries; FAT12/16 allow "
                         f"{MAX_ROOT_ENTRIES} (use FAT32)", where="/")

    if params.size is None:
        g = _auto_geometry(params, plan, opts, root_needed)
    else:
        total = params.size // SECTOR
        if total > MAX_SECTORS:
            raise SpecError(f"{format_size(params.size)} is larger than a FAT volume can be (2 TiB)",
                            where=params.where)
        try:
            g = _choose_geometry(params.fs_type, total, opts, root_needed)
        except _Layout as e:
            hint = ""
            if e.too_small and params.fs_type in ("vfat", "fat32"):
                hint = f"; the smallest that works is {format_size(_smallest_fat32(opts))}"
                if params.fs_type == "vfat":
                    hint += " (type = \"fat\" picks FAT12/16 for small volumes)"
            raise SpecError(str(e) + hint, where=params.where) from None
        ok, need = _fits(g, plan, 0)
        if not ok:
            try:
                smallest = format_size(_auto_geometry(params, plan, opts, root_needed).total * SECTOR)
                hint = f"; a {smallest} volume would hold it"
            except CapacityError:
                hint = ""
            raise CapacityError(
                f"the content needs {need} clusters of {format_size(g.cluster_bytes)} "
                f"({format_size(need * g.cluster_bytes)}) but the {format_size(g.total * SECTOR)} "
                f"FAT{g.bits} volume has {g.clusters} ({format_size(g.clusters * g.cluster_bytes)})"
                + hint, where=params.where)
    if g.bits == 32 and g.reserved < FAT32_BACKUP_BOOT + 2:
        raise SpecError(f"FAT32 needs at least {FAT32_BACKUP_BOOT + 2} reserved sectors "
                        "(for the backup boot sector)", where=f"{params.where}.options.reserved_sectors")
    params.log(f"FAT{g.bits}: {g.total} sectors, {g.clusters} clusters of {g.cluster_bytes} bytes, "
               f"{g.fat_sectors} sectors per FAT, data at sector {g.data_start}")

    size = g.total * SECTOR
    out.truncate(size)
    cs = g.cluster_bytes

    # Allocate: one contiguous run per directory and file, in walk order (and list the files'
    # sources with their offsets as they are placed).
    start_of: dict[str | _Entry, int] = {}  # a directory's path, a file's _Entry -> first cluster
    runs: list[tuple[int, int]] = []
    files: list[tuple] = []  # (source, offset in the image) of every non-empty file
    nxt = 2
    for key, node in plan.walk():
        if node.kind is Kind.DIR:
            d = plan.dirs[key]
            count = plan.dir_clusters(d, cs) if (not d.is_root or g.bits == 32) else 0
        else:
            count = (node.size + cs - 1) // cs
            if count:
                files.append((node.source, g.cluster_offset(nxt)))
        if count:
            start_of[key] = nxt
            runs.append((nxt, count))
            nxt += count
    used = nxt - 2
    assert used <= g.clusters

    # File contents, streamed on a second thread while the directories and the FATs are
    # encoded here (disjoint clusters at fixed offsets: the same bytes as in sequence).
    with in_background(lambda stop: copy_sources(out, files, params.sparse, report=params.report, stop=stop,
                                               threads=min(2, params.thread_count()))):
        _write_metadata(out, params, opts, g, plan, start_of, runs, nxt, used, vid, label)
    return size


def _write_metadata(out: ImageFile, params: FsParams, opts: _Options, g: Geometry, plan: _Plan,
                    start_of: dict[str | _Entry, int], runs: list[tuple[int, int]], nxt: int, used: int,
                    vid: int, label: bytes | None) -> None:
    cs = g.cluster_bytes
    # Directories, written whole.
    for path, d in plan.dirs.items():
        data = _dir_bytes(d, start_of, params.timestamp)
        if d.is_root and g.bits != 32:
            data = data.ljust(g.root_sectors * SECTOR, b"\0")
            out.pwrite(data, g.root_start * SECTOR)
        else:
            data = data.ljust(plan.dir_clusters(d, cs) * cs, b"\0")
            out.pwrite(data, g.cluster_offset(start_of[path]))

    # The FATs, written whole.
    fat = _fat_bytes(g.bits, opts.media, runs, nxt)
    for i in range(g.fats):
        base = (g.reserved + i * g.fat_sectors) * SECTOR
        out.pwrite(fat, base)
        if not params.sparse:  # the rest of the FAT is free entries: zeros, a hole unless asked
            write_zeros(out, base + len(fat), g.fat_sectors * SECTOR - len(fat))

    # Boot sector (and FSInfo and the backups on FAT32).
    boot = _boot_sector(g, opts, vid, label, params.partition_offset)
    out.pwrite(boot, 0)
    if g.bits == 32:
        free = g.clusters - used
        hint = nxt if nxt < g.clusters + 2 else 0xFFFFFFFF
        info = FSINFO.pack(FSINFO_LEAD, bytes(480), FSINFO_STRUCT, free, hint, bytes(12), FSINFO_TRAIL)
        out.pwrite(info, FAT32_FSINFO * SECTOR)
        out.pwrite(boot, FAT32_BACKUP_BOOT * SECTOR)
        out.pwrite(info, (FAT32_BACKUP_BOOT + FAT32_FSINFO) * SECTOR)
