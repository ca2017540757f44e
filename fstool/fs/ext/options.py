"""ext2/ext3/ext4 options: `[filesystem.options]` / `-O k=v` and the generic keys into an
ExtOptions.

Run when the spec is read (the registry calls `parse_options`), so every option error is
reported before any image is written. Defaults follow mke2fs.conf for the chosen type
(ext4: extents, metadata_csum, flex_bg, huge_file, dir_nlink, extra_isize; ext3: a journal).
The label and an explicit UUID are checked here too; a derived UUID and the hash seed come
from the build's seed when writing (`seed_identifiers`): options are parsed with the spec,
before the seed is known.
"""
from __future__ import annotations

import uuid as _uuid
from dataclasses import dataclass, replace

from ...errors import SpecError
from ...ids import derive_uuid
from ..base import FsParams, OptionReader
from .format import GOOD_OLD_INODE_SIZE, JBD2_MIN_BLOCKS

M32 = 0xFFFFFFFF
BLOCK_SIZES = (1024, 2048, 4096)
INODE_SIZES = (128, 256, 512, 1024)
LABEL_MAX = 16
JOURNAL_MAX_BLOCKS = 10_240_000


@dataclass(frozen=True)
class ExtOptions:
    fs_type: str                # ext2, ext3 or ext4
    bs: int | None              # None: chosen from the size, as mke2fs
    inode_size: int
    inodes_count: int | None
    inode_ratio: int | None
    reserved_pct: int
    blocks_count: int | None
    journal_blocks: int | None  # None: mke2fs's default for the size
    extents: bool
    csum: bool                  # metadata_csum
    dir_index: bool
    journal: bool
    flex_bg: bool
    flex_size: int
    bit64: bool
    bit64_set: bool             # 64bit given explicitly (else turned on when the size needs it)
    huge_file: bool
    dir_nlink: bool
    extra_isize: bool
    sparse_super: bool
    sparse_super2: bool         # backups only in groups s_backup_bgs[0..1] (1 and the last)
    lost_found: bool            # make /lost+found when the tree has none (create_lost_found)
    label: bytes
    uuid: bytes                 # b"": derived from the build's seed when writing
    hash_seed: bytes            # b"" until seed_identifiers
    where: str


def parse_options(params: FsParams) -> ExtOptions:
    where = f"{params.where}.options"
    opt = OptionReader(params.options, where=where)
    t = params.fs_type
    ext4 = t == "ext4"

    def feature(*names: str, default: bool) -> bool:
        val = None
        for n in names:
            v = opt.get_bool(n)
            if v is not None:
                val = v
        return default if val is None else val

    extents = feature("extents", "extent", default=ext4)
    inode_size = opt.get_int("inode_size", 256)
    inodes_count = opt.get_int("inodes_count", None, 16, M32)
    inode_ratio = opt.get_int("inode_ratio", None, 1024, 1 << 26)
    reserved_pct = opt.get_int("reserved_blocks_percent", 5, 0, 50)
    blocks_count = opt.get_int("blocks_count", None, 64, (1 << 48) - 1)
    csum = feature("metadata_csum", default=ext4)
    dir_index = feature("dir_index", default=True)
    journal = feature("has_journal", default=t != "ext2")
    flex_bg_given = opt.get_bool("flex_bg")
    flex_size_given = opt.get_int("flex_bg_size", None, 1, 1 << 16)
    # the Rust fstool's log_groups_per_flex: 0 turns flex_bg off, N packs 2^N groups
    log_flex = opt.get_int("log_groups_per_flex", None, 0, 16)
    flex_bg = ext4 if flex_bg_given is None else flex_bg_given
    flex_size = 16 if flex_size_given is None else flex_size_given
    if log_flex is not None:
        if flex_bg_given is not None and flex_bg_given != (log_flex > 0):
            raise SpecError(f"log_groups_per_flex = {log_flex} contradicts flex_bg = "
                            f"{str(flex_bg_given).lower()}", where=f"{where}.log_groups_per_flex")
        if log_flex and flex_size_given is not None and flex_size_given != 1 << log_flex:
            raise SpecError(f"log_groups_per_flex = {log_flex} means flex_bg_size = {1 << log_flex}, "
                            f"not {flex_size_given}", where=f"{where}.log_groups_per_flex")
        flex_bg = log_flex > 0
        if log_flex:
            flex_size = 1 << log_flex
    bit64 = feature("64bit", "use_64bit", default=False)
    bit64_set = opt.has("64bit") or opt.has("use_64bit")
    huge_file = feature("huge_file", default=ext4)
    dir_nlink = feature("dir_nlink", default=ext4)
    extra_isize = feature("extra_isize", default=ext4)
    sparse_super = feature("sparse_super", default=True)
    sparse_super2 = feature("sparse_super2", default=False)
    lost_found = feature("create_lost_found", default=True)
    opt.finish()
    if sparse_super2 and not sparse_super:
        raise SpecError("sparse_super2 needs sparse_super (as mke2fs)", where=f"{where}.sparse_super2")
    if inode_size not in INODE_SIZES:
        raise SpecError(f"inode_size must be 128 or 256 (or 512, 1024), got {inode_size}",
                        where=f"{where}.inode_size")
    if flex_size & (flex_size - 1):
        raise SpecError(f"flex_bg_size must be a power of two, got {flex_size}",
                        where=f"{where}.flex_bg_size")
    bs = params.block_size
    if bs is not None and bs not in BLOCK_SIZES:
        raise SpecError(f"ext block size must be 1024, 2048 or 4096, got {bs}",
                        where=f"{params.where}.block_size")
    if bit64 and not extents:
        raise SpecError("64bit needs extents", where=f"{where}.64bit")
    if inode_size == GOOD_OLD_INODE_SIZE:
        extra_isize = False
    journal_blocks = params.journal_blocks
    if journal_blocks is not None:
        if not journal:
            raise SpecError("journal_blocks is set but the filesystem has no journal",
                            where=f"{params.where}.journal_blocks")
        if not JBD2_MIN_BLOCKS <= journal_blocks <= JOURNAL_MAX_BLOCKS:
            raise SpecError(f"journal_blocks must be between {JBD2_MIN_BLOCKS} and {JOURNAL_MAX_BLOCKS}, "
                            f"got {journal_blocks}", where=f"{params.where}.journal_blocks")
    label = (params.label or "").encode("utf-8")
    if len(label) > LABEL_MAX:
        raise SpecError(f"ext volume labels are at most {LABEL_MAX} bytes; {params.label!r} is {len(label)}",
                        where=f"{params.where}.label")
    uuid = b""
    if params.uuid:
        try:
            uuid = _uuid.UUID(params.uuid).bytes
        except ValueError:
            raise SpecError(f"invalid UUID {params.uuid!r}", where=f"{params.where}.uuid") from None
    return ExtOptions(
        fs_type=t, bs=bs, inode_size=inode_size, inodes_count=inodes_count, inode_ratio=inode_ratio,
        reserved_pct=reserved_pct, blocks_count=blocks_count, journal_blocks=journal_blocks,
        extents=extents, csum=csum, dir_index=dir_index, journal=journal, flex_bg=flex_bg,
        flex_size=flex_size, bit64=bit64, bit64_set=bit64_set, huge_file=huge_file,
        dir_nlink=dir_nlink, extra_isize=extra_isize, sparse_super=sparse_super,
        sparse_super2=sparse_super2, lost_found=lost_found, label=label,
        uuid=uuid, hash_seed=b"", where=where)


def seed_identifiers(cfg: ExtOptions, seed: bytes) -> ExtOptions:
    """cfg with its derived identifiers filled in from the build's seed."""
    return replace(cfg, uuid=cfg.uuid or derive_uuid(seed, "ext/uuid").bytes,
                   hash_seed=derive_uuid(seed, "ext/hash_seed").bytes)
