"""SquashFS 4.0 on-disk structures, shared by the writer and the reader.

Everything is little-endian (kernel Documentation/filesystems/squashfs.rst and
squashfs_fs.h). Metadata (inodes, directories, tables) lives in blocks of at
most 8 KiB of uncompressed bytes, each preceded by a u16 header: its stored
length, with bit 15 set when stored uncompressed. A metadata reference is
(offset of the block from its table's start << 16) | offset inside the block.
"""
from __future__ import annotations

import struct

MAGIC = 0x73717368
METADATA_SIZE = 8192
META_UNCOMPRESSED = 0x8000
DATA_UNCOMPRESSED = 1 << 24
NO_FRAGMENT = 0xFFFFFFFF
NO_TABLE = 0xFFFFFFFFFFFFFFFF

COMPRESSORS = {"gzip": 1, "lzma": 2, "lzo": 3, "xz": 4, "lz4": 5, "zstd": 6}
COMPRESSOR_NAMES = {v: k for k, v in COMPRESSORS.items()}

# superblock flags
UNCOMPRESSED_INODES = 0x0001
UNCOMPRESSED_DATA = 0x0002
UNCOMPRESSED_FRAGMENTS = 0x0008
NO_FRAGMENTS = 0x0010
ALWAYS_FRAGMENTS = 0x0020
DUPLICATES = 0x0040
EXPORTABLE = 0x0080
UNCOMPRESSED_XATTRS = 0x0100
NO_XATTRS = 0x0200
COMPRESSOR_OPTIONS = 0x0400
UNCOMPRESSED_IDS = 0x0800

SUPERBLOCK = struct.Struct("<IIIIIHHHHHHQQQQQQQQ")  # 96 bytes
SB_FIELDS = ("magic", "inode_count", "mkfs_time", "block_size", "fragment_count", "compressor",
             "block_log", "flags", "id_count", "version_major", "version_minor", "root_inode",
             "bytes_used", "id_table", "xattr_table", "inode_table", "directory_table",
             "fragment_table", "export_table")

# inode types
DIR, FILE, SYMLINK, BLKDEV, CHRDEV, FIFO, SOCKET = 1, 2, 3, 4, 5, 6, 7
LDIR, LFILE, LSYMLINK, LBLKDEV, LCHRDEV, LFIFO, LSOCKET = 8, 9, 10, 11, 12, 13, 14

INODE_HEADER = struct.Struct("<HHHHII")  # type, mode, uid idx, gid idx, mtime, inode number
DIR_INODE = struct.Struct("<IIHHI")  # start block, nlink, file size, offset, parent inode
LDIR_INODE = struct.Struct("<IIIIHHI")  # nlink, file size, start block, parent, index count, offset, xattr
FILE_INODE = struct.Struct("<IIII")  # blocks start, fragment, fragment offset, file size
LFILE_INODE = struct.Struct("<QQQIIII")  # blocks start, size, sparse, nlink, fragment, offset, xattr
SYMLINK_INODE = struct.Struct("<II")  # nlink, target size
DEV_INODE = struct.Struct("<II")  # nlink, rdev
LDEV_INODE = struct.Struct("<III")  # nlink, rdev, xattr
IPC_INODE = struct.Struct("<I")  # nlink
LIPC_INODE = struct.Struct("<II")  # nlink, xattr

DIR_HEADER = struct.Struct("<III")  # count - 1, inode block start, base inode number
DIR_ENTRY = struct.Struct("<HhHH")  # offset, inode number delta, basic type, name size - 1
FRAGMENT_ENTRY = struct.Struct("<QII")  # start, size (with DATA_UNCOMPRESSED), unused
XATTR_ID = struct.Struct("<QII")  # kv reference, count, total size
XATTR_TABLE_HEADER = struct.Struct("<QII")  # kv table start, id count, unused
XATTR_KEY = struct.Struct("<HH")  # type (| 0x100 out-of-line), name size
XATTR_PREFIXES = (("user.", 0), ("trusted.", 1), ("security.", 2))
XATTR_VALUE_OOL = 0x100

LZ4_OPTIONS = struct.Struct("<II")  # version (1 = legacy), flags (1 = HC)
LZ4_LEGACY = 1


def encode_rdev(major: int, minor: int) -> int:
    """The kernel's new_encode_dev: 12-bit major, 20-bit minor, split around the major."""
    return (minor & 0xFF) | (major << 8) | ((minor & ~0xFF) << 12)


def decode_rdev(rdev: int) -> tuple[int, int]:
    return (rdev >> 8) & 0xFFF, (rdev & 0xFF) | ((rdev >> 12) & 0xFFF00)
