"""The disk assembler: lay partitions out in order, fill each, then write the table.

Partitions are placed in spec order, each starting at the next alignment
boundary after the previous one (logical MBR partitions leave one sector for
their EBR). Every partition's content is written straight into its window of
the output: a filesystem by its writer, a prebuilt image with ImageFile.copy_from
skipping its holes. An auto-sized partition is written first and measured, so
the next one's start is known only afterwards; nothing is ever moved. Space no
partition writes stays a hole, so an 8 GiB disk holding 300 MB costs 300 MB.

Board layouts: a piece with an `offset` starts exactly there; raw blobs (bootloaders,
`in_partition_table = false`) are placed like partitions but written after the table,
so a blob at offset 0 keeps its boot code while the MBR keeps bytes 440..512 (its
declared hole). Before the table is written, every partition, blob and table structure
is checked against every other (fstool.part.overlap). A dm-verity hash partition is
computed from its data partition's bytes once those are written (fstool.verity).
"""
from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass, field

from .build import build_filesystem
from .errors import CapacityError, InputError, SpecError
from .fs import format_for
from .part.mbr import is_logical, mbr_number
from .ids import derive_u32, derive_uuid
from .image import ImageFile
from .sizes import format_size
from .spec import BlobSpec, DiskSpec, PartSpec, Spec



def align_up(n: int, a: int) -> int:
    return (n + a - 1) // a * a


@dataclass
class Placed:
    spec: PartSpec
    offset: int
    size: int
    type: str
    fs_type: str | None = None
    uuid: str | None = None
    type_id: object = None
    extra: dict = field(default_factory=dict)


def default_type(p: PartSpec) -> str:
    """The partition type when the spec names none: the format's own (msdata for FAT, linux
    otherwise). A prebuilt image is probed, so a FAT image from elsewhere gets msdata too."""
    if p.type:
        return p.type
    if p.fs is not None:
        return format_for(p.fs.type).partition_type
    fmt = _probe_format(p.image) if p.image else None
    return fmt.partition_type if fmt is not None else "linux"


def _probe_format(path: str):
    """The registered format of a prebuilt image, or None when no reader recognises it."""
    from .errors import FstoolError
    from .fs import formats
    from .image import Region
    try:
        with Region(path) as region:
            for fmt in formats():
                mod = fmt.reader_module()
                if mod is not None and mod.probe(region):
                    return fmt
    except (FstoolError, OSError):
        return None
    return None


def table_overhead(disk: DiskSpec) -> tuple[int, int]:
    """(bytes reserved at the start, bytes reserved at the end) by the partition table."""
    ss = disk.sector_size
    if disk.table == "gpt":
        entries = align_up(disk.gpt_entries * 128, ss)
        head = (disk.gpt_location or 2 * ss) + entries
        return max(head, 2 * ss + entries), ss + entries
    return ss, 0


@dataclass
class PlacedBlob:
    spec: BlobSpec
    offset: int
    size: int
    image_size: int


def _zero_holes(out: ImageFile, start: int, end: int) -> None:
    """Write zeros over every hole of out in [start, end) (`fill = true`), past its end too."""
    from .image import write_zeros
    from .tree import SEEK_DATA, SEEK_HOLE
    size = os.fstat(out.fd).st_size - out.base
    pos = start
    while pos < end:
        if pos >= size:
            write_zeros(out, pos, end - pos)
            return
        hole = os.lseek(out.fd, out.base + pos, SEEK_HOLE) - out.base
        if hole >= end:
            return
        if hole >= size:
            write_zeros(out, hole, end - hole)
            return
        try:
            data = os.lseek(out.fd, out.base + hole, SEEK_DATA) - out.base
        except OSError:  # no data after the hole: it runs to the end of the file
            data = size
        stop = min(end, data)
        write_zeros(out, hole, stop - hole)
        pos = stop


def _place_blob(b: BlobSpec, cursor: int, where_end: int | None) -> PlacedBlob:
    try:
        img_size = os.stat(b.image).st_size
    except OSError as e:
        raise InputError(e.strerror or str(e), where=f"{b.where}.image: {b.image}") from None
    start = b.offset if b.offset is not None else align_up(cursor, b.align)
    size = b.size if b.size is not None else img_size
    if img_size > size:
        raise CapacityError(f"the image {b.image} is {format_size(img_size)} but the blob has "
                            f"{format_size(size)}", where=f"{b.where}.size")
    if where_end is not None and start + size > where_end:
        raise CapacityError(f"the blob ends at byte {start + size}, past the end of the disk "
                            f"({where_end})", where=b.where)
    for a, e in b.holes:
        if e > size:
            raise SpecError(f"hole {a}..{e} lies outside the blob ({size} bytes)", where=f"{b.where}.holes")
    return PlacedBlob(b, start, size, img_size)


def _write_blob(out: ImageFile, pb: PlacedBlob) -> None:
    """The blob's data extents at its offset, minus its declared holes (the table's bytes)."""
    from .image import data_extents
    from .part.overlap import _minus
    fd = os.open(pb.spec.image, os.O_RDONLY)
    try:
        for s0, n in data_extents(fd, pb.image_size):
            for a, e in _minus(s0, s0 + n, pb.spec.holes):
                out.copy_from(fd, a, e - a, pb.offset + a)
    finally:
        os.close(fd)
    if pb.spec.fill:
        for a, e in _minus(0, pb.size, pb.spec.holes):
            _zero_holes(out, pb.offset + a, pb.offset + e)


def build_disk(spec: Spec, out: ImageFile, *, verbose: bool = False, progress=None) -> dict:
    """Write the disk spec describes into out; return its layout (as --layout-json prints)."""
    from .part import types as ptypes

    disk = spec.disk
    assert disk is not None
    ss, align = disk.sector_size, disk.alignment
    head, tail = table_overhead(disk)
    limit_end = disk.size - tail if disk.size is not None else None
    n_parts = len(disk.partitions)
    if disk.table == "gpt" and n_parts > disk.gpt_entries:
        raise SpecError(f"the GPT holds {disk.gpt_entries} partitions, the spec has {n_parts}",
                        where="partitions")
    placed: list[Placed] = []
    by_index: dict[int, Placed] = {}
    blobs: list[PlacedBlob] = []
    cursor = head
    for item in disk.sequence:
        if isinstance(item, BlobSpec):
            pb = _place_blob(item, cursor, disk.size)
            blobs.append(pb)
            cursor = pb.offset + pb.size
            continue
        p = item
        logical = disk.table == "mbr" and is_logical(p.index, n_parts)
        if p.offset is not None:
            start = p.offset
        else:
            start = align_up(cursor + (ss if logical else 0), p.align or align)
        ptype = default_type(p)
        if p.verity == "hash" and not p.type:  # linux-root-x86-64 -> linux-root-verity-x86-64
            from .part.types import canonical_name
            dtype = canonical_name(by_index[p.verity_pair].type)  # type: ignore[index]
            for prefix in ("linux-root-", "linux-usr-"):
                if dtype.startswith(prefix) and not dtype.startswith(prefix + "verity-"):
                    ptype = prefix + "verity-" + dtype[len(prefix):]
        part_seed = hashlib.sha256(spec.seed + f"/partition/{p.index}".encode()).digest()
        if p.size == "remaining":
            assert limit_end is not None
            size = (limit_end - start) // ss * ss
            if size <= 0:
                raise CapacityError(f"no space left for this partition: the ones before it end at "
                                    f"{format_size(start)} of a {format_size(disk.size)} disk",
                                    where=f"{p.where}.size")
        elif isinstance(p.size, int):
            size = p.size
        else:
            size = None
        if limit_end is not None and start >= limit_end:
            raise CapacityError(f"does not fit: the partitions before it already fill the "
                                f"{format_size(disk.size)} disk", where=p.where)
        room = size if size is not None else (limit_end - start if limit_end is not None else None)
        extra: dict = {}
        if p.verity == "hash":
            size = _write_verity_hash(out, p, by_index[p.verity_pair], start, size, room, ss)  # type: ignore[index]
        elif p.fs is not None:
            fs_size = p.fs.size
            if fs_size is None and size is not None and format_for(p.fs.type).caps.fills_partition:
                fs_size = size
                if p.verity == "append":  # leave room for the tree after the filesystem
                    fs_size = _data_room(size)
            if fs_size is not None and room is not None and fs_size > room:
                raise CapacityError(f"the filesystem size {format_size(fs_size)} is larger than the "
                                    f"partition ({format_size(room)})", where=f"{p.where}.filesystem.size")
            window = ImageFile(out.fd, base=out.base + start, limit=room, path=f"{out.path} partition {p.index}")
            used = build_filesystem(p.fs, window, part_seed, size=fs_size,
                                    headroom=p.headroom if size is None else 0,
                                    partition_offset=start, verbose=verbose, progress=progress)
            if p.verity == "append":
                size = _append_verity(window, p, used, size, ss, extra)
            elif size is None:
                size = align_up(used, 4096 if p.verity == "data" else ss)
            elif used > size:
                raise CapacityError(f"the filesystem needs {format_size(used)} but the partition has "
                                    f"{format_size(size)}", where=f"{p.where}.size")
        elif p.image is not None:
            try:
                img_size = os.stat(p.image).st_size
            except FileNotFoundError:
                from .paths import missing
                raise missing(p.image, base_dir=p.base_dir, spec_dir=p.spec_dir,
                              where=f"{p.where}.image") from None
            except OSError as e:
                raise InputError(e.strerror or str(e), where=f"{p.where}.image: {p.image}") from None
            auto = size is None
            if size is None:
                size = align_up(img_size + p.headroom, 4096 if p.verity == "data" else ss)
            if img_size > size:
                raise CapacityError(f"the image {p.image} is {format_size(img_size)} but the partition "
                                    f"has {format_size(size)}", where=f"{p.where}.size")
            if room is not None and img_size > room:
                raise CapacityError(f"the image {p.image} ({format_size(img_size)}) does not fit in "
                                    f"the {format_size(room)} left on the disk", where=p.where)
            # An auto-sized partition with an appended tree grows past the image: the tree
            # is written after it, and the partition's size is known only then.
            limit = room if room is not None else (None if auto and p.verity == "append" else size)
            window = ImageFile(out.fd, base=out.base + start, limit=limit, path=out.path)
            window.copy_sparse_from(p.image, img_size, 0)
            if p.verity == "append":
                size = _append_verity(window, p, img_size, p.size if isinstance(p.size, int) else None,
                                      ss, extra)
        assert size is not None
        # (an explicit offset past the table's end is reported by the overlap check, naming both)
        if limit_end is not None and start + size > limit_end and p.offset is None:
            raise CapacityError(f"needs {format_size(size)} at offset {format_size(start)}, but the "
                                f"disk ends at {format_size(limit_end)} (make [image] size at least "
                                f"{format_size(align_up(start + size, align) + tail)})", where=p.where)
        if p.fill:
            _zero_holes(out, start, start + size)
        type_id = ptypes.resolve_type(ptype, disk.table, f"{p.where}.type", size=size)
        pl = Placed(spec=p, offset=start, size=size, type=ptype,
                    fs_type=p.fs.type if p.fs else None, type_id=type_id, extra=extra)
        if disk.table == "gpt":
            pl.uuid = p.uuid or str(derive_uuid(spec.seed, f"partition/{p.index}"))
        if p.verity == "hash":
            _name_by_root_hash(pl, by_index[p.verity_pair])  # type: ignore[index]
        elif p.verity == "append" and disk.table == "gpt" and not p.uuid:
            import uuid as _uuid
            pl.uuid = str(_uuid.UUID(bytes=bytes.fromhex(extra["verity"]["root_hash"])[:16]))
        placed.append(pl)
        by_index[p.index] = pl
        cursor = start + size
    end = max([pl.offset + pl.size for pl in placed] + [b.offset + b.size for b in blobs])
    total = disk.size if disk.size is not None else align_up(end, align) + tail
    if disk.table == "mbr" and total // ss > 0xFFFFFFFF:
        raise CapacityError(f"an MBR disk addresses at most 2 TiB with {ss}-byte sectors; "
                            f"this one is {format_size(total)} (use partition_table = \"gpt\")",
                            where="image.size")
    geometry = _check_layout(disk, placed, blobs, total)
    write_table(spec, out, placed, total, geometry)
    out.truncate(total)
    for pb in blobs:  # after the table: a blob at 0 keeps its boot code, the MBR its hole
        _write_blob(out, pb)
    if disk.fill:
        _zero_holes(out, end, total - tail if disk.table == "gpt" else total)
    result = layout(spec, placed, total)
    result["blobs"] = [{"name": b.spec.name, "offset": b.offset, "size": b.size,
                        "holes": [list(h) for h in b.spec.holes]} for b in blobs]
    if geometry is not None:
        result["gpt"] = {"entries_offset": geometry.entries_lba * ss, "entries": geometry.n_entries,
                         "first_usable_lba": geometry.usable[0], "last_usable_lba": geometry.usable[1]}
    return result


# --- dm-verity ----------------------------------------------------------------------------

def _data_room(size: int) -> int:
    """The largest 4 KiB multiple d with d + its verity hash area <= size (verity = "append")."""
    from .verity import hash_size
    d = size // 4096 * 4096
    while d > 0 and d + hash_size(d) > size:
        over = d + hash_size(d) - size
        d -= max(4096, over // 4096 * 4096)
    return max(d, 0)


def _append_verity(window: ImageFile, p: PartSpec, used: int, size: int | None, ss: int,
                   extra: dict) -> int:
    """Append the hash tree of the partition's first `used` bytes (4 KiB-rounded) inside it."""
    from .verity import build as build_verity, hash_size
    data = align_up(used, 4096)
    need = data + hash_size(data)
    if size is not None and need > size:
        raise CapacityError(f"the content ({format_size(data)}) and its verity hash tree "
                            f"({format_size(hash_size(data))}) need {format_size(need)}, the partition has "
                            f"{format_size(size)}", where=f"{p.where}.size")
    info = build_verity(window.fd, window.base, data, window, data, where=p.where)
    extra["verity"] = dict(info.layout(), role="append", hash_offset=data)
    return size if size is not None else align_up(need, ss)


def _write_verity_hash(out: ImageFile, p: PartSpec, data: Placed, start: int, size: int | None,
                       room: int | None, ss: int) -> int:
    from .verity import build as build_verity, hash_size
    need = hash_size(data.size)
    if size is None:
        size = align_up(need, ss)
    if need > size or (room is not None and need > room):
        raise CapacityError(f"the verity hash tree of {data.spec.name!r} needs {format_size(need)}, "
                            f"the partition has {format_size(min(size, room or size))}", where=f"{p.where}.size")
    window = ImageFile(out.fd, base=out.base + start, limit=size, path=f"{out.path} partition {p.index}")
    info = build_verity(out.fd, out.base + data.offset, data.size, window, 0, where=p.where)
    data.extra["verity"] = dict(info.layout(), role="data")
    p_extra = dict(info.layout(), role="hash", data_partition=data.spec.name)
    data.extra["_hash_extra"] = p_extra
    return size


def _name_by_root_hash(hash_pl: Placed, data: Placed) -> None:
    """systemd-repart: the data partition's UUID is the root hash's first 128 bits, the hash
    partition's its last 128 bits (explicit uuids win)."""
    import uuid as _uuid
    hash_pl.extra["verity"] = data.extra.pop("_hash_extra")
    root = bytes.fromhex(hash_pl.extra["verity"]["root_hash"])
    if data.uuid is not None and not data.spec.uuid:
        data.uuid = str(_uuid.UUID(bytes=root[:16]))
    if hash_pl.uuid is not None and not hash_pl.spec.uuid:
        hash_pl.uuid = str(_uuid.UUID(bytes=root[-16:]))


# --- layout checks and tables -------------------------------------------------------------

def _check_layout(disk: DiskSpec, placed: list[Placed], blobs: list[PlacedBlob], total: int):
    """Every piece (partition, blob, table structure) against every other; the GPT geometry."""
    from .part.gpt import GptGeometry
    from .part.overlap import Piece, check_overlaps

    ss = disk.sector_size
    pieces = []
    for pl in placed:
        label = f"partition {pl.spec.index}" + (f" ({pl.spec.name})" if pl.spec.name else "")
        pieces.append(Piece(label, pl.offset, pl.offset + pl.size,
                            [(pl.offset + a, pl.offset + b) for a, b in pl.spec.holes]))
    for b in blobs:
        pieces.append(Piece(f"blob {b.spec.name}", b.offset, b.offset + b.size,
                            [(b.offset + x, b.offset + y) for x, y in b.spec.holes], blob=True))
    for x in pieces:
        if x.end > total:
            raise CapacityError(f"{x.describe()} ends past the end of the disk ({total} bytes)",
                                where="partitions")
    geometry = None
    if disk.table == "gpt":
        geometry = GptGeometry(total // ss, ss, (disk.gpt_location or 2 * ss) // ss, disk.gpt_entries)
        for name, a, b in geometry.pieces():
            if name == "the protective MBR":
                name, a, b = ("the hybrid MBR" if disk.hybrid else name), 440, 512
            pieces.append(Piece(name, a, b))
        check_overlaps(pieces)
        # genimage's rule: the first usable LBA follows the last non-partition piece (the entry
        # array or a blob) that ends before the first partition
        first_part = min(pl.offset for pl in placed)
        first = geometry.array_end * ss
        for b in blobs:
            if b.offset + b.size <= first_part:
                first = max(first, b.offset + b.size)
        geometry.first_usable = align_up(first, ss) // ss
        lo, hi = geometry.usable
        for pl in placed:
            if pl.offset < lo * ss:
                raise SpecError(f"partition {pl.spec.index} starts at byte {pl.offset}, before the GPT's "
                                f"first usable byte {lo * ss} (after the entry array at "
                                f"{geometry.entries_lba * ss} and the blobs before the first partition)",
                                where=pl.spec.where)
    else:
        pieces.append(Piece("the MBR", 440, 512))
        logical = placed[3:] if len(placed) > 4 else []
        for a, b in zip(logical, logical[1:]):
            if b.offset < a.offset:  # the EBR chain runs forward through the extended partition
                raise SpecError(f"logical partition {b.spec.index + 1} (offset {b.offset}) lies before "
                                f"logical partition {a.spec.index + 1} (offset {a.offset}); logical "
                                f"partitions must be in disk order", where=b.spec.where)
        if len(placed) > 4:
            for pl in placed[3:]:
                pieces.append(Piece(f"the EBR of partition {pl.spec.index + 1}", pl.offset - ss, pl.offset))
        check_overlaps(pieces)
    return geometry


def write_table(spec: Spec, out: ImageFile, placed: list[Placed], total: int, geometry=None) -> None:
    from .part import gpt, mbr

    disk = spec.disk
    assert disk is not None
    ss = disk.sector_size
    if disk.table == "gpt":
        import uuid as _uuid
        disk_guid = _uuid.UUID(disk.uuid) if disk.uuid else derive_uuid(spec.seed, "disk")
        parts = [gpt.GptPartition(start_lba=p.offset // ss, end_lba=(p.offset + p.size) // ss - 1,
                                  type_guid=p.type_id, part_guid=_uuid.UUID(p.uuid),
                                  name=p.spec.name, attributes=p.spec.attributes)
                 for p in placed]
        hybrid = [gpt.HybridEntry(p.offset // ss, p.size // ss, p.spec.mbr_type, p.spec.bootable)
                  for p in placed if p.spec.mbr_type is not None] if disk.hybrid else None
        sig = 0
        if disk.hybrid:  # the MBR side has a disk signature too, as genimage writes it
            sig = disk.disk_signature if disk.disk_signature is not None else \
                derive_u32(spec.seed, "disk-signature")
        gpt.write_gpt(out, total, ss, disk_guid, parts, geometry, hybrid, sig)
    else:
        sig = disk.disk_signature if disk.disk_signature is not None else derive_u32(spec.seed, "disk-signature")
        parts = [mbr.MbrPartition(start_lba=p.offset // ss, sectors=p.size // ss, type_byte=p.type_id,
                                  bootable=p.spec.bootable,
                                  logical=is_logical(p.spec.index, len(placed)))
                 for p in placed]
        mbr.write_mbr(out, total, ss, sig, parts)


def layout(spec: Spec, placed: list[Placed], total: int) -> dict:
    from .part import types as ptypes

    disk = spec.disk
    assert disk is not None
    out: dict = {"table": disk.table, "size": total, "sector_size": disk.sector_size, "partitions": []}
    for p in placed:
        entry: dict = {"index": p.spec.index if disk.table == "gpt" else mbr_number(p.spec.index, len(placed)),
                       "name": p.spec.name, "offset": p.offset, "size": p.size, "type": p.type,
                       "type_name": ptypes.type_name(p.type_id), "filesystem": p.fs_type}
        if disk.table == "gpt":
            entry["type_guid"] = str(p.type_id)
            entry["uuid"] = p.uuid
            entry["attributes"] = p.spec.attributes
        else:
            entry["type_byte"] = f"0x{p.type_id:02x}"
            entry["bootable"] = p.spec.bootable
        if p.spec.mbr_type is not None:
            entry["mbr_type_byte"] = f"0x{p.spec.mbr_type:02x}"
        if "verity" in p.extra:
            entry["verity"] = p.extra["verity"]
        out["partitions"].append(entry)
    return out


def write_layout(path: str, data: dict) -> None:
    from .image import atomic_output
    with atomic_output(path) as f:
        f.pwrite(json.dumps(data, indent=2, sort_keys=True).encode() + b"\n", 0)
