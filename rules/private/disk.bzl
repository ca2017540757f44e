"""partition, gpt_disk and mbr_disk: place prebuilt filesystem images on a partitioned disk.

A disk never builds a filesystem itself: each partition names an image (from fs_image,
squashfs_image, fstool_image or any single file) and the disk's one action (mnemonic
DiskImage) runs `fstool build` on a generated spec with `image = ...` per partition, so
editing one filesystem's input reruns that filesystem's writer and the assembler only.
"""

load("//rules:providers.bzl", "DiskImageInfo", "FsImageInfo", "PartitionInfo")
load(
    ":common.bzl",
    "TOOLCHAINS",
    "attr_error",
    "declare_spec",
    "run_fstool",
    "spec_path",
    "write_json",
)

def _fs_type_of(target):
    return target[FsImageInfo].fs_type if FsImageInfo in target else ""

def _partition_impl(ctx):
    fs_type = _fs_type_of(ctx.attr.image)
    return [PartitionInfo(
        image = ctx.file.image,
        fs_type = fs_type,
        name = ctx.attr.label if ctx.attr.label else ctx.label.name,
        type = ctx.attr.type,
        size = ctx.attr.partition_size,
        headroom = ctx.attr.headroom,
        uuid = ctx.attr.uuid,
        attributes = ctx.attr.attributes,
        bootable = ctx.attr.bootable,
        label = ctx.label,
    )]

partition = rule(
    implementation = _partition_impl,
    attrs = {
        "image": attr.label(
            mandatory = True,
            allow_single_file = True,
            doc = "The filesystem image: an fs_image, squashfs_image or fstool_image " +
                  "target, or any prebuilt image file.",
        ),
        "type": attr.string(
            doc = "Partition type: a name (`esp`, `linux`, `linux-root-x86-64`, `swap`, " +
                  "`xbootldr`, ...), a GPT type GUID or an MBR byte like `\"0x83\"`. " +
                  "Default (`\"\"`): fstool picks `msdata` for a FAT image, else `linux`.",
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
            doc = "GPT partition GUID (default: derived from the disk spec and the index).",
        ),
        "attributes": attr.string_list(
            doc = "GPT attributes: `required`, `no-block-io`, `legacy-bios-bootable`, " +
                  "`read-only`, `hidden`, `no-auto`, `growfs`, or bit numbers 48-63.",
        ),
        "bootable": attr.bool(
            default = False,
            doc = "The MBR active flag (mbr_disk only).",
        ),
    },
    provides = [PartitionInfo],
    doc = "One partition of a gpt_disk or mbr_disk, in the order the disk lists them.",
)

def _partition_info(target):
    """PartitionInfo of a `partitions` entry; a bare filesystem target gets the defaults."""
    if PartitionInfo in target:
        return target[PartitionInfo]
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
    )

def _disk_impl(ctx, table):
    parts = [_partition_info(t) for t in ctx.attr.partitions]
    if not parts:
        attr_error(ctx, "partitions", "a disk needs at least one partition")
    spec = declare_spec(ctx)
    image_table = {"partition_table": table, "size": ctx.attr.disk_size}
    if ctx.attr.alignment:
        image_table["alignment"] = ctx.attr.alignment
    if ctx.attr.sector_size:
        image_table["sector_size"] = ctx.attr.sector_size
    if table == "gpt" and ctx.attr.uuid:
        image_table["uuid"] = ctx.attr.uuid
    if table == "mbr" and ctx.attr.disk_signature:
        image_table["disk_signature"] = ctx.attr.disk_signature
    entries = []
    for i, p in enumerate(parts):
        if p.size == "remaining" and i != len(parts) - 1:
            attr_error(ctx, "partitions", "%s: only the last partition can have size = \"remaining\"" % p.label)
        if p.size == "remaining" and ctx.attr.disk_size == "auto":
            attr_error(ctx, "size", "%s has size = \"remaining\", which needs a fixed disk size" % p.label)
        entry = {
            "name": p.name,
            "size": p.size,
            "image": spec_path(spec, p.image),
        }
        if p.type:
            # else fstool picks: msdata for a FAT image (it probes the image), else linux
            entry["type"] = p.type
        if p.headroom:
            entry["headroom"] = p.headroom
        if table == "gpt":
            if p.bootable:
                attr_error(ctx, "partitions", "%s: bootable is an MBR flag; on GPT use " % p.label +
                                              "attributes = [\"legacy-bios-bootable\"]")
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
        entries.append(entry)
    write_json(ctx, spec, {"image": image_table, "partitions": entries})

    image = ctx.actions.declare_file(ctx.label.name + ".img")
    layout = ctx.actions.declare_file(ctx.label.name + ".layout.json")
    args = ctx.actions.args()
    args.add("build")
    args.add("-q")
    args.add(spec)
    args.add("-o", image)
    args.add("--layout-json", layout)
    run_fstool(
        ctx,
        mnemonic = "DiskImage",
        progress_message = "Assembling %s disk %s" % (table.upper(), ctx.label),
        arguments = [args],
        inputs = [spec] + [p.image for p in parts],
        outputs = [image, layout],
    )
    return [
        DefaultInfo(files = depset([image])),
        DiskImageInfo(
            image = image,
            partition_table = table,
            layout = layout,
            partitions = parts,
        ),
        OutputGroupInfo(
            layout = depset([layout]),
            spec = depset([spec]),
        ),
    ]

_DISK_ATTRS = {
    "partitions": attr.label_list(
        mandatory = True,
        providers = [[PartitionInfo], [FsImageInfo]],
        doc = "The partitions in disk order: partition targets, or filesystem targets " +
              "for a partition with the defaults.",
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
}

def _gpt_disk_impl(ctx):
    return _disk_impl(ctx, "gpt")

gpt_disk = rule(
    implementation = _gpt_disk_impl,
    attrs = dict(
        _DISK_ATTRS,
        uuid = attr.string(doc = "The disk GUID (default: derived from the spec)."),
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
