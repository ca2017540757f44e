"""hostdir.XattrScan: past FORK_AFTER entries a child process reads the xattrs beside the walk;
the tree is the one a walk reading them itself gives, also when the child fails, and a walk
that fails does not leave the child behind."""
import os

import pytest

import fstool.inputs.hostdir as hostdir
from fstool.errors import InputError


def _tree(root):
    for i in range(120):
        d = root / f"d{i % 4}" / (f"s{i % 3}" if i % 2 else "")
        d.mkdir(parents=True, exist_ok=True)
        f = d / f"f{i:03d}"
        f.write_bytes(b"x" * i)
        if i % 5 == 0:
            os.setxattr(f, "user.n", b"%d" % i)
        if i % 15 == 0:
            os.setxattr(f, "user.other", b"v" * (i + 1))
    os.setxattr(root / "d1", "user.dir", b"on a directory")
    os.setxattr(root / "d1" / "s1", "user.dir", b"deeper")
    os.link(root / "d0" / "f000", root / "d3" / "hard")  # shares f000's xattrs
    os.symlink("d0/f000", root / "link")
    (root / "namé").write_bytes(b"utf-8 name")
    os.setxattr(root / "namé", "user.n", b"non-ASCII path")


def _xattrs(tree):
    return {path: dict(node.xattrs) for path, node in tree.walk()}


@pytest.fixture
def forced(monkeypatch):
    """The child from the first directory on (the test process runs threads of its own)."""
    monkeypatch.setattr(hostdir, "FORK_AFTER", 0)
    monkeypatch.setattr(hostdir, "_may_fork", lambda: True)
    started = []
    real = hostdir.XattrScan.__init__

    def init(self, root):
        started.append(root)
        real(self, root)

    monkeypatch.setattr(hostdir.XattrScan, "__init__", init)
    return started


def _inline(root, monkeypatch):
    with monkeypatch.context() as m:
        m.setattr(hostdir, "_may_fork", lambda: False)
        return _xattrs(hostdir.load_dir(str(root)))


def test_the_childs_xattrs_are_the_walks(tmp_path, monkeypatch, forced):
    _tree(tmp_path / "src")
    want = _inline(tmp_path / "src", monkeypatch)
    assert want["/d3/hard"] == {"user.n": b"0", "user.other": b"v"}
    assert want["/d1"] == {"user.dir": b"on a directory"}
    got = _xattrs(hostdir.load_dir(str(tmp_path / "src")))
    assert forced and got == want
    got = _xattrs(hostdir.load_dir(str(tmp_path / "src") + "/"))  # a root given with a slash
    assert got == want


def test_a_failing_child_leaves_the_xattrs_to_the_walk(tmp_path, monkeypatch, forced):
    _tree(tmp_path / "src")
    want = _inline(tmp_path / "src", monkeypatch)

    def fail(root):
        raise OSError(5, "Input/output error")

    monkeypatch.setattr(hostdir, "_scan_xattrs", fail)
    assert _xattrs(hostdir.load_dir(str(tmp_path / "src"))) == want


def test_a_failing_walk_stops_the_child(tmp_path, monkeypatch, forced):
    _tree(tmp_path / "src")
    closed = []
    real_close = hostdir.XattrScan.close

    def close(self):
        pid = self.child.pid
        real_close(self)
        closed.append((self, pid))

    def check_name(name, path):
        raise InputError("name too long", where=path)

    monkeypatch.setattr(hostdir.XattrScan, "close", close)
    monkeypatch.setattr(hostdir, "check_name", check_name)
    (tmp_path / "src" / "d2" / ("n" * 70)).write_bytes(b"")
    with pytest.raises(InputError):
        hostdir.load_dir(str(tmp_path / "src"))
    assert len(closed) == 1 and closed[0][0].child.rfd == -1 and closed[0][1] > 0
    with pytest.raises(ProcessLookupError):  # reaped
        os.kill(closed[0][1], 0)
