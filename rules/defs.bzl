"""Public API of rules_fstool: reproducible filesystem and disk images as build outputs.

    load("@rules_fstool//rules:defs.bzl", "fs_image", "gpt_disk", "partition", "squashfs_image")

    fs_image(
        name = "rootfs",
        fs_type = "ext4",
        srcs = ["//rootfs:files"],
        strip_prefix = "/rootfs",
        tars = [":overlay.tar.gz"],
        symlinks = {"/bin": "usr/bin"},
        label = "root",
    )

    squashfs_image(
        name = "data",
        srcs = [":docs"],
        package_dir = "/share",
    )

    partition(name = "root_part", image = ":rootfs", type = "linux-root-x86-64", label = "root")

    gpt_disk(
        name = "disk",
        partitions = [":esp_part", ":root_part", ":data"],
    )

Rules:
- `fs_image`: `<name>.img` of any FS_TYPES type: ext2/3/4, squashfs, erofs, FAT,
  exFAT, F2FS, tar (provides FsImageInfo).
- `squashfs_image`: SquashFS `<name>.img` with compression settings (FsImageInfo).
- `iso_image`: bootable ISO 9660 `<name>.img` (El Torito BIOS/UEFI, isohybrid) (FsImageInfo).
- `partition`: one partition of a disk (PartitionInfo); disks keep the listed order.
- `raw_blob`: a file at a byte offset of a disk, outside the table (RawBlobInfo).
- `gpt_disk`, `mbr_disk`: `<name>.img` and, in output group `layout`,
  `<name>.layout.json` and `<name>.roothash` with dm-verity (DiskImageInfo).

Images and disks take `format`: `raw` (`<name>.img`), `qcow2` (`<name>.qcow2`),
`android-sparse`/`android-sparse-crc` (`<name>.simg`), `bmap` (`<name>.img` and
`<name>.img.bmap`).
- `fstool_image`: `<name>.img` from a TOML/JSON spec for the fstool command line.
- `fstool_toolchain`: an fstool program for `register_toolchains` (type
  `@rules_fstool//fstool:toolchain_type`).

Every attribute is documented in docs/rules.md; the providers are in providers.bzl.
"""

load(
    "//rules:providers.bzl",
    _DiskImageInfo = "DiskImageInfo",
    _FsImageInfo = "FsImageInfo",
    _PartitionInfo = "PartitionInfo",
    _RawBlobInfo = "RawBlobInfo",
)
load(
    "//rules/private:disk.bzl",
    _gpt_disk_rule = "gpt_disk",
    _mbr_disk_rule = "mbr_disk",
    _partition_rule = "partition",
    _raw_blob_rule = "raw_blob",
)
load(
    "//rules/private:fs_image.bzl",
    _fs_image_rule = "fs_image",
    _iso_image_rule = "iso_image",
    _squashfs_image_rule = "squashfs_image",
)
load("//rules/private:fs_types.bzl", _FS_TYPES = "FS_TYPES")
load("//rules/private:fstool_image.bzl", _fstool_image_rule = "fstool_image")
load("//rules/private:toolchain.bzl", _fstool_toolchain = "fstool_toolchain")

FsImageInfo = _FsImageInfo
PartitionInfo = _PartitionInfo
DiskImageInfo = _DiskImageInfo
RawBlobInfo = _RawBlobInfo

# The filesystem type names fs_image accepts (those of fstool's format registry).
FS_TYPES = _FS_TYPES

fstool_toolchain = _fstool_toolchain

# The rules are wrapped in macros to offer an attribute called `size` (Bazel 4.2.3
# reserves that name for tests and crashes on a rule attribute with it), to take `mtime`
# as an int of any size (attr.int is 32 bits: 2038) and to tell `stamp = -1` whether
# --stamp is on (as rules_pkg does).

def _content_kwargs(kwargs):
    mtime = kwargs.pop("mtime", None)
    if mtime != None:
        kwargs["mtime"] = str(mtime) if type(mtime) == "int" else mtime
    kwargs["private_stamp_detect"] = select({
        str(Label("//rules/private:stamp_detect")): True,
        "//conditions:default": False,
    })
    return kwargs

def fs_image(name, size = "auto", **kwargs):
    """A filesystem image `<name>.img` of any type in FS_TYPES (default ext4).

    Args:
      name: the target; the image is `<name>.img`.
      size: `"auto"` (the smallest size holding the content plus `headroom`) or a
        size such as `"64MiB"`.
      **kwargs: `fs_type`, the content attributes (`srcs`, `package_dir`,
        `strip_prefix`, `mode`, `include_runfiles`, `tars`, `symlinks`,
        `empty_dirs`, `modes`, `owners`, `device_table`, `rootdevs`, `mtime`,
        `stamp`, `headroom`, `block_size`, `extra_options`), `format`, the
        security metadata (`xattrs`, `capabilities`, `acls`, `default_acls`,
        `file_contexts`, `fs_config`), `label`, `uuid` and the common ones
        (`visibility`, `tags`, ...); see docs/rules.md.
    """
    _fs_image_rule(name = name, image_size = size, **_content_kwargs(kwargs))

def squashfs_image(name, size = "auto", **kwargs):
    """A SquashFS image `<name>.img`.

    Args:
      name: the target; the image is `<name>.img`.
      size: `"auto"` (default: as small as the content) or a size to pad the image to.
      **kwargs: `compression` (default `"zstd"`), `compression_level`,
        `block_size`, the content attributes of fs_image and the common ones.
    """
    _squashfs_image_rule(name = name, image_size = size, **_content_kwargs(kwargs))

def iso_image(name, size = "auto", **kwargs):
    """A bootable ISO 9660 image `<name>.img` (Rock Ridge, Joliet, El Torito, isohybrid).

    Args:
      name: the target; the image is `<name>.img`.
      size: `"auto"` (default: as small as the content) or a size to pad the image to.
      **kwargs: `bios_boot`, `boot_info_table`, `efi_boot`, `hybrid`, `mbr_code`,
        `joliet`, `rock_ridge`, `label`, the content attributes of fs_image and the
        common ones.
    """
    _iso_image_rule(name = name, image_size = size, **_content_kwargs(kwargs))

def partition(name, image = None, size = "auto", **kwargs):
    """One partition of a gpt_disk or mbr_disk.

    Args:
      name: the target (and the default GPT partition name).
      image: the filesystem image (an fs_image, squashfs_image or fstool_image
        target, or a prebuilt image file); none on a `verity = "hash"` partition.
      size: `"auto"` (the image's size plus `headroom`), a size such as `"64MiB"`,
        or `"remaining"` (the last partition of a fixed-size disk).
      **kwargs: `type`, `label` (the GPT partition name), `headroom`, `uuid`,
        `attributes`, `bootable`, the board layout ones (`offset`, `holes`, `align`,
        `fill`, `mbr_type`), dm-verity (`verity`, `verity_data`) and the common ones.
    """
    _partition_rule(name = name, image = image, partition_size = size, **kwargs)

def raw_blob(name, src, size = "", **kwargs):
    """A file written at a byte offset of a disk, outside its partition table.

    List it among a disk's `partitions` (in disk order): a bootloader such as
    Rockchip's `u-boot-rockchip.bin` at 32 KiB. Overlapping a partition, a table or
    another blob is an error, unless the overlap lies in a declared hole.

    Args:
      name: the target (and the blob's name in the layout JSON).
      src: the file.
      size: the space it reserves (default `""`: the file's size).
      **kwargs: `offset`, `holes`, `align`, `fill` and the common ones.
    """
    _raw_blob_rule(name = name, src = src, blob_size = size, **kwargs)

def gpt_disk(name, partitions, size = "auto", **kwargs):
    """A GPT disk image `<name>.img`, with `<name>.layout.json` in output group `layout`.

    Args:
      name: the target; the disk is `<name>.img`.
      partitions: partition targets (or filesystem targets, for a partition with the
        defaults) in disk order.
      size: `"auto"` (the partitions plus the tables, aligned) or a size such as `"8GiB"`.
      **kwargs: `uuid`, `alignment`, `sector_size`, `format`, `fill`, `hybrid`,
        `disk_signature`, `gpt_location`, `gpt_entries` and the common ones.
    """
    _gpt_disk_rule(name = name, partitions = partitions, disk_size = size, **kwargs)

def mbr_disk(name, partitions, size = "auto", **kwargs):
    """An MBR disk image `<name>.img`, with `<name>.layout.json` in output group `layout`.

    Args:
      name: the target; the disk is `<name>.img`.
      partitions: partition targets (or filesystem targets) in disk order; with more
        than four, the fourth and later become logical partitions.
      size: `"auto"` (the partitions plus the table, aligned) or a size such as `"8GiB"`.
      **kwargs: `disk_signature`, `alignment`, `sector_size`, `format`, `fill` and
        the common ones.
    """
    _mbr_disk_rule(name = name, partitions = partitions, disk_size = size, **kwargs)

fstool_image = _fstool_image_rule
