"""Block maps: extents (at most 32768 blocks each, a tree once more than four) and
ext2/ext3 indirect blocks, each placed just before the first data block it maps."""
from __future__ import annotations

from fstool.fs.ext.alloc import Allocator
from fstool.fs.ext.extent import extent_tree, extent_tree_blocks, indirect_keys, indirect_map, map_runs, place
from fstool.fs.ext.format import EXTENT_HEADER, EXTENT_LEAF, EXTENT_MAGIC


def test_map_runs_splits_at_the_extent_limit_and_merges_contiguous_pieces():
    assert map_runs([(0, 40000)], [(100, 40000)]) == [(0, 32768, 100), (32768, 7232, 32868)]
    # two logical runs on one physical run stay two extents (a hole between them)
    assert map_runs([(0, 2), (10, 12)], [(50, 4)]) == [(0, 2, 50), (10, 2, 52)]
    # one logical run over two physical runs
    assert map_runs([(0, 5)], [(7, 2), (20, 3)]) == [(0, 2, 7), (2, 3, 20)]


def test_extent_tree_size():
    assert extent_tree_blocks(4, 4096) == 0
    assert extent_tree_blocks(5, 4096) == 1
    assert extent_tree_blocks(340 * 4, 4096) == 4
    assert extent_tree_blocks(340 * 4 + 1, 4096) == 5 + 1  # five leaves, one index block


def test_extent_tree_bytes():
    writes: list = []
    ext = [(i * 10, 1, 1000 + i) for i in range(6)]
    root = extent_tree(ext, [500], 1024, 0, False, writes)
    h = EXTENT_HEADER.unpack(root)
    assert (h.magic, h.entries, h.max, h.depth) == (EXTENT_MAGIC, 1, 4, 1)
    ((blk, leaf),) = writes
    assert blk == 500 and len(leaf) == 1024
    lh = EXTENT_HEADER.unpack(leaf)
    assert (lh.entries, lh.max, lh.depth) == (6, (1024 - 12) // 12, 0)
    assert EXTENT_LEAF.unpack(leaf, EXTENT_HEADER.size * 6).start_lo == 1005


def test_indirect_keys_and_layout():
    P = 256  # 1 KiB blocks
    assert indirect_keys([(0, 12)], 1024) == []
    assert indirect_keys([(0, 13)], 1024) == [(1,)]
    assert indirect_keys([(12 + P, 12 + P + 1)], 1024) == [(2,), (2, 0)]
    runs = [(0, 20)]
    ext, meta = place(runs, 20, Allocator([(100, 200)]), 1024, extents=False)
    # 12 direct blocks, then the single indirect block, then the next 8 data blocks
    assert meta == [112] and ext == [(0, 12, 100), (12, 8, 113)]
    writes: list = []
    iblock = indirect_map(runs, ext, meta, 1024, writes)
    ptrs = [int.from_bytes(iblock[i:i + 4], "little") for i in range(0, 60, 4)]
    assert ptrs[:12] == list(range(100, 112)) and ptrs[12] == 112 and ptrs[13:] == [0, 0]
    ((blk, table),) = writes
    assert blk == 112 and [int.from_bytes(table[i:i + 4], "little") for i in range(0, 32, 4)] == list(range(113, 121))
