"""Providers of rules_fstool: what a filesystem, a partition and a disk tell their users."""

FsImageInfo = provider(
    doc = "A filesystem image built by fs_image, squashfs_image or fstool_image.",
    fields = {
        "image": "File: the image (`<name>.img`; `<name>.qcow2` or `<name>.simg` in those " +
                 "containers).",
        "format": "string: the output container: `raw`, `qcow2`, `android-sparse`, " +
                  "`android-sparse-crc` or `bmap` (a raw image with `<name>.img.bmap`).",
        "fs_type": "string: the type as the rule names it (one of FS_TYPES: `ext4`, " +
                   "`squashfs`, `erofs`, `vfat`, `exfat`, `f2fs`, `tar`, ...), " +
                   "or `\"\"` when unknown (fstool_image).",
        "size": "string: the size asked for, `\"auto\"` when the image is as small as its " +
                "content allows (the real size is the image file's).",
        "label": "string: the volume label, or `\"\"`.",
        "uuid": "string: the UUID asked for, or `\"\"` when fstool derives it from the inputs.",
    },
)

PartitionInfo = provider(
    doc = "One partition of a disk, declared by the partition rule (in the disk's order).",
    fields = {
        "image": "File: the filesystem image placed in the partition.",
        "fs_type": "string: the filesystem type of the image, or `\"\"` when unknown.",
        "name": "string: the partition name (GPT) written in the table.",
        "type": "string: a type name (`esp`, `linux-root-x86-64`, ...), a GPT type GUID or " +
                "an MBR byte (`\"0x83\"`).",
        "size": "string: `\"auto\"` (the image's size), a size such as `\"64MiB\"`, or " +
                "`\"remaining\"` (last partition of a fixed-size disk).",
        "headroom": "string: free space after the image in an `auto` partition, or `\"\"`.",
        "uuid": "string: the GPT partition GUID, or `\"\"` to derive it.",
        "attributes": "list of strings: GPT attribute names or bit numbers.",
        "bootable": "bool: the MBR active flag.",
        "label": "Label: the partition target, for error messages.",
        "offset": "string: the exact start (`\"16MiB\"`, bytes), or `\"\"`.",
        "holes": "list of strings: byte ranges (`\"440..512\"`) this partition does not write.",
        "align": "string: this partition's own start alignment, or `\"\"`.",
        "fill": "bool: write the partition's holes as zeros.",
        "mbr_type": "string: the MBR type byte mirroring it in a hybrid MBR, or `\"\"`.",
        "verity": "string: `\"data\"`, `\"hash\"`, `\"append\"` or `\"\"` (dm-verity role).",
        "verity_data": "string: on a `hash` partition, the name of its data partition, or `\"\"`.",
    },
)

DiskImageInfo = provider(
    doc = "A partitioned disk image built by gpt_disk or mbr_disk.",
    fields = {
        "image": "File: the disk image (`<name>.img`, `<name>.qcow2` or `<name>.simg`).",
        "format": "string: the output container (as FsImageInfo.format).",
        "partition_table": "string: `\"gpt\"`, `\"hybrid\"` (GPT plus a hybrid MBR) or `\"mbr\"`.",
        "layout": "File: `<name>.layout.json`, the partitions' offsets, sizes, types and " +
                  "UUIDs as `fstool build --layout-json` writes them.",
        "partitions": "list of PartitionInfo, in disk order.",
        "blobs": "list of RawBlobInfo: the raw blobs outside the table, in disk order.",
        "roothash": "File: `<name>.roothash` (the dm-verity root hash in hex) when the disk " +
                    "has one verity partition set, else None.",
    },
)

RawBlobInfo = provider(
    doc = "A file written at a byte offset of a disk, outside its partition table (a bootloader).",
    fields = {
        "image": "File: the blob's bytes.",
        "name": "string: its name in the layout JSON and in error messages.",
        "offset": "string: the start (`\"32KiB\"`, bytes), or `\"\"` for the next free place.",
        "size": "string: the space it reserves (`\"\"`: the file's size).",
        "holes": "list of strings: byte ranges (`\"440..512\"`) of it that are not written.",
        "align": "string: its start alignment, or `\"\"` (1).",
        "fill": "bool: write its holes as zeros.",
        "label": "Label: the raw_blob target, for error messages.",
    },
)
