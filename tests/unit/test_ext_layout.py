"""The ext block allocator and group geometry, against values worked out by hand from the
layout rules (Documentation/filesystems/ext4/overview.rst: "Blocks", "Flexible Block Groups")."""
from __future__ import annotations

import pytest

from fstool.fs.base import FsParams
from fstool.fs.ext.alloc import Allocator, NoSpace
from fstool.fs.ext.format import has_super
from fstool.fs.ext.layout import Geometry
from fstool.fs.ext.options import parse_options


def opts(fs_type="ext4", **options):
    return parse_options(FsParams(fs_type=fs_type, options=options))


def test_allocator_hands_out_a_prefix_of_the_free_ranges():
    al = Allocator([(10, 20), (30, 35)])
    assert al.remaining() == 15
    assert al.alloc(5) == [(10, 5)]
    assert al.alloc(8) == [(15, 5), (30, 3)]  # spills into the next range
    assert al.remaining() == 2
    assert al.runs == [[10, 20], [30, 33]]
    assert al.alloc(2) == [(33, 2)] and al.remaining() == 0
    with pytest.raises(NoSpace) as e:
        al.alloc(3)
    assert e.value.short == 3


def test_allocator_merges_touching_runs():
    al = Allocator([(0, 100)])
    for _ in range(4):
        al.alloc(7)
    assert al.runs == [[0, 28]]


def test_sparse_super_backups():
    assert [g for g in range(60) if has_super(g, True)] == [0, 1, 3, 5, 7, 9, 25, 27, 49]
    assert all(has_super(g, False) for g in range(10))


def test_flex_bg_geometry_4k():
    geo = Geometry(opts(), 4096, 3 * 32768, 8192, fixed=True)
    assert (geo.fdb, geo.bpg, geo.groups, geo.blocks) == (0, 32768, 3, 98304)
    assert geo.ipg == 2736          # ceil(8192 / 3) rounded up to whole inode-table blocks (16)
    assert geo.itb == 171 and geo.gdt == 1 and geo.inodes == 3 * 2736
    assert geo.backups == [(0, 2), (32768, 32770)]  # groups 0 and 1; 2 has none
    # flex_bg: all bitmaps, then all inode tables, packed after group 0's backup
    assert geo.bb == [2, 3, 4] and geo.ib == [5, 6, 7]
    assert geo.it == [8, 8 + 171, 8 + 2 * 171]
    assert geo.reserved == [(0, 8 + 3 * 171), (32768, 32770)]
    assert geo.free == [(8 + 3 * 171, 32768), (32770, 98304)]
    assert geo.free_total + geo.meta_blocks == geo.blocks


def test_plain_geometry_1k():
    geo = Geometry(opts(flex_bg=False), 1024, 20000, 1000, fixed=True)
    assert (geo.fdb, geo.bpg, geo.groups) == (1, 8192, 3)
    assert geo.ipg == 336 and geo.itb == 84 and geo.gdt == 1
    # each group: [superblock + descriptors], block bitmap, inode bitmap, inode table
    assert (geo.bb, geo.ib, geo.it) == ([3, 8195, 16385], [4, 8196, 16386], [5, 8197, 16387])
    assert geo.reserved == [(1, 89), (8193, 8281), (16385, 16471)]
    assert geo.gsize(2) == 20000 - 16385


def test_a_tiny_last_group_is_dropped_or_refused():
    blocks = 1 + 2 * 8192 + 10  # a 10-block third group cannot hold its own metadata
    geo = Geometry(opts(flex_bg=False), 1024, blocks, 64, fixed=True)
    assert geo.groups == 2 and geo.blocks == 1 + 2 * 8192
    with pytest.raises(NoSpace):
        Geometry(opts(flex_bg=False), 1024, blocks, 64, fixed=False)


def test_too_few_blocks_or_too_many_inodes():
    with pytest.raises(NoSpace):
        Geometry(opts(), 1024, 40, 16, fixed=False)
    with pytest.raises(NoSpace) as e:
        Geometry(opts(), 1024, 8193, 9000, fixed=False)  # one group holds at most 8192 inodes
    assert e.value.what == "inodes"


def test_64bit_descriptors_take_64_bytes():
    geo = Geometry(opts(**{"64bit": True}), 4096, 200 * 32768, 16, fixed=True)
    assert geo.desc_size == 64 and geo.gdt == -(-200 * 64 // 4096)
