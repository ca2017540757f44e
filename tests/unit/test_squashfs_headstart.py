"""squashfs head start: blocks compressed by a child while the tree loads are taken by the data
pass only while their input digests match, so the image is the bytes of a build without one:
when the child predicted every block, when the tree changed after it read it, when a result
is damaged, when it was stopped early, and in every fragment and dedupe mode."""
import os
import random
import subprocess

import pytest

import fstool.fs.squashfs.headstart as headstart
import fstool.fs.squashfs.writer as writer
from fstool.cli import main
from fstool.spec import FsSpec


def _tree(root, bs=4096):
    """Small files (fragments), files of blocks with a zero block and a tail, duplicates,
    hardlinks, holes, empty files, and names whose byte order is not their str order."""
    rng = random.Random(7)
    words = b"alpha beta gamma delta epsilon zeta eta theta iota kappa ".split()

    def text(n):
        return b" ".join(rng.choice(words) for _ in range(n // 4 + 1))[:n]

    for i in range(90):
        d = root / f"d{i % 3}" / (f"s{i % 4}" if i % 2 else "")
        d.mkdir(parents=True, exist_ok=True)
        (d / f"f{i:03d}").write_bytes(text(rng.randrange(0, 3000)))
    (root / "big").write_bytes(text(bs) + bytes(bs) + text(bs) + text(100))
    (root / "big-copy").write_bytes((root / "big").read_bytes())
    (root / "exact").write_bytes(text(bs))
    (root / "zeros").write_bytes(bytes(1000))
    (root / "d0" / "dup").write_bytes((root / "d0" / "f000").read_bytes())
    with open(root / "sparse", "wb") as f:
        f.write(text(500))
        f.truncate(5 * bs + 7)
    (root / "empty").write_bytes(b"")
    os.link(root / "d1" / "s1" / "f001", root / "hard")
    os.link(root / "big", root / "d2" / "big-hard")
    os.symlink("big", root / "link")
    os.mkfifo(root / "fifo")
    for name in (b"\xff-raw", "\uff21-wide".encode(), "z".encode(), "é".encode()):
        with open(os.path.join(os.fsencode(root), name), "wb") as f:
            f.write(text(700) + name)


@pytest.fixture
def record(monkeypatch):
    """A head start forced on (this process runs threads of its own), its child let to finish
    the whole tree, and the data pass's own compressions counted."""
    monkeypatch.setattr(headstart, "_may_fork", lambda: True)
    monkeypatch.setattr(headstart, "MIN_ENTRIES", 0)
    monkeypatch.setenv("FSTOOL_THREADS", "2")
    rec = {"compressed": 0, "taken": 0, "started": 0, "hook": None}
    real_harvest, real_compress, real_take = (headstart.HeadStart.harvest, writer.DataWriter._compress,
                                              headstart.Early.take)

    def harvest(self, wait=False):
        if self.pid:
            rec["started"] += 1
        results = real_harvest(self, wait=True)
        if rec["hook"] is not None and results:
            rec["hook"](results)
        return results

    def compress(self, data, early=None):
        rec["compressed"] += early is None
        return real_compress(self, data, early)

    def take(self, data):
        got = real_take(self, data)
        rec["taken"] += got is not None
        return got

    monkeypatch.setattr(headstart.HeadStart, "harvest", harvest)
    monkeypatch.setattr(writer.DataWriter, "_compress", compress)
    monkeypatch.setattr(headstart.Early, "take", take)
    return rec


def _build(src, out, *opts):
    args = ["create", "-q", "-t", "squashfs", str(src), "-o", str(out), "-O", "block_size=4096"]
    for o in opts:
        args += ["-O", o]
    assert main(args) == 0


def _plain(src, out, monkeypatch, *opts):
    with monkeypatch.context() as m:
        m.setattr(headstart, "_may_fork", lambda: False)
        _build(src, out, *opts)
    return out.read_bytes()


@pytest.mark.parametrize("opts", [(), ("compression=gzip",), ("no_fragments=true",),
                                  ("always_fragments=true",), ("dedup=false",),
                                  ("always_fragments=true", "dedup=false")])
def test_a_whole_head_start_is_every_block_and_the_same_bytes(tmp_path, monkeypatch, record, opts):
    _tree(tmp_path / "src")
    want = _plain(tmp_path / "src", tmp_path / "plain.sqfs", monkeypatch, *opts)
    record["compressed"] = 0
    _build(tmp_path / "src", tmp_path / "early.sqfs", *opts)
    assert record["started"] == 1
    assert (tmp_path / "early.sqfs").read_bytes() == want
    # the child predicted the data pass exactly: nothing was left to compress
    assert record["taken"] > 3 and record["compressed"] == 0, record


def test_the_image_checks_and_extracts(tmp_path, record):
    _tree(tmp_path / "src")
    _build(tmp_path / "src", tmp_path / "early.sqfs")
    assert record["taken"] > 3
    subprocess.run(["unsquashfs", "-n", "-d", str(tmp_path / "x"), str(tmp_path / "early.sqfs")],
                   check=True, capture_output=True)
    for rel in ("big", "sparse", "d0/dup", "hard", "\uff21-wide"):
        assert (tmp_path / "x" / rel).read_bytes() == (tmp_path / "src" / rel).read_bytes()


def test_a_file_changed_after_the_child_read_it_is_compressed_again(tmp_path, monkeypatch, record):
    src = tmp_path / "src"
    _tree(src)
    target = src / "d0" / "f000"
    old = target.read_bytes()
    new = bytes(reversed(old))
    assert new != old and len(new) > 100

    st = target.stat()

    def edit(_results):  # after the child read the tree, before the data pass reads it
        target.write_bytes(new)
        os.utime(target, ns=(st.st_atime_ns, st.st_mtime_ns))  # the walk saw the old time

    record["hook"] = edit
    _build(src, tmp_path / "early.sqfs")
    early = (tmp_path / "early.sqfs").read_bytes()
    assert record["taken"] > 0 and record["compressed"] > 0  # taken up to the edited file
    assert early == _plain(src, tmp_path / "plain.sqfs", monkeypatch)


def test_a_damaged_result_ends_the_taking_there(tmp_path, monkeypatch, record):
    _tree(tmp_path / "src")
    want = _plain(tmp_path / "src", tmp_path / "plain.sqfs", monkeypatch)

    def damage(results):
        digest, c = results[2]
        results[2] = (bytes(32), c)

    record["hook"] = damage
    _build(tmp_path / "src", tmp_path / "early.sqfs")
    assert record["taken"] == 2 and record["compressed"] > 0
    assert (tmp_path / "early.sqfs").read_bytes() == want


def test_a_child_stopped_at_once_changes_nothing(tmp_path, monkeypatch):
    _tree(tmp_path / "src")
    want = _plain(tmp_path / "src", tmp_path / "plain.sqfs", monkeypatch)
    monkeypatch.setattr(headstart, "_may_fork", lambda: True)
    monkeypatch.setattr(headstart, "MIN_ENTRIES", 0)
    monkeypatch.setenv("FSTOOL_THREADS", "2")
    _build(tmp_path / "src", tmp_path / "early.sqfs")  # harvest kills the child wherever it is
    assert (tmp_path / "early.sqfs").read_bytes() == want


def test_a_failed_build_leaves_no_child(tmp_path, record, capsys):
    src = tmp_path / "src"
    _tree(src)
    os.utime(src / "big", (1 << 33, 1 << 33))  # past what squashfs stores: check_tree refuses it
    assert main(["create", "-q", "-t", "squashfs", str(src), "-o", str(tmp_path / "x.sqfs")]) != 0
    assert "mtime" in capsys.readouterr().err
    assert record["started"] == 1
    with pytest.raises(ChildProcessError):
        os.waitpid(-1, os.WNOHANG)


def test_no_head_start_where_it_cannot_help(tmp_path, monkeypatch):
    _tree(tmp_path / "src")
    monkeypatch.setattr(headstart, "_may_fork", lambda: True)
    from fstool.build import parse_format_options

    def fs(*sources):
        f = FsSpec(type="squashfs", sources=[str(s) for s in sources])
        parse_format_options(f)
        return f

    monkeypatch.setattr(headstart, "MIN_ENTRIES", 0)
    monkeypatch.setenv("FSTOOL_THREADS", "1")
    assert headstart.start(fs(tmp_path / "src")) is None  # one core asked for
    monkeypatch.setenv("FSTOOL_THREADS", "2")
    assert headstart.start(fs(tmp_path / "src", tmp_path / "src")) is None  # layered sources
    assert headstart.start(fs(tmp_path / "src" / "big")) is None  # not a directory
    assert headstart.start(fs(tmp_path / "missing")) is None  # load_tree names it
    h = headstart.start(fs(tmp_path / "src"))
    assert h is not None
    assert h.harvest(wait=True) and h.harvest() == []


def test_a_cold_cache_stores_what_the_head_start_compressed(tmp_path, monkeypatch, record, capsys):
    """Blocks taken from the head start go through the cache as compressed ones do: a cold
    cache build stores every block, and a rebuild from that cache compresses none."""
    import re
    _tree(tmp_path / "src")
    want = _plain(tmp_path / "src", tmp_path / "plain.sqfs", monkeypatch)
    capsys.readouterr()
    record["compressed"] = 0

    def build(out):
        assert main(["create", "-v", "-t", "squashfs", str(tmp_path / "src"), "-o", str(out), "-O",
                     "block_size=4096", "--cache-dir", str(tmp_path / "cache")]) == 0
        line = [x for x in capsys.readouterr().err.splitlines() if "block cache" in x][0]
        return [int(n) for n in re.findall(r"(\d+) (?:hits|misses|stored)", line)]

    hits, misses, stored = build(tmp_path / "cold.sqfs")
    assert record["taken"] > 3 and hits == 0 and misses == stored == record["taken"]
    assert record["compressed"] == 0  # every block came from the head start, through the cache
    assert (tmp_path / "cold.sqfs").read_bytes() == want
    hits2, misses2, stored2 = build(tmp_path / "warm.sqfs")
    assert (hits2, misses2, stored2) == (stored, 0, 0)
    assert (tmp_path / "warm.sqfs").read_bytes() == want


def test_only_a_tree_of_min_entries_gets_one(tmp_path, monkeypatch):
    """A small tree loads in milliseconds, less than the fork would cost: the count stops as
    soon as MIN_ENTRIES are seen, also deep down, and gives up after 64 directories."""
    monkeypatch.setattr(headstart, "MIN_ENTRIES", 30)
    deep = tmp_path / "deep"
    d = deep
    for i in range(5):
        d = d / f"level{i}"
        d.mkdir(parents=True)
    for i in range(26):  # 5 directories + 26 files = 31 entries, the files 5 levels down
        (d / f"f{i}").write_bytes(b"x")
    assert headstart._large(str(deep))
    (d / "f0").unlink()
    (d / "f1").unlink()
    assert not headstart._large(str(deep))  # 29
    monkeypatch.setattr(headstart, "MIN_ENTRIES", 100)
    chain = d = tmp_path / "chain"
    for i in range(80):  # 80 nested directories, then 30 files: 110 entries
        d = d / "n"
    d.mkdir(parents=True)
    for i in range(30):
        (d / f"f{i}").write_bytes(b"x")
    assert not headstart._large(str(chain))  # 64 listings saw 64 entries
    assert headstart._large(str(chain), dirs=100)
