"""The host-directory input: sorted walk, hardlinks, xattrs, special files, holes never read."""
from __future__ import annotations

import os
import socket

import pytest

from fstool.errors import InputError
from fstool.inputs.hostdir import load_dir
from fstool.tree import Kind


def test_walk_is_sorted_and_keeps_metadata(tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    for name in ["b", "a", "C", "ü", "a b"]:
        (src / name).write_text(name)
    (src / "d").mkdir()
    (src / "d" / "x").write_text("x")
    os.chmod(src / "a", 0o4751)
    os.utime(src / "a", ns=(1, 1_600_000_000_123_456_789))
    os.symlink("../a", src / "d" / "link")
    tree = load_dir(str(src))
    paths = [p for p, _ in tree.walk()]
    assert paths == ["/", "/C", "/a", "/a b", "/b", "/d", "/d/link", "/d/x", "/ü"]
    a = tree.lookup("/a")
    assert a.kind is Kind.FILE and a.mode == 0o4751 and a.mtime == 1_600_000_000
    assert a.mtime_ns == 123_456_789 and a.size == 1
    assert tree.lookup("/d/link").target == "../a"


def test_hardlinks_share_one_node(tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    (src / "one").write_text("data")
    os.link(src / "one", src / "two")
    os.mkdir(src / "sub")
    os.link(src / "one", src / "sub" / "three")
    tree = load_dir(str(src))
    one = tree.lookup("/one")
    assert tree.lookup("/two") is one and tree.lookup("/sub/three") is one
    assert tree.nlink(one) == 3


def test_sparse_file_segments_skip_holes(tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    with open(src / "sparse", "wb") as f:
        f.write(b"head")
        f.seek(64 << 20)
        f.write(b"tail")
        f.truncate(5 << 30)
    node = load_dir(str(src)).lookup("/sparse")
    assert node.size == 5 << 30
    segs = node.source.data_segments()
    assert sum(n for _, n, _ in segs) < 1 << 20  # only the two data blocks
    chunks = [(off, data is None, n) for off, data, n in node.source.iter_chunks()]
    assert sum(n for _, _, n in chunks) == 5 << 30


def test_xattrs_and_special_files(tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    (src / "f").write_text("x")
    try:
        os.setxattr(src / "f", "user.greeting", b"hello")
    except OSError:
        pytest.fail("this filesystem does not support user xattrs")
    os.mkfifo(src / "fifo")
    s = socket.socket(socket.AF_UNIX)
    s.bind(str(src / "sock"))
    s.close()
    if os.geteuid() == 0:
        os.mknod(src / "null", 0o20666, os.makedev(1, 3))
    tree = load_dir(str(src))
    assert tree.lookup("/f").xattrs == {"user.greeting": b"hello"}
    assert tree.lookup("/fifo").kind is Kind.FIFO and tree.lookup("/sock").kind is Kind.SOCK
    if os.geteuid() == 0:
        assert tree.lookup("/null").kind is Kind.CHR and tree.lookup("/null").rdev == (1, 3)


def test_errors_name_the_path(tmp_path):
    with pytest.raises(InputError, match="nope"):
        load_dir(str(tmp_path / "nope"))
    (tmp_path / "file").write_text("")
    with pytest.raises(InputError, match="not a directory"):
        load_dir(str(tmp_path / "file"))
