"""The squashfs data pass begun during the host directory walk (writer.EarlyData, started by
fstool.build): adopted when the files it did are how the writer's own order begins, dropped
otherwise, and the image is the same bytes either way."""
import os
import threading
import time

import pytest

import fstool.build as build
import fstool.fs.squashfs.writer as sw
from fstool.cli import main
from fstool.errors import CapacityError


def _tree(root, n=2000):
    for i in range(n):
        d = os.path.join(root, f"d{i % 7}", f"s{i % 3}" if i % 5 == 0 else "")
        os.makedirs(d, exist_ok=True)
        with open(os.path.join(d, f"f{i:05d}"), "wb") as f:
            f.write((b"%d " % (i % 40)) * (i % 300))  # many duplicates, some empty
    with open(os.path.join(root, "big"), "wb") as f:  # data blocks and a tail, zeros inside
        f.write(os.urandom(300_000) + bytes(140_000) + os.urandom(5000))
    os.link(os.path.join(root, "big"), os.path.join(root, "d0", "big-link"))
    os.symlink("big", os.path.join(root, "d1", "link"))


def _build(src, out, *extra):
    args = ["create", "-q", "-t", "squashfs", str(src), "-o", str(out), *extra]
    res = []
    t = threading.Thread(target=lambda: res.append(main(args)))
    t.start()
    t.join(60)
    assert not t.is_alive(), "the build hung"
    assert not [x for x in threading.enumerate() if x.name.startswith("fstool-squashfs")]
    return res[0]


class Adoptions:
    """Each adopt's (result, files done early). With `ahead` set, adopt first waits until the
    early pass has done every file handed to it (the furthest it can get)."""

    def __init__(self):
        self.results: list[tuple[bool, int]] = []
        self.ahead = False

    def __getitem__(self, i):
        return self.results[i]


@pytest.fixture
def adoptions(monkeypatch):
    rec = Adoptions()
    real_file, real_adopt = sw.EarlyData.file, sw.EarlyData.adopt

    def file(self, node):
        self.handed = getattr(self, "handed", 0) + 1
        real_file(self, node)

    def adopt(self, files, cfg):
        if rec.ahead:
            deadline = time.monotonic() + 30
            while self.ok and len(self.done) < getattr(self, "handed", 0) and time.monotonic() < deadline:
                time.sleep(0.005)
        r = real_adopt(self, files, cfg)
        rec.results.append((r, len(self.done)))
        return r

    monkeypatch.setattr(sw.EarlyData, "file", file)
    monkeypatch.setattr(sw.EarlyData, "adopt", adopt)
    return rec


def _reference(tmp_path, src, monkeypatch, *extra):
    """The image with nothing handed to the early pass (the writer does every file)."""
    with monkeypatch.context() as m:
        m.setattr(sw.EarlyData, "file", lambda self, node: None)
        ref = tmp_path / "ref.sqfs"
        assert _build(src, ref, *extra) == 0
    return ref.read_bytes()


@pytest.mark.parametrize("extra", [[], ["-O", "compression=xz,always_fragments=true"], ["-O", "dedup=false,no_fragments=true,block_size=4096"]])
def test_the_early_pass_is_adopted_and_changes_no_byte(tmp_path, monkeypatch, adoptions, extra):
    _tree(tmp_path / "src")
    ref = _reference(tmp_path, tmp_path / "src", monkeypatch, *extra)
    adoptions.ahead = True
    out = tmp_path / "out.sqfs"
    assert _build(tmp_path / "src", out, *extra) == 0
    files = sum(1 for _ in os.walk(tmp_path / "src") for _ in _[2]) - 1  # big-link is big
    assert adoptions[-1] == (True, files - 1)  # the symlink is no file
    assert out.read_bytes() == ref


def test_a_file_dropped_after_the_walk_drops_the_early_work(tmp_path, monkeypatch, adoptions):
    _tree(tmp_path / "src")
    real_load = build.load_tree

    def load_tree(fs):  # as if a rule applied after the walk left a file out
        tree = real_load(fs)
        del tree.lookup("/d3").children["f00003"]
        return tree

    adoptions.ahead = True
    monkeypatch.setattr(build, "load_tree", load_tree)
    out = tmp_path / "out.sqfs"
    assert _build(tmp_path / "src", out) == 0
    assert adoptions[-1][0] is False and adoptions[-1][1] > 3
    monkeypatch.undo()
    os.unlink(tmp_path / "src" / "d3" / "f00003")
    assert out.read_bytes() == _reference(tmp_path, tmp_path / "src", monkeypatch)


def test_an_early_failure_is_met_again_by_the_writer(tmp_path, monkeypatch, adoptions):
    """A file that fails once (in the early pass) and reads fine the second time: the early
    work is dropped and the writer's own pass gives the usual image."""
    _tree(tmp_path / "src")
    ref = _reference(tmp_path, tmp_path / "src", monkeypatch)
    real = sw.DataWriter.add_file
    failed = []

    def add_file(self, node, fragments, seen):
        if threading.current_thread().name == "fstool-squashfs-early" and len(failed) == 0 \
                and node.where().endswith("/d2/f00009"):
            failed.append(node)
            raise OSError(5, "Input/output error", "/src/flaky")
        return real(self, node, fragments, seen)

    adoptions.ahead = True
    monkeypatch.setattr(sw.DataWriter, "add_file", add_file)
    out = tmp_path / "out.sqfs"
    assert _build(tmp_path / "src", out) == 0
    assert failed and adoptions[-1][0] is False
    assert out.read_bytes() == ref


def test_a_failure_after_the_walk_stops_the_early_pass(tmp_path, monkeypatch, capsys):
    _tree(tmp_path / "src")

    def check_tree(fmt, tree, where):
        raise CapacityError("uid 5000000000 does not fit", where=f"{where}: /d0/f00000")

    monkeypatch.setattr(build, "check_tree", check_tree)
    out = tmp_path / "out.sqfs"
    assert _build(tmp_path / "src", out) == 1  # and no early or pool thread is left
    assert capsys.readouterr().err.strip().splitlines() == [
        "fstool: error: -O: /d0/f00000: uid 5000000000 does not fit"]
    assert not out.exists()
