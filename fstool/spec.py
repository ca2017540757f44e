"""The build spec: a TOML (or JSON) file describing one filesystem or a whole disk.

The schema is the Rust fstool's, accepted exactly:

    [filesystem]                      # one filesystem image
    type = "ext4"; source = "rootfs/"; size = "64MiB"; block_size = 4096
    journal_blocks, rootdevs, volume_label, mtime, sparse, volume_id
    [filesystem.options]              # format options (unknown keys are errors)

    [image]                           # or a partitioned disk
    size = "1GiB"; partition_table = "gpt" | "mbr"
    [[partitions]]
    name = "esp"; type = "esp"; size = "64MiB" | "remaining"
    [partitions.filesystem]           # same keys as [filesystem]

plus extensions the Rust tool lacks: `size = "auto"` and `headroom` for
filesystems and partitions; `source` as a list of layers; `all_root`,
`device_table`, `uuid`, `seed`, `[[filesystem.overrides]]`; per-partition
`uuid`, `attributes`, `bootable`, `image` (a prebuilt image); disk `uuid`,
`disk_signature`, `alignment`, `sector_size`.

Invariant: every key of the input is either consumed here or reported as an
error naming its table and the nearest valid key; relative paths resolve against
the working directory, as in the Rust fstool (`relative_to = "spec"` resolves them
against the spec's directory instead, the default for JSON specs, which tools write);
nothing read here depends on the host path of the spec (identifiers are seeded
from its content).
"""
from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass, field
from typing import Any

from .errors import InputError, SpecError, did_you_mean
from .fs import canonical_type
from .paths import resolve
from .sizes import parse_size


# Keys every format understands; in [filesystem.options] and `-O` they are lifted
# out before the format sees the rest.
GENERIC_OPTION_KEYS = ("mtime", "all_root", "rootdevs", "device_table", "selinux_file_contexts",
                       "fs_config", "block_size",
                       "journal_blocks", "volume_id", "volume_label", "label", "uuid", "seed",
                       "sparse", "headroom")

FS_KEYS = ("type", "source", "size", "headroom", "block_size", "journal_blocks", "rootdevs",
           "volume_label", "label", "mtime", "sparse", "volume_id", "uuid", "seed", "all_root",
           "device_table", "selinux_file_contexts", "fs_config", "options", "overrides")
OVERRIDE_KEYS = ("path", "mode", "uid", "gid", "mtime", "xattrs", "capabilities", "capabilities_rootid",
                 "acl", "default_acl")
IMAGE_KEYS = ("size", "partition_table", "uuid", "disk_signature", "alignment", "sector_size",
              "format", "gpt_location", "gpt_entries", "fill")
PART_KEYS = ("name", "type", "size", "headroom", "filesystem", "image", "uuid", "attributes",
             "bootable", "offset", "in_partition_table", "holes", "align", "fill", "mbr_type",
             "verity", "verity_data")
# a raw blob (in_partition_table = false) is bytes at an offset, nothing more
BLOB_KEYS = ("name", "image", "offset", "size", "holes", "align", "fill", "in_partition_table")
VERITY_ROLES = ("data", "hash", "append")
ROOTDEVS = ("none", "minimal", "standard")
ATTRIBUTE_BITS = {"required": 0, "platform-required": 0, "no-block-io": 1, "efi-ignore": 1,
                  "legacy-bios-bootable": 2, "bootable": 2,
                  "read-only": 60, "no-auto": 63, "hidden": 62, "shadow-copy": 61, "growfs": 59}


@dataclass
class FsSpec:
    """One filesystem to build: where its content comes from and how to lay it out."""

    type: str
    sources: list[str] = field(default_factory=list)
    size: int | None = None  # None: auto (smallest that fits + headroom)
    headroom: int = 0
    label: str | None = None
    uuid: str | None = None
    volume_id: str | None = None
    block_size: int | None = None
    journal_blocks: int | None = None
    sparse: bool = True
    mtime: int | None = None
    rootdevs: str = "none"
    all_root: bool = False
    device_table: str | None = None
    selinux_file_contexts: str | None = None  # label every entry as setfiles would
    fs_config: str | None = None  # Android fs_config text (e2fsdroid -C), applied last
    seed: str | None = None
    overrides: list[dict[str, Any]] = field(default_factory=list)
    options: dict[str, Any] = field(default_factory=dict)
    where: str = "filesystem"
    opts: Any = None  # the format's typed options, parsed with the spec (Format.parse_options)
    base_dir: str | None = None  # what relative paths were resolved against
    spec_dir: str | None = None  # the spec's directory (for the hint when a path is missing)


@dataclass
class PartSpec:
    index: int  # 1-based
    name: str
    type: str | None
    size: int | str | None  # bytes, "remaining", or None (auto)
    headroom: int = 0
    fs: FsSpec | None = None
    image: str | None = None
    uuid: str | None = None
    attributes: int = 0
    bootable: bool = False
    offset: int | None = None  # exact start in bytes; None: the next alignment boundary
    holes: list[tuple[int, int]] = field(default_factory=list)  # relative, not written
    align: int | None = None  # this partition's start alignment (default: the disk's)
    fill: bool = False  # write the partition's holes as zeros
    mbr_type: int | None = None  # hybrid MBR: mirror this partition with this type byte
    verity: str | None = None  # "data", "hash" or "append"
    verity_data: str | None = None  # a hash partition's data partition (its name)
    verity_pair: int | None = None  # a hash partition's data partition (its index)
    where: str = "partitions"


@dataclass
class BlobSpec:
    """A raw image written at an offset outside the partition table (a bootloader)."""

    name: str
    image: str
    offset: int | None = None
    size: int | None = None  # space reserved (default: the image's size)
    holes: list[tuple[int, int]] = field(default_factory=list)
    align: int = 1
    fill: bool = False
    where: str = "partitions"
    base_dir: str | None = None  # what a relative `image` was resolved against
    spec_dir: str | None = None


@dataclass
class DiskSpec:
    table: str  # "gpt" or "mbr" (a hybrid disk is "gpt" with hybrid = True)
    size: int | None  # None: auto
    partitions: list[PartSpec]
    uuid: str | None = None
    disk_signature: int | None = None
    alignment: int = 1 << 20
    sector_size: int = 512
    where: str = "image"
    blobs: list[BlobSpec] = field(default_factory=list)
    sequence: list = field(default_factory=list)  # partitions and blobs in spec order
    hybrid: bool = False
    format: str | None = None  # output container (fstool.container), None: by extension
    gpt_location: int | None = None  # byte offset of the primary GPT entry array
    gpt_entries: int = 128
    fill: bool = False  # write the tail after the last piece as zeros


@dataclass
class Spec:
    path: str
    seed: bytes  # hash of the spec's parsed content (doc_seed): seeds every derived identifier
    fs: FsSpec | None = None
    disk: DiskSpec | None = None


def check_keys(table: dict, allowed: tuple[str, ...], where: str) -> None:
    """Raise SpecError for the first key of table not in allowed, suggesting the nearest."""
    for key in table:
        if key not in allowed:
            hint = did_you_mean(key, allowed)
            raise SpecError(f"unknown key {key!r}{hint}; valid keys: {', '.join(allowed)}",
                            where=f"{where}.{key}")


def _str(v: Any, where: str) -> str:
    if not isinstance(v, str):
        raise SpecError(f"expected a string, got {v!r}", where=where)
    return v


def _bool(v: Any, where: str) -> bool:
    if isinstance(v, bool):
        return v
    if isinstance(v, str) and v.lower() in ("true", "false", "yes", "no", "1", "0", "on", "off"):
        return v.lower() in ("true", "yes", "1", "on")
    raise SpecError(f"expected true or false, got {v!r}", where=where)


def _int(v: Any, where: str, lo: int = 0, hi: int | None = None) -> int:
    if isinstance(v, str):
        try:
            v = int(v, 0)
        except ValueError:
            raise SpecError(f"expected a number, got {v!r}", where=where) from None
    if isinstance(v, bool) or not isinstance(v, int):
        raise SpecError(f"expected a number, got {v!r}", where=where)
    if v < lo or (hi is not None and v > hi):
        raise SpecError(f"must be between {lo} and {hi}, got {v}" if hi is not None
                        else f"must be at least {lo}, got {v}", where=where)
    return v


def _size_or_auto(v: Any, where: str, *, remaining: bool = False) -> int | str | None:
    if isinstance(v, str) and v.strip().lower() == "auto":
        return None
    if remaining and isinstance(v, str) and v.strip().lower() == "remaining":
        return "remaining"
    n = parse_size(v, where=where)
    if n <= 0:
        raise SpecError("size must be positive", where=where)
    return n


def parse_mode(v: Any, where: str) -> int:
    """A mode as an int (420) or an octal string ("0644", "644", "0o644")."""
    if isinstance(v, str):
        s = v.strip().lower().removeprefix("0o")
        try:
            v = int(s, 8)
        except ValueError:
            raise SpecError(f"expected an octal mode like \"0644\", got {v!r}", where=where) from None
    return _int(v, where, 0, 0o7777)


def parse_volume_id(v: Any, where: str) -> str:
    """A FAT-style volume id: an int or hex "1234-ABCD" / "0x1234abcd"; kept as 8 hex digits."""
    if isinstance(v, int) and not isinstance(v, bool):
        n = v
    elif isinstance(v, str):
        s = v.strip().replace("-", "").lower().removeprefix("0x")
        try:
            n = int(s, 16)
        except ValueError:
            raise SpecError(f"expected a hex volume id like \"1234-ABCD\", got {v!r}",
                            where=where) from None
    else:
        raise SpecError(f"expected a volume id, got {v!r}", where=where)
    if not 0 <= n <= 0xFFFFFFFF:
        raise SpecError(f"volume id {v!r} does not fit in 32 bits", where=where)
    return f"{n:08x}"


def split_layers(src: str, base_dir: str) -> list[str]:
    """The Rust fstool's layered source form: "base.tar+overlay/" is two layers, bottom first.
    A path that exists as written (a directory named "c++", say) stays one layer."""
    if "+" not in src or os.path.lexists(os.path.join(base_dir, src)):
        return [src]
    return [s for s in src.split("+") if s]


def parse_fs(table: Any, where: str, base_dir: str, spec_dir: str | None = None) -> FsSpec:
    """Parse a [filesystem] table (or the equivalent from the CLI)."""
    if not isinstance(table, dict):
        raise SpecError("expected a table", where=where)
    check_keys(table, FS_KEYS, where)
    if "type" not in table:
        raise SpecError("missing key 'type' (e.g. type = \"ext4\")", where=where)
    fs = FsSpec(type=canonical_type(_str(table["type"], f"{where}.type"), f"{where}.type"),
                where=where, base_dir=base_dir, spec_dir=spec_dir)
    src = table.get("source")
    if src is None:
        srcs: list[str] = []
    elif isinstance(src, str):
        srcs = [src]
    elif isinstance(src, list) and all(isinstance(s, str) for s in src):
        srcs = list(src)
    else:
        raise SpecError("expected a path or a list of paths", where=f"{where}.source")
    fs.sources = [resolve(layer, base_dir) for s in srcs for layer in split_layers(s, base_dir)]
    merged = dict(table)
    opts = table.get("options", {})
    if not isinstance(opts, dict):
        raise SpecError("expected a table", where=f"{where}.options")
    fs.options = {}
    for k, v in opts.items():
        if k in GENERIC_OPTION_KEYS:
            if k in table:
                raise SpecError(f"{k!r} is set both here and in [{where}]", where=f"{where}.options.{k}")
            merged[k] = v
        else:
            fs.options[k] = v
    apply_generic(fs, merged, where, base_dir)
    ov = table.get("overrides", [])
    if not isinstance(ov, list):
        raise SpecError("expected an array of tables ([[filesystem.overrides]])", where=f"{where}.overrides")
    for i, o in enumerate(ov):
        w = f"{where}.overrides[{i}]"
        if not isinstance(o, dict):
            raise SpecError("expected a table", where=w)
        check_keys(o, OVERRIDE_KEYS, w)
        if "path" not in o:
            raise SpecError("missing key 'path'", where=w)
        entry: dict[str, Any] = {"path": _str(o["path"], f"{w}.path"), "where": w}
        if "mode" in o:
            entry["mode"] = parse_mode(o["mode"], f"{w}.mode")
        for k in ("uid", "gid", "mtime"):
            if k in o:
                entry[k] = _int(o[k], f"{w}.{k}", 0, 0xFFFFFFFF if k != "mtime" else None)
        entry["xattrs"] = _security_xattrs(o, w)
        fs.overrides.append(entry)
    from .build import parse_format_options
    parse_format_options(fs)
    return fs


def _security_xattrs(o: dict, w: str) -> dict[str, bytes]:
    """An override's declared xattrs, capabilities and ACLs, as the xattr bytes they become."""
    from .inputs import security as sec
    out: dict[str, bytes] = {}
    xs = o.get("xattrs", {})
    if not isinstance(xs, dict):
        raise SpecError("expected a table of name = value", where=f"{w}.xattrs")
    for name, value in xs.items():
        sec.check_xattr_name(name, f"{w}.xattrs")
        out[name] = sec.parse_xattr_value(value, f"{w}.xattrs.{name}")
    if "capabilities_rootid" in o and "capabilities" not in o:
        raise SpecError("capabilities_rootid goes with capabilities", where=f"{w}.capabilities_rootid")
    if "capabilities" in o:
        rootid = (_int(o["capabilities_rootid"], f"{w}.capabilities_rootid", 0, 0xFFFFFFFF)
                  if "capabilities_rootid" in o else None)
        out["security.capability"] = sec.capability_xattr(_str(o["capabilities"], f"{w}.capabilities"),
                                                          f"{w}.capabilities", rootid)
    for key, name in (("acl", "system.posix_acl_access"), ("default_acl", "system.posix_acl_default")):
        if key in o:
            try:
                out[name] = sec.acl_from_text(_str(o[key], f"{w}.{key}"), f"{w}.{key}")
            except InputError as e:
                raise SpecError(e.message, where=e.where) from None
    return out


def apply_generic(fs: FsSpec, table: dict, where: str, base_dir: str) -> None:
    """Set FsSpec fields from generic keys (spec table or lifted -O options)."""
    def w(k: str) -> str:
        return f"{where}.{k}"
    if "size" in table:
        fs.size = _size_or_auto(table["size"], w("size"))  # type: ignore[assignment]
    if "headroom" in table:
        fs.headroom = parse_size(table["headroom"], where=w("headroom"))
    for k in ("volume_label", "label"):
        if k in table:
            fs.label = _str(table[k], w(k))
    if "uuid" in table:
        fs.uuid = _str(table["uuid"], w("uuid"))
        from .ids import parse_uuid
        parse_uuid(fs.uuid, w("uuid"))
    if "volume_id" in table:
        fs.volume_id = parse_volume_id(table["volume_id"], w("volume_id"))
    if "block_size" in table:
        fs.block_size = parse_size(table["block_size"], where=w("block_size"))
    if "journal_blocks" in table:
        fs.journal_blocks = _int(table["journal_blocks"], w("journal_blocks"))
    if "sparse" in table:
        fs.sparse = _bool(table["sparse"], w("sparse"))
    if "mtime" in table:
        fs.mtime = _int(table["mtime"], w("mtime"), 0, (1 << 34) - 1)
    if "rootdevs" in table:
        v = table["rootdevs"]
        if isinstance(v, bool):  # the Rust tool's boolean form
            v = "minimal" if v else "none"
        v = _str(v, w("rootdevs")).lower()  # the Rust fstool takes any case
        if v not in ROOTDEVS:
            raise SpecError(f"must be one of {', '.join(ROOTDEVS)}; got {v!r}", where=w("rootdevs"))
        fs.rootdevs = v
    if "all_root" in table:
        fs.all_root = _bool(table["all_root"], w("all_root"))
    if "device_table" in table:
        fs.device_table = resolve(_str(table["device_table"], w("device_table")), base_dir)
    for k in ("selinux_file_contexts", "fs_config"):
        if k in table:
            setattr(fs, k, resolve(_str(table[k], w(k)), base_dir))
    if "seed" in table:
        fs.seed = _str(table["seed"], w("seed"))


def parse_attributes(v: Any, where: str) -> int:
    if isinstance(v, int) and not isinstance(v, bool):
        return _int(v, where, 0, (1 << 64) - 1)
    if not isinstance(v, list):
        raise SpecError("expected a list like [\"required\", 60]", where=where)
    bits = 0
    for i, a in enumerate(v):
        wi = f"{where}[{i}]"
        if isinstance(a, str) and a.lower() in ATTRIBUTE_BITS:
            bits |= 1 << ATTRIBUTE_BITS[a.lower()]
        elif isinstance(a, str) and a.isdigit() or isinstance(a, int) and not isinstance(a, bool):
            n = int(a)
            if not (n in (0, 1, 2) or 48 <= n <= 63):
                raise SpecError(f"attribute bit {n} is reserved (use 0, 1, 2 or 48-63)", where=wi)
            bits |= 1 << n
        else:
            hint = did_you_mean(a, ATTRIBUTE_BITS)
            raise SpecError(f"unknown attribute {a!r}{hint}; known: {', '.join(ATTRIBUTE_BITS)} "
                            "or a bit number 48-63", where=wi)
    return bits


def parse_disk(doc: dict, base_dir: str, spec_dir: str | None = None) -> DiskSpec:
    img = doc["image"]
    if not isinstance(img, dict):
        raise SpecError("expected a table", where="image")
    check_keys(img, IMAGE_KEYS, "image")
    table = _str(img.get("partition_table", "gpt"), "image.partition_table").lower()
    if table not in ("gpt", "mbr", "msdos", "dos", "hybrid"):
        raise SpecError(f"must be \"gpt\", \"mbr\" or \"hybrid\", got {table!r}",
                        where="image.partition_table")
    hybrid = table == "hybrid"
    table = "gpt" if table in ("gpt", "hybrid") else "mbr"
    size = _size_or_auto(img["size"], "image.size") if "size" in img else None
    disk = DiskSpec(table=table, size=size, partitions=[], hybrid=hybrid)  # type: ignore[arg-type]
    parse_board_image_keys(disk, img)
    if "sector_size" in img:
        disk.sector_size = parse_size(img["sector_size"], where="image.sector_size")
        if disk.sector_size not in (512, 4096):
            raise SpecError(f"must be 512 or 4096, got {disk.sector_size}", where="image.sector_size")
    if "alignment" in img:
        disk.alignment = parse_size(img["alignment"], where="image.alignment")
        if disk.alignment <= 0 or disk.alignment % disk.sector_size:
            raise SpecError(f"must be a positive multiple of the sector size ({disk.sector_size})",
                            where="image.alignment")
    elif disk.sector_size > disk.alignment:
        disk.alignment = disk.sector_size
    if "uuid" in img:
        if table != "gpt":
            raise SpecError("a disk GUID needs partition_table = \"gpt\" (MBR has disk_signature)",
                            where="image.uuid")
        from .ids import parse_uuid
        disk.uuid = str(parse_uuid(img["uuid"], "image.uuid"))
    if "disk_signature" in img:
        if table != "mbr" and not hybrid:
            raise SpecError("disk_signature is for partition_table = \"mbr\" or \"hybrid\" (GPT has uuid)",
                            where="image.disk_signature")
        disk.disk_signature = int(parse_volume_id(img["disk_signature"], "image.disk_signature"), 16)
    if disk.size is not None and disk.size % disk.sector_size:
        raise SpecError(f"disk size {disk.size} is not a multiple of the sector size "
                        f"({disk.sector_size})", where="image.size")
    parts = doc.get("partitions", [])
    if not isinstance(parts, list) or not parts:
        raise SpecError("a disk needs at least one [[partitions]] table", where="partitions")
    for i, p in enumerate(parts):
        w = f"partitions[{i}]"
        if not isinstance(p, dict):
            raise SpecError("expected a table", where=w)
        if "in_partition_table" in p and not _bool(p["in_partition_table"], f"{w}.in_partition_table"):
            b = parse_blob(p, i, base_dir)
            disk.blobs.append(b)
            disk.sequence.append(b)
            continue
        check_keys(p, PART_KEYS, w)
        name = _str(p.get("name", ""), f"{w}.name")
        if disk.table == "gpt" and len(name.encode("utf-16-le")) > 72:
            raise SpecError(f"GPT partition names hold at most 36 UTF-16 code units; {name!r} has "
                            f"{len(name.encode('utf-16-le')) // 2}", where=f"{w}.name")
        if name:
            w = f"partitions[{i}] ({name})"
        ps = PartSpec(index=len(disk.partitions) + 1, name=name, type=None, size=None, where=w)
        if "type" in p:
            ps.type = _str(p["type"], f"{w}.type")
        if "size" in p:
            ps.size = _size_or_auto(p["size"], f"{w}.size", remaining=True)
            if isinstance(ps.size, int) and ps.size % disk.sector_size:
                raise SpecError(f"size {ps.size} is not a multiple of the sector size "
                                f"({disk.sector_size})", where=f"{w}.size")
        later = [q for q in parts[i + 1:] if not (isinstance(q, dict) and "in_partition_table" in q
                                                  and q["in_partition_table"] is False)]
        if ps.size == "remaining" and later:  # blobs may follow it: they lie inside, at offsets
            raise SpecError("only the last partition can have size = \"remaining\"", where=f"{w}.size")
        if ps.size == "remaining" and disk.size is None:
            raise SpecError("size = \"remaining\" needs a fixed [image] size", where=f"{w}.size")
        if "headroom" in p:
            ps.headroom = parse_size(p["headroom"], where=f"{w}.headroom")
        if "filesystem" in p and "image" in p:
            raise SpecError("give either a filesystem or a prebuilt image, not both", where=w)
        if "filesystem" in p:
            ps.fs = parse_fs(p["filesystem"], f"{w}.filesystem", base_dir, spec_dir)
        if "image" in p:
            ps.image = resolve(_str(p["image"], f"{w}.image"), base_dir)
            ps.base_dir, ps.spec_dir = base_dir, spec_dir
        if ps.fs is None and ps.image is None and ps.size is None and p.get("verity") != "hash":
            raise SpecError("an empty partition needs a size", where=f"{w}.size")
        if "uuid" in p:
            if table != "gpt":
                raise SpecError("partition UUIDs need partition_table = \"gpt\"", where=f"{w}.uuid")
            from .ids import parse_uuid
            ps.uuid = str(parse_uuid(p["uuid"], f"{w}.uuid"))
        if "attributes" in p:
            if table != "gpt":
                raise SpecError("attributes need partition_table = \"gpt\" (MBR has bootable)",
                                where=f"{w}.attributes")
            ps.attributes = parse_attributes(p["attributes"], f"{w}.attributes")
        if "bootable" in p:
            if table != "mbr" and not (hybrid and "mbr_type" in p):
                raise SpecError("bootable is an MBR flag; for GPT use attributes = "
                                "[\"legacy-bios-bootable\"] (on a hybrid disk, with mbr_type)",
                                where=f"{w}.bootable")
            ps.bootable = _bool(p["bootable"], f"{w}.bootable")
        parse_board_part_keys(disk, ps, p, w)
        disk.partitions.append(ps)
        disk.sequence.append(ps)
    if not disk.partitions:
        raise SpecError("a disk needs at least one partition in its table (every [[partitions]] "
                        "here has in_partition_table = false)", where="partitions")
    check_board(disk)
    return disk


# --- board layouts: offsets, raw blobs, holes, GPT placement, hybrid MBR, verity ------------

def _offset(v: Any, where: str) -> int:
    n = parse_size(v, where=where)
    if n < 0:
        raise SpecError("must not be negative", where=where)
    return n


def _align(v: Any, where: str) -> int:
    n = parse_size(v, where=where)
    if n <= 0:
        raise SpecError("must be positive", where=where)
    return n


def parse_board_image_keys(disk: DiskSpec, img: dict) -> None:
    if "format" in img:
        from .container import canonical
        disk.format = canonical(_str(img["format"], "image.format"), "image.format")
    if "fill" in img:
        disk.fill = _bool(img["fill"], "image.fill")
    for k in ("gpt_location", "gpt_entries"):
        if k in img and disk.table != "gpt":
            raise SpecError(f"{k} needs partition_table = \"gpt\" or \"hybrid\"", where=f"image.{k}")
    if "gpt_location" in img:
        ss = parse_size(img.get("sector_size", 512), where="image.sector_size")
        loc = _offset(img["gpt_location"], "image.gpt_location")
        if loc % ss or loc < 2 * ss:
            raise SpecError(f"must be a multiple of the sector size ({ss}) from {2 * ss} on (the header "
                            f"stays at LBA 1), got {loc}", where="image.gpt_location")
        disk.gpt_location = loc
    if "gpt_entries" in img:
        disk.gpt_entries = _int(img["gpt_entries"], "image.gpt_entries", 4, 1024)


def parse_blob(p: dict, i: int, base_dir: str) -> BlobSpec:
    w = f"partitions[{i}]"
    for key in p:
        if key not in BLOB_KEYS:
            raise SpecError(f"{key!r} does not apply to a raw blob (in_partition_table = false); "
                            f"a blob takes {', '.join(BLOB_KEYS)}", where=f"{w}.{key}")
    name = _str(p.get("name", ""), f"{w}.name")
    if name:
        w = f"partitions[{i}] ({name})"
    if "image" not in p:
        raise SpecError("a raw blob (in_partition_table = false) needs an image", where=w)
    b = BlobSpec(name=name or os.path.basename(_str(p["image"], f"{w}.image")),
                 image=os.path.normpath(os.path.join(base_dir, _str(p["image"], f"{w}.image"))), where=w)
    if "offset" in p:
        b.offset = _offset(p["offset"], f"{w}.offset")
    if "size" in p:
        b.size = _align(p["size"], f"{w}.size")
    if "align" in p:
        b.align = _align(p["align"], f"{w}.align")
    if "holes" in p:
        from .part.overlap import parse_holes
        b.holes = parse_holes(p["holes"], f"{w}.holes")
    if "fill" in p:
        b.fill = _bool(p["fill"], f"{w}.fill")
    return b


def parse_board_part_keys(disk: DiskSpec, ps: PartSpec, p: dict, w: str) -> None:
    ss = disk.sector_size
    if "offset" in p:
        ps.offset = _offset(p["offset"], f"{w}.offset")
        if ps.offset % ss:
            raise SpecError(f"offset {ps.offset} is not a multiple of the sector size ({ss})",
                            where=f"{w}.offset")
    if "align" in p:
        ps.align = _align(p["align"], f"{w}.align")
        if ps.align % ss:
            raise SpecError(f"must be a multiple of the sector size ({ss})", where=f"{w}.align")
    if "holes" in p:
        from .part.overlap import parse_holes
        ps.holes = parse_holes(p["holes"], f"{w}.holes")
    if "fill" in p:
        ps.fill = _bool(p["fill"], f"{w}.fill")
    if "mbr_type" in p:
        if not disk.hybrid:
            raise SpecError("mbr_type mirrors a GPT partition in a hybrid MBR; it needs "
                            "partition_table = \"hybrid\"", where=f"{w}.mbr_type")
        from .part.types import resolve_type
        ps.mbr_type = resolve_type(_str(p["mbr_type"], f"{w}.mbr_type"), "mbr", f"{w}.mbr_type")
    if "verity" in p:
        v = _str(p["verity"], f"{w}.verity")
        if v not in VERITY_ROLES:
            raise SpecError(f"must be one of {', '.join(VERITY_ROLES)}; got {v!r}", where=f"{w}.verity")
        ps.verity = v
        if v == "hash" and (ps.fs is not None or ps.image is not None):
            raise SpecError("a verity hash partition holds the hash tree only (no filesystem or image)",
                            where=w)
        if v in ("data", "append") and ps.fs is None and ps.image is None:
            raise SpecError(f"verity = \"{v}\" protects a filesystem or image; this partition has none",
                            where=w)
        if v in ("data", "append") and ps.holes:
            raise SpecError("a verity-protected partition cannot declare holes: bytes written there "
                            "after its hash tree is computed would fail verification", where=f"{w}.holes")
        if v != "append" and isinstance(ps.size, int) and ps.size % 4096:
            raise SpecError(f"a verity partition's size must be a multiple of 4096, got {ps.size}",
                            where=f"{w}.size")
    if "verity_data" in p:
        if ps.verity != "hash":
            raise SpecError("verity_data names the data partition of a verity = \"hash\" partition",
                            where=f"{w}.verity_data")
        ps.verity_data = _str(p["verity_data"], f"{w}.verity_data")


def check_board(disk: DiskSpec) -> None:
    """Cross-partition rules: hybrid MBR entries, verity data/hash pairs."""
    if disk.hybrid:
        mirrored = [p for p in disk.partitions if p.mbr_type is not None]
        if not mirrored:
            raise SpecError("a hybrid MBR mirrors at least one partition: give one an mbr_type",
                            where="image.partition_table")
        if len(mirrored) > 3:
            raise SpecError(f"a hybrid MBR mirrors at most 3 partitions; {len(mirrored)} have mbr_type",
                            where=mirrored[3].where + ".mbr_type")
    data = [p for p in disk.partitions if p.verity == "data"]
    paired: dict[int, PartSpec] = {}
    for h in (p for p in disk.partitions if p.verity == "hash"):
        if h.verity_data is not None:
            match = [d for d in data if d.name == h.verity_data]
            if not match:
                raise SpecError(f"no verity = \"data\" partition is named {h.verity_data!r}",
                                where=f"{h.where}.verity_data")
            d = match[0]
        elif len(data) == 1:
            d = data[0]
        elif not data:
            raise SpecError("there is no verity = \"data\" partition for this hash partition", where=h.where)
        else:
            raise SpecError("several verity = \"data\" partitions: name this one's with verity_data",
                            where=h.where)
        if d.index in paired:
            raise SpecError(f"partition {d.name!r} already has a hash partition", where=h.where)
        if d.index > h.index:
            raise SpecError(f"the hash partition must come after its data partition {d.name!r}",
                            where=h.where)
        paired[d.index] = h
        h.verity_data = d.name
        h.verity_pair = d.index
    for d in data:
        if d.index not in paired:
            raise SpecError("there is no verity = \"hash\" partition for this data partition", where=d.where)


def load_spec(path: str, relative_to: str | None = None) -> Spec:
    """Read and validate a spec file (TOML, or JSON when it ends in .json). relative_to
    ("cwd" or "spec", `build --relative-to`) is the default for a spec without that key."""
    try:
        with open(path, "rb") as f:
            raw = f.read()
    except OSError as e:
        raise InputError(e.strerror or str(e), where=path) from None
    try:
        if path.endswith(".json"):
            doc = json.loads(raw)
        else:
            try:  # imported here: a build from the command line reads no TOML (2.5 ms)
                import tomllib
            except ModuleNotFoundError:  # pragma: no cover - 3.10 and older
                import tomli as tomllib  # type: ignore[no-redef]
            doc = tomllib.loads(raw.decode("utf-8"))
    except (ValueError, UnicodeDecodeError) as e:
        msg = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise SpecError(f"not valid {'JSON' if path.endswith('.json') else 'TOML'}: {msg}",
                        where=path) from None
    if not isinstance(doc, dict):
        raise SpecError("expected a table at the top level", where=path)
    return spec_from_doc(doc, path, doc_seed(doc), os.path.dirname(os.path.abspath(path)), relative_to)


def doc_seed(doc: dict) -> bytes:
    """The identity of a spec: a hash of its parsed content, so comments, whitespace, key
    order and TOML-or-JSON change nothing, while every value does."""
    canon = json.dumps(doc, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str)
    return hashlib.sha256(b"fstool-spec/" + canon.encode("utf-8", "surrogatepass")).digest()


def spec_from_doc(doc: dict, path: str, seed: bytes, spec_dir: str,
                  relative_to: str | None = None) -> Spec:
    """A Spec from a parsed document (a TOML or JSON spec, or a translated genimage.cfg).
    Relative paths resolve against the working directory, as in the Rust fstool, or against
    spec_dir with `relative_to = "spec"` (the default for JSON specs, which tools write)."""
    spec = Spec(path=path, seed=seed)
    try:
        check_keys(doc, ("filesystem", "image", "partitions", "relative_to"), "spec")
        rel = doc.get("relative_to", relative_to or ("spec" if path.endswith(".json") else "cwd"))
        if rel not in ("cwd", "spec"):
            raise SpecError(f"must be \"cwd\" (the working directory, as the Rust fstool) or "
                            f"\"spec\" (the spec's directory); got {rel!r}", where="relative_to")
        base_dir = os.getcwd() if rel == "cwd" else spec_dir
        if "filesystem" in doc and ("image" in doc or "partitions" in doc):
            raise SpecError("a spec has either [filesystem] or [image] with [[partitions]], not both",
                            where="spec")
        if "filesystem" in doc:
            spec.fs = parse_fs(doc["filesystem"], "filesystem", base_dir, spec_dir)
        elif "image" in doc:
            spec.disk = parse_disk(doc, base_dir, spec_dir)
        elif "partitions" in doc:
            raise SpecError("[[partitions]] needs an [image] table (size, partition_table)", where="spec")
        else:
            raise SpecError("the spec needs a [filesystem] or an [image] table", where="spec")
    except (SpecError, InputError) as e:
        raise e.within(path) from None
    return spec
