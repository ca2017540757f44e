"""F2FS on-disk records, checksums and the dentry hash, as f2fs-tools defines them.

Blocks are 4 KiB, segments 512 blocks (2 MiB), one segment per section and zone.
The records: superblock (at byte 1024 of blocks 0 and 1), checkpoint, NAT and
SIT entries, segment summaries, node blocks (inode, direct, indirect) with their
footer, and dentry blocks.
"""
from __future__ import annotations

import struct
import zlib

BLOCK = 4096
BLOCKS_PER_SEG = 512
LOG_BLOCKS_PER_SEG = 9
SUPER_MAGIC = 0xF2F52010
SUPER_OFFSET = 1024
MAJOR_VER, MINOR_VER = 1, 15
CHECKSUM_OFFSET = 4092
CP_STRUCT_SIZE = 192  # struct f2fs_checkpoint up to sit_nat_version_bitmap
SIT_ENTRY_PER_BLOCK = 55
NAT_ENTRY_PER_BLOCK = 455
ENTRIES_IN_SUM = 512
ADDRS_PER_INODE = 923
ADDRS_PER_BLOCK = 1018
NIDS_PER_BLOCK = 1018
NR_DENTRY_IN_BLOCK = 214
SLOT_LEN = 8
DENTRY_BITMAP_SIZE = 27
DENTRY_RESERVED = 3
MAX_DIR_HASH_DEPTH = 63
NODE_INO, META_INO, ROOT_INO = 1, 2, 3
NULL_ADDR = 0

CURSEG_HOT_DATA, CURSEG_WARM_DATA, CURSEG_COLD_DATA = 0, 1, 2
CURSEG_HOT_NODE, CURSEG_WARM_NODE, CURSEG_COLD_NODE = 3, 4, 5
SUM_TYPE_DATA, SUM_TYPE_NODE = 0, 1
CP_UMOUNT_FLAG = 0x1

FT_REG_FILE, FT_DIR, FT_CHRDEV, FT_BLKDEV, FT_FIFO, FT_SOCK, FT_SYMLINK = 1, 2, 3, 4, 5, 6, 7

# Superblock, up to and including `feature` and the encryption fields (the rest is zero).
SUPER = struct.Struct("<IHHIIIIIIIQIIIIIIIIIIIIIIII16s1024sI512sI256s256sIB16s")
# Checkpoint head (the version bitmaps follow at CP_STRUCT_SIZE).
CHECKPOINT = struct.Struct("<QQQIII8I8H8I8HIIIIIIIIIQ16s")
NAT_ENTRY = struct.Struct("<BII")
SIT_ENTRY = struct.Struct("<H64sQ")
SUMMARY = struct.Struct("<IBH")
SUMMARY_FOOTER = struct.Struct("<BI")
# Inode, up to i_addr: mode, advise, inline, uid, gid, links, size, blocks, atime, ctime,
# mtime, atime_nsec, ctime_nsec, mtime_nsec, generation, current_depth, xattr_nid,
# flags, pino, namelen, name, dir_level, extent (fofs, blk_addr, len).
INODE = struct.Struct("<HBBIIIQQQQQIIIIIIIII255sBIII")
NODE_FOOTER = struct.Struct("<IIIQI")
DIR_ENTRY = struct.Struct("<IIHB")

assert SUPER.size == 2201 and CHECKPOINT.size == CP_STRUCT_SIZE and INODE.size == 360 and NODE_FOOTER.size == 24
assert NAT_ENTRY.size * NAT_ENTRY_PER_BLOCK <= BLOCK and SIT_ENTRY.size * SIT_ENTRY_PER_BLOCK <= BLOCK
assert DENTRY_BITMAP_SIZE + DENTRY_RESERVED + NR_DENTRY_IN_BLOCK * (DIR_ENTRY.size + SLOT_LEN) == BLOCK
INODE_ADDR_OFFSET = INODE.size
INODE_NID_OFFSET = INODE.size + ADDRS_PER_INODE * 4
FOOTER_OFFSET = BLOCK - NODE_FOOTER.size
SUM_JOURNAL_OFFSET = ENTRIES_IN_SUM * SUMMARY.size
SUM_FOOTER_OFFSET = BLOCK - SUMMARY_FOOTER.size


def crc32(data: bytes, seed: int = SUPER_MAGIC) -> int:
    """f2fs_cal_crc32: the reflected CRC-32 from `seed`, without the final inversion."""
    return zlib.crc32(data, seed ^ 0xFFFFFFFF) ^ 0xFFFFFFFF


_DELTA = 0x9E3779B9
_M32 = 0xFFFFFFFF


def _str2hashbuf(msg: bytes, length: int, num: int) -> list[int]:
    pad = length | (length << 8)
    pad = (pad | (pad << 16)) & _M32
    out: list[int] = []
    val = pad
    length = min(length, num * 4)
    for i in range(length):
        if i % 4 == 0:
            val = pad
        val = (msg[i] + (val << 8)) & _M32
        if i % 4 == 3:
            out.append(val)
            val = pad
            num -= 1
    num -= 1
    if num >= 0:
        out.append(val)
    while num > 0:
        out.append(pad)
        num -= 1
    return out


def _tea(buf: list[int], inp: list[int]) -> None:
    s = 0
    b0, b1 = buf[0], buf[1]
    a, b, c, d = inp
    for _ in range(16):
        s = (s + _DELTA) & _M32
        b0 = (b0 + ((((b1 << 4) + a) & _M32) ^ ((b1 + s) & _M32) ^ (((b1 >> 5) + b) & _M32))) & _M32
        b1 = (b1 + ((((b0 << 4) + c) & _M32) ^ ((b0 + s) & _M32) ^ (((b0 >> 5) + d) & _M32))) & _M32
    buf[0] = (buf[0] + b0) & _M32
    buf[1] = (buf[1] + b1) & _M32


def dentry_hash(name: bytes) -> int:
    """f2fs_dentry_hash: TEA over 16-byte chunks of the name; '.' and '..' hash to 0."""
    if name in (b".", b".."):
        return 0
    buf = [0x67452301, 0xEFCDAB89, 0x98BADCFE, 0x10325476]
    pos, length = 0, len(name)
    while True:
        _tea(buf, _str2hashbuf(name[pos:], length, 4))
        pos += 16
        if length <= 16:
            break
        length -= 16
    return buf[0]


def dir_buckets(level: int) -> int:
    return 1 << level if level < MAX_DIR_HASH_DEPTH // 2 else 1 << (MAX_DIR_HASH_DEPTH // 2 - 1)


def bucket_blocks(level: int) -> int:
    return 2 if level < MAX_DIR_HASH_DEPTH // 2 else 4


def dir_block_index(level: int, bucket: int) -> int:
    """The first block of a bucket of a hash level (dir_level 0)."""
    return sum(dir_buckets(i) * bucket_blocks(i) for i in range(level)) + bucket * bucket_blocks(level)

XATTR_NODE_OFFSET = 0x1FFFFFFF  # ((unsigned)-1 << OFFSET_BIT_SHIFT) >> OFFSET_BIT_SHIFT
XATTR_MAGIC = 0xF2F52011
XATTR_BLOCK_SIZE = BLOCK - NODE_FOOTER.size
XATTR_HEADER = struct.Struct("<II16s")  # magic, refcount, reserved
XATTR_ENTRY = struct.Struct("<BBH")  # name index, name length, value size; then name, value
# Name prefixes and their indexes (f2fs xattr.h); the ACL names carry no suffix.
XATTR_INDEX = (("user.", 1), ("trusted.", 4), ("security.", 6))
XATTR_ACL = {"system.posix_acl_access": 2, "system.posix_acl_default": 3}
ACL_VERSION = 1
ACL_SHORT_TAGS = (0x01, 0x04, 0x10, 0x20)  # USER_OBJ, GROUP_OBJ, MASK, OTHER: no id stored
INLINE_XATTR, INLINE_DATA, INLINE_DENTRY, DATA_EXIST, EXTRA_ATTR = 0x01, 0x02, 0x04, 0x08, 0x20
INLINE_XATTR_ADDRS = 50  # i_addr words an inline xattr area takes (200 bytes)

# Superblock feature bits (mkfs.f2fs -O names) this writer can set.
FEATURES = {"extra_attr": 0x0008, "inode_checksum": 0x0020, "sb_checksum": 0x0800}
EXTRA_ISIZE = 36  # i_extra_isize .. i_compress_flag: F2FS_TOTAL_EXTRA_ATTR_SIZE of f2fs-tools 1.15
INODE_CHECKSUM_OFFSET = INODE.size + 8  # after i_extra_isize, i_inline_xattr_size, i_projid
SB_CHECKSUM_OFFSET = 3068  # the crc field, last in the 3072-byte superblock
