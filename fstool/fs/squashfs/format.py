"""SquashFS 4.0 on-disk structures, shared by the writer and the reader.

Everything is little-endian (kernel Documentation/filesystems/squashfs.rst and
squashfs_fs.h). Metadata (inodes, directories, tables) lives in blocks of at
most 8 KiB of uncompressed bytes, each preceded by a u16 header: its stored
length, with bit 15 set when stored uncompressed. A metadata reference is
(offset of the block from its table's start << 16) | offset inside the block.
"""
from __future__ import annotations

from ...structs import Record

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

SUPERBLOCK = Record("squashfs_super_block", (
    ("magic", "I"), ("inode_count", "I"), ("mkfs_time", "I"), ("block_size", "I"),
    ("fragment_count", "I"), ("compressor", "H"), ("block_log", "H"), ("flags", "H"),
    ("id_count", "H"), ("version_major", "H"), ("version_minor", "H"), ("root_inode", "Q"),
    ("bytes_used", "Q"), ("id_table", "Q"), ("xattr_table", "Q"), ("inode_table", "Q"),
    ("directory_table", "Q"), ("fragment_table", "Q"), ("export_table", "Q"),
))
assert SUPERBLOCK.size == 96
META_HEADER = Record("squashfs_metadata_header", (("size", "H"),))  # | META_UNCOMPRESSED
TABLE_POINTER = Record("squashfs_table_pointer", (("start", "Q"),))  # lookup-table index entry

# inode types: basic, then the extended ("long") forms with an xattr index and more
DIR, FILE, SYMLINK, BLKDEV, CHRDEV, FIFO, SOCKET = 1, 2, 3, 4, 5, 6, 7
LDIR, LFILE, LSYMLINK, LBLKDEV, LCHRDEV, LFIFO, LSOCKET = 8, 9, 10, 11, 12, 13, 14
EXTENDED = LDIR - DIR  # the extended type of a basic one is type + EXTENDED

INODE_HEADER = Record("squashfs_base_inode", (
    ("inode_type", "H"), ("mode", "H"), ("uid", "H"), ("guid", "H"), ("mtime", "I"),
    ("inode_number", "I")))
DIR_INODE = Record("squashfs_dir_inode", (
    ("start_block", "I"), ("nlink", "I"), ("file_size", "H"), ("offset", "H"),
    ("parent_inode", "I")))
LDIR_INODE = Record("squashfs_ldir_inode", (      # followed by i_count directory index entries
    ("nlink", "I"), ("file_size", "I"), ("start_block", "I"), ("parent_inode", "I"),
    ("i_count", "H"), ("offset", "H"), ("xattr", "I")))
DIR_INDEX = Record("squashfs_dir_index", (         # followed by the name (size + 1 bytes)
    ("index", "I"), ("start_block", "I"), ("size", "I")))
FILE_INODE = Record("squashfs_reg_inode", (        # followed by the block size list
    ("start_block", "I"), ("fragment", "I"), ("offset", "I"), ("file_size", "I")))
LFILE_INODE = Record("squashfs_lreg_inode", (      # followed by the block size list
    ("start_block", "Q"), ("file_size", "Q"), ("sparse", "Q"), ("nlink", "I"),
    ("fragment", "I"), ("offset", "I"), ("xattr", "I")))
SYMLINK_INODE = Record("squashfs_symlink_inode", (  # followed by the target, then (LSYMLINK)
    ("nlink", "I"), ("symlink_size", "I")))          # an XATTR_INDEX
DEV_INODE = Record("squashfs_dev_inode", (("nlink", "I"), ("rdev", "I")))
LDEV_INODE = Record("squashfs_ldev_inode", (("nlink", "I"), ("rdev", "I"), ("xattr", "I")))
IPC_INODE = Record("squashfs_ipc_inode", (("nlink", "I"),))
LIPC_INODE = Record("squashfs_lipc_inode", (("nlink", "I"), ("xattr", "I")))
XATTR_INDEX = Record("squashfs_xattr_index", (("xattr", "I"),))
BLOCK_SIZE_ENTRY = Record("squashfs_block_size", (("size", "I"),))  # | DATA_UNCOMPRESSED
# the record after the header, by inode type (as dissect.squashfs's INODE_STRUCT_MAP)
INODE_STRUCT_MAP = {
    DIR: DIR_INODE, FILE: FILE_INODE, SYMLINK: SYMLINK_INODE, BLKDEV: DEV_INODE,
    CHRDEV: DEV_INODE, FIFO: IPC_INODE, SOCKET: IPC_INODE,
    LDIR: LDIR_INODE, LFILE: LFILE_INODE, LSYMLINK: SYMLINK_INODE, LBLKDEV: LDEV_INODE,
    LCHRDEV: LDEV_INODE, LFIFO: LIPC_INODE, LSOCKET: LIPC_INODE,
}
DIR_TYPES = (DIR, LDIR)
FILE_TYPES = (FILE, LFILE)

DIR_HEADER = Record("squashfs_dir_header", (("count", "I"), ("start_block", "I"), ("inode_number", "I")))
DIR_ENTRY = Record("squashfs_dir_entry", (        # followed by the name (size + 1 bytes)
    ("offset", "H"), ("inode_number", "h"), ("type", "H"), ("size", "H")))
DIR_ENTRIES_MAX = 256  # entries under one header
FRAGMENT_ENTRY = Record("squashfs_fragment_entry", (("start_block", "Q"), ("size", "I"), ("unused", "I")))
ID_ENTRY = Record("squashfs_id", (("id", "I"),))
EXPORT_ENTRY = Record("squashfs_export", (("inode", "Q"),))  # inode reference, by number - 1
XATTR_ID = Record("squashfs_xattr_id", (("xattr", "Q"), ("count", "I"), ("size", "I")))
XATTR_TABLE_HEADER = Record("squashfs_xattr_id_table", (      # followed by the id block index
    ("xattr_table_start", "Q"), ("xattr_ids", "I"), ("unused", "I")))
XATTR_KEY = Record("squashfs_xattr_entry", (("type", "H"), ("size", "H")))  # then the name
XATTR_VAL = Record("squashfs_xattr_val", (("vsize", "I"),))                 # then the value
XATTR_OOL_REF = Record("squashfs_xattr_ool", (("ref", "Q"),))  # an out-of-line value's reference
XATTR_PREFIXES = (("user.", 0), ("trusted.", 1), ("security.", 2))
XATTR_VALUE_OOL = 0x100
NO_XATTR = 0xFFFFFFFF

LZ4_OPTIONS = Record("lz4_comp_opts", (("version", "I"), ("flags", "I")))  # 1 = legacy; 1 = HC
LZ4_LEGACY = 1
LZ4_HC = 1
GZIP_OPTIONS = Record("gzip_comp_opts", (("compression_level", "I"), ("window_size", "H"), ("strategies", "H")))
GZIP_WINDOW_SIZE = 15
# squashfs-tools' legacy "lzma" blocks: the .lzma ("alone") stream, whose header then has the
# real uncompressed size where Python's encoder writes "unknown" (-1)
LZMA_ALONE_HEADER = Record("lzma_alone_header", (
    ("properties", "B"), ("dict_size", "I"), ("uncompressed_size", "Q")))
ZSTD_OPTIONS = Record("zstd_comp_opts", (("compression_level", "I"),))


def encode_rdev(major: int, minor: int) -> int:
    """The kernel's new_encode_dev: 12-bit major, 20-bit minor, split around the major."""
    return (minor & 0xFF) | (major << 8) | ((minor & ~0xFF) << 12)


def decode_rdev(rdev: int) -> tuple[int, int]:
    return (rdev >> 8) & 0xFFF, (rdev & 0xFF) | ((rdev >> 12) & 0xFFF00)
