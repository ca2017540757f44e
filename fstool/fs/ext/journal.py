"""The JBD2 journal of ext3/ext4: inode 8, a contiguous run of blocks whose first holds the
journal superblock (big-endian); the rest stays a hole (an empty, clean journal: start 0,
nothing to replay).
"""
from __future__ import annotations

from ...tree import Kind
from .format import (
    JBD2_CRC32C_CHKSUM, JBD2_INCOMPAT_64BIT, JBD2_INCOMPAT_CSUM_V3, JBD2_MAGIC, JBD2_SUPERBLOCK,
    JBD2_SUPERBLOCK_V2, JOURNAL_INO, csum, default_journal_blocks,
)
from .inode import Ino
from .options import ExtOptions


def journal_size(cfg: ExtOptions, blocks: int) -> int:
    """Journal blocks for a filesystem of `blocks` blocks (0: no journal)."""
    if not cfg.journal:
        return 0
    if cfg.journal_blocks is not None:
        return cfg.journal_blocks
    return default_journal_blocks(blocks)


def journal_inode(jblocks: int, bs: int, ts: int) -> Ino:
    j = Ino(JOURNAL_INO, Kind.FILE, None)
    j.mode, j.mtime, j.nlink = 0o600, ts, 1
    j.size = jblocks * bs
    j.nblocks = jblocks
    j.runs = [(0, jblocks)]
    return j


def journal_superblock(cfg: ExtOptions, bs: int, jblocks: int) -> bytes:
    """The journal's first block: a v2 superblock; with metadata_csum, csum v3 and its checksum."""
    incompat = 0
    if cfg.bit64:
        incompat |= JBD2_INCOMPAT_64BIT
    if cfg.csum:
        incompat |= JBD2_INCOMPAT_CSUM_V3
    fields = dict(magic=JBD2_MAGIC, blocktype=JBD2_SUPERBLOCK_V2, blocksize=bs, maxlen=jblocks,
                  first=1, s_sequence=1, feature_incompat=incompat, uuid=cfg.uuid, nr_users=1,
                  checksum_type=JBD2_CRC32C_CHKSUM if cfg.csum else 0)
    sb = JBD2_SUPERBLOCK.pack(**fields)
    if cfg.csum:
        sb = JBD2_SUPERBLOCK.pack(checksum=csum(0xFFFFFFFF, sb), **fields)
    return sb + bytes(bs - len(sb))
