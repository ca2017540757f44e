"""EROFS records and planning algorithms, checked in isolation (no image, no tools)."""
from __future__ import annotations

import random

import pytest

from fstool.fs.erofs.format import (
    INODE_SLOT, Z_LCLUSTER_HEAD1, Z_LCLUSTER_NONHEAD, Z_LCLUSTER_PLAIN, decode_rdev, encode_rdev, sb_checksum,
    xattr_entry, xattr_split,
)
from fstool.fs.erofs.writer import _choose_chunks, _dir_blocks, _Placer, _z_compact, _z_entries, _z_full


def test_rdev_round_trip_and_layout():
    for major, minor in [(0, 0), (4, 64), (259, 300000), (4095, (1 << 20) - 1), (8, 255), (8, 256)]:
        assert decode_rdev(encode_rdev(major, minor)) == (major, minor)
    assert encode_rdev(8, 1) == 0x801  # the old 16-bit encoding for small numbers, as the kernel's


def test_xattr_prefixes():
    assert xattr_split("user.comment") == (1, b"comment")
    assert xattr_split("security.selinux") == (6, b"selinux")
    assert xattr_split("trusted.overlay.opaque") == (4, b"overlay.opaque")
    assert xattr_split("system.posix_acl_access") == (2, b"")
    assert xattr_split("system.posix_acl_default") == (3, b"")
    assert xattr_split("system.other") is None
    assert xattr_split("user.") is None
    e = xattr_entry(1, b"abc", b"12345")
    assert len(e) % 4 == 0 and e[:4] == bytes([3, 1, 5, 0])


def test_superblock_checksum_is_crc32c_without_final_inversion():
    import crc32c
    data = random.Random(1).randbytes(3072)
    assert sb_checksum(data) == crc32c.crc32c(data) ^ 0xFFFFFFFF


def test_directory_blocks_never_overflow():
    rnd = random.Random(2)
    names = sorted({bytes(rnd.choice(b"abcdefgh") for _ in range(rnd.randint(1, 255))) for _ in range(3000)})
    blocks, size = _dir_blocks(names, 4096)
    assert blocks[0][0] == 0 and blocks[-1][1] == len(names)
    for (lo, hi), nxt in zip(blocks, blocks[1:] + [None]):
        used = sum(12 + len(n) for n in names[lo:hi])
        assert used <= 4096
        if nxt is not None:
            assert used + 12 + len(names[hi]) > 4096  # full: the next name did not fit
    last = sum(12 + len(n) for n in names[blocks[-1][0]:])
    assert size == (len(blocks) - 1) * 4096 + last


def test_placer_keeps_small_records_inside_a_block():
    rnd = random.Random(3)
    p = _Placer(4096, 1152)
    spans = []
    for _ in range(2000):
        n = rnd.choice([32, 64, 100, 500, 2000, 4096, 9000])
        pos = p.place(n)
        assert pos % INODE_SLOT == 0 and pos >= 1152
        if n <= 4096:
            assert pos // 4096 == (pos + n - 1) // 4096
        spans.append((pos, pos + n))
    spans.sort()
    assert all(a[1] <= b[0] for a, b in zip(spans, spans[1:]))  # no overlaps


def test_chunk_choice_for_sparse_files():
    size = (80 << 20) + 3
    segs = [(0, 5, 0), (40 << 20, 6, 40 << 20), (80 << 20, 3, 80 << 20)]
    bits, chunks, cost = _choose_chunks(segs, size, 4096)
    assert cost < 64 << 10 and len(chunks) == 3
    assert all(c * (4096 << bits) <= off < (c + 1) * (4096 << bits) for (c, _), (off, _, _) in zip(chunks, segs))


class _FakeRegion:
    def __init__(self, data: bytes):
        self.data, self.length = data, len(data)

    def pread(self, n: int, off: int) -> bytes:
        assert off + n <= self.length
        return self.data[off:off + n]


class _FakeReader:
    where = "<test>"

    def __init__(self, data: bytes):
        self.r = _FakeRegion(data)

    def _iloc(self, nid: int) -> int:
        return nid * INODE_SLOT


class _FakeIno:
    def __init__(self, size, extents, layout, xattr_size=0):
        self.size, self.extents, self.layout = size, extents, layout
        self.nid, self.isize, self.xattr_size = 1, 32, xattr_size


def _random_extents(rnd, big: bool):
    """Extents as the writer makes them: raw ones of a block, compressed ones that save a block."""
    extents, blk, total = [], 100, 0
    for _ in range(rnd.randint(1, 300)):
        if rnd.random() < 0.3:
            length, raw, blocks = 4096, True, 1
        else:
            blocks = rnd.randint(1, 16) if big else 1
            length, raw = rnd.randint(blocks * 4096 + 1, blocks * 4096 + 60000), False
        extents.append((length, raw, blk, blocks))
        blk += blocks
        total += length
    tail = rnd.randint(1, 4095)
    extents.append((tail, True, blk, 1))
    return extents, total + tail


@pytest.mark.parametrize("big", [False, True])
@pytest.mark.parametrize("xattr_size", [0, 12, 16, 28])
def test_compact_and_full_indexes_decode_to_the_extents(big, xattr_size):
    from fstool.fs.erofs.zdata import _Indexes
    rnd = random.Random(4 + big + xattr_size)
    for _ in range(20):
        extents, size = _random_extents(rnd, big)
        entries = _z_entries(_FakeIno(size, extents, 3), 4096, big)
        assert len(entries) == -(-size // 4096)
        # the heads, in order, are the extents' starts and block addresses
        starts, la = [], 0
        for length, _raw, blk, _b in extents:
            starts.append((la, blk))
            la += length
        for layout, pack in ((3, "compact"), (1, "full")):
            ino = _FakeIno(size, extents, layout, xattr_size)
            end = 32 + 32 + xattr_size
            hdr = -(-end // 8) * 8
            blob = _z_compact(entries, hdr + 8, big, 12) if pack == "compact" else bytes(8) + _z_full(entries)
            image = bytearray(hdr + 8) + blob + bytes(64)
            idx = _Indexes(_FakeReader(bytes(image)), ino, 0x1 | (0x6 if big else 0), 12, big)
            heads, cblks = [], {}
            for lcn in range(idx.total):
                t, v, pblk = idx.get(lcn)
                if t == Z_LCLUSTER_NONHEAD:
                    if v & 0x800:
                        cblks[len(heads) - 1] = v & 0x7FF
                    continue
                assert t in (Z_LCLUSTER_HEAD1, Z_LCLUSTER_PLAIN)
                if lcn * 4096 + v < size:
                    heads.append((lcn * 4096 + v, pblk))
            assert heads == starts, pack
            if big:
                for k, (_l, raw, _blk, blocks) in enumerate(extents):
                    if blocks > 1:
                        assert cblks[k] == blocks


@pytest.mark.parametrize("big", [False, True])
def test_a_fragment_tail_is_a_head_without_pcluster(big):
    """With fragments the last extent is in the packed inode: its index is a HEAD1 whose
    address nothing reads; the pclusters before it keep their addresses in both index forms."""
    from fstool.fs.erofs.fragments import FRAGMENT
    from fstool.fs.erofs.zdata import _Indexes
    rnd = random.Random(40 + big)
    for _ in range(30):
        extents, size = _random_extents(rnd, big)
        tail = rnd.randint(1, 65536 if big else 4096)
        extents[-1] = (tail, False, 123456, FRAGMENT)  # (offset in the packed inode, not a block)
        size = sum(e[0] for e in extents)
        entries = _z_entries(_FakeIno(size, extents, 3), 4096, big)
        assert len(entries) == -(-size // 4096)
        frag_la = size - tail
        assert [e for e in entries if e[3] and e[2] == 0] == []  # every real head has its block
        assert (Z_LCLUSTER_HEAD1, frag_la % 4096, 0, False) in entries
        for layout, blob in ((3, _z_compact(entries, 72, big, 12)), (1, bytes(8) + _z_full(entries))):
            image = bytes(64) + bytes(8) + blob + bytes(64)
            idx = _Indexes(_FakeReader(image), _FakeIno(size, extents, layout), 0x1 | (0x6 if big else 0), 12, big)
            heads = []
            for lcn in range(idx.total):
                t, v, pblk = idx.get(lcn)
                if t != Z_LCLUSTER_NONHEAD and lcn * 4096 + v < size:
                    heads.append((lcn * 4096 + v, t, pblk))
            la, want = 0, []
            for length, raw, blk, blocks in extents:
                want.append((la, Z_LCLUSTER_PLAIN if raw else Z_LCLUSTER_HEAD1, blk))
                la += length
            assert [h[:2] for h in heads] == [w[:2] for w in want]
            assert [h[2] for h in heads[:-1]] == [w[2] for w in want[:-1]]  # the fragment's is ignored


def test_fragment_map_headers():
    import struct

    from fstool.fs.erofs.format import Z_MAP_HEADER
    from fstool.fs.erofs.fragments import map_header, whole_header
    whole = whole_header(0x123456789)
    assert len(whole) == 16 and whole[8:] == bytes(8)
    assert struct.unpack("<Q", whole[:8])[0] == (1 << 63) | 0x123456789
    assert Z_MAP_HEADER.unpack(whole[:8]).clusterbits >> 7 == 1  # Z_EROFS_FRAGMENT_INODE_BIT
    h = map_header(0x21, 3, 0, (0xABCDEF12, False))
    assert struct.unpack("<IHBB", h) == (0xABCDEF12, 0x21, 3, 0)  # h_fragmentoff overlays the first 4 bytes
    assert map_header(0x9, 0, 300, None) == Z_MAP_HEADER.pack(idata_size=300, advise=0x9)
