"""Providers of rules_fstool: what a filesystem, a partition and a disk tell their users."""

FsImageInfo = provider(
    doc = "A filesystem image built by fs_image, squashfs_image or fstool_image.",
    fields = {
        "image": "File: the image (`<name>.img`).",
        "fs_type": "string: the type as the rule names it (`ext2`, `ext3`, `ext4`, " +
                   "`squashfs`, `vfat`, `fat12`, `fat16`, `fat32` or an alias from FS_TYPES), " +
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
    },
)

DiskImageInfo = provider(
    doc = "A partitioned disk image built by gpt_disk or mbr_disk.",
    fields = {
        "image": "File: the disk image (`<name>.img`).",
        "partition_table": "string: `\"gpt\"` or `\"mbr\"`.",
        "layout": "File: `<name>.layout.json`, the partitions' offsets, sizes, types and " +
                  "UUIDs as `fstool build --layout-json` writes them.",
        "partitions": "list of PartitionInfo, in disk order.",
    },
)
