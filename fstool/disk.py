"""The disk assembler: lay partitions out in order, fill each, then write the table.

Partitions are placed in spec order, each starting at the next alignment
boundary after the previous one (logical MBR partitions leave one sector for
their EBR). Every partition's content is written straight into its window of
the output: a filesystem by its writer, a prebuilt image with copy_file_range
skipping its holes. An auto-sized partition is written first and measured, so
the next one's start is known only afterwards; nothing is ever moved. Space no
partition writes stays a hole, so an 8 GiB disk holding 300 MB costs 300 MB.
"""
from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass, field

from .build import build_filesystem
from .errors import CapacityError, InputError, SpecError
from .fs import format_for
from .ids import derive_u32, derive_uuid
from .image import ImageFile
from .sizes import format_size
from .spec import DiskSpec, PartSpec, Spec

GPT_ENTRIES_BYTES = 128 * 128


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
        entries = align_up(GPT_ENTRIES_BYTES, ss)
        return 2 * ss + entries, ss + entries
    return ss, 0


def build_disk(spec: Spec, out: ImageFile, *, verbose: bool = False, progress=None) -> dict:
    """Write the disk spec describes into out; return its layout (as --layout-json prints)."""
    from .part import types as ptypes

    disk = spec.disk
    assert disk is not None
    ss, align = disk.sector_size, disk.alignment
    head, tail = table_overhead(disk)
    limit_end = disk.size - tail if disk.size is not None else None
    n_parts = len(disk.partitions)
    if disk.table == "gpt" and n_parts > 128:
        raise SpecError(f"GPT holds at most 128 partitions, the spec has {n_parts}", where="partitions")
    placed: list[Placed] = []
    cursor = head
    for p in disk.partitions:
        logical = disk.table == "mbr" and n_parts > 4 and p.index >= 4
        start = align_up(cursor + (ss if logical else 0), align)
        ptype = default_type(p)
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
        if p.fs is not None:
            fs_size = p.fs.size
            if fs_size is None and size is not None and format_for(p.fs.type).caps.fills_partition:
                fs_size = size
            if fs_size is not None and room is not None and fs_size > room:
                raise CapacityError(f"the filesystem size {format_size(fs_size)} is larger than the "
                                    f"partition ({format_size(room)})", where=f"{p.where}.filesystem.size")
            window = ImageFile(out.fd, base=out.base + start, limit=room, path=f"{out.path} partition {p.index}")
            used = build_filesystem(p.fs, window, part_seed, size=fs_size,
                                    headroom=p.headroom if size is None else 0,
                                    partition_offset=start, verbose=verbose, progress=progress)
            if size is None:
                size = align_up(used, ss)
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
            if size is None:
                size = align_up(img_size + p.headroom, ss)
            if img_size > size:
                raise CapacityError(f"the image {p.image} is {format_size(img_size)} but the partition "
                                    f"has {format_size(size)}", where=f"{p.where}.size")
            if room is not None and img_size > room:
                raise CapacityError(f"the image {p.image} ({format_size(img_size)}) does not fit in "
                                    f"the {format_size(room)} left on the disk", where=p.where)
            ImageFile(out.fd, base=out.base + start, limit=size, path=out.path).copy_sparse_from(
                p.image, img_size, 0)
        assert size is not None
        if limit_end is not None and start + size > limit_end:
            raise CapacityError(f"needs {format_size(size)} at offset {format_size(start)}, but the "
                                f"disk ends at {format_size(limit_end)} (make [image] size at least "
                                f"{format_size(align_up(start + size, align) + tail)})", where=p.where)
        type_id = ptypes.resolve_type(ptype, disk.table, f"{p.where}.type", size=size)
        pl = Placed(spec=p, offset=start, size=size, type=ptype,
                    fs_type=p.fs.type if p.fs else None, type_id=type_id)
        if disk.table == "gpt":
            pl.uuid = p.uuid or str(derive_uuid(spec.seed, f"partition/{p.index}"))
        placed.append(pl)
        cursor = start + size
    total = disk.size if disk.size is not None else align_up(cursor, align) + tail
    if disk.table == "mbr" and total // ss > 0xFFFFFFFF:
        raise CapacityError(f"an MBR disk addresses at most 2 TiB with {ss}-byte sectors; "
                            f"this one is {format_size(total)} (use partition_table = \"gpt\")",
                            where="image.size")
    write_table(spec, out, placed, total)
    out.truncate(total)
    return layout(spec, placed, total)


def write_table(spec: Spec, out: ImageFile, placed: list[Placed], total: int) -> None:
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
        gpt.write_gpt(out, total, ss, disk_guid, parts)
    else:
        sig = disk.disk_signature if disk.disk_signature is not None else derive_u32(spec.seed, "disk-signature")
        parts = [mbr.MbrPartition(start_lba=p.offset // ss, sectors=p.size // ss, type_byte=p.type_id,
                                  bootable=p.spec.bootable,
                                  logical=len(placed) > 4 and p.spec.index >= 4)
                 for p in placed]
        mbr.write_mbr(out, total, ss, sig, parts)


def layout(spec: Spec, placed: list[Placed], total: int) -> dict:
    from .part import types as ptypes

    disk = spec.disk
    assert disk is not None
    out: dict = {"table": disk.table, "size": total, "sector_size": disk.sector_size, "partitions": []}
    for p in placed:
        entry: dict = {"index": p.spec.index if disk.table == "gpt" or len(placed) <= 4 or p.spec.index < 4
                       else p.spec.index + (5 - 4),
                       "name": p.spec.name, "offset": p.offset, "size": p.size, "type": p.type,
                       "type_name": ptypes.type_name(p.type_id), "filesystem": p.fs_type}
        if disk.table == "gpt":
            entry["type_guid"] = str(p.type_id)
            entry["uuid"] = p.uuid
            entry["attributes"] = p.spec.attributes
        else:
            entry["type_byte"] = f"0x{p.type_id:02x}"
            entry["bootable"] = p.spec.bootable
        out["partitions"].append(entry)
    return out


def write_layout(path: str, data: dict) -> None:
    from .image import atomic_output
    with atomic_output(path) as f:
        f.pwrite(json.dumps(data, indent=2, sort_keys=True).encode() + b"\n", 0)
