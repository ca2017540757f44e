"""The filesystem type names the rules accept: the one list of them in Starlark.

It equals `fstool.fs.type_names()` (canonical names and aliases of every format in
the Python registry, fstool/fs/__init__.py); tests/test_bazel_static.py checks that.
A new format adds its names here.
"""

FS_TYPES = [
    "cpio",
    "erofs",
    "exfat",
    "ext2",
    "ext3",
    "ext4",
    "f2fs",
    "fat",
    "fat12",
    "fat16",
    "fat32",
    "initramfs",
    "iso",
    "iso9660",
    "msdos",
    "newc",
    "sqfs",
    "squashfs",
    "squashfs4",
    "tar",
    "vfat",
    "xfs",
]
