"""The SquashFS metadata writer: 8 KiB blocks, each behind a u16 header (bit 15: stored),
references (block offset << 16 | offset inside), and lookup tables with their index."""
from __future__ import annotations

import random
import zlib

from fstool.fs.squashfs.codec import Codec
from fstool.fs.squashfs.format import META_HEADER, META_UNCOMPRESSED, METADATA_SIZE, TABLE_POINTER
from fstool.fs.squashfs.writer import MetaWriter, _table_with_index


def blocks(stream: bytes):
    """(stored, payload) of each metadata block of a finished stream."""
    pos, out = 0, []
    while pos < len(stream):
        h = META_HEADER.unpack(stream, pos).size
        n = h & ~META_UNCOMPRESSED
        data = stream[pos + META_HEADER.size:pos + META_HEADER.size + n]
        out.append((bool(h & META_UNCOMPRESSED), data))
        pos += META_HEADER.size + n
    return out


def test_compressible_metadata_is_cut_into_8k_blocks():
    m = MetaWriter(Codec("gzip", None, 131072))
    assert m.ref() == 0 and m.tell() == 0
    m.add(bytes(20000))
    assert m.tell() == 20000 and len(m.block_starts) == 2
    # the reference of what comes next: third block (its offset in the table), 3616 bytes in
    assert m.ref() == (m.block_starts[1] + len(blocks(bytes(m.out))[1][1]) + 2) << 16 | 3616
    out = m.finish()
    bl = blocks(out)
    assert [stored for stored, _ in bl] == [False, False, False]
    assert [len(zlib.decompress(d)) for _, d in bl] == [METADATA_SIZE, METADATA_SIZE, 20000 - 2 * METADATA_SIZE]
    assert m.block_starts == [0, 2 + len(bl[0][1]), 4 + len(bl[0][1]) + len(bl[1][1])]
    assert m.block_start(METADATA_SIZE + 5) == m.block_starts[1]


def test_incompressible_metadata_is_stored():
    data = random.Random(1).randbytes(METADATA_SIZE + 100)
    m = MetaWriter(Codec("gzip", None, 131072))
    m.add(data)
    bl = blocks(m.finish())
    assert bl == [(True, data[:METADATA_SIZE]), (True, data[METADATA_SIZE:])]


def test_lookup_table_index_points_at_each_block():
    entries = random.Random(2).randbytes(3 * METADATA_SIZE)
    blob, index_at = _table_with_index(MetaWriter(Codec("gzip", None, 131072)), entries, 1000)
    index = [p.start for p in TABLE_POINTER.iter_unpack(blob[index_at - 1000:])]
    assert len(index) == 3 and index[0] == 1000
    for p in index:
        assert META_HEADER.unpack(blob, p - 1000).size & META_UNCOMPRESSED
