"""XFS records and algorithms on their own: the name hash against xfs_db's, extent records,
bigtime stamps, btree shapes, shortform directories."""
from __future__ import annotations

import os
import subprocess

from fstool.fs.xfs.btree import block_levels, bmbt_levels
from fstool.fs.xfs.dirs import DirPlan, shortform, shortform_size
from fstool.fs.xfs.format import (DINODE, SB, Geometry, bigtime, da_hashname, from_bigtime,
                                  pack_bmbt, unpack_bmbt)

NAMES = [b"a", b"ab", b"abc", b"abcd", b"lost+found", b"entry-00042-xxxxxxxx", b"\xff\xfe\x80", b"n" * 255]


def test_hash_matches_xfs_db(tmp_path):
    img = tmp_path / "h.img"
    with open(img, "wb") as f:
        f.truncate(64 << 20)
    env = dict(os.environ, TEST_DIR="1", TEST_DEV="1", QA_CHECK_FS="1")
    subprocess.run(["mkfs.xfs", "-q", "-f", str(img)], check=True, env=env)
    printable = [n for n in NAMES if all(32 < c < 127 for c in n)]
    args = ["xfs_db", "-r"]
    for n in printable:
        args += ["-c", f"hash {n.decode()}"]
    out = subprocess.run(args + [str(img)], capture_output=True, text=True, check=True).stdout.split()
    assert [int(x, 16) for x in out] == [da_hashname(n) for n in printable]


def test_record_sizes():
    assert DINODE.size == 176 and SB.size == 264


def test_extent_records_round_trip():
    for off, blk, n in [(0, 0, 1), ((1 << 54) - 1, (1 << 52) - 1, (1 << 21) - 1), (12345, 1 << 40, 77)]:
        assert unpack_bmbt(pack_bmbt(off, blk, n)) == (off, blk, n, 0)


def test_bigtime():
    for s, ns in [(0, 0), (-(1 << 31), 0), (1_700_000_000, 999_999_999), (16299260424, 0)]:
        assert from_bigtime(bigtime(s, ns)) == (s, ns)
    assert bigtime(16299260424) < 1 << 64


def test_btree_shapes():
    assert block_levels(0, 252, 505, 1) == [1]
    assert block_levels(252, 252, 505, 1) == [1]
    assert block_levels(253, 252, 505, 1) == [2, 1]
    assert bmbt_levels(4096, 22, 336) == [1]  # a root in the inode over one leaf
    assert bmbt_levels(4096, 6000, 336) == [24, 1]  # 20 root entries cannot reach 24 leaves


def test_geometry_addresses_are_segmented():
    g = Geometry(4096, 5000, 3, 512)  # agblocks not a power of two: agblklog 13
    assert g.agblklog == 13
    assert g.fsb(1, 7) == (1 << 13) | 7 and g.split_fsb(g.fsb(2, 4999)) == (2, 4999)
    assert g.byte(1, 7) == (5000 + 7) * 4096
    ino = g.ino(2, 100, 5)
    assert g.split_ino(ino) == (2, 100, 5) and g.ino_byte(ino) == (2 * 5000 + 100) * 4096 + 5 * 512


def test_shortform_directory_layout():
    ents = [(b"x", 200, 1), (b"longer-name", 300, 2)]
    sf = shortform(ents, 128)
    assert len(sf) == shortform_size(ents, 128)
    assert sf[:6] == bytes([2, 0]) + (128).to_bytes(4, "big")
    # entries carry the offsets they would have in a data block: after '.' and '..' at 96
    assert sf[7:9] == (96).to_bytes(2, "big")
    big = shortform([(b"y", 1 << 40, 1)], 128)
    assert big[1] == 1 and len(big) == shortform_size([(b"y", 1 << 40, 1)], 128)


def test_directory_forms_by_size():
    def form(n, namelen=10):
        return DirPlan([(b"%0*d" % (namelen, i), 1000 + i, 1) for i in range(n)], 128, 128, 4096).form
    assert form(10) == "block"
    assert form(300) == "leaf"
    assert form(3000) == "node"
    plan = DirPlan([(b"%07d" % i, 1000 + i, 1) for i in range(270000)], 128, 128, 4096)
    assert len(plan.nodes) == 2  # more leaves than one da node holds: a two-level da-btree
