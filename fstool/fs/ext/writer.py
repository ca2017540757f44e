"""ext2/ext3/ext4 writer: plan every inode and block in memory, then write it all sparsely.

Phases, each a function returning a plan (deterministic: no clock, no randomness, no host
ordering):

1. `inode.collect` -> Inventory: inode numbers in `Tree.walk()` order, metadata, xattrs (in
   the inode when they fit, else a shared block per distinct set, xattr.py) and each file's
   data segments (holes are never allocated, never read);
2. `inode.plan_content` -> Content, for the chosen block size: directory blocks (linear or
   HTree: dir.py, htree.py), symlink blocks and each inode's block and mapping needs;
3. `layout.size_filesystem` -> Layout: the group geometry (layout.py), the journal
   (journal.py) and every block placed by one forward-only allocator (alloc.py, extent.py),
   for a fixed size or the smallest that fits plus headroom;
4. `emit.emit`: inode tables, bitmaps and descriptors (group.py), superblocks
   (superblock.py), extent trees or indirect blocks, then the file data.

Options are parsed by options.py (`parse_options`, run when the spec is read).
"""
from __future__ import annotations

from ...errors import CapacityError
from ...image import ImageFile
from ...tree import Tree
from ..base import FsParams
from .emit import emit, fill_holes
from .extent import TooBig
from .format import fs_csum_seed
from .inode import collect
from .layout import size_filesystem, smallest_block_size
from .options import ExtOptions, parse_options, seed_identifiers


def write(tree: Tree, out: ImageFile, params: FsParams) -> int:
    """Write an ext2/ext3/ext4 filesystem of `tree` to `out`; return the image size in bytes."""
    cfg: ExtOptions = seed_identifiers(params.opts if params.opts is not None else parse_options(params),
                                       params.seed)
    fs_seed = fs_csum_seed(cfg.uuid) if cfg.csum else 0
    ts = params.timestamp
    try:
        inv = collect(tree, cfg, ts, smallest_block_size(cfg, params.size))
        content, lay = size_filesystem(inv, tree, cfg, params.size, params.headroom, out.limit,
                                       fs_seed, ts)
    except TooBig:
        raise CapacityError(f"a file is too large for {params.fs_type} with indirect blocks; "
                            "use ext4 (extents) or a larger block size") from None
    geo = lay.geo
    params.log(f"{cfg.fs_type}: {geo.blocks} blocks of {lay.bs}, {geo.groups} groups, "
               f"{geo.inodes} inodes ({inv.last_ino} used), journal {lay.jblocks} blocks")
    emit(out, params, inv, content, lay, fs_seed)
    image_size = params.size if params.size is not None else geo.blocks * lay.bs
    out.truncate(image_size)
    if not params.sparse:
        fill_holes(out, image_size)
    return image_size
