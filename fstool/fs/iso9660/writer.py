"""ISO 9660 writer: Rock Ridge, Joliet, El Torito (BIOS and UEFI) and an isohybrid GPT.

Plan first, then write, all positions in 2048-byte sectors:

    0-15   system area: empty, or (hybrid) an MBR and the primary GPT
    16     primary volume descriptor, then the El Torito boot record, the Joliet
           supplementary descriptor and the terminator
    ...    path tables (L and M, primary then Joliet), primary directories, the Rock
           Ridge continuation area, Joliet directories, the boot catalog
    ...    file data in tree order (hardlinks share one extent); the ESP image last,
           so the hybrid GPT can give it a partition of its own
    end    (hybrid) the backup GPT

Directory record sizes depend only on names and Rock Ridge entry sizes, never on locations,
so the plan is: sizes -> locations -> bytes. Directories deeper than ECMA-119's eight levels
are moved under /RR_MOVED and linked back with CL/PL/RE (RRIP 4.1.5), as mkisofs does. File
data is copied with ImageFile.copy_from and holes stay holes. Every date is the entry's mtime or
params.timestamp; volume ids and GUIDs derive from params.seed.
"""
from __future__ import annotations

import os
import struct
from dataclasses import dataclass

from ...errors import CapacityError, InputError, SpecError
from ...ids import derive_u32, derive_uuid
from ...image import ImageFile, copy_sources
from ...sizes import format_size
from ...tree import Kind, Node, Tree
from ..base import FsParams, OptionReader
from . import susp
from .format import (
    BOOT_ENTRY, BOOT_INFO_TABLE, BOOT_RECORD, BOOTABLE, DIR_RECORD, EL_TORITO_ID, FLAG_DIR, FLAG_MULTI_EXTENT,
    JOLIET_ESCAPE, MAX_EXTENT, NO_EMULATION, PATH_RECORD_L, PATH_RECORD_M, PLATFORM_EFI, PLATFORM_X86,
    SECTION_HEADER, SECTOR, STD_ID, SYSTEM_AREA, VALIDATION_ENTRY, VD_BOOT, VD_PRIMARY, VD_SUPPLEMENTARY,
    VD_TERMINATOR, VOLUME_DESCRIPTOR, DirRecord, VolumeDescriptor, both16, both32, date7, date17,
)
from .names import assign_iso, assign_joliet, iso_sort_key

MAX_LEVELS = 8  # ECMA-119 6.8.2.1: directory hierarchy depth, the root being level 1
RELOC_ISO, RELOC_RR = b"RR_MOVED", "rr_moved"
ESP_TYPE = "C12A7328-F81F-11D2-BA4B-00A0C93EC93B"
BASIC_DATA_TYPE = "EBD0A0A2-B9E5-4433-87C0-68B6B72699C7"
GPT_TAIL = 33 * 512  # backup entry array and header


@dataclass
class IsoOptions:
    joliet: bool = True
    rock_ridge: bool = True
    bios_boot: str | None = None
    bios_load_size: int = 4
    boot_info_table: bool = False
    efi_boot: str | None = None
    hybrid: bool = False
    mbr_code: str | None = None
    relocate: bool = True
    publisher: str = ""
    application: str = "FSTOOL"


def _parse_options(params: FsParams) -> IsoOptions:
    where = f"{params.where}.options"
    o = OptionReader(params.options, where)
    opts = IsoOptions(
        joliet=o.get_bool("joliet", True),
        rock_ridge=o.get_bool("rock_ridge", True),
        bios_boot=o.get_str("bios_boot"),
        bios_load_size=o.get_int("bios_load_size", 4, 1, 0xFFFF),
        boot_info_table=o.get_bool("boot_info_table", False),
        efi_boot=o.get_str("efi_boot"),
        hybrid=o.get_bool("hybrid", False),
        mbr_code=o.get_str("mbr_code"),
        relocate=o.get_bool("relocate_deep_dirs", True),
        publisher=o.get_str("publisher", ""),
        application=o.get_str("application", "FSTOOL"),
    )
    o.finish()
    if opts.mbr_code is not None:
        if not opts.hybrid:
            raise SpecError("mbr_code only makes sense with hybrid = true", where=f"{where}.mbr_code")
        opts.mbr_code = os.path.abspath(opts.mbr_code)
        if not os.path.isfile(opts.mbr_code) or os.path.getsize(opts.mbr_code) < 432:
            raise SpecError("must be a file of at least 432 bytes (e.g. syslinux's isohdpfx.bin)",
                            where=f"{where}.mbr_code: {opts.mbr_code}")
    if opts.boot_info_table and not opts.bios_boot:
        raise SpecError("boot_info_table patches the bios_boot file; set bios_boot", where=f"{where}.boot_info_table")
    for key in ("publisher", "application"):
        v = getattr(opts, key)
        if len(v) > 128 or not v.isascii():
            raise SpecError("must be at most 128 ASCII characters", where=f"{where}.{key}")
    if params.uuid:
        raise SpecError("an ISO 9660 image has no UUID (its volume id is `label`)", where=f"{params.where}.uuid")
    if params.block_size not in (None, SECTOR):
        raise SpecError("ISO 9660 sectors are 2048 bytes", where=f"{params.where}.block_size")
    if params.label is not None and (len(params.label) > 32 or not params.label.isascii()):
        raise SpecError("an ISO 9660 volume id is at most 32 ASCII characters", where=f"{params.where}.label")
    return opts


# -- the plan ------------------------------------------------------------------------------------

@dataclass(eq=False, slots=True)
class IsoDir:
    node: Node
    name: str  # real name ("" for the root)
    parent: "IsoDir | None"  # the real parent
    iso_parent: "IsoDir | None" = None  # the parent in the ISO 9660 hierarchy (RR_MOVED when relocated)
    level: int = 1
    entries: list | tuple = ()  # Entry, in record order
    jentries: list | tuple = ()
    number: int = 0
    jnumber: int = 0
    lba: int = 0
    size: int = 0
    jlba: int = 0
    jsize: int = 0
    relocated: bool = False
    kids: list | tuple = ()  # (name, node, IsoDir or None) in name order, until numbered
    dot: object = None  # Placements of the "." and ".." records
    dotdot: object = None
    iso_id: bytes = b"\0"
    joliet_id: bytes = b"\0"


@dataclass(eq=False, slots=True)
class Entry:
    name: str
    node: Node
    ident: bytes
    dir: IsoDir | None = None  # a directory (or, with `link`, the placeholder of a relocated one)
    link: bool = False  # a CL placeholder in the real parent
    moved: bool = False  # the relocated directory's own record (RE) in RR_MOVED
    placement: object = None
    records: int = 1  # multi-extent files take several records


@dataclass(eq=False, slots=True)
class JolietEntry:
    """A record of the Joliet tree: only what it needs (no Rock Ridge, no relocation)."""

    name: str
    node: Node
    ident: bytes
    dir: IsoDir | None = None


def _extents(size: int) -> list[tuple[int, int]]:
    """(byte offset, length) of each extent of a file (ISO level 3 multi-extent above 4 GiB)."""
    if size == 0:
        return [(0, 0)]
    return [(off, min(MAX_EXTENT, size - off)) for off in range(0, size, MAX_EXTENT)]


def _record(ident: bytes, lba: int, size: int, flags: int, mtime: int, su: bytes) -> bytes:
    pad = b"\0" if len(ident) % 2 == 0 else b""
    body = ident + pad + su
    if (DIR_RECORD.size + len(body)) % 2:
        body += b"\0"
    length = DIR_RECORD.size + len(body)
    if length > 255:
        raise CapacityError(f"directory record of {length} bytes", where=ident.decode(errors="replace"))
    return DIR_RECORD.pack(*DirRecord(length, 0, both32(lba), both32(size), date7(mtime), flags, 0, 0,
                                      both16(1), len(ident))) + body


def _record_size(ident: bytes, su_size: int) -> int:
    n = DIR_RECORD.size + len(ident) + (1 if len(ident) % 2 == 0 else 0) + su_size
    return n + (n % 2)


class Plan:
    def __init__(self, tree: Tree, params: FsParams, opts: IsoOptions):
        self.tree, self.params, self.opts = tree, params, opts
        self.ino: dict[Node, int] = {}  # keyed by node (identity): no id() int per entry
        for _, n in tree.walk():
            self.ino.setdefault(n, len(self.ino) + 1)
        self.root = IsoDir(tree.root, "", None)
        self.dirs: list[IsoDir] = []  # path table order (primary)
        self.reloc: IsoDir | None = None
        self.left_out: list[Node] = []
        self._build(self.root)
        self._number()

    # the ISO hierarchy, relocating what is too deep (iteratively: trees may be deeper than the stack)
    def _build(self, top: IsoDir) -> None:
        stack = [top]
        while stack:
            d = stack.pop()
            kids = []
            for name, node in d.node.sorted_children():
                if node.kind not in (Kind.FILE, Kind.DIR) and not self.opts.rock_ridge:
                    self.left_out.append(node)  # only Rock Ridge can say what a symlink or device is
                    continue
                sub = None
                if node.kind is Kind.DIR:
                    sub = IsoDir(node, name, d, d, d.level + 1)
                    if sub.level > MAX_LEVELS and self.opts.rock_ridge and self.opts.relocate:
                        if self.reloc is None:
                            self.reloc = IsoDir(Node(Kind.DIR, mode=0o755, mtime=self.params.timestamp),
                                                RELOC_RR, self.root, self.root, 2)
                        sub.iso_parent, sub.level, sub.relocated = self.reloc, 3, True
                    stack.append(sub)
                kids.append((name, node, sub))
            d.kids = kids

    def _number(self) -> None:
        """Make each directory's records and the path-table order (breadth first, ECMA-119 9.4)."""
        placed: dict[IsoDir, list] = {}  # IsoDir -> [(name, node, sub, moved)]
        all_dirs = [self.root]
        i = 0
        while i < len(all_dirs):
            d = all_dirs[i]
            i += 1
            for _, _, sub in d.kids:
                if sub is not None:
                    all_dirs.append(sub)
        for d in all_dirs:
            for name, node, sub in d.kids:
                if sub is not None and sub.relocated:
                    placed.setdefault(d, []).append((name, node, sub, "link"))
                    placed.setdefault(sub.iso_parent, []).append((name, node, sub, "moved"))
                else:
                    placed.setdefault(d, []).append((name, node, sub, ""))
            d.kids = ()  # read only here
        if self.reloc is not None:
            placed.setdefault(self.root, []).append((RELOC_RR, self.reloc.node, self.reloc, "reloc"))
            self.reloc.kids = ()
        # identifiers, then record order, per directory
        for d, items in placed.items():
            idents = assign_iso([(n, sub is not None and how != "link") for n, _, sub, how in items])
            ents = []
            for (name, node, sub, how), ident in zip(items, idents):
                if how == "reloc":
                    ident = RELOC_ISO
                e = Entry(name, node, ident, sub, link=how == "link", moved=how == "moved")
                if sub is not None and how in ("", "moved", "reloc"):
                    sub.iso_id = ident
                ents.append(e)
            ents.sort(key=lambda e: iso_sort_key(e.ident))
            d.entries = ents
            if self.opts.joliet and d is not self.reloc:
                jitems = [(n, node, sub) for n, node, sub, how in items
                          if how in ("", "link") and (sub is not None or node.kind is Kind.FILE)]
                jids = assign_joliet([(n, sub is not None) for n, _, sub in jitems])
                jents = [JolietEntry(n, node, j, sub) for (n, node, sub), j in zip(jitems, jids)]
                for e in jents:
                    if e.dir is not None:
                        e.dir.joliet_id = e.ident
                jents.sort(key=lambda e: e.ident)
                d.jentries = jents
        # primary path table order: breadth first over the ISO hierarchy, children by identifier
        order = [self.root]
        i = 0
        while i < len(order):
            d = order[i]
            i += 1
            for e in d.entries:
                if e.dir is not None and not e.link:
                    order.append(e.dir)
        if len(order) > 0xFFFF:
            raise CapacityError(f"{len(order)} directories; an ISO 9660 path table numbers at most 65535",
                                where=self.params.where)
        for n, d in enumerate(order, 1):
            d.number = n
        self.dirs = order
        jorder = [self.root]
        i = 0
        while self.opts.joliet and i < len(jorder):
            d = jorder[i]
            i += 1
            for e in d.jentries:
                if e.dir is not None:
                    jorder.append(e.dir)
        for n, d in enumerate(jorder, 1):
            d.jnumber = n
        self.jdirs = jorder if self.opts.joliet else []

    # Rock Ridge entries of each record (sizes are fixed, values may be placeholders)
    def rr(self, d: IsoDir, e: Entry | None, which: str) -> list[bytes]:
        t = self.tree
        if which == ".":
            out = susp.entries_for(d.node, None, t.nlink(d.node) if d is not self.reloc else 2,
                                   self.ino.get(d.node, 0))
            if d is self.root:
                out = [susp.sp()] + out + [susp.er()]
            return out
        if which == "..":
            parent = d.parent if d.parent is not None else d
            node = parent.node
            out = susp.entries_for(node, None, t.nlink(node), self.ino.get(node, 0))
            if d.relocated:
                out.append(susp.pl(d.parent.lba))
            return out
        node = e.node
        nlink = 2 if e.dir is not None and e.dir is self.reloc else t.nlink(node)
        out = susp.entries_for(node, e.name, nlink, self.ino.get(node, 0))
        if e.link:
            out.append(susp.cl(e.dir.lba))
        if e.moved or e.dir is self.reloc and e.dir is not None:
            # the relocation directory itself carries RE too (as mkisofs and libarchive write it),
            # so Rock Ridge readers hide it along with the relocated directories
            out.append(susp.re())
        return out

    def layout_dirs(self, start: int) -> int:
        """Size and place the primary directories from LBA start; the next free LBA."""
        lba = start
        rr = self.opts.rock_ridge
        for d in self.dirs:
            d.dot = susp.placement(self.rr(d, None, ".") if rr else [], 255 - 34)
            d.dotdot = susp.placement(self.rr(d, None, "..") if rr else [], 255 - 34)
            sizes = [_record_size(b"\0", d.dot.inline_size()), _record_size(b"\1", d.dotdot.inline_size())]
            for e in d.entries:
                e.placement = susp.placement(self.rr(d, e, "") if rr else [],
                                             255 - _record_size(e.ident, 0))
                n = len(_extents(e.node.size)) if e.node.kind is Kind.FILE else 1
                e.records = n
                sizes += [_record_size(e.ident, e.placement.inline_size())] * n
            d.size = _pack_size(sizes)
            d.lba = lba
            lba += d.size // SECTOR
        return lba

    def layout_joliet(self, start: int) -> int:
        lba = start
        for d in self.jdirs:
            sizes = [34, 34]
            for e in d.jentries:
                n = len(_extents(e.node.size)) if e.node.kind is Kind.FILE else 1
                sizes += [_record_size(e.ident, 0)] * n
            d.jsize = _pack_size(sizes)
            d.jlba = lba
            lba += d.jsize // SECTOR
        return lba


def _pack_size(sizes: list[int]) -> int:
    """Bytes of a directory extent: records never cross a sector boundary (ECMA-119 6.8.1.1)."""
    pos = 0
    for s in sizes:
        if pos % SECTOR + s > SECTOR:
            pos += -pos % SECTOR
        pos += s
    return max(SECTOR, pos + (-pos % SECTOR))


def _dir_bytes(records: list[bytes], size: int) -> bytes:
    out = bytearray()
    for r in records:
        if len(out) % SECTOR + len(r) > SECTOR:
            out += bytes(-len(out) % SECTOR)
        out += r
    return bytes(out.ljust(size, b"\0"))


def _path_table(dirs: list[IsoDir], joliet: bool) -> tuple[bytes, bytes]:
    """L and M path tables (ECMA-119 9.4): the root first (identifier 0x00), parents by number."""
    lt, mt = bytearray(), bytearray()
    for i, d in enumerate(dirs):
        ident = b"\0" if i == 0 else (d.joliet_id if joliet else d.iso_id)
        lba = d.jlba if joliet else d.lba
        parent = (d.parent if joliet else d.iso_parent) or d
        pnum = parent.jnumber if joliet else parent.number
        pad = b"\0" if len(ident) % 2 else b""
        lt += PATH_RECORD_L.pack(len(ident), 0, lba, pnum) + ident + pad
        mt += PATH_RECORD_M.pack(len(ident), 0, lba, pnum) + ident + pad
    return bytes(lt), bytes(mt)


def _sectors(n: int) -> int:
    return (n + SECTOR - 1) // SECTOR


def _a_str(s: str, n: int) -> bytes:
    return s.upper().encode("ascii", "replace")[:n].ljust(n, b" ")


def _find_file(tree: Tree, path: str, what: str, where: str) -> Node:
    node = tree.lookup(path)
    if node is None:
        raise InputError(f"{what} {path!r} is not in the tree", where=where)
    if node.kind is not Kind.FILE:
        raise InputError(f"{what} {path!r} is a {node.kind.value}, not a regular file", where=where)
    return node


def write(tree: Tree, out: ImageFile, params: FsParams) -> int:
    opts = params.opts if params.opts is not None else _parse_options(params)
    where = f"{params.where}.options"
    if params.headroom:
        raise SpecError("an ISO 9660 image has no free space to add (headroom)", where=f"{params.where}.headroom")
    if params.verbose:
        dropped = sum(1 for _, n in tree.walk() if n.xattrs)
        if dropped:
            params.log(f"iso9660: xattrs are not stored; dropped those of {dropped} entries")
    plan = Plan(tree, params, opts)
    if plan.left_out:
        params.log(f"iso9660: without Rock Ridge, {len(plan.left_out)} symlinks, devices, fifos and sockets "
                   "are left out")
    ts = params.timestamp

    # -- boot images ------------------------------------------------------------------------------
    bios_node = _find_file(tree, opts.bios_boot, "bios_boot", f"{where}.bios_boot") if opts.bios_boot else None
    if bios_node is not None and bios_node.size == 0:
        raise InputError(f"bios_boot {opts.bios_boot!r} is empty", where=f"{where}.bios_boot")
    efi_node = None
    efi_host = None
    if opts.efi_boot:
        efi_node = tree.lookup(opts.efi_boot)
        if efi_node is None:
            host = os.path.abspath(opts.efi_boot)
            if not os.path.isfile(host):
                raise InputError(f"efi_boot {opts.efi_boot!r} is neither a file in the tree nor a host file",
                                 where=f"{where}.efi_boot")
            efi_host = host
        elif efi_node.kind is not Kind.FILE:
            raise InputError(f"efi_boot {opts.efi_boot!r} is a {efi_node.kind.value}", where=f"{where}.efi_boot")
    booting = bios_node is not None or opts.efi_boot is not None
    if opts.hybrid and not booting:
        raise SpecError("hybrid = true needs bios_boot or efi_boot (something to boot from the stick)",
                        where=f"{where}.hybrid")

    # -- locations --------------------------------------------------------------------------------
    lba = SYSTEM_AREA
    pvd_lba = lba
    lba += 1
    boot_record_lba = None
    if booting:
        boot_record_lba = lba
        lba += 1
    svd_lba = None
    if opts.joliet:
        svd_lba = lba
        lba += 1
    term_lba = lba
    lba += 1
    lt, mt = _path_table(plan.dirs, False)  # sizes only for now (locations change no size)
    pt_size = len(lt)
    l_lba = lba
    lba += _sectors(pt_size)
    m_lba = lba
    lba += _sectors(pt_size)
    jpt_size = 0
    if opts.joliet:
        jpt_size = len(_path_table(plan.jdirs, True)[0])
        jl_lba = lba
        lba += _sectors(jpt_size)
        jm_lba = lba
        lba += _sectors(jpt_size)
    lba = plan.layout_dirs(lba)
    # the placements' sizes are known; place the continuation pieces
    ce = susp.ContinuationArea(lba)
    for d in plan.dirs:
        for p in [d.dot, d.dotdot] + [e.placement for e in d.entries]:
            ce.place(p)
    lba += ce.sectors()
    if opts.joliet:
        lba = plan.layout_joliet(lba)
    catalog_lba = None
    if booting:
        catalog_lba = lba
        lba += 1
    # file data: each inode once, in tree order; the ESP last
    data: dict[Node, int] = {}  # keyed by node (identity)
    copies: list[tuple[object, int]] = []
    last: list[Node] = []
    for _, node in tree.walk():
        if node.kind is not Kind.FILE or node in data or node.size == 0:
            continue
        if node is efi_node and opts.hybrid:
            if node not in last:  # (a hardlinked ESP is met once per name)
                last.append(node)
            continue
        data[node] = lba
        copies.append((node.source, lba * SECTOR))
        lba += _sectors(node.size)
    for node in last:
        data[node] = lba
        copies.append((node.source, lba * SECTOR))
        lba += _sectors(node.size)
    efi_lba = efi_size = None
    if efi_host is not None:
        efi_lba, efi_size = lba, os.path.getsize(efi_host)
        lba += _sectors(efi_size)
    elif efi_node is not None:
        efi_lba, efi_size = data.get(efi_node, 0), efi_node.size
        if efi_size == 0:
            raise InputError("efi_boot image is empty", where=f"{where}.efi_boot")
    iso_end = lba * SECTOR
    natural = iso_end + (((GPT_TAIL + SECTOR - 1) // SECTOR) * SECTOR if opts.hybrid else 0)
    total = natural
    if params.size is not None:
        if params.size < natural:
            raise CapacityError(f"the image needs {format_size(natural)} ({natural} bytes) but size is "
                                f"{format_size(params.size)}", where=params.where)
        if params.size % SECTOR:
            raise SpecError(f"size must be a multiple of 2048 bytes, got {params.size}", where=f"{params.where}.size")
        total = params.size
    space = total // SECTOR

    # -- directories (primary, with Rock Ridge) ----------------------------------------------------
    for d in plan.dirs:
        recs = []
        parent = d.iso_parent or d
        recs.append(_record(b"\0", d.lba, d.size, FLAG_DIR, d.node.mtime,
                            _system_use(out, plan, d, None, ".", d.dot)))
        recs.append(_record(b"\1", parent.lba, parent.size, FLAG_DIR, parent.node.mtime,
                            _system_use(out, plan, d, None, "..", d.dotdot)))
        for e in d.entries:
            su = _system_use(out, plan, d, e, "", e.placement)
            if e.dir is not None and not e.link:
                recs.append(_record(e.ident, e.dir.lba, e.dir.size, FLAG_DIR, e.node.mtime, su))
            elif e.node.kind is Kind.FILE:
                exts = _extents(e.node.size)
                base = data.get(e.node, 0)
                for k, (off, n) in enumerate(exts):
                    flags = FLAG_MULTI_EXTENT if k < len(exts) - 1 else 0
                    recs.append(_record(e.ident, base + off // SECTOR if n else 0, n, flags, e.node.mtime, su))
            else:  # symlinks, devices, fifos, sockets, CL placeholders: empty files to plain readers
                recs.append(_record(e.ident, 0, 0, 0, e.node.mtime, su))
        out.pwrite(_dir_bytes(recs, d.size), d.lba * SECTOR)
    for d in plan.jdirs:
        recs = [_record(b"\0", d.jlba, d.jsize, FLAG_DIR, d.node.mtime, b"")]
        parent = d.parent or d
        recs.append(_record(b"\1", parent.jlba, parent.jsize, FLAG_DIR, parent.node.mtime, b""))
        for e in d.jentries:
            if e.dir is not None:
                recs.append(_record(e.ident, e.dir.jlba, e.dir.jsize, FLAG_DIR, e.node.mtime, b""))
            else:
                exts = _extents(e.node.size)
                base = data.get(e.node, 0)
                for k, (off, n) in enumerate(exts):
                    flags = FLAG_MULTI_EXTENT if k < len(exts) - 1 else 0
                    recs.append(_record(e.ident, base + off // SECTOR if n else 0, n, flags, e.node.mtime, b""))
        out.pwrite(_dir_bytes(recs, d.jsize), d.jlba * SECTOR)

    # -- path tables and volume descriptors ---------------------------------------------------------
    lt, mt = _path_table(plan.dirs, False)
    out.pwrite(lt, l_lba * SECTOR)
    out.pwrite(mt, m_lba * SECTOR)
    if opts.joliet:
        jlt, jmt = _path_table(plan.jdirs, True)
        out.pwrite(jlt, jl_lba * SECTOR)
        out.pwrite(jmt, jm_lba * SECTOR)
    volume_id = params.label if params.label is not None else f"ISO_{derive_u32(params.seed, 'iso/volume'):08X}"
    root_rec = _record(b"\0", plan.root.lba, plan.root.size, FLAG_DIR, plan.root.node.mtime, b"")
    out.pwrite(_volume_descriptor(VD_PRIMARY, volume_id, space, pt_size, l_lba, m_lba, root_rec, ts, opts,
                                  joliet=False), pvd_lba * SECTOR)
    if opts.joliet:
        jroot = _record(b"\0", plan.root.jlba, plan.root.jsize, FLAG_DIR, plan.root.node.mtime, b"")
        out.pwrite(_volume_descriptor(VD_SUPPLEMENTARY, volume_id, space, jpt_size, jl_lba, jm_lba, jroot, ts,
                                      opts, joliet=True), svd_lba * SECTOR)
    out.pwrite(bytes((VD_TERMINATOR,)) + STD_ID + b"\1" + bytes(SECTOR - 7), term_lba * SECTOR)

    # -- file data ----------------------------------------------------------------------------------
    copy_sources(out, copies, sparse=params.sparse, report=params.report)
    if efi_host is not None:
        out.copy_sparse_from(efi_host, efi_size, efi_lba * SECTOR)

    # -- El Torito ----------------------------------------------------------------------------------
    bios_lba = data.get(bios_node) if bios_node is not None else None
    if booting:
        out.pwrite(BOOT_RECORD.pack(VD_BOOT, STD_ID, 1, EL_TORITO_ID.ljust(32, b"\0"), bytes(32), catalog_lba,
                                    bytes(1973)), boot_record_lba * SECTOR)
        out.pwrite(_catalog(bios_lba, opts.bios_load_size, efi_lba, efi_size), catalog_lba * SECTOR)
        if bios_node is not None and opts.boot_info_table:
            _patch_boot_info(out, bios_node, bios_lba, pvd_lba)
    if opts.hybrid:
        _write_hybrid(out, params, opts, total, iso_end, efi_lba, efi_size, bios_lba)
    out.truncate(total)
    params.log(f"iso9660: {len(plan.dirs)} directories, {format_size(total)}")
    return total


def _system_use(out: ImageFile, plan: Plan, d: IsoDir, e, which: str, p: susp.Placement) -> bytes:
    """The record's inline system use bytes, its Rock Ridge entries made again with the real
    locations (CL/PL; the sizes the placement was planned with); its continuation pieces are
    written here."""
    if not plan.opts.rock_ridge:
        return b""
    inline, pieces = p.render(plan.rr(d, e, which))
    for plba, poff, raw in pieces:
        out.pwrite(raw, plba * SECTOR + poff)
    return inline


def _volume_descriptor(kind: int, volume_id: str, space: int, pt_size: int, l_lba: int, m_lba: int,
                       root_rec: bytes, ts: int, opts: IsoOptions, joliet: bool) -> bytes:
    text = _ucs2_field if joliet else _a_str
    vd = VolumeDescriptor(
        type=kind, std_id=STD_ID, version=1, flags=0, system_id=text("LINUX", 32),
        volume_id=text(volume_id, 32), unused1=bytes(8), space_size=both32(space),
        escapes=(JOLIET_ESCAPE if joliet else b"").ljust(32, b"\0"), set_size=both16(1), seq_number=both16(1),
        block_size=both16(SECTOR), path_table_size=both32(pt_size), l_path_table=l_lba, l_path_table_opt=0,
        m_path_table=struct.pack(">I", m_lba), m_path_table_opt=bytes(4), root_record=root_rec,
        volume_set_id=text(volume_id, 128), publisher_id=text(opts.publisher, 128), preparer_id=text("FSTOOL", 128),
        application_id=text(opts.application, 128), copyright_file=text("", 37), abstract_file=text("", 37),
        bibliographic_file=text("", 37), created=date17(ts), modified=date17(ts), expires=date17(None),
        effective=date17(None), structure_version=1, unused2=0, application_use=bytes(512), reserved=bytes(653))
    return VOLUME_DESCRIPTOR.pack(*vd)


def _ucs2_field(s: str, n: int) -> bytes:
    raw = "".join(c if ord(c) <= 0xFFFF else "_" for c in s).encode("utf-16-be")[:n - n % 2]
    return (raw + " ".encode("utf-16-be") * n)[:n - n % 2].ljust(n, b"\0")


def _catalog(bios_lba, bios_count: int, efi_lba, efi_size) -> bytes:
    """El Torito boot catalog: validation entry, default entry, then a UEFI section if both."""
    def validation(platform: int) -> bytes:
        raw = VALIDATION_ENTRY.pack(1, platform, 0, b"".ljust(24, b"\0"), 0, 0x55, 0xAA)
        words = struct.unpack("<16H", raw)
        check = (-sum(words)) & 0xFFFF  # all sixteen words sum to zero (El Torito 2.1)
        return VALIDATION_ENTRY.pack(1, platform, 0, b"".ljust(24, b"\0"), check, 0x55, 0xAA)

    def entry(lba: int, count: int) -> bytes:
        return BOOT_ENTRY.pack(BOOTABLE, NO_EMULATION, 0, 0, 0, count, lba, bytes(20))

    efi_count = min(0xFFFF, (efi_size + 511) // 512) if efi_size else 0
    if bios_lba is not None:
        cat = validation(PLATFORM_X86) + entry(bios_lba, bios_count)
        if efi_lba is not None:
            cat += SECTION_HEADER.pack(0x91, PLATFORM_EFI, 1, bytes(28)) + entry(efi_lba, efi_count)
    else:
        cat = validation(PLATFORM_EFI) + entry(efi_lba, efi_count)
    return cat.ljust(SECTOR, b"\0")


def _patch_boot_info(out: ImageFile, node: Node, lba: int, pvd_lba: int) -> None:
    """El Torito boot info table (mkisofs -boot-info-table): at byte 8 of the boot file, the PVD's and
    the file's LBA, its length and the 32-bit sum of its words from byte 64 on."""
    if node.size < 64:
        raise InputError(f"bios_boot file is {node.size} bytes; a boot info table needs at least 64")
    raw = node.source.read(64, node.size - 64)
    raw += bytes(-len(raw) % 4)
    check = sum(struct.unpack(f"<{len(raw) // 4}I", raw)) & 0xFFFFFFFF
    out.pwrite(BOOT_INFO_TABLE.pack(pvd_lba, lba, node.size, check, bytes(40)), lba * SECTOR + 8)


def _write_hybrid(out: ImageFile, params: FsParams, opts: IsoOptions, total: int, iso_end: int,
                  efi_lba, efi_size, bios_lba) -> None:
    """isohybrid: a protective MBR and a GPT in the system area, the backup GPT at the end.

    GPT partition 1 is the ISO's data (from LBA 64, the end of the system area, to the ESP or the
    end of the ISO), partition 2 the ESP image, so the partitions never overlap each other or the
    GPT itself (sgdisk -v finds nothing to complain about), unlike xorriso's -isohybrid-gpt-basdat
    whose first partition starts at 0. With `mbr_code` (e.g. syslinux's isohdpfx.bin), its first
    432 bytes are the MBR boot code and bytes 432-439 point at the BIOS boot file in 512-byte
    sectors, as syslinux's isohybrid patches them."""
    import uuid
    from ...part.gpt import GptPartition, write_gpt

    ss = 512
    parts = []
    iso_last = (efi_lba * SECTOR if efi_lba is not None else iso_end) // ss - 1
    parts.append(GptPartition(64, iso_last, uuid.UUID(BASIC_DATA_TYPE), derive_uuid(params.seed, "iso/gpt/1"),
                              "ISO9660", attributes=1 << 60))
    if efi_lba is not None:
        first = efi_lba * SECTOR // ss
        parts.append(GptPartition(first, first + (efi_size + ss - 1) // ss - 1, uuid.UUID(ESP_TYPE),
                                  derive_uuid(params.seed, "iso/gpt/2"), "EFI System"))
    write_gpt(out, total, ss, derive_uuid(params.seed, "iso/gpt"), parts)
    mbr = bytearray(440)
    if opts.mbr_code:
        with open(opts.mbr_code, "rb") as f:
            mbr[:432] = f.read(432)
        if bios_lba is not None:
            mbr[432:440] = struct.pack("<Q", bios_lba * 4)
    out.pwrite(bytes(mbr) + struct.pack("<I", derive_u32(params.seed, "iso/mbr-signature")), 0)
    if opts.mbr_code:
        # BIOS boot from a stick: some BIOSes only boot a disk with an active partition (sgdisk warns
        # that this bends the GPT rules; without mbr_code the MBR stays strictly protective)
        out.pwrite(b"\x80", 446)
