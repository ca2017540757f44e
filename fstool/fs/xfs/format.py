"""The XFS v5 on-disk format: structures, constants, checksums, the name hash.

Everything is big-endian except the CRC32C fields, which are little-endian.
Layouts follow "XFS Algorithms & Data Structures" (the kernel's
Documentation/filesystems/xfs/) and xfsprogs' libxfs/xfs_format.h, xfs_da_format.h
and xfs_log_format.h.

Invariants the writer keeps and the reader checks:
- every metadata block and sector carries a CRC32C over its whole buffer with
  the CRC field zeroed (`set_crc` / `crc_ok`), plus the filesystem UUID, and,
  where the structure has one, its own disk address (in 512-byte units) and owner;
- an AG is [agno * agblocks, +agblocks) of the device, but block numbers in
  bmbt records and inode numbers are *segmented*: `agno << agblklog | agbno`
  (`Geometry.fsb`, `Geometry.ino`), so they are not linear when agblocks is
  not a power of two;
- AG block 0 holds four sectors: superblock, AGF, AGI, AGFL.
"""
from __future__ import annotations

import struct
from collections import namedtuple

from ..crc32c import crc32c as _crc32c_fn


class Record:
    """A named big-endian structure: `pack(**fields)` (missing fields are zero), `unpack(buf)`."""

    def __init__(self, name: str, layout: tuple[tuple[str, str], ...]):
        self.names = tuple(n for n, _ in layout)
        self.index = {n: i for i, n in enumerate(self.names)}
        self.st = struct.Struct(">" + "".join(c for _, c in layout))
        self.size = self.st.size
        self.tuple = namedtuple(name, self.names)
        self._zero = tuple(b"" if c.endswith("s") else 0 for _, c in layout)
        self.offsets = {}
        off = 0
        for n, c in layout:
            self.offsets[n] = off
            off += struct.calcsize(">" + c)

    def pack(self, **kw) -> bytes:
        vals = list(self._zero)
        index = self.index
        for k, v in kw.items():
            vals[index[k]] = v
        return self.st.pack(*vals)

    def unpack(self, buf, off: int = 0):
        return self.tuple(*self.st.unpack_from(buf, off))


# --- checksums ---------------------------------------------------------------------
def crc_of(buf, crc_off: int) -> int:
    """CRC32C of buf with the 4 bytes at crc_off taken as zero (xfs_start_cksum)."""
    c = _crc32c_fn(bytes(buf[:crc_off]))
    c = _crc32c_fn(b"\0\0\0\0", c)
    return _crc32c_fn(bytes(buf[crc_off + 4:]), c)


def set_crc(buf: bytearray, crc_off: int) -> bytearray:
    buf[crc_off:crc_off + 4] = b"\0\0\0\0"
    struct.pack_into("<I", buf, crc_off, _crc32c_fn(bytes(buf)))
    return buf


def crc_ok(buf, crc_off: int) -> bool:
    return struct.unpack_from("<I", buf, crc_off)[0] == crc_of(buf, crc_off)


def da_hashname(name: bytes) -> int:
    """xfs_da_hashname: the hash of directory entry and xattr names."""
    def rol(x: int, n: int) -> int:
        return ((x << n) | (x >> (32 - n))) & 0xFFFFFFFF

    h = 0
    i, n = 0, len(name)
    while n - i >= 4:
        h = (name[i] << 21) ^ (name[i + 1] << 14) ^ (name[i + 2] << 7) ^ name[i + 3] ^ rol(h, 28)
        i += 4
    rest = n - i
    if rest == 3:
        h = (name[i] << 14) ^ (name[i + 1] << 7) ^ name[i + 2] ^ rol(h, 21)
    elif rest == 2:
        h = (name[i] << 7) ^ name[i + 1] ^ rol(h, 14)
    elif rest == 1:
        h = name[i] ^ rol(h, 7)
    return h & 0xFFFFFFFF


# --- superblock (xfs_dsb) ----------------------------------------------------------
SB_MAGIC = 0x58465342  # XFSB
SB = Record("Sb", (
    ("magicnum", "I"), ("blocksize", "I"), ("dblocks", "Q"), ("rblocks", "Q"), ("rextents", "Q"),
    ("uuid", "16s"), ("logstart", "Q"), ("rootino", "Q"), ("rbmino", "Q"), ("rsumino", "Q"),
    ("rextsize", "I"), ("agblocks", "I"), ("agcount", "I"), ("rbmblocks", "I"), ("logblocks", "I"),
    ("versionnum", "H"), ("sectsize", "H"), ("inodesize", "H"), ("inopblock", "H"),
    ("fname", "12s"), ("blocklog", "B"), ("sectlog", "B"), ("inodelog", "B"), ("inopblog", "B"),
    ("agblklog", "B"), ("rextslog", "B"), ("inprogress", "B"), ("imax_pct", "B"),
    ("icount", "Q"), ("ifree", "Q"), ("fdblocks", "Q"), ("frextents", "Q"),
    ("uquotino", "Q"), ("gquotino", "Q"), ("qflags", "H"), ("flags", "B"), ("shared_vn", "B"),
    ("inoalignmt", "I"), ("unit", "I"), ("width", "I"), ("dirblklog", "B"), ("logsectlog", "B"),
    ("logsectsize", "H"), ("logsunit", "I"), ("features2", "I"), ("bad_features2", "I"),
    ("features_compat", "I"), ("features_ro_compat", "I"), ("features_incompat", "I"),
    ("features_log_incompat", "I"), ("crc", "I"), ("spino_align", "I"), ("pquotino", "Q"),
    ("lsn", "Q"), ("meta_uuid", "16s"),
))
SB_CRC_OFF = SB.offsets["crc"]
NULLFSINO = (1 << 64) - 1
# versionnum: v5 | nlink | align | logv2 | extflg | dirv2 | morebits (0xb4a5, as mkfs.xfs)
SB_VERSION = 5 | 0x0020 | 0x0080 | 0x0400 | 0x1000 | 0x2000 | 0x8000
SB_VERSION_ATTR = 0x0010  # set once any inode has an attr fork (as the kernel does)
SB_VERSION_SECTOR = 0x0800  # sector or log sector size other than 512
SB_FEATURES2 = 0x2 | 0x8 | 0x80 | 0x100  # lazysbcount, attr2, projid32bit, crc
RO_COMPAT_FINOBT = 1 << 0
RO_COMPAT_INOBTCNT = 1 << 3
INCOMPAT_FTYPE = 1 << 0
INCOMPAT_SPINODES = 1 << 1
INCOMPAT_BIGTIME = 1 << 3
KNOWN_INCOMPAT = INCOMPAT_FTYPE | INCOMPAT_SPINODES | INCOMPAT_BIGTIME | (1 << 2) | (1 << 4) | (1 << 5)

# --- AG headers --------------------------------------------------------------------
AGF_MAGIC, AGI_MAGIC, AGFL_MAGIC = 0x58414746, 0x58414749, 0x5841464C
AGF = Record("Agf", (
    ("magicnum", "I"), ("versionnum", "I"), ("seqno", "I"), ("length", "I"),
    ("bnoroot", "I"), ("cntroot", "I"), ("rmaproot", "I"),
    ("bnolevel", "I"), ("cntlevel", "I"), ("rmaplevel", "I"),
    ("flfirst", "I"), ("fllast", "I"), ("flcount", "I"), ("freeblks", "I"), ("longest", "I"),
    ("btreeblks", "I"), ("uuid", "16s"), ("rmap_blocks", "I"), ("refcount_blocks", "I"),
    ("refcount_root", "I"), ("refcount_level", "I"), ("spare64", "112s"), ("lsn", "Q"),
    ("crc", "I"), ("spare2", "I"),
))
AGI = Record("Agi", (
    ("magicnum", "I"), ("versionnum", "I"), ("seqno", "I"), ("length", "I"), ("count", "I"),
    ("root", "I"), ("level", "I"), ("freecount", "I"), ("newino", "I"), ("dirino", "I"),
    ("unlinked", "256s"), ("uuid", "16s"), ("crc", "I"), ("pad32", "I"), ("lsn", "Q"),
    ("free_root", "I"), ("free_level", "I"), ("iblocks", "I"), ("fblocks", "I"),
))
AGFL = Record("Agfl", (("magicnum", "I"), ("seqno", "I"), ("uuid", "16s"), ("lsn", "Q"), ("crc", "I")))
NULLAGBLOCK = 0xFFFFFFFF
NULLAGINO = 0xFFFFFFFF

# --- short (AG) and long (bmbt) btree block headers ---------------------------------
BT_SHORT = Record("BtShort", (
    ("magic", "I"), ("level", "H"), ("numrecs", "H"), ("leftsib", "I"), ("rightsib", "I"),
    ("blkno", "Q"), ("lsn", "Q"), ("uuid", "16s"), ("owner", "I"), ("crc", "I"),
))  # 56 bytes
BT_LONG = Record("BtLong", (
    ("magic", "I"), ("level", "H"), ("numrecs", "H"), ("leftsib", "Q"), ("rightsib", "Q"),
    ("blkno", "Q"), ("lsn", "Q"), ("uuid", "16s"), ("owner", "Q"), ("crc", "I"), ("pad", "I"),
))  # 72 bytes
NULLFSBLOCK = (1 << 64) - 1
ABTB_MAGIC, ABTC_MAGIC = 0x41423342, 0x41423343
IBT_MAGIC, FIBT_MAGIC = 0x49414233, 0x46494233
BMAP_MAGIC = 0x424D4133
ALLOC_REC = struct.Struct(">II")  # startblock, blockcount (also the key)
INOBT_REC = struct.Struct(">IHBBQ")  # startino, holemask, count, freecount, free mask
INOBT_KEY = struct.Struct(">I")
AG_PTR = struct.Struct(">I")
BMDR_HDR = struct.Struct(">HH")  # the bmbt root in an inode: level, numrecs
BMBT_KEY = struct.Struct(">Q")  # startoff
BMBT_PTR = struct.Struct(">Q")  # fsblock

# --- inodes ------------------------------------------------------------------------
DINODE_MAGIC = 0x494E
DINODE = Record("Dinode", (
    ("magic", "H"), ("mode", "H"), ("version", "B"), ("format", "B"), ("onlink", "H"),
    ("uid", "I"), ("gid", "I"), ("nlink", "I"), ("projid_lo", "H"), ("projid_hi", "H"),
    ("pad", "6s"), ("flushiter", "H"), ("atime", "Q"), ("mtime", "Q"), ("ctime", "Q"),
    ("size", "Q"), ("nblocks", "Q"), ("extsize", "I"), ("nextents", "I"), ("anextents", "H"),
    ("forkoff", "B"), ("aformat", "B"), ("dmevmask", "I"), ("dmstate", "H"), ("flags", "H"),
    ("gen", "I"), ("next_unlinked", "I"), ("crc", "I"), ("changecount", "Q"), ("lsn", "Q"),
    ("flags2", "Q"), ("cowextsize", "I"), ("pad2", "12s"), ("crtime", "Q"), ("ino", "Q"),
    ("uuid", "16s"),
))  # 176 bytes
DINODE_CRC_OFF = DINODE.offsets["crc"]
FMT_DEV, FMT_LOCAL, FMT_EXTENTS, FMT_BTREE = 0, 1, 2, 3
DIFLAG_NEWRTBM = 1 << 2
DIFLAG2_BIGTIME = 1 << 3
DIFLAG2_NREXT64 = 1 << 4  # di_nextents becomes the attr count; the data count is the 8 bytes at 'pad'
INODES_PER_CHUNK = 64
BIGTIME_EPOCH_OFFSET = 1 << 31


def bigtime(sec: int, nsec: int = 0) -> int:
    """A bigtime timestamp: nanoseconds since 1901-12-13 (the old signed 32-bit minimum)."""
    return (sec + BIGTIME_EPOCH_OFFSET) * 1_000_000_000 + nsec


def from_bigtime(t: int) -> tuple[int, int]:
    s, ns = divmod(t, 1_000_000_000)
    return s - BIGTIME_EPOCH_OFFSET, ns


def pack_bmbt(startoff: int, startblock: int, blockcount: int) -> bytes:
    """A 16-byte extent record: flag:1 startoff:54 startblock:52 blockcount:21."""
    hi = (startoff << 9) | (startblock >> 43)
    lo = ((startblock & ((1 << 43) - 1)) << 21) | blockcount
    return struct.pack(">QQ", hi, lo)


def unpack_bmbt(buf, off: int = 0) -> tuple[int, int, int, int]:
    """(startoff, startblock, blockcount, unwritten flag)."""
    hi, lo = struct.unpack_from(">QQ", buf, off)
    return (hi >> 9) & ((1 << 54) - 1), ((hi & 0x1FF) << 43) | (lo >> 21), lo & ((1 << 21) - 1), hi >> 63


MAX_EXTLEN = (1 << 21) - 1
DEV_BITS_MINOR = 18


def encode_dev(major: int, minor: int) -> int:
    return (major << DEV_BITS_MINOR) | minor


def decode_dev(v: int) -> tuple[int, int]:
    return (v >> DEV_BITS_MINOR) & 0x1FF, v & ((1 << DEV_BITS_MINOR) - 1)


# --- directories -------------------------------------------------------------------
DIR3_BLOCK_MAGIC, DIR3_DATA_MAGIC, DIR3_FREE_MAGIC = 0x58444233, 0x58444433, 0x58444633
DIR3_LEAF1_MAGIC, DIR3_LEAFN_MAGIC, DA3_NODE_MAGIC = 0x3DF1, 0x3DFF, 0x3EBE
ATTR3_LEAF_MAGIC, ATTR3_RMT_MAGIC, SYMLINK_MAGIC = 0x3BEE, 0x5841524D, 0x58534C4D
DIR3_BLK_HDR = Record("Dir3BlkHdr", (
    ("magic", "I"), ("crc", "I"), ("blkno", "Q"), ("lsn", "Q"), ("uuid", "16s"), ("owner", "Q"),
))  # 48 bytes, then 3 bestfree (offset, length) pairs and 4 bytes of pad: 64
BESTFREE = struct.Struct(">HHHHHH")
DIR3_DATA_HDR_SIZE = 64
DA3_BLKINFO = Record("Da3BlkInfo", (
    ("forw", "I"), ("back", "I"), ("magic", "H"), ("pad", "H"), ("crc", "I"), ("blkno", "Q"),
    ("lsn", "Q"), ("uuid", "16s"), ("owner", "Q"),
))  # 56 bytes
DA3_CRC_OFF = DA3_BLKINFO.offsets["crc"]
DIR3_LEAF_HDR_TAIL = struct.Struct(">HHI")  # count, stale, pad: after the blkinfo (64 in all)
DA3_NODE_HDR_TAIL = struct.Struct(">HHI")  # count, level, pad
DIR3_FREE_HDR_TAIL = struct.Struct(">IIII")  # firstdb, nvalid, nused, pad: after the blk hdr
LEAF_ENT = struct.Struct(">II")  # hashval, address (dataptr) / node entry: hashval, before
BLOCK_TAIL = struct.Struct(">II")  # count, stale
DIR_DATA_ENT_HEAD = struct.Struct(">QB")  # inumber, namelen
DIR_UNUSED = struct.Struct(">HH")  # freetag 0xffff, length (tag at the end)
DIR_FREE_TAG = 0xFFFF
DIR2_LEAF_OFFSET = 1 << 35  # byte offsets in the directory's logical space
DIR2_FREE_OFFSET = 1 << 36
DATA_FIRST_OFFSET = DIR3_DATA_HDR_SIZE + 16 + 16  # after '.' and '..'
NULLDATAOFF = 0xFFFF
FT = {"file": 1, "dir": 2, "chr": 3, "blk": 4, "fifo": 5, "sock": 6, "symlink": 7}
FT_NAMES = {v: k for k, v in FT.items()}


def dirent_size(namelen: int) -> int:
    """A data entry: inumber 8, namelen 1, name, ftype 1, tag 2, rounded up to 8."""
    return (8 + 1 + namelen + 1 + 2 + 7) & ~7


# --- extended attributes -------------------------------------------------------------
ATTR3_LEAF_HDR_TAIL = struct.Struct(">HHHBB12sI")  # count usedbytes firstused holes pad1 freemap pad2
ATTR3_LEAF_HDR_SIZE = DA3_BLKINFO.size + ATTR3_LEAF_HDR_TAIL.size  # 80
ATTR_LEAF_ENT = struct.Struct(">IHBB")  # hashval, nameidx, flags, pad
ATTR_LOCAL, ATTR_ROOT, ATTR_SECURE = 0x01, 0x02, 0x04
ATTR_NAMESPACES = {"user.": 0, "trusted.": ATTR_ROOT, "security.": ATTR_SECURE}
ATTR_PREFIX = {v: k for k, v in ATTR_NAMESPACES.items()}
ATTR_SF_HDR = struct.Struct(">HBB")  # totsize, count, padding
ATTR_SF_ENT = struct.Struct(">BBB")  # namelen, valuelen, flags
RMT_HDR = Record("RmtHdr", (
    ("magic", "I"), ("offset", "I"), ("bytes", "I"), ("crc", "I"), ("uuid", "16s"), ("owner", "Q"),
    ("blkno", "Q"), ("lsn", "Q"),
))  # 56 bytes: the same shape for remote xattr values and remote symlinks
RMT_CRC_OFF = RMT_HDR.offsets["crc"]
SYMLINK_MAXLEN = 1024


def attr_local_size(namelen: int, valuelen: int) -> int:
    return (3 + namelen + valuelen + 3) & ~3


def attr_remote_size(namelen: int) -> int:
    return (11 + namelen + 3) & ~3


# --- log ---------------------------------------------------------------------------
LOG_MAGIC = 0xFEEDBABE
LOG_REC_HDR = Record("LogRecHdr", (
    ("magicno", "I"), ("cycle", "I"), ("version", "I"), ("len", "I"), ("lsn", "Q"), ("tail_lsn", "Q"),
    ("crc", "I"), ("prev_block", "I"), ("num_logops", "I"), ("cycle_data0", "I"),
    ("cycle_data", "252s"), ("fmt", "I"), ("fs_uuid", "16s"), ("size", "I"),
))
LOG_OP_HDR = struct.Struct(">IIBBH")  # tid, len, clientid, flags, res2
LOG_UNMOUNT_TYPE = 0x556E
LOG_CLIENT = 0xAA
LOG_UNMOUNT_TRANS = 0x20
LOG_FMT_LINUX_LE = 1
LOG_BIG_RECORD_BSIZE = 32 * 1024


class Geometry:
    """Block and inode addressing for one filesystem geometry."""

    def __init__(self, blocksize: int, agblocks: int, agcount: int, inodesize: int, sectsize: int = 512):
        self.bs = blocksize
        self.blocklog = blocksize.bit_length() - 1
        self.agblocks = agblocks
        self.agcount = agcount
        self.agblklog = max(1, (agblocks - 1).bit_length())
        self.isize = inodesize
        self.inodelog = inodesize.bit_length() - 1
        self.inopblock = blocksize // inodesize
        self.inopblog = self.inopblock.bit_length() - 1
        self.sectsize = sectsize
        self.bb_per_block = blocksize // 512
        self.dblocks = agcount * agblocks  # may be trimmed by the caller (a shorter last AG)
        self.lit = inodesize - DINODE.size

    def ag_length(self, agno: int) -> int:
        return min(self.agblocks, self.dblocks - agno * self.agblocks)

    def fsb(self, agno: int, agbno: int) -> int:
        return (agno << self.agblklog) | agbno

    def split_fsb(self, fsb: int) -> tuple[int, int]:
        return fsb >> self.agblklog, fsb & ((1 << self.agblklog) - 1)

    def daddr(self, agno: int, agbno: int) -> int:
        return (agno * self.agblocks + agbno) * self.bb_per_block

    def byte(self, agno: int, agbno: int) -> int:
        return (agno * self.agblocks + agbno) * self.bs

    def fsb_byte(self, fsb: int) -> int:
        return self.byte(*self.split_fsb(fsb))

    def ino(self, agno: int, agbno: int, slot: int) -> int:
        return (((agno << self.agblklog) | agbno) << self.inopblog) | slot

    def split_ino(self, ino: int) -> tuple[int, int, int]:
        slot = ino & (self.inopblock - 1)
        agbno = (ino >> self.inopblog) & ((1 << self.agblklog) - 1)
        return ino >> (self.inopblog + self.agblklog), agbno, slot

    def ino_byte(self, ino: int) -> int:
        agno, agbno, slot = self.split_ino(ino)
        return self.byte(agno, agbno) + slot * self.isize

    def agino(self, ino: int) -> int:
        return ino & ((1 << (self.agblklog + self.inopblog)) - 1)
