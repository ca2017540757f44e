"""exFAT writer: a Tree to an exFAT volume, in one pass, deterministically.

Layout (Microsoft's exFAT specification, as mkfs.exfat lays it out): the main
boot region (sectors 0-11: boot sector, 8 extended boot sectors, OEM
parameters, a reserved sector, the boot checksum sector), its backup (12-23),
one FAT at the first `boundary_align` boundary after them, then the cluster
heap at the next boundary after the FAT. The heap starts with the allocation
bitmap, the up-case table and the root directory (cluster 2 onwards, as
mkfs.exfat puts them); then every directory and file, in `Tree.walk()` order,
each in one contiguous run of clusters.

Only the bitmap, the up-case table and the root directory (which have no
NoFatChain flag to set) get FAT chains. Every other file and directory is
marked NoFatChain in its stream extension entry and its FAT entries stay zero,
as exfatprogs and Windows leave them for contiguous files.

Invariants: file bytes stream from `FileSource.data_segments` with
ImageFile.copy_from; holes (and the tails of last clusters) are never written, so
they stay holes in the image; free clusters are never written; metadata (the
boot regions, the used heads of the FAT and the bitmap, directory entries) is
written once, and what follows it stays zero (holes unless `sparse` is off).
"""
from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from typing import Iterator

from ...errors import CapacityError, InputError, SpecError
from ...ids import derive_u32, derive_uuid, parse_uuid
from ...image import ImageFile, copy_sources, write_zeros
from ...sizes import format_size
from ...tree import Kind, Node, Tree
from ..base import FsParams, OptionReader, follow_file_symlinks, refuse_unstorable, walk_plan
from .common import (ATTR_ARCHIVE, ATTR_DIRECTORY, ATTR_READ_ONLY, BACKUP_BOOT, BITMAP_ENTRY,
                     BOOT, BOOT_SECTORS, BOOT_SIGNATURE, ENTRY, EXT_BOOT_SIGNATURE, FAT_EOC,
                     FAT_MEDIA, FILE_ENTRY, FIRST_CLUSTER, FLAG_ALLOCATION_POSSIBLE,
                     FLAG_NO_FAT_CHAIN, FORBIDDEN_NAME_CHARS, FS_NAME, GUID_ENTRY, JUMP_BOOT,
                     LABEL_ENTRY, MAX_CLUSTER_SIZE, MAX_CLUSTERS, MAX_DIR_BYTES, MAX_NAME_UNITS,
                     NAME_ENTRY, NAME_UNITS_PER_ENTRY, REVISION, STREAM_ENTRY, TYPE_BITMAP,
                     TYPE_FILE, TYPE_GUID, TYPE_GUID_UNUSED, TYPE_LABEL, TYPE_NAME, TYPE_STREAM,
                     TYPE_UPCASE, UPCASE_CHECKSUM, UPCASE_ENTRY, UPCASE_SIZE, UTC_OFFSET_VALID,
                     boot_checksum, name_hash, set_checksum, to_exfat_time, upcase_map,
                     upcase_table, upcase_units)

KiB, MiB, GiB = 1 << 10, 1 << 20, 1 << 30
MIN_VOLUME = MiB  # VolumeLength is at least 2^20 bytes (3.1.6)
DEFAULT_BOUNDARY = MiB  # mkfs.exfat's default boundary alignment
SECTOR_SIZES = (512, 1024, 2048, 4096)
ROOT_SYSTEM_ENTRIES = 4  # volume label, volume GUID (or its reserved slot), bitmap, up-case table
MAX_LABEL_UNITS = 11


def default_cluster_size(volume_bytes: int) -> int:
    """mkfs.exfat's cluster size for a volume of this size (exfatprogs 1.2)."""
    if volume_bytes <= 256 * MiB:
        return 4 * KiB
    if volume_bytes <= 32 * GiB:
        return 32 * KiB
    return 128 * KiB


def _round_up(n: int, unit: int) -> int:
    return (n + unit - 1) // unit * unit


def _ceil_div(n: int, d: int) -> int:
    return (n + d - 1) // d


@dataclass(frozen=True)
class Options:
    """The typed `[filesystem.options]` of an exFAT filesystem (mkfs.exfat's names)."""

    cluster_size: int | None = None  # mkfs.exfat -c; None: by volume size
    sector_size: int = 512  # mkfs.exfat -s
    boundary_align: int = DEFAULT_BOUNDARY  # mkfs.exfat -b
    volume_guid: str | None = None  # mkfs.exfat -U: "auto" (from the seed) or a GUID
    partition_offset: int = 0  # PartitionOffset, in sectors (0: ignore)
    follow_symlinks: bool = False


def _power_of_two(v: int) -> bool:
    return v > 0 and v & (v - 1) == 0


def parse_options(params: FsParams) -> Options:
    w = f"{params.where}.options"
    r = OptionReader(params.options, where=w)
    csize = r.get_size("cluster_size", None)
    ssize = r.get_size("sector_size", 512)
    align = r.get_size("boundary_align", DEFAULT_BOUNDARY)
    guid = r.get_str("volume_guid", None)
    offset = r.get_int("partition_offset", 0, 0, (1 << 64) - 1)
    follow = r.get_bool("follow_symlinks", False)
    r.finish()
    if ssize not in SECTOR_SIZES:
        raise SpecError(f"must be 512, 1024, 2048 or 4096 bytes; got {ssize}", where=f"{w}.sector_size")
    if csize is None and params.block_size is not None:
        csize, cwhere = params.block_size, f"{params.where}.block_size"
    else:
        cwhere = f"{w}.cluster_size"
    if csize is not None:
        if not _power_of_two(csize) or not ssize <= csize <= MAX_CLUSTER_SIZE:
            raise SpecError(f"an exFAT cluster size must be a power of 2 from the sector size "
                            f"({ssize}) to 32 MiB; got {csize}", where=cwhere)
    if not _power_of_two(align) or align < ssize:
        raise SpecError(f"must be a power of 2 of at least the sector size ({ssize}); got {align}",
                        where=f"{w}.boundary_align")
    if guid is not None and guid != "auto":
        guid = str(parse_uuid(guid, f"{w}.volume_guid"))
    if guid is not None and params.uuid:
        raise SpecError("set uuid or options.volume_guid, not both (both are the volume GUID)",
                        where=f"{w}.volume_guid")
    return Options(csize, ssize, align, guid, offset, follow)


# -- geometry ---------------------------------------------------------------------

@dataclass(frozen=True)
class Geometry:
    """Where everything lives; offsets and lengths in bytes from the volume start."""

    sector_size: int
    volume_bytes: int
    cluster_size: int
    fat_offset: int
    fat_length: int
    heap_offset: int
    clusters: int

    def cluster_offset(self, cluster: int) -> int:
        return self.heap_offset + (cluster - FIRST_CLUSTER) * self.cluster_size

    @property
    def bitmap_bytes(self) -> int:
        return _ceil_div(self.clusters, 8)

    @property
    def system_clusters(self) -> int:
        """Clusters the allocation bitmap and the up-case table take."""
        return _ceil_div(self.bitmap_bytes, self.cluster_size) + _ceil_div(UPCASE_SIZE, self.cluster_size)


class _Layout(Exception):
    """No legal layout for this volume size (too_small says which way to go)."""

    def __init__(self, message: str, too_small: bool):
        super().__init__(message)
        self.too_small = too_small


def geometry_for(volume_bytes: int, opts: Options) -> Geometry:
    """mkfs.exfat's layout for a volume of this size (FAT and heap on alignment boundaries)."""
    ss = opts.sector_size
    volume_bytes = volume_bytes // ss * ss
    if volume_bytes < MIN_VOLUME:
        raise _Layout(f"{format_size(volume_bytes)} is too small for exFAT (at least 1 MiB)", True)
    cs = opts.cluster_size or default_cluster_size(volume_bytes)
    align = opts.boundary_align
    fat_offset = _round_up(BOOT_SECTORS * 2 * ss, align)
    fat_length = _round_up(volume_bytes // cs * 4, cs)
    while True:
        heap = _round_up(fat_offset + fat_length, align)
        if heap >= volume_bytes:
            raise _Layout(f"{format_size(volume_bytes)} leaves no room for a cluster heap after "
                          f"the FAT with {format_size(align)} alignment", True)
        clusters = (volume_bytes - heap) // cs
        if (clusters + 2) * 4 <= fat_length:
            break
        fat_length += cs
    if clusters > MAX_CLUSTERS:
        raise _Layout(f"{format_size(volume_bytes)} in clusters of {format_size(cs)} makes "
                      f"{clusters} clusters; exFAT allows {MAX_CLUSTERS} (use a larger cluster_size)",
                      False)
    if max(fat_offset, fat_length, heap) // ss > 0xFFFFFFFF:
        raise _Layout(f"{format_size(volume_bytes)} needs a FAT larger than exFAT describes "
                      "(use a larger cluster_size)", False)
    return Geometry(ss, volume_bytes, cs, fat_offset, fat_length, heap, clusters)


# -- the tree as entry sets -----------------------------------------------------------

@dataclass(eq=False, slots=True)
class _Child:
    """One child of a directory (a file's clusters are found by its _Child, a directory's by
    its path: no path string per file)."""

    name: str
    node: Node
    units: bytes  # UTF-16LE

    @property
    def entries(self) -> int:
        return 2 + _ceil_div(len(self.units) // 2, NAME_UNITS_PER_ENTRY)


@dataclass
class _Dir:
    path: str
    node: Node
    children: list[_Child] = field(default_factory=list)

    @property
    def entries(self) -> int:
        n = ROOT_SYSTEM_ENTRIES if self.path == "/" else 0
        return n + sum(c.entries for c in self.children)

    def clusters(self, cs: int) -> int:
        return max(1, _ceil_div(self.entries * ENTRY, cs))


@dataclass
class _Plan:
    dirs: dict[str, _Dir]  # by path, in walk order

    def content_clusters(self, cs: int) -> int:
        """Clusters of every directory (root included) and file."""
        n = 0
        for d in self.dirs.values():
            n += d.clusters(cs)
            for c in d.children:
                if c.node.kind is Kind.FILE:
                    n += _ceil_div(c.node.size, cs)
        return n

    def walk(self) -> Iterator[tuple[str | _Child, Node]]:
        """What gets clusters, in Tree.walk order (children in name order), root first:
        (path, node) for a directory, (_Child, node) for a file."""
        return walk_plan(self.dirs, lambda d: d.children)


def _name_units(name: str, path: str) -> bytes:
    """The UTF-16LE form of a name exFAT can hold (7.7.3), or InputError."""
    try:
        units = name.encode("utf-16-le")
    except UnicodeEncodeError:
        raise InputError("name is not valid UTF-8, and exFAT stores names as UTF-16",
                         where=path) from None
    bad = sorted({c for c in name if c in FORBIDDEN_NAME_CHARS or ord(c) < 0x20})
    if bad:
        raise InputError(f"exFAT names cannot contain {', '.join(repr(c) for c in bad)}", where=path)
    if len(units) // 2 > MAX_NAME_UNITS:
        raise InputError(f"name is {len(units) // 2} UTF-16 units long; exFAT allows "
                         f"{MAX_NAME_UNITS}", where=path)
    return units


def plan(tree: Tree) -> _Plan:
    """Check every entry can be stored and group children by directory."""
    refuse_unstorable(tree, "exFAT")
    up = upcase_map()
    dirs: dict[str, _Dir] = {}
    for path, node in tree.walk():
        if node.kind is not Kind.DIR:
            continue
        d = _Dir(path, node)
        base = path.rstrip("/")
        seen: dict[bytes, str] = {}
        for name, child in node.sorted_children():
            cpath = f"{base}/{name}"
            units = _name_units(name, cpath)
            key = upcase_units(units, up)
            if key in seen:
                raise InputError(f"names {seen[key]!r} and {name!r} differ only by case, and exFAT "
                                 "names are case-insensitive", where=cpath)
            seen[key] = name
            d.children.append(_Child(name, child, units))
        if d.entries * ENTRY > MAX_DIR_BYTES:
            raise InputError(f"directory needs {d.entries} entries; exFAT directories hold at most "
                             f"{MAX_DIR_BYTES // ENTRY}", where=path)
        dirs[path] = d
    return _Plan(dirs)


def _needed(g: Geometry, p: _Plan, headroom: int) -> int:
    return g.system_clusters + p.content_clusters(g.cluster_size) + _ceil_div(headroom, g.cluster_size)


def auto_geometry(p: _Plan, opts: Options, headroom: int, where: str) -> Geometry:
    """The smallest whole-MiB volume that holds the tree plus headroom."""
    content = sum(c.node.size for d in p.dirs.values() for c in d.children if c.node.kind is Kind.FILE)
    size = max(MIN_VOLUME, _round_up(content + headroom, MiB))
    for _ in range(100000):
        try:
            g = geometry_for(size, opts)
        except _Layout as e:
            if not e.too_small:
                raise CapacityError(f"the content ({format_size(content)}) does not fit in any "
                                    f"exFAT volume with these options: {e}", where=where) from None
            size += MiB
            continue
        need = _needed(g, p, headroom)
        if need <= g.clusters:
            return g
        size += max(MiB, _round_up((need - g.clusters) * g.cluster_size, MiB))
    raise CapacityError(f"the content ({format_size(content)}) is too large for an exFAT volume",
                        where=where)


# -- identifiers ----------------------------------------------------------------------

def _label_units(params: FsParams) -> bytes:
    label = params.label or ""
    units = label.encode("utf-16-le", errors="surrogatepass")
    if len(units) // 2 > MAX_LABEL_UNITS:
        raise SpecError(f"exFAT volume label {label!r} is {len(units) // 2} UTF-16 characters; "
                        f"at most {MAX_LABEL_UNITS}", where=params.where)
    if any(ord(c) < 0x20 for c in label) or any(0xD800 <= ord(c) <= 0xDFFF for c in label):
        raise SpecError(f"invalid exFAT volume label {label!r}", where=params.where)
    return units


def _serial(params: FsParams) -> int:
    """The volume serial: the spec's, else derived from the seed."""
    if params.volume_id is None:
        return derive_u32(params.seed, "exfat-volume-serial")
    from ...spec import parse_volume_id  # the one volume-id parser (a no-op on a spec's value)
    return int(parse_volume_id(params.volume_id, f"{params.where}.volume_id"), 16)


def _volume_guid(params: FsParams, opts: Options) -> uuid.UUID | None:
    if params.uuid:
        return parse_uuid(params.uuid, f"{params.where}.uuid")
    if opts.volume_guid == "auto":
        return derive_uuid(params.seed, "exfat-volume-guid")
    if opts.volume_guid:
        return uuid.UUID(opts.volume_guid)
    return None


# -- records ----------------------------------------------------------------------------

def _attributes(node: Node) -> int:
    attr = ATTR_DIRECTORY if node.kind is Kind.DIR else ATTR_ARCHIVE
    if not node.mode & 0o200:
        attr |= ATTR_READ_ONLY
    return attr


def _entry_set(c: _Child, first: int, length: int, up: tuple[int, ...]) -> bytearray:
    """File + Stream Extension + File Name entries for one child, with its SetChecksum."""
    node = c.node
    stamp, ms10 = to_exfat_time(node.mtime, node.mtime_ns)
    nunits = len(c.units) // 2
    step = 2 * NAME_UNITS_PER_ENTRY
    names = [c.units[i:i + step] for i in range(0, len(c.units), step)]
    # an empty file has no cluster, and then neither NoFatChain (fsck.exfat: "empty, but has no Fat chain")
    flags = FLAG_ALLOCATION_POSSIBLE | (FLAG_NO_FAT_CHAIN if first else 0)
    buf = bytearray(FILE_ENTRY.pack(TYPE_FILE, 1 + len(names), 0, _attributes(node), 0, stamp, stamp,
                                    stamp, ms10, ms10, UTC_OFFSET_VALID, UTC_OFFSET_VALID,
                                    UTC_OFFSET_VALID, bytes(7)))
    buf += STREAM_ENTRY.pack(TYPE_STREAM, flags, 0, nunits, name_hash(upcase_units(c.units, up)), 0,
                             length, 0, first, length)
    for part in names:
        buf += NAME_ENTRY.pack(TYPE_NAME, 0, part)
    buf[2:4] = set_checksum(buf).to_bytes(2, "little")
    return buf


def _system_entries(label: bytes, guid: uuid.UUID | None, g: Geometry, upcase_first: int) -> bytes:
    out = bytearray(LABEL_ENTRY.pack(TYPE_LABEL, len(label) // 2, label, bytes(8)))
    if guid is not None:
        e = bytearray(GUID_ENTRY.pack(TYPE_GUID, 0, 0, 0, guid.bytes_le, bytes(10)))
        e[2:4] = set_checksum(e).to_bytes(2, "little")
        out += e
    else:
        # the slot mkfs.exfat keeps for a GUID set later; an unused entry to every reader
        out += bytes([TYPE_GUID_UNUSED]) + bytes(ENTRY - 1)
    out += BITMAP_ENTRY.pack(TYPE_BITMAP, 0, bytes(18), FIRST_CLUSTER, g.bitmap_bytes)
    out += UPCASE_ENTRY.pack(TYPE_UPCASE, bytes(3), UPCASE_CHECKSUM, bytes(12), upcase_first, UPCASE_SIZE)
    return bytes(out)


def boot_region(g: Geometry, opts: Options, serial: int, root: int, used: int) -> bytes:
    """The 12 sectors of a boot region (main and backup are the same bytes)."""
    ss = g.sector_size
    percent = min(100, used * 100 // g.clusters) if g.clusters else 0
    boot = bytearray(ss)
    BOOT.pack_into(boot, 0, JUMP_BOOT, FS_NAME, bytes(53), opts.partition_offset, g.volume_bytes // ss,
                   g.fat_offset // ss, g.fat_length // ss, g.heap_offset // ss, g.clusters, root,
                   serial, REVISION, 0, ss.bit_length() - 1, (g.cluster_size // ss).bit_length() - 1,
                   1, 0x80, percent, bytes(7), b"\xf4" * 390, BOOT_SIGNATURE)
    ext = bytearray(ss)
    ext[ss - 4:] = EXT_BOOT_SIGNATURE.to_bytes(4, "little")
    region = bytes(boot) + bytes(ext) * 8 + bytes(ss) * 2  # + OEM parameters, reserved
    csum = boot_checksum(region)
    return region + csum.to_bytes(4, "little") * (ss // 4)


def _fat_head(chains: list[tuple[int, int]]) -> bytes:
    """FAT entries 0 .. the end of the last chain."""
    end = max(start + count for start, count in chains)
    entries = [0] * end
    entries[0], entries[1] = FAT_MEDIA, FAT_EOC
    for start, count in chains:
        last = start + count - 1
        entries[start:last] = range(start + 1, last + 1)
        entries[last] = FAT_EOC
    return b"".join(e.to_bytes(4, "little") for e in entries)


def _bitmap_head(used: int) -> bytes:
    """The allocation bitmap up to its last set bit: clusters 2 .. 2+used-1 are in use."""
    full, rest = divmod(used, 8)
    return b"\xff" * full + (bytes([(1 << rest) - 1]) if rest else b"")


# -- writing --------------------------------------------------------------------------------

def write(tree: Tree, out: ImageFile, params: FsParams) -> int:
    """Write tree as an exFAT volume into out; return the volume size in bytes."""
    opts = params.opts if isinstance(params.opts, Options) else parse_options(params)
    label = _label_units(params)
    serial = _serial(params)
    guid = _volume_guid(params, opts)
    if opts.follow_symlinks:
        follow_file_symlinks(tree)
    p = plan(tree)

    if params.size is None:
        g = auto_geometry(p, opts, params.headroom, params.where)
    else:
        try:
            g = geometry_for(params.size, opts)
        except _Layout as e:
            raise SpecError(str(e), where=params.where) from None
        need = _needed(g, p, 0)
        if need > g.clusters:
            try:
                hint = f"; a {format_size(auto_geometry(p, opts, 0, params.where).volume_bytes)} " \
                       "volume would hold it"
            except CapacityError:
                hint = ""
            raise CapacityError(
                f"the content needs {need} clusters of {format_size(g.cluster_size)} "
                f"({format_size(need * g.cluster_size)}) but the {format_size(g.volume_bytes)} exFAT "
                f"volume has {g.clusters} ({format_size(g.clusters * g.cluster_size)})" + hint,
                where=params.where)
    cs = g.cluster_size
    params.log(f"exFAT: {g.volume_bytes} bytes, {g.clusters} clusters of {cs} bytes, FAT at "
               f"{g.fat_offset}, heap at {g.heap_offset}")
    out.truncate(g.volume_bytes)

    # Allocate: bitmap, up-case table, root (as mkfs.exfat), then one run per entry in walk order.
    nxt = FIRST_CLUSTER
    bitmap_n = _ceil_div(g.bitmap_bytes, cs)
    upcase_first = nxt + bitmap_n
    upcase_n = _ceil_div(UPCASE_SIZE, cs)
    root_first = upcase_first + upcase_n
    root_n = p.dirs["/"].clusters(cs)
    chains = [(FIRST_CLUSTER, bitmap_n), (upcase_first, upcase_n), (root_first, root_n)]
    nxt = root_first + root_n
    start_of: dict[str | _Child, int] = {"/": root_first}  # a directory's path, a file's _Child
    files: list[tuple] = []  # (source, offset in the image) of every non-empty file, as placed
    walk = p.walk()
    next(walk)  # the root, placed above
    for key, node in walk:
        if node.kind is Kind.DIR:
            count = p.dirs[key].clusters(cs)
        else:
            count = _ceil_div(node.size, cs)
            if count:
                files.append((node.source, g.cluster_offset(nxt)))
        if count:
            start_of[key] = nxt
            nxt += count
    used = nxt - FIRST_CLUSTER
    assert used <= g.clusters

    # Directories, written whole.
    up = upcase_map()
    for path, d in p.dirs.items():
        data = bytearray(_system_entries(label, guid, g, upcase_first) if path == "/" else b"")
        base = path.rstrip("/")
        for c in d.children:
            if c.node.kind is Kind.DIR:
                cpath = f"{base}/{c.name}"
                first, length = start_of.get(cpath, 0), p.dirs[cpath].clusters(cs) * cs
            else:
                first, length = start_of.get(c, 0), c.node.size
            data += _entry_set(c, first, length, up)
        if not params.sparse:  # else the unused tail of the last cluster stays a hole
            data = data.ljust(d.clusters(cs) * cs, b"\0")
        out.pwrite(data, g.cluster_offset(start_of[path]))

    # File contents, streamed.
    copy_sources(out, files, params.sparse, report=params.report)

    # Up-case table, allocation bitmap, FAT.
    out.pwrite(upcase_table(), g.cluster_offset(upcase_first))
    bitmap = _bitmap_head(used)
    out.pwrite(bitmap, g.cluster_offset(FIRST_CLUSTER))
    fat = _fat_head(chains)
    out.pwrite(fat, g.fat_offset)
    if not params.sparse:
        write_zeros(out, g.cluster_offset(FIRST_CLUSTER) + len(bitmap), bitmap_n * cs - len(bitmap))
        write_zeros(out, g.fat_offset + len(fat), g.fat_length - len(fat))

    # Boot regions: main and backup.
    region = boot_region(g, opts, serial, root_first, used)
    out.pwrite(region, 0)
    out.pwrite(region, BACKUP_BOOT * g.sector_size)
    return g.volume_bytes
