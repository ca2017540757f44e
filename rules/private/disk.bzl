"""partition, raw_blob, gpt_disk and mbr_disk: place prebuilt images on a partitioned disk.

A disk never builds a filesystem itself: each partition names an image (from fs_image,
squashfs_image, fstool_image or any single file) and the disk's one action (mnemonic
DiskImage) runs `fstool build` on a generated spec with `image = ...` per partition, so
editing one filesystem's input reruns that filesystem's writer and the assembler only.
Board layouts (exact offsets, raw blobs outside the table, holes, a moved GPT entry
array, hybrid MBRs, dm-verity hash partitions) are spec keys of the same action.
"""

load("//rules:providers.bzl", "DiskImageInfo", "FsImageInfo", "PartitionInfo", "RawBlobInfo")
load(
    ":common.bzl",
    "TOOLCHAINS",
    "attr_error",
    "declare_output",
    "declare_spec",
    "format_attr",
    "run_fstool",
    "spec_path",
    "write_json",
)

# Containers a disk can read a partition's image from: the raw bytes (a bmap image is
# raw, its block map beside it).
_PLACEABLE_FORMATS = ["raw", "bmap"]

VERITY_ROLES = ["data", "hash", "append"]

def _fs_type_of(target):
    return target[FsImageInfo].fs_type if FsImageInfo in target else ""

def _check_placeable(ctx, attribute, target):
    """A filesystem target in a container other than raw cannot be placed on a disk."""
    if FsImageInfo in target and target[FsImageInfo].format not in _PLACEABLE_FORMATS:
        attr_error(ctx, attribute, "%s is a %s image; a disk places raw images: build it with " %
                                   (target.label, target[FsImageInfo].format) +
                                   "format = \"raw\" and set format on the disk instead")

def _image_file(ctx, attribute, target):
    """The image a target gives: its FsImageInfo image, else its one file."""
    _check_placeable(ctx, attribute, target)
    if FsImageInfo in target:
        return target[FsImageInfo].image
    files = target[DefaultInfo].files.to_list()
    if len(files) != 1:
        attr_error(ctx, attribute, "%s gives %d files; an image is exactly one file" %
                                   (target.label, len(files)))
    return files[0]

def _partition_impl(ctx):
    verity = ctx.attr.verity
    image = None
    if ctx.attr.image:
        if verity == "hash":
            attr_error(ctx, "image", "a verity = \"hash\" partition holds the hash tree only " +
                                     "(fstool computes it from its data partition): give no image")
        image = _image_file(ctx, "image", ctx.attr.image)
    elif verity != "hash":
        attr_error(ctx, "image", "a partition needs an image (only a verity = \"hash\" " +
                                 "partition has none)")
    verity_data = ""
    if ctx.attr.verity_data:
        if verity != "hash":
            attr_error(ctx, "verity_data", "names the data partition of a verity = \"hash\" " +
                                           "partition; this one has verity = %r" % verity)
        data = ctx.attr.verity_data[PartitionInfo]
        if data.verity != "data":
            attr_error(ctx, "verity_data", "%s is not a verity = \"data\" partition" % data.label)
        verity_data = data.name
    return [PartitionInfo(
        image = image,
        fs_type = _fs_type_of(ctx.attr.image) if ctx.attr.image else "",
        name = ctx.attr.label if ctx.attr.label else ctx.label.name,
        type = ctx.attr.type,
        size = ctx.attr.partition_size,
        headroom = ctx.attr.headroom,
        uuid = ctx.attr.uuid,
        attributes = ctx.attr.attributes,
        bootable = ctx.attr.bootable,
        label = ctx.label,
        offset = ctx.attr.offset,
        holes = ctx.attr.holes,
        align = ctx.attr.align,
        fill = ctx.attr.fill,
        mbr_type = ctx.attr.mbr_type,
        verity = verity,
        verity_data = verity_data,
    )]

_HOLES_DOC = "Byte ranges relative to the start that are not written and may overlap " + \
             "other pieces, as `\"START..END\"`: `[\"440..512\"]` for boot code spanning the MBR."

partition = rule(
    implementation = _partition_impl,
    attrs = {
        "image": attr.label(
            allow_files = True,
            doc = "The filesystem image: an fs_image, squashfs_image or fstool_image " +
                  "target (raw or bmap format), or one prebuilt image file. Required, " +
                  "except on a `verity = \"hash\"` partition.",
        ),
        "type": attr.string(
            doc = "Partition type: a name (`esp`, `linux`, `linux-root-x86-64`, `swap`, " +
                  "`xbootldr`, ...), a GPT type GUID or an MBR byte like `\"0x83\"`. " +
                  "Default (`\"\"`): fstool picks `msdata` for a FAT image, else `linux` " +
                  "(a verity hash partition: the `-verity-` type matching its data partition).",
        ),
        "label": attr.string(
            doc = "The partition name written in the GPT (default: this target's name).",
        ),
        "partition_size": attr.string(
            default = "auto",
            doc = "`\"auto\"` (the image's size plus `headroom`), a size such as " +
                  "`\"64MiB\"`, or `\"remaining\"` (last partition of a fixed-size disk).",
        ),
        "headroom": attr.string(
            doc = "Free space after the image in an `auto` partition, such as `\"8MiB\"`.",
        ),
        "uuid": attr.string(
            doc = "GPT partition GUID (default: derived from the disk spec and the index; " +
                  "on verity partitions from the root hash).",
        ),
        "attributes": attr.string_list(
            doc = "GPT attributes: `required`, `no-block-io`, `legacy-bios-bootable`, " +
                  "`read-only`, `hidden`, `no-auto`, `growfs`, or bit numbers 48-63.",
        ),
        "bootable": attr.bool(
            default = False,
            doc = "The MBR active flag (mbr_disk, or a hybrid gpt_disk's partition with `mbr_type`).",
        ),
        "offset": attr.string(
            doc = "The exact start in bytes or with a unit (`\"16MiB\"`), a multiple of the " +
                  "sector size (default: the next `align` boundary after the previous piece).",
        ),
        "holes": attr.string_list(doc = _HOLES_DOC),
        "align": attr.string(
            doc = "This partition's own start alignment (default: the disk's `alignment`).",
        ),
        "fill": attr.bool(
            default = False,
            doc = "Write the partition's holes as zeros (media that dislike sparse images).",
        ),
        "mbr_type": attr.string(
            doc = "On a hybrid gpt_disk: mirror this partition in the MBR with this type " +
                  "byte (`\"0x0c\"`); `bootable` sets its active flag.",
        ),
        "verity": attr.string(
            values = [""] + VERITY_ROLES,
            doc = "dm-verity role: `\"data\"` (protected by a later `\"hash\"` partition), " +
                  "`\"hash\"` (holds the hash tree of a data partition; no image), or " +
                  "`\"append\"` (the tree follows the filesystem in this partition).",
        ),
        "verity_data": attr.label(
            providers = [PartitionInfo],
            doc = "On a `verity = \"hash\"` partition: the partition target it protects " +
                  "(default: the disk's only `verity = \"data\"` partition).",
        ),
    },
    provides = [PartitionInfo],
    doc = "One partition of a gpt_disk or mbr_disk, in the order the disk lists them.",
)

def _raw_blob_impl(ctx):
    return [RawBlobInfo(
        image = ctx.file.src,
        name = ctx.label.name,
        offset = ctx.attr.offset,
        size = ctx.attr.blob_size,
        holes = ctx.attr.holes,
        align = ctx.attr.align,
        fill = ctx.attr.fill,
        label = ctx.label,
    )]

raw_blob = rule(
    implementation = _raw_blob_impl,
    attrs = {
        "src": attr.label(
            mandatory = True,
            allow_single_file = True,
            doc = "The file written at `offset` (a bootloader such as `u-boot-rockchip.bin`).",
        ),
        "offset": attr.string(
            doc = "The start in bytes or with a unit (`\"32KiB\"`); default: the next " +
                  "`align` boundary after the previous piece.",
        ),
        # `size` in the public macro (reserved by Bazel 4.2.3 for tests).
        "blob_size": attr.string(
            doc = "The space the blob reserves (default: the file's size); overlapping " +
                  "it is an error.",
        ),
        "holes": attr.string_list(doc = _HOLES_DOC),
        "align": attr.string(doc = "The blob's start alignment (default 1)."),
        "fill": attr.bool(default = False, doc = "Write the blob's holes as zeros."),
    },
    provides = [RawBlobInfo],
    doc = "A file written at a byte offset of a disk, outside the partition table.",
)

def _partition_info(ctx, target):
    """PartitionInfo of a `partitions` entry; a bare filesystem target gets the defaults."""
    if PartitionInfo in target:
        return target[PartitionInfo]
    _check_placeable(ctx, "partitions", target)
    info = target[FsImageInfo]
    return PartitionInfo(
        image = info.image,
        fs_type = info.fs_type,
        name = target.label.name,
        type = "",
        size = "auto",
        headroom = "",
        uuid = "",
        attributes = [],
        bootable = False,
        label = target.label,
        offset = "",
        holes = [],
        align = "",
        fill = False,
        mbr_type = "",
        verity = "",
        verity_data = "",
    )

def _blob_entry(spec, b):
    entry = {"name": b.name, "in_partition_table": False, "image": spec_path(spec, b.image)}
    for key in ("offset", "size", "align"):
        if getattr(b, key):
            entry[key] = getattr(b, key)
    if b.holes:
        entry["holes"] = b.holes
    if b.fill:
        entry["fill"] = True
    return entry

def _partition_entry(ctx, spec, table, hybrid, p):
    entry = {"name": p.name, "size": p.size}
    if p.image:
        entry["image"] = spec_path(spec, p.image)
    if p.type:
        # else fstool picks: msdata for a FAT image (it probes the image), else linux
        entry["type"] = p.type
    for key in ("headroom", "offset", "align", "verity", "verity_data"):
        if getattr(p, key):
            entry[key] = getattr(p, key)
    if p.holes:
        entry["holes"] = p.holes
    if p.fill:
        entry["fill"] = True
    if p.mbr_type:
        if not hybrid:
            attr_error(ctx, "partitions", "%s: mbr_type mirrors a partition in a hybrid MBR: " % p.label +
                                          "it needs a gpt_disk with hybrid = True")
        entry["mbr_type"] = p.mbr_type
    if table == "gpt":
        if p.bootable and not p.mbr_type:
            attr_error(ctx, "partitions", "%s: bootable is an MBR flag; on GPT use " % p.label +
                                          "attributes = [\"legacy-bios-bootable\"] (on a hybrid " +
                                          "gpt_disk, bootable goes with mbr_type)")
        if p.bootable:
            entry["bootable"] = True
        if p.uuid:
            entry["uuid"] = p.uuid
        if p.attributes:
            entry["attributes"] = p.attributes
    else:
        if p.attributes:
            attr_error(ctx, "partitions", "%s: attributes are GPT only; on MBR use bootable" % p.label)
        if p.uuid:
            attr_error(ctx, "partitions", "%s: partition UUIDs are GPT only" % p.label)
        if p.bootable:
            entry["bootable"] = True
    return entry

def _disk_impl(ctx, table, hybrid = False):
    pieces = []  # (PartitionInfo or RawBlobInfo, is_blob) in disk order
    for t in ctx.attr.partitions:
        if RawBlobInfo in t:
            pieces.append((t[RawBlobInfo], True))
        else:
            pieces.append((_partition_info(ctx, t), False))
    parts = [p for p, blob in pieces if not blob]
    blobs = [b for b, blob in pieces if blob]
    if not parts:
        attr_error(ctx, "partitions", "a disk needs at least one partition in its table " +
                                      "(raw_blob targets lie outside it)")
    spec = declare_spec(ctx)
    image_table = {"partition_table": "hybrid" if hybrid else table, "size": ctx.attr.disk_size}
    if ctx.attr.alignment:
        image_table["alignment"] = ctx.attr.alignment
    if ctx.attr.sector_size:
        image_table["sector_size"] = ctx.attr.sector_size
    if ctx.attr.fill:
        image_table["fill"] = True
    if table == "gpt":
        if ctx.attr.uuid:
            image_table["uuid"] = ctx.attr.uuid
        if ctx.attr.gpt_location:
            image_table["gpt_location"] = ctx.attr.gpt_location
        if ctx.attr.gpt_entries:
            image_table["gpt_entries"] = ctx.attr.gpt_entries
    if ctx.attr.disk_signature:
        if not (table == "mbr" or hybrid):
            attr_error(ctx, "disk_signature", "the disk signature is the MBR's: a gpt_disk has " +
                                              "one only with hybrid = True")
        image_table["disk_signature"] = ctx.attr.disk_signature
    entries = []
    table_index = 0
    for p, is_blob in pieces:
        if is_blob:
            entries.append(_blob_entry(spec, p))
            continue
        table_index += 1

        # Raw blobs may follow a "remaining" partition: they lie inside it, at offsets.
        if p.size == "remaining" and table_index != len(parts):
            attr_error(ctx, "partitions", "%s: only the last partition can have size = \"remaining\"" % p.label)
        if p.size == "remaining" and ctx.attr.disk_size == "auto":
            attr_error(ctx, "size", "%s has size = \"remaining\", which needs a fixed disk size" % p.label)
        entries.append(_partition_entry(ctx, spec, table, hybrid, p))
    write_json(ctx, spec, {"image": image_table, "partitions": entries})

    image, outputs, format_args = declare_output(ctx, ctx.attr.format)
    layout = ctx.actions.declare_file(ctx.label.name + ".layout.json")
    outputs.append(layout)
    args = ctx.actions.args()
    args.add("build")
    args.add("-q")
    args.add(spec)
    args.add("-o", image)
    args.add_all(format_args)
    args.add("--layout-json", layout)

    # One verity set (a data partition with its hash partition, or an appended tree):
    # its root hash is an output of its own, the value a kernel command line or a
    # signed manifest needs. With several, the layout JSON has each.
    roothash = None
    if len([p for p in parts if p.verity in ("data", "append")]) == 1:
        roothash = ctx.actions.declare_file(ctx.label.name + ".roothash")
        outputs.append(roothash)
        args.add("--roothash", roothash)
    run_fstool(
        ctx,
        mnemonic = "DiskImage",
        progress_message = "Assembling %s disk %s" % ("hybrid" if hybrid else table.upper(), ctx.label),
        arguments = [args],
        inputs = [spec] + [p.image for p in parts if p.image] + [b.image for b in blobs],
        outputs = outputs,
    )
    layout_files = [layout] + ([roothash] if roothash else [])
    return [
        DefaultInfo(files = depset([f for f in outputs if f not in layout_files])),
        DiskImageInfo(
            image = image,
            format = ctx.attr.format,
            partition_table = "hybrid" if hybrid else table,
            layout = layout,
            partitions = parts,
            blobs = blobs,
            roothash = roothash,
        ),
        OutputGroupInfo(
            layout = depset(layout_files),
            spec = depset([spec]),
        ),
    ]

_DISK_ATTRS = {
    "partitions": attr.label_list(
        mandatory = True,
        providers = [[PartitionInfo], [FsImageInfo], [RawBlobInfo]],
        doc = "The pieces in disk order: partition targets, filesystem targets (a " +
              "partition with the defaults) and raw_blob targets (outside the table).",
    ),
    "disk_size": attr.string(
        default = "auto",
        doc = "Disk size such as `\"8GiB\"`, or `\"auto\"`: the partitions plus the " +
              "tables, aligned. Space no partition uses stays a hole (sparse).",
    ),
    "alignment": attr.string(
        doc = "Partition start alignment (default `\"1MiB\"`).",
    ),
    "sector_size": attr.string(
        doc = "Logical sector size: `\"512\"` (default) or `\"4096\"`.",
    ),
    "fill": attr.bool(
        default = False,
        doc = "Write everything after the last piece, to the end of the disk, as zeros.",
    ),
    "format": format_attr("disk"),
}

def _gpt_disk_impl(ctx):
    return _disk_impl(ctx, "gpt", ctx.attr.hybrid)

gpt_disk = rule(
    implementation = _gpt_disk_impl,
    attrs = dict(
        _DISK_ATTRS,
        uuid = attr.string(doc = "The disk GUID (default: derived from the spec)."),
        hybrid = attr.bool(
            default = False,
            doc = "Also write a hybrid MBR mirroring the partitions that have an " +
                  "`mbr_type` (up to 3), then a 0xEE entry, as gdisk and genimage do.",
        ),
        disk_signature = attr.string(
            doc = "The hybrid MBR's disk signature such as `\"0xdeadbeef\"` (needs " +
                  "`hybrid = True`; default: derived).",
        ),
        gpt_location = attr.string(
            doc = "Byte offset of the primary GPT entry array (default: LBA 2), e.g. " +
                  "`\"1MiB\"` to keep it clear of a bootloader blob; the header stays at LBA 1.",
        ),
        gpt_entries = attr.int(
            default = 0,
            doc = "Number of GPT entries, 4 to 1024 (0: the default, 128).",
        ),
    ),
    toolchains = TOOLCHAINS,
    provides = [DiskImageInfo],
    doc = "A GPT disk image `<name>.img`; output group `layout` has `<name>.layout.json`.",
)

def _mbr_disk_impl(ctx):
    return _disk_impl(ctx, "mbr")

mbr_disk = rule(
    implementation = _mbr_disk_impl,
    attrs = dict(
        _DISK_ATTRS,
        disk_signature = attr.string(
            doc = "The MBR disk signature such as `\"0xdeadbeef\"` (default: derived).",
        ),
    ),
    toolchains = TOOLCHAINS,
    provides = [DiskImageInfo],
    doc = "An MBR disk image `<name>.img` (more than four partitions: the fourth and " +
          "later become logical ones); output group `layout` has `<name>.layout.json`.",
)
