"""EROFS on-disk records, declared once (the kernel's Documentation/filesystems/erofs.rst
and include/erofs_fs.h are the references; every field is little-endian).

Layout we write: a 1 KiB boot area, the 128-byte superblock at 1024, then the
metadata area (meta_blkaddr 0, so a nid is the byte offset of an inode divided by
32), the shared-xattr area at a block boundary, then data blocks.
"""
from __future__ import annotations

from ...structs import Record

MAGIC = 0xE0F5E1E2
SB_OFFSET = 1024
INODE_SLOT = 32  # nid = byte offset in the metadata area / 32
NULL_ADDR = 0xFFFFFFFF  # a hole in a chunk block map

# feature_compat
COMPAT_SB_CHKSUM = 0x1
COMPAT_MTIME = 0x2
# feature_incompat
INCOMPAT_LZ4_0PADDING = 0x1
INCOMPAT_BIG_PCLUSTER = 0x2
INCOMPAT_COMPR_CFGS = 0x2  # the same bit: big pclusters need the configurations after the superblock
INCOMPAT_CHUNKED_FILE = 0x4
INCOMPAT_COMPR_HEAD2 = 0x8
INCOMPAT_ZTAILPACKING = 0x10
INCOMPAT_FRAGMENTS = 0x20
INCOMPAT_XATTR_PREFIXES = 0x40
INCOMPAT_48BIT = 0x80
KNOWN_INCOMPAT = 0x7F  # what the reader handles: not 48-bit addresses or the metabox

# the 128-byte superblock (sb_extslots 0), at byte 1024; the tail is zero in what we write
SUPERBLOCK = Record("erofs_super_block", (
    ("magic", "I"), ("checksum", "I"), ("feature_compat", "I"), ("blkszbits", "B"), ("sb_extslots", "B"),
    ("root_nid", "H"), ("inos", "Q"), ("epoch", "Q"), ("fixed_nsec", "I"), ("blocks", "I"),
    ("meta_blkaddr", "I"), ("xattr_blkaddr", "I"), ("uuid", "16s"), ("volume_name", "16s"),
    ("feature_incompat", "I"), ("u1", "H"), ("extra_devices", "H"), ("devt_slotoff", "H"),
    ("dirblkbits", "B"), ("xattr_prefix_count", "B"), ("xattr_prefix_start", "I"), ("packed_nid", "Q"),
    ("xattr_filter", "B"), (None, "23x"),
))
assert SUPERBLOCK.size == 128

# i_format: bit 0 = extended inode, bits 1-3 = data layout
LAYOUT_FLAT_PLAIN = 0
LAYOUT_COMPRESSED_FULL = 1
LAYOUT_FLAT_INLINE = 2
LAYOUT_COMPRESSED_COMPACT = 3
LAYOUT_CHUNK_BASED = 4
CHUNK_FORMAT_BLKBITS_MASK = 0x1F
CHUNK_FORMAT_INDEXES = 0x20

# 32-byte compact inode; mtime counts from the superblock's epoch; `u` is the start block,
# the device number, the chunk format or the compressed block count, by inode kind and layout
INODE_COMPACT = Record("erofs_inode_compact", (
    ("format", "H"), ("xattr_icount", "H"), ("mode", "H"), ("nlink", "H"), ("size", "I"), ("mtime", "I"),
    ("u", "I"), ("ino", "I"), ("uid", "H"), ("gid", "H"), (None, "4x"),
))
# 64-byte extended inode (`nb`: the start block's high bits with 48-bit addresses, 0 here);
# the mtime is signed (time64_t)
INODE_EXTENDED = Record("erofs_inode_extended", (
    ("format", "H"), ("xattr_icount", "H"), ("mode", "H"), ("nb", "H"), ("size", "Q"), ("u", "I"),
    ("ino", "I"), ("uid", "I"), ("gid", "I"), ("mtime", "q"), ("mtime_nsec", "I"), ("nlink", "I"),
    (None, "16x"),
))
assert INODE_COMPACT.size == 32 and INODE_EXTENDED.size == 64

# xattrs: the in-inode body starts with this 12-byte header, then shared ids (u32 each),
# then entries (4-byte header + name suffix + value, each padded to 4 bytes)
XATTR_IBODY_HEADER = Record("erofs_xattr_ibody_header", (("name_filter", "I"), ("shared_count", "B"), (None, "7x")))
XATTR_ENTRY = Record("erofs_xattr_entry", (("name_len", "B"), ("name_index", "B"), ("value_size", "H")))
# name indexes: the well-known prefixes (an exact-name prefix stores an empty suffix)
XATTR_PREFIXES = {
    1: "user.",
    2: "system.posix_acl_access",
    3: "system.posix_acl_default",
    4: "trusted.",
    5: "lustre.",
    6: "security.",
}

DIRENT = Record("erofs_dirent", (("nid", "Q"), ("nameoff", "H"), ("file_type", "B"), (None, "x")))
FT_UNKNOWN, FT_REG, FT_DIR, FT_CHR, FT_BLK, FT_FIFO, FT_SOCK, FT_SYMLINK = range(8)

# compression
# the map header at the first 8-byte boundary after the inode and its xattrs
Z_MAP_HEADER = Record("z_erofs_map_header", (
    ("reserved1", "H"), ("idata_size", "H"), ("advise", "H"), ("algorithmtype", "B"), ("clusterbits", "B")))
# a full lcluster index: `u` is the HEAD's block address, or a NONHEAD's delta[0] | delta[1] << 16
Z_LCLUSTER_INDEX = Record("z_erofs_lcluster_index", (("advise", "H"), ("clusterofs", "H"), ("u", "I")))
Z_LCLUSTER_PLAIN, Z_LCLUSTER_HEAD1, Z_LCLUSTER_NONHEAD, Z_LCLUSTER_HEAD2 = range(4)
Z_LI_D0_CBLKCNT = 1 << 11
Z_ADVISE_COMPACTED_2B = 0x1
Z_ADVISE_BIG_PCLUSTER_1 = 0x2
Z_ADVISE_BIG_PCLUSTER_2 = 0x4
Z_ADVISE_INLINE_PCLUSTER = 0x8
Z_ADVISE_FRAGMENT_PCLUSTER = 0x20  # the file's last extent lives in the packed inode (fragments)
# fragments: a file whose last extent is in the packed inode has this header instead (the
# kernel's h_fragmentoff overlays h_reserved1 and h_idata_size: the byte offset of that extent's
# data in the packed inode)
Z_MAP_HEADER_FRAGMENT = Record("z_erofs_map_header", (
    ("fragmentoff", "I"), ("advise", "H"), ("algorithmtype", "B"), ("clusterbits", "B")))
# a file stored whole in the packed inode: the 8 header bytes read as one u64 with bit 63 set
# (bit Z_FRAGMENT_INODE_BIT of h_clusterbits), the offset of its data in the other 63 bits; no
# lcluster indexes follow, only the 8 bytes the full-index layout reserves
Z_MAP_HEADER_WHOLE = Record("z_erofs_map_header", (("fragment", "Q"), (None, "8x")))
Z_FRAGMENT_INODE_BIT = 7
Z_ALG_LZ4, Z_ALG_LZMA, Z_ALG_DEFLATE, Z_ALG_ZSTD = range(4)


def encode_rdev(major: int, minor: int) -> int:
    """The kernel's new_encode_dev: 12-bit major, 20-bit minor, the low minor byte at the bottom."""
    return (minor & 0xFF) | (major << 8) | ((minor & ~0xFF) << 12)


def decode_rdev(dev: int) -> tuple[int, int]:
    return (dev & 0xFFF00) >> 8, (dev & 0xFF) | ((dev >> 12) & 0xFFF00)


def _crc32c_table() -> list[int]:
    table = []
    for i in range(256):
        c = i
        for _ in range(8):
            c = (c >> 1) ^ (0x82F63B78 if c & 1 else 0)
        table.append(c)
    return table


_CRC32C = _crc32c_table()


def sb_checksum(block0_from_sb: bytes) -> int:
    """crc32c over the superblock's block from offset 1024 (checksum field zeroed), as the
    kernel's crc32c(~0, ...) gives it: seeded with ~0 and not inverted at the end. Three KiB
    at most, so a table loop is cheaper than importing a CRC module."""
    crc = 0xFFFFFFFF
    table = _CRC32C
    for b in block0_from_sb:
        crc = (crc >> 8) ^ table[(crc ^ b) & 0xFF]
    return crc


def xattr_split(name: str) -> tuple[int, bytes] | None:
    """(name index, stored suffix) for a full xattr name, or None when no prefix fits."""
    best = None
    for idx, prefix in XATTR_PREFIXES.items():
        exact = not prefix.endswith(".")
        if (exact and name == prefix) or (not exact and name.startswith(prefix) and len(name) > len(prefix)):
            if best is None or len(prefix) > len(XATTR_PREFIXES[best]):
                best = idx
    if best is None:
        return None
    return best, name[len(XATTR_PREFIXES[best]):].encode("utf-8", "surrogateescape")


def xattr_entry(index: int, suffix: bytes, value: bytes) -> bytes:
    raw = XATTR_ENTRY.pack(name_len=len(suffix), name_index=index, value_size=len(value)) + suffix + value
    return raw + bytes(-len(raw) % 4)


def compact_nblk(vals: list[tuple[int, int]], i: int, big: bool) -> int:
    """Blocks between a compact index unit's stored address and the pcluster of the head at
    position i, counted backwards over (type, value) pairs as the kernel counts them: one
    per earlier head (a big pcluster counts the block count its first non-head records)."""
    nblk = 0 if big else 1
    while i > 0:
        i -= 1
        t, lo = vals[i]
        if not big:
            if t == Z_LCLUSTER_NONHEAD:
                i -= lo
            if i >= 0:
                nblk += 1
        elif t == Z_LCLUSTER_NONHEAD:
            if lo & Z_LI_D0_CBLKCNT:
                i -= 1
                nblk += lo & ~Z_LI_D0_CBLKCNT
                continue
            if lo <= 1:
                raise ValueError("a big-pcluster non-head index with a distance of 1 or less")
            i -= lo - 2
        else:
            nblk += 1
    return nblk


def compact_layout(ebase: int, total: int) -> tuple[int, int, int]:
    """(4-byte indexes first, 2-byte indexes, 4-byte indexes after) for `total` lclusters of
    4 KiB whose compact indexes start at byte `ebase`: 4-byte units until a 32-byte boundary,
    then 2-byte units of 16, then 4-byte units again."""
    first = ((32 - ebase % 32) // 4) & 7
    if first > total:
        return 0, 0, total
    two = (total - first) // 16 * 16
    return first, two, total - first - two
