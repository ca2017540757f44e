"""The ext2/ext3/ext4 on-disk format: structures, constants, checksums and hashes.

Everything here is little-endian except the JBD2 journal superblock, which is
big-endian. The layouts follow the kernel's Documentation/filesystems/ext4/.

Invariants the writer keeps and the reader checks:
- the primary superblock is the 1024 bytes at byte 1024 of the image; block
  `s_first_data_block` (1 for 1 KiB blocks, else 0) holds it; backups sit at the
  start of groups 0, 1 and powers of 3, 5, 7 (sparse_super);
- group g covers blocks [first_data_block + g*blocks_per_group, +blocks_per_group);
  its block bitmap is one block, its inode bitmap one block, its inode table
  `inodes_per_group * inode_size / block_size` blocks; bits past the end of a
  group (or past inodes_per_group) are set to 1;
- inode numbers start at 1; inode 2 is the root, 8 the journal, 11 lost+found;
- with metadata_csum every checksum is crc32c "raw" (initial value given, no
  final inversion): `csum(seed, data)`; the per-filesystem seed is
  `csum(~0, uuid)`, the per-inode seed `csum(csum(fs_seed, le32 ino), le32 gen)`;
- directory blocks end in a 12-byte dirent tail (checksum of what precedes it),
  HTree index blocks keep an 8-byte dx tail after their last possible entry;
- extent blocks carry a 4-byte tail right after `eh_max` entries.
"""
from __future__ import annotations

import struct

from ..crc32c import crc32c as _crc32c_fn

from ...structs import Record

# --- superblock --------------------------------------------------------------------
SUPERBLOCK_OFFSET = 1024
SUPERBLOCK_SIZE = 1024
MAGIC = 0xEF53

SUPERBLOCK = Record("ext4_super_block", (
    ("inodes_count", "I"), ("blocks_count_lo", "I"), ("r_blocks_count_lo", "I"),
    ("free_blocks_count_lo", "I"), ("free_inodes_count", "I"), ("first_data_block", "I"),
    ("log_block_size", "I"), ("log_cluster_size", "I"), ("blocks_per_group", "I"),
    ("clusters_per_group", "I"), ("inodes_per_group", "I"), ("mtime", "I"), ("wtime", "I"),
    ("mnt_count", "H"), ("max_mnt_count", "h"), ("magic", "H"), ("state", "H"), ("errors", "H"),
    ("minor_rev_level", "H"), ("lastcheck", "I"), ("checkinterval", "I"), ("creator_os", "I"),
    ("rev_level", "I"), ("def_resuid", "H"), ("def_resgid", "H"),
    ("first_ino", "I"), ("inode_size", "H"), ("block_group_nr", "H"), ("feature_compat", "I"),
    ("feature_incompat", "I"), ("feature_ro_compat", "I"), ("uuid", "16s"), ("volume_name", "16s"),
    ("last_mounted", "64s"), ("algorithm_usage_bitmap", "I"),
    ("prealloc_blocks", "B"), ("prealloc_dir_blocks", "B"), ("reserved_gdt_blocks", "H"),
    ("journal_uuid", "16s"), ("journal_inum", "I"), ("journal_dev", "I"), ("last_orphan", "I"),
    ("hash_seed", "16s"), ("def_hash_version", "B"), ("jnl_backup_type", "B"), ("desc_size", "H"),
    ("default_mount_opts", "I"), ("first_meta_bg", "I"), ("mkfs_time", "I"), ("jnl_blocks", "68s"),
    ("blocks_count_hi", "I"), ("r_blocks_count_hi", "I"), ("free_blocks_count_hi", "I"),
    ("min_extra_isize", "H"), ("want_extra_isize", "H"), ("flags", "I"), ("raid_stride", "H"),
    ("mmp_interval", "H"), ("mmp_block", "Q"), ("raid_stripe_width", "I"),
    ("log_groups_per_flex", "B"), ("checksum_type", "B"), ("encryption_level", "B"),
    ("reserved_pad", "B"), ("kbytes_written", "Q"), ("snapshot_inum", "I"), ("snapshot_id", "I"),
    ("snapshot_r_blocks_count", "Q"), ("snapshot_list", "I"), ("error_count", "I"),
    ("first_error_time", "I"), ("first_error_ino", "I"), ("first_error_block", "Q"),
    ("first_error_func", "32s"), ("first_error_line", "I"), ("last_error_time", "I"),
    ("last_error_ino", "I"), ("last_error_line", "I"), ("last_error_block", "Q"),
    ("last_error_func", "32s"), ("mount_opts", "64s"), ("usr_quota_inum", "I"),
    ("grp_quota_inum", "I"), ("overhead_clusters", "I"), ("backup_bgs", "8s"),
    ("encrypt_algos", "4s"), ("encrypt_pw_salt", "16s"), ("lpf_ino", "I"), ("prj_quota_inum", "I"),
    ("checksum_seed", "I"), ("wtime_hi", "B"), ("mtime_hi", "B"), ("mkfs_time_hi", "B"),
    ("lastcheck_hi", "B"), ("first_error_time_hi", "B"), ("last_error_time_hi", "B"),
    ("first_error_errcode", "B"), ("last_error_errcode", "B"), ("encoding", "H"),
    ("encoding_flags", "H"), ("orphan_file_inum", "I"), ("reserved", "376s"), ("checksum", "I"),
))
assert SUPERBLOCK.size == SUPERBLOCK_SIZE
MAGIC_OFFSET = SUPERBLOCK.offset("magic")
SB_CHECKSUM_OFFSET = SUPERBLOCK.offset("checksum")

# feature bits
COMPAT_DIR_PREALLOC = 0x1
COMPAT_HAS_JOURNAL = 0x4
COMPAT_EXT_ATTR = 0x8
COMPAT_RESIZE_INODE = 0x10
COMPAT_DIR_INDEX = 0x20
COMPAT_SPARSE_SUPER2 = 0x200
COMPAT_FAST_COMMIT = 0x400
COMPAT_ORPHAN_FILE = 0x1000

INCOMPAT_COMPRESSION = 0x1
INCOMPAT_FILETYPE = 0x2
INCOMPAT_RECOVER = 0x4
INCOMPAT_JOURNAL_DEV = 0x8
INCOMPAT_META_BG = 0x10
INCOMPAT_EXTENTS = 0x40
INCOMPAT_64BIT = 0x80
INCOMPAT_MMP = 0x100
INCOMPAT_FLEX_BG = 0x200
INCOMPAT_EA_INODE = 0x400
INCOMPAT_DIRDATA = 0x1000
INCOMPAT_CSUM_SEED = 0x2000
INCOMPAT_LARGEDIR = 0x4000
INCOMPAT_INLINE_DATA = 0x8000
INCOMPAT_ENCRYPT = 0x10000
INCOMPAT_CASEFOLD = 0x20000

RO_COMPAT_SPARSE_SUPER = 0x1
RO_COMPAT_LARGE_FILE = 0x2
RO_COMPAT_BTREE_DIR = 0x4
RO_COMPAT_HUGE_FILE = 0x8
RO_COMPAT_GDT_CSUM = 0x10
RO_COMPAT_DIR_NLINK = 0x20
RO_COMPAT_EXTRA_ISIZE = 0x40
RO_COMPAT_QUOTA = 0x100
RO_COMPAT_BIGALLOC = 0x200
RO_COMPAT_METADATA_CSUM = 0x400
RO_COMPAT_READONLY = 0x1000
RO_COMPAT_PROJECT = 0x2000
RO_COMPAT_VERITY = 0x8000
RO_COMPAT_ORPHAN_PRESENT = 0x10000

COMPAT_NAMES = {COMPAT_DIR_PREALLOC: "dir_prealloc", 0x2: "imagic_inodes",
                COMPAT_HAS_JOURNAL: "has_journal", COMPAT_EXT_ATTR: "ext_attr",
                COMPAT_RESIZE_INODE: "resize_inode", COMPAT_DIR_INDEX: "dir_index",
                0x40: "lazy_bg", 0x100: "exclude_bitmap", COMPAT_SPARSE_SUPER2: "sparse_super2",
                COMPAT_FAST_COMMIT: "fast_commit", 0x800: "stable_inodes",
                COMPAT_ORPHAN_FILE: "orphan_file"}
INCOMPAT_NAMES = {INCOMPAT_COMPRESSION: "compression", INCOMPAT_FILETYPE: "filetype",
                  INCOMPAT_RECOVER: "needs_recovery", INCOMPAT_JOURNAL_DEV: "journal_dev",
                  INCOMPAT_META_BG: "meta_bg", INCOMPAT_EXTENTS: "extent", INCOMPAT_64BIT: "64bit",
                  INCOMPAT_MMP: "mmp", INCOMPAT_FLEX_BG: "flex_bg", INCOMPAT_EA_INODE: "ea_inode",
                  INCOMPAT_DIRDATA: "dirdata", INCOMPAT_CSUM_SEED: "metadata_csum_seed",
                  INCOMPAT_LARGEDIR: "large_dir", INCOMPAT_INLINE_DATA: "inline_data",
                  INCOMPAT_ENCRYPT: "encrypt", INCOMPAT_CASEFOLD: "casefold"}
RO_COMPAT_NAMES = {RO_COMPAT_SPARSE_SUPER: "sparse_super", RO_COMPAT_LARGE_FILE: "large_file",
                   RO_COMPAT_BTREE_DIR: "btree_dir", RO_COMPAT_HUGE_FILE: "huge_file",
                   RO_COMPAT_GDT_CSUM: "uninit_bg", RO_COMPAT_DIR_NLINK: "dir_nlink",
                   RO_COMPAT_EXTRA_ISIZE: "extra_isize", RO_COMPAT_QUOTA: "quota",
                   RO_COMPAT_BIGALLOC: "bigalloc", RO_COMPAT_METADATA_CSUM: "metadata_csum",
                   0x800: "replica", RO_COMPAT_READONLY: "read-only", RO_COMPAT_PROJECT: "project",
                   0x4000: "shared_blocks", RO_COMPAT_VERITY: "verity",
                   RO_COMPAT_ORPHAN_PRESENT: "orphan_present"}
# what our reader understands; an image asking for anything else is refused
READER_INCOMPAT = (INCOMPAT_FILETYPE | INCOMPAT_RECOVER | INCOMPAT_META_BG | INCOMPAT_EXTENTS
                   | INCOMPAT_64BIT | INCOMPAT_MMP | INCOMPAT_FLEX_BG | INCOMPAT_CSUM_SEED
                   | INCOMPAT_LARGEDIR | INCOMPAT_INLINE_DATA | INCOMPAT_EA_INODE)

FLAGS_SIGNED_HASH = 0x1
FLAGS_UNSIGNED_HASH = 0x2
DEFM_XATTR_USER = 0x4
DEFM_ACL = 0x8
HASH_LEGACY, HASH_HALF_MD4, HASH_TEA = 0, 1, 2
STATE_CLEAN = 1
ERRORS_CONTINUE = 1
CRC32C_CHKSUM = 1
JNL_BACKUP_BLOCKS = 1

# --- group descriptor ----------------------------------------------------------------
GROUP_DESC = Record("ext4_group_desc", (      # the 32 bytes every descriptor has
    ("block_bitmap", "I"), ("inode_bitmap", "I"), ("inode_table", "I"), ("free_blocks", "H"),
    ("free_inodes", "H"), ("used_dirs", "H"), ("flags", "H"), ("exclude_bitmap", "I"),
    ("block_bitmap_csum", "H"), ("inode_bitmap_csum", "H"), ("itable_unused", "H"),
    ("checksum", "H"),
))
GROUP_DESC_HI = Record("ext4_group_desc_hi", (  # the upper halves, bytes 32..63 of a 64-byte one
    ("block_bitmap_hi", "I"), ("inode_bitmap_hi", "I"), ("inode_table_hi", "I"),
    ("free_blocks_hi", "H"), ("free_inodes_hi", "H"), ("used_dirs_hi", "H"),
    ("itable_unused_hi", "H"), ("exclude_bitmap_hi", "I"), ("block_bitmap_csum_hi", "H"),
    ("inode_bitmap_csum_hi", "H"), ("reserved", "I"),
))
assert GROUP_DESC.size == 32 and GROUP_DESC_HI.size == 32
GD_CHECKSUM_OFFSET = GROUP_DESC.offset("checksum")
BG_INODE_UNINIT = 0x1
BG_BLOCK_UNINIT = 0x2
BG_INODE_ZEROED = 0x4
DESC_SIZE_64 = 64

# --- inode ---------------------------------------------------------------------------
INODE = Record("ext4_inode", (                # the 128 bytes of every inode
    ("mode", "H"), ("uid", "H"), ("size_lo", "I"), ("atime", "I"), ("ctime", "I"), ("mtime", "I"),
    ("dtime", "I"), ("gid", "H"), ("links_count", "H"), ("blocks_lo", "I"), ("flags", "I"),
    ("version", "I"), ("block", "60s"), ("generation", "I"), ("file_acl_lo", "I"),
    ("size_high", "I"), ("obso_faddr", "I"), ("blocks_high", "H"), ("file_acl_high", "H"),
    ("uid_high", "H"), ("gid_high", "H"), ("checksum_lo", "H"), ("reserved", "H"),
))
assert INODE.size == 128
INODE_EXTRA = Record("ext4_inode_extra", (     # what follows at byte 128 of a large inode
    ("extra_isize", "H"), ("checksum_hi", "H"), ("ctime_extra", "I"), ("mtime_extra", "I"),
    ("atime_extra", "I"), ("crtime", "I"), ("crtime_extra", "I"), ("version_hi", "I"),
    ("projid", "I"),
))
assert INODE_EXTRA.size == 32
GOOD_OLD_INODE_SIZE = INODE.size
EXTRA_ISIZE = INODE_EXTRA.size
I_CHECKSUM_LO_OFFSET = INODE.offset("checksum_lo")
I_CHECKSUM_HI_OFFSET = GOOD_OLD_INODE_SIZE + INODE_EXTRA.offset("checksum_hi")
I_BLOCK_SIZE = INODE.field_size("block")

ROOT_INO = 2
JOURNAL_INO = 8
FIRST_INO = 11
LPF_INO = 11
N_BLOCKS = 15                 # i_block: 15 block pointers (or an extent root, or a short target)
NDIR_BLOCKS = 12              # i_block[0..11] map the first 12 blocks directly
IND_BLOCK, DIND_BLOCK, TIND_BLOCK = 12, 13, 14  # then the single, double and triple indirect
BLOCK_PTR_SIZE = 4

EXTENTS_FL = 0x80000
INDEX_FL = 0x1000
HUGE_FILE_FL = 0x40000
INLINE_DATA_FL = 0x10000000
EA_INODE_FL = 0x200000

# --- extents -------------------------------------------------------------------------
EXTENT_HEADER = Record("ext4_extent_header", (
    ("magic", "H"), ("entries", "H"), ("max", "H"), ("depth", "H"), ("generation", "I")))
EXTENT_INDEX = Record("ext4_extent_idx", (
    ("block", "I"), ("leaf_lo", "I"), ("leaf_hi", "H"), ("unused", "H")))
EXTENT_LEAF = Record("ext4_extent", (
    ("block", "I"), ("len", "H"), ("start_hi", "H"), ("start_lo", "I")))
EXTENT_TAIL = Record("ext4_extent_tail", (("checksum", "I"),))
assert EXTENT_HEADER.size == EXTENT_INDEX.size == EXTENT_LEAF.size == 12
EXTENT_MAGIC = 0xF30A
EXT_INIT_MAX_LEN = 32768
EXTENT_ROOT_MAX = (I_BLOCK_SIZE - EXTENT_HEADER.size) // EXTENT_LEAF.size  # 4 entries in i_block


def extents_per_block(bs: int) -> int:
    """Entries (leaves or indexes) of one extent-tree block, leaving room for its tail."""
    return (bs - EXTENT_HEADER.size) // EXTENT_LEAF.size


def indirect_bounds(bs: int) -> tuple[int, int, int, int]:
    """(pointers per block P, first block mapped through the double indirect block, first
    through the triple, first past the triple): 12, 12 + P, 12 + P + P^2, 12 + P + P^2 + P^3."""
    p = bs // BLOCK_PTR_SIZE
    b1 = NDIR_BLOCKS + p
    b2 = b1 + p * p
    return p, b1, b2, b2 + p * p * p

# --- directories ---------------------------------------------------------------------
DIRENT = Record("ext4_dir_entry_2", (        # followed by the name, padded to 4 bytes
    ("inode", "I"), ("rec_len", "H"), ("name_len", "B"), ("file_type", "B")))
DIRENT_TAIL = Record("ext4_dir_entry_tail", (
    ("reserved_zero1", "I"), ("rec_len", "H"), ("reserved_zero2", "B"), ("reserved_ft", "B"),
    ("checksum", "I")))
DIRENT_TAIL_FT = 0xDE


def dirent_rec_len(name_len: int) -> int:
    """The smallest record of a name: header plus name, rounded up to 4 bytes."""
    return (DIRENT.size + name_len + 3) & ~3


def pack_dirent(ino: int, rec_len: int, name: bytes, ft: int) -> bytes:
    """One directory entry with its name, zero-padded to rec_len."""
    return (DIRENT.pack(inode=ino, rec_len=rec_len, name_len=len(name), file_type=ft) + name
            + bytes(rec_len - DIRENT.size - len(name)))


FT_UNKNOWN, FT_REG, FT_DIR, FT_CHR, FT_BLK, FT_FIFO, FT_SOCK, FT_SYMLINK = range(8)
# an HTree root: "." and ".." entries (".." spanning the block), dx_root_info, then the count/limit
# header of the entry array, whose first entry has no hash (only its block)
DX_ROOT = Record("dx_root", (
    ("dot_inode", "I"), ("dot_rec_len", "H"), ("dot_name_len", "B"), ("dot_file_type", "B"),
    ("dot_name", "4s"),
    ("dotdot_inode", "I"), ("dotdot_rec_len", "H"), ("dotdot_name_len", "B"),
    ("dotdot_file_type", "B"), ("dotdot_name", "4s"),
    ("reserved_zero", "I"), ("hash_version", "B"), ("info_length", "B"), ("indirect_levels", "B"),
    ("unused_flags", "B"),
    ("limit", "H"), ("count", "H"), ("block", "I")))
# an interior HTree node: a fake empty dirent spanning the block, then the count/limit header
DX_NODE = Record("dx_node", (
    ("fake_inode", "I"), ("fake_rec_len", "H"), ("name_len", "B"), ("file_type", "B"),
    ("limit", "H"), ("count", "H"), ("block", "I")))
DX_COUNTLIMIT = Record("dx_countlimit", (("limit", "H"), ("count", "H"), ("block", "I")))
DX_ENTRY = Record("dx_entry", (("hash", "I"), ("block", "I")))
DX_TAIL = Record("dx_tail", (("reserved", "I"), ("checksum", "I")))
DX_ROOT_COUNT_OFFSET = DX_ROOT.offset("limit")
DX_NODE_COUNT_OFFSET = DX_NODE.offset("limit")
DX_ROOT_INFO_OFFSET = DX_ROOT.offset("reserved_zero")  # count/limit sit info_length bytes past it
DX_ROOT_INFO_LENGTH = DX_ROOT_COUNT_OFFSET - DX_ROOT_INFO_OFFSET
DX_MAX_LEVELS = 3  # with large_dir; 2 without
assert DX_ROOT_COUNT_OFFSET == 0x20 and DX_NODE_COUNT_OFFSET == 8
assert DX_ROOT.size - DX_ROOT_COUNT_OFFSET == DX_COUNTLIMIT.size == DX_ENTRY.size

# --- extended attributes -------------------------------------------------------------
XATTR_MAGIC = 0xEA020000
XATTR_HEADER = Record("ext4_xattr_header", (
    ("magic", "I"), ("refcount", "I"), ("blocks", "I"), ("hash", "I"), ("checksum", "I"),
    ("reserved", "12s")))
XATTR_IBODY_HEADER = Record("ext4_xattr_ibody_header", (("magic", "I"),))
XATTR_ENTRY = Record("ext4_xattr_entry", (       # followed by the name, padded to 4 bytes
    ("name_len", "B"), ("name_index", "B"), ("value_offs", "H"), ("value_inum", "I"),
    ("value_size", "I"), ("hash", "I")))
XATTR_END = 4  # the four zero bytes after the last entry
XATTR_PREFIXES = (  # (name index, prefix); longest prefixes first
    (2, "system.posix_acl_access"), (3, "system.posix_acl_default"), (8, "system.richacl"),
    (1, "user."), (4, "trusted."), (6, "security."), (7, "system."),
)
XATTR_INDEX_PREFIX = {i: p for i, p in XATTR_PREFIXES}
ACL_VFS_VERSION = 2
ACL_EXT4_VERSION = 1
ACL_HEADER = Record("ext4_acl_header", (("version", "I"),))
# the VFS form uses ACL_ENTRY for every tag; ext4 stores the id only for ACL_USER and ACL_GROUP
ACL_ENTRY = Record("ext4_acl_entry", (("tag", "H"), ("perm", "H"), ("id", "I")))
ACL_ENTRY_SHORT = Record("ext4_acl_entry_short", (("tag", "H"), ("perm", "H")))
ACL_TAGS_WITH_ID = (2, 8)  # ACL_USER, ACL_GROUP
ACL_UNDEFINED_ID = 0xFFFFFFFF

# --- JBD2 (big-endian) ---------------------------------------------------------------
JBD2_MAGIC = 0xC03B3998
JBD2_SUPERBLOCK_V2 = 4
JBD2_SUPERBLOCK = Record("journal_superblock_s", (
    ("magic", "I"), ("blocktype", "I"), ("sequence", "I"),   # journal_header_s
    ("blocksize", "I"), ("maxlen", "I"), ("first", "I"),
    ("s_sequence", "I"), ("start", "I"), ("errno", "i"),
    ("feature_compat", "I"), ("feature_incompat", "I"), ("feature_ro_compat", "I"),
    ("uuid", "16s"), ("nr_users", "I"), ("dynsuper", "I"),
    ("max_transaction", "I"), ("max_trans_data", "I"),
    ("checksum_type", "B"), (None, "3x"), ("num_fc_blks", "I"), ("head", "I"),
    ("padding", "160s"), ("checksum", "I"), ("users", "768s"),
), byte_order=">")
assert JBD2_SUPERBLOCK.size == 1024
JBD2_CHECKSUM_OFFSET = JBD2_SUPERBLOCK.offset("checksum")
JBD2_INCOMPAT_REVOKE = 0x1
JBD2_INCOMPAT_64BIT = 0x2
JBD2_INCOMPAT_CSUM_V3 = 0x10
JBD2_CRC32C_CHKSUM = 4
JBD2_MIN_BLOCKS = 1024


# --- checksums -----------------------------------------------------------------------
def csum(seed: int, data: bytes | bytearray | memoryview) -> int:
    """crc32c without the final inversion, starting from `seed` (the kernel's ext4_chksum)."""
    return _crc32c_fn(data, seed ^ 0xFFFFFFFF) ^ 0xFFFFFFFF


def fs_csum_seed(uuid: bytes) -> int:
    return csum(0xFFFFFFFF, uuid)


def inode_csum_seed(fs_seed: int, ino: int, generation: int = 0) -> int:
    return csum(csum(fs_seed, ino.to_bytes(4, "little")), generation.to_bytes(4, "little"))


def crc16(data: bytes, crc: int = 0xFFFF) -> int:
    """CRC-16 (ANSI, reflected 0xA001) used by the old uninit_bg group descriptor checksum."""
    for b in data:
        crc ^= b
        for _ in range(8):
            crc = (crc >> 1) ^ 0xA001 if crc & 1 else crc >> 1
    return crc


# --- directory hash (half MD4, as the kernel's fs/ext4/hash.c defines it) -------------
_M = 0xFFFFFFFF
_DEFAULT_HASH_SEED = (0x67452301, 0xEFCDAB89, 0x98BADCFE, 0x10325476)


def _rol(x: int, s: int) -> int:
    return ((x << s) | (x >> (32 - s))) & _M


def _half_md4(buf: list[int], i: list[int]) -> None:
    """One half-MD4 transform of buf by the 8 words i (three rounds, as the kernel's hash.c),
    unrolled: round 1 uses F(x, y, z) = z ^ (x & (y ^ z)), round 2 G(x, y, z) =
    (x & y) + ((x ^ y) & z) + 0x5A827999, round 3 H(x, y, z) = x ^ y ^ z + 0x6ED9EBA1."""
    a, b, c, d = buf
    M = _M
    t = (a + (d ^ (b & (c ^ d))) + i[0]) & M
    a = ((t << 3) | (t >> 29)) & M
    t = (d + (c ^ (a & (b ^ c))) + i[1]) & M
    d = ((t << 7) | (t >> 25)) & M
    t = (c + (b ^ (d & (a ^ b))) + i[2]) & M
    c = ((t << 11) | (t >> 21)) & M
    t = (b + (a ^ (c & (d ^ a))) + i[3]) & M
    b = ((t << 19) | (t >> 13)) & M
    t = (a + (d ^ (b & (c ^ d))) + i[4]) & M
    a = ((t << 3) | (t >> 29)) & M
    t = (d + (c ^ (a & (b ^ c))) + i[5]) & M
    d = ((t << 7) | (t >> 25)) & M
    t = (c + (b ^ (d & (a ^ b))) + i[6]) & M
    c = ((t << 11) | (t >> 21)) & M
    t = (b + (a ^ (c & (d ^ a))) + i[7]) & M
    b = ((t << 19) | (t >> 13)) & M
    t = (a + ((b & c) + ((b ^ c) & d)) + i[1] + 0x5a827999) & M
    a = ((t << 3) | (t >> 29)) & M
    t = (d + ((a & b) + ((a ^ b) & c)) + i[3] + 0x5a827999) & M
    d = ((t << 5) | (t >> 27)) & M
    t = (c + ((d & a) + ((d ^ a) & b)) + i[5] + 0x5a827999) & M
    c = ((t << 9) | (t >> 23)) & M
    t = (b + ((c & d) + ((c ^ d) & a)) + i[7] + 0x5a827999) & M
    b = ((t << 13) | (t >> 19)) & M
    t = (a + ((b & c) + ((b ^ c) & d)) + i[0] + 0x5a827999) & M
    a = ((t << 3) | (t >> 29)) & M
    t = (d + ((a & b) + ((a ^ b) & c)) + i[2] + 0x5a827999) & M
    d = ((t << 5) | (t >> 27)) & M
    t = (c + ((d & a) + ((d ^ a) & b)) + i[4] + 0x5a827999) & M
    c = ((t << 9) | (t >> 23)) & M
    t = (b + ((c & d) + ((c ^ d) & a)) + i[6] + 0x5a827999) & M
    b = ((t << 13) | (t >> 19)) & M
    t = (a + (b ^ c ^ d) + i[3] + 0x6ed9eba1) & M
    a = ((t << 3) | (t >> 29)) & M
    t = (d + (a ^ b ^ c) + i[7] + 0x6ed9eba1) & M
    d = ((t << 9) | (t >> 23)) & M
    t = (c + (d ^ a ^ b) + i[2] + 0x6ed9eba1) & M
    c = ((t << 11) | (t >> 21)) & M
    t = (b + (c ^ d ^ a) + i[6] + 0x6ed9eba1) & M
    b = ((t << 15) | (t >> 17)) & M
    t = (a + (b ^ c ^ d) + i[1] + 0x6ed9eba1) & M
    a = ((t << 3) | (t >> 29)) & M
    t = (d + (a ^ b ^ c) + i[5] + 0x6ed9eba1) & M
    d = ((t << 9) | (t >> 23)) & M
    t = (c + (d ^ a ^ b) + i[0] + 0x6ed9eba1) & M
    c = ((t << 11) | (t >> 21)) & M
    t = (b + (c ^ d ^ a) + i[4] + 0x6ed9eba1) & M
    b = ((t << 15) | (t >> 17)) & M
    buf[0] = (buf[0] + a) & M
    buf[1] = (buf[1] + b) & M
    buf[2] = (buf[2] + c) & M
    buf[3] = (buf[3] + d) & M


def _str2hashbuf(msg: bytes, num: int, signed: bool) -> list[int]:
    """The kernel's str2hashbuf: bytes into `num` words, big-endian within a word, padded
    with a word made of the remaining length; with `signed`, bytes >= 0x80 count negative."""
    n = len(msg)
    pad = (n | (n << 8)) & _M
    pad = (pad | (pad << 16)) & _M
    part = msg[:num * 4]
    if not signed or part.isascii():  # no sign borrow: whole words are plain big-endian
        full = len(part) // 4
        out = [int.from_bytes(part[k:k + 4], "big") for k in range(0, full * 4, 4)]
        if len(out) < num:
            rest = len(part) - full * 4
            out.append(((pad << (8 * rest)) | int.from_bytes(part[full * 4:], "big")) & _M)
        while len(out) < num:
            out.append(pad)
        return out
    val = pad
    out: list[int] = []
    for k, ch in enumerate(msg[:num * 4]):
        if signed and ch >= 0x80:
            ch -= 256
        val = (ch + (val << 8)) & _M
        if k % 4 == 3:
            out.append(val)
            val = pad
    if len(out) < num:
        out.append(val)
    while len(out) < num:
        out.append(pad)
    return out


def dx_hash(name: bytes, seed: tuple[int, int, int, int] | None, signed: bool) -> tuple[int, int]:
    """(hash, minor_hash) of a name with half_md4, as an HTree indexes it."""
    buf = list(seed) if seed and any(seed) else list(_DEFAULT_HASH_SEED)
    p = 0
    while p < len(name):  # the padding word encodes the length still to hash
        _half_md4(buf, _str2hashbuf(name[p:], 8, signed))
        p += 32
    h = buf[1] & ~1 & _M
    if h == (0x7FFFFFFF << 1):
        h = (0x7FFFFFFF - 1) << 1
    return h, buf[2]


# --- xattr hashes --------------------------------------------------------------------
def xattr_entry_hash(name: bytes, value: bytes) -> int:
    h = 0
    for ch in name:
        h = ((h << 5) ^ (h >> 27) ^ ch) & _M
    if value:
        padded = value + bytes(-len(value) % 4)
        for (w,) in struct.iter_unpack("<I", padded):
            h = ((h << 16) ^ (h >> 16) ^ w) & _M
    return h


def xattr_block_hash(entry_hashes: list[int]) -> int:
    h = 0
    for eh in entry_hashes:
        if eh == 0:
            return 0
        h = ((h << 16) ^ (h >> 16) ^ eh) & _M
    return h


def split_xattr_name(name: str) -> tuple[int, bytes] | None:
    """(name index, suffix bytes) for a full xattr name, or None if ext cannot store it."""
    for idx, prefix in XATTR_PREFIXES:
        if idx in (2, 3):
            if name == prefix:
                return idx, b""
            continue
        if name.startswith(prefix) and len(name) > len(prefix):
            return idx, name[len(prefix):].encode("utf-8", "surrogateescape")
    return None


def acl_to_disk(value: bytes) -> bytes:
    """A POSIX ACL as the VFS hands it (version 2, 8-byte entries) -> ext4's compact form."""
    if (len(value) < ACL_HEADER.size or (len(value) - ACL_HEADER.size) % ACL_ENTRY.size
            or ACL_HEADER.unpack(value).version != ACL_VFS_VERSION):
        raise ValueError("not a POSIX ACL (version 2) value")
    out = bytearray(ACL_HEADER.pack(version=ACL_EXT4_VERSION))
    for e in ACL_ENTRY.iter_unpack(value[ACL_HEADER.size:]):
        if e.tag in ACL_TAGS_WITH_ID:
            out += ACL_ENTRY.pack(tag=e.tag, perm=e.perm, id=e.id)
        else:
            out += ACL_ENTRY_SHORT.pack(tag=e.tag, perm=e.perm)
    return bytes(out)


def acl_from_disk(value: bytes) -> bytes:
    """ext4's compact ACL -> the VFS form (version 2)."""
    if len(value) < ACL_HEADER.size or ACL_HEADER.unpack(value).version != ACL_EXT4_VERSION:
        raise ValueError("not an ext4 ACL")
    out = bytearray(ACL_HEADER.pack(version=ACL_VFS_VERSION))
    pos = ACL_HEADER.size
    while pos < len(value):
        if pos + ACL_ENTRY_SHORT.size > len(value):
            raise ValueError("truncated ACL")
        e = ACL_ENTRY_SHORT.unpack(value, pos)
        if e.tag in ACL_TAGS_WITH_ID:
            if pos + ACL_ENTRY.size > len(value):
                raise ValueError("truncated ACL")
            ident = ACL_ENTRY.unpack(value, pos).id
            pos += ACL_ENTRY.size
        else:
            ident = ACL_UNDEFINED_ID
            pos += ACL_ENTRY_SHORT.size
        out += ACL_ENTRY.pack(tag=e.tag, perm=e.perm, id=ident)
    return bytes(out)


# --- times ---------------------------------------------------------------------------
def encode_time(sec: int, ns: int = 0) -> tuple[int, int]:
    """(32-bit seconds field, extra field: nanoseconds << 2 | epoch bits)."""
    low = sec & _M
    signed_low = low - (1 << 32) if low & 0x80000000 else low
    epoch = ((sec - signed_low) >> 32) & 3
    return low, ((ns & 0x3FFFFFFF) << 2) | epoch


def decode_time(low: int, extra: int | None) -> int:
    sec = low - (1 << 32) if low & 0x80000000 else low
    if extra is not None:
        sec += (extra & 3) << 32
    return sec


# --- devices -------------------------------------------------------------------------
def encode_dev(major: int, minor: int) -> tuple[int, int]:
    """(i_block[0], i_block[1]): the old 8:8 form when it fits, else the new one."""
    if major < 256 and minor < 256:
        return (major << 8) | minor, 0
    return 0, (minor & 0xFF) | (major << 8) | ((minor & ~0xFF) << 12)


def decode_dev(b0: int, b1: int) -> tuple[int, int]:
    if b0:
        return (b0 >> 8) & 0xFF, b0 & 0xFF
    return (b1 & 0xFFF00) >> 8, (b1 & 0xFF) | ((b1 >> 12) & 0xFFF00)


def has_super(group: int, sparse: bool, bgs: tuple[int, int] | None = None) -> bool:
    """Whether group holds a superblock backup (groups 0, 1 and powers of 3, 5, 7; with
    sparse_super2, `bgs`, only group 0 and the groups s_backup_bgs names)."""
    if group == 0:
        return True
    if bgs is not None:
        return group in bgs
    if not sparse or group <= 1:
        return True
    for base in (3, 5, 7):
        g = group
        while g % base == 0:
            g //= base
        if g == 1:
            return True
    return False


def default_journal_blocks(blocks: int) -> int:
    """The journal size mke2fs picks for a filesystem of `blocks` blocks."""
    if blocks < 32768:
        return 1024
    if blocks < 256 * 1024:
        return 4096
    if blocks < 512 * 1024:
        return 8192
    if blocks < 4096 * 1024:
        return 16384
    if blocks < 8192 * 1024:
        return 32768
    if blocks < 16384 * 1024:
        return 65536
    if blocks < 32768 * 1024:
        return 131072
    return 262144
