"""The ext superblock: the primary at byte 1024, backups at the start of groups 0, 1 and
powers of 3, 5, 7 (sparse_super) or of the two groups in s_backup_bgs (sparse_super2),
identical but for block_group_nr.
"""
from __future__ import annotations

from .format import (
    COMPAT_DIR_INDEX, COMPAT_EXT_ATTR, COMPAT_HAS_JOURNAL, COMPAT_SPARSE_SUPER2, CRC32C_CHKSUM, DEFM_ACL, DEFM_XATTR_USER,
    DESC_SIZE_64, ERRORS_CONTINUE, EXTRA_ISIZE, FIRST_INO, FLAGS_SIGNED_HASH, GOOD_OLD_INODE_SIZE,
    HASH_HALF_MD4, INCOMPAT_64BIT, INCOMPAT_EXTENTS, INCOMPAT_FILETYPE, INCOMPAT_FLEX_BG,
    INCOMPAT_LARGEDIR, JNL_BACKUP_BLOCKS, JOURNAL_INO, MAGIC, RO_COMPAT_DIR_NLINK,
    RO_COMPAT_EXTRA_ISIZE, RO_COMPAT_HUGE_FILE, RO_COMPAT_LARGE_FILE, RO_COMPAT_METADATA_CSUM,
    RO_COMPAT_SPARSE_SUPER, SB_CHECKSUM_OFFSET, STATE_CLEAN, SUPERBLOCK, csum,
)
from .inode import Ino
from .options import ExtOptions

M32 = 0xFFFFFFFF


def features(cfg: ExtOptions, has_journal: bool, largedir: bool) -> tuple[int, int, int]:
    """(compat, incompat, ro_compat) feature bits."""
    compat = COMPAT_EXT_ATTR
    if cfg.sparse_super2:
        compat |= COMPAT_SPARSE_SUPER2
    if cfg.dir_index:
        compat |= COMPAT_DIR_INDEX
    if has_journal:
        compat |= COMPAT_HAS_JOURNAL
    incompat = INCOMPAT_FILETYPE
    if cfg.extents:
        incompat |= INCOMPAT_EXTENTS
    if cfg.bit64:
        incompat |= INCOMPAT_64BIT
    if cfg.flex_bg:
        incompat |= INCOMPAT_FLEX_BG
    if largedir:
        incompat |= INCOMPAT_LARGEDIR
    ro = RO_COMPAT_LARGE_FILE
    if cfg.sparse_super:
        ro |= RO_COMPAT_SPARSE_SUPER
    if cfg.huge_file:
        ro |= RO_COMPAT_HUGE_FILE
    if cfg.dir_nlink:
        ro |= RO_COMPAT_DIR_NLINK
    if cfg.extra_isize:
        ro |= RO_COMPAT_EXTRA_ISIZE
    if cfg.csum:
        ro |= RO_COMPAT_METADATA_CSUM
    return compat, incompat, ro


def superblock(cfg: ExtOptions, geo, bs: int, group: int, free_blocks: int, free_inodes: int,
               journal: Ino | None, largedir: bool, ts: int) -> bytes:
    """The superblock (or the backup in `group`), with its checksum under metadata_csum."""
    compat, incompat, ro = features(cfg, journal is not None, largedir)
    N = geo.blocks
    r_blocks = N * cfg.reserved_pct // 100
    jnl = b""
    if journal is not None:
        j = journal
        # s_jnl_blocks: the journal inode's i_block, then i_size_high, i_size
        jnl = j.iblock + (j.size >> 32).to_bytes(4, "little") + (j.size & M32).to_bytes(4, "little")
    f = dict(
        inodes_count=geo.inodes, blocks_count_lo=N & M32, r_blocks_count_lo=r_blocks & M32,
        free_blocks_count_lo=free_blocks & M32, free_inodes_count=free_inodes,
        first_data_block=geo.fdb, log_block_size=bs.bit_length() - 11,
        log_cluster_size=bs.bit_length() - 11, blocks_per_group=geo.bpg,
        clusters_per_group=geo.bpg, inodes_per_group=geo.ipg, wtime=ts & M32, max_mnt_count=-1,
        magic=MAGIC, state=STATE_CLEAN, errors=ERRORS_CONTINUE, lastcheck=ts & M32, rev_level=1,
        first_ino=FIRST_INO, inode_size=cfg.inode_size, block_group_nr=group & 0xFFFF,
        feature_compat=compat, feature_incompat=incompat, feature_ro_compat=ro, uuid=cfg.uuid,
        volume_name=cfg.label, hash_seed=cfg.hash_seed, def_hash_version=HASH_HALF_MD4,
        desc_size=DESC_SIZE_64 if cfg.bit64 else 0,
        default_mount_opts=DEFM_XATTR_USER | DEFM_ACL, mkfs_time=ts & M32, jnl_blocks=jnl,
        blocks_count_hi=N >> 32, r_blocks_count_hi=r_blocks >> 32, free_blocks_count_hi=free_blocks >> 32,
        flags=FLAGS_SIGNED_HASH, wtime_hi=(ts >> 32) & 0xFF, mkfs_time_hi=(ts >> 32) & 0xFF,
        lastcheck_hi=(ts >> 32) & 0xFF,
    )
    if journal is not None:
        f.update(journal_inum=JOURNAL_INO, jnl_backup_type=JNL_BACKUP_BLOCKS)
    if cfg.inode_size > GOOD_OLD_INODE_SIZE:
        f.update(min_extra_isize=EXTRA_ISIZE, want_extra_isize=EXTRA_ISIZE)
    if cfg.flex_bg:
        f["log_groups_per_flex"] = cfg.flex_size.bit_length() - 1
    if cfg.csum:
        f["checksum_type"] = CRC32C_CHKSUM
    if cfg.sparse_super2:
        f["backup_bgs"] = geo.bgs[0].to_bytes(4, "little") + geo.bgs[1].to_bytes(4, "little")
    sb = SUPERBLOCK.pack(**f)
    if cfg.csum:
        sb = SUPERBLOCK.pack(checksum=csum(0xFFFFFFFF, sb[:SB_CHECKSUM_OFFSET]), **f)
    return sb
