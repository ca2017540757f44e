"""The one hole finder (tree.data_extents) and the ext writer's hole filler and write
coalescer."""
from __future__ import annotations

import os

from fstool.fs.ext.emit import BlockSink, fill_holes
from fstool.image import ImageFile
from fstool.tree import data_extents

MiB = 1 << 20


def sparse_file(path, pieces, size):
    with open(path, "wb") as f:
        for off, data in pieces:
            f.seek(off)
            f.write(data)
        f.truncate(size)


def test_data_extents_finds_the_data(tmp_path):
    p = tmp_path / "s"
    sparse_file(p, [(0, b"a"), (3 * MiB, b"b" * 10)], 8 * MiB)
    fd = os.open(p, os.O_RDONLY)
    try:
        ext = list(data_extents(fd, 8 * MiB))
        assert ext[0][0] == 0 and ext[-1][0] <= 3 * MiB < ext[-1][0] + ext[-1][1]
        assert sum(n for _, n in ext) < 2 * MiB  # the holes were not reported as data
        # relative to a base: the second piece seen from 2 MiB on
        rel = list(data_extents(fd, 2 * MiB, base=2 * MiB))
        assert rel and rel[0][0] <= MiB < rel[0][0] + rel[0][1]
        assert list(data_extents(fd, MiB, base=5 * MiB)) == []
    finally:
        os.close(fd)


def test_fill_holes_leaves_no_hole_and_keeps_the_data(tmp_path):
    p = tmp_path / "img"
    sparse_file(p, [(MiB, b"x" * 4096)], 4 * MiB)
    fd = os.open(p, os.O_RDWR)
    try:
        fill_holes(ImageFile(fd), 4 * MiB)
        assert list(data_extents(fd, 4 * MiB)) == [(0, 4 * MiB)]
    finally:
        os.close(fd)
    data = p.read_bytes()
    assert data[MiB:MiB + 4096] == b"x" * 4096 and data.count(0) == 4 * MiB - 4096


class Recorder:
    def __init__(self):
        self.calls = []

    def pwrite(self, data, off):
        self.calls.append((off, bytes(data)))


def test_block_sink_coalesces_contiguous_blocks():
    rec = Recorder()
    sink = BlockSink(rec, 1024)
    sink.write_all([(6, b"c" * 1024), (3, b"a" * 1024), (4, b"b" * 2048), (10, b"d" * 1024)])
    # blocks 3, 4-5 and 6 make one write; 10 starts another
    assert rec.calls == [(3 * 1024, b"a" * 1024 + b"b" * 2048 + b"c" * 1024), (10 * 1024, b"d" * 1024)]


def test_block_sink_bounds_each_write():
    rec = Recorder()
    sink = BlockSink(rec, 1 << 20)
    for i in range(10):
        sink.add(i, bytes(1 << 20))
    sink.flush()
    assert [len(d) for _, d in rec.calls] == [8 << 20, 2 << 20]
