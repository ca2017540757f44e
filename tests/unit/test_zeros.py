"""fstool.zeros.content_segments against a brute-force reading: a block is data exactly when
one of its bytes is non-zero, whatever holes the host file has and however it is chunked."""
import os
import random

import pytest

import fstool.zeros as zeros
from fstool.tree import FileSource


def _blocks_with_data(data: bytes, bs: int) -> set[int]:
    return {b // bs for b in range(0, len(data), bs) if any(data[b:b + bs])}


def _blocks_of(segs, bs: int) -> set[int]:
    return {b for f, n, _ in segs for b in range(f // bs, (f + n - 1) // bs + 1)}


@pytest.mark.parametrize("seed", range(6))
def test_blocks_kept_are_the_non_zero_ones(tmp_path, monkeypatch, seed):
    rnd = random.Random(seed)
    path = tmp_path / "f"
    for _ in range(25):
        monkeypatch.setattr(zeros, "CHUNK", rnd.choice([4 << 20, 65536 + 1024, 8192 + 512]))
        monkeypatch.setattr(zeros, "SMALL", rnd.choice([0, 256 << 10]))  # the chunked path, or one read
        bs = rnd.choice([1024, 4096])
        parts = []
        for _ in range(rnd.randrange(1, 6)):
            k, n = rnd.random(), rnd.randrange(1, 20000)
            parts.append(rnd.randbytes(n) if k < 0.4 else bytes(n) if k < 0.6 else
                         ("hole", n) if k < 0.8 else bytes(n - 1) + b"\1")
        with open(path, "wb") as f:  # holes made with seek, zeros written: the same bytes
            for p in parts:
                if isinstance(p, tuple):
                    f.seek(p[1], 1)
                else:
                    f.write(p)
            f.truncate(f.tell())
        data = path.read_bytes()
        got = zeros.content_segments(FileSource(str(path), len(data)), bs)
        assert _blocks_of(got, bs) == _blocks_with_data(data, bs)
        covered = bytearray(len(data))
        for f, n, s in got:
            assert s == f
            covered[f:f + n] = b"\1" * n
        assert all(covered[i] for i, c in enumerate(data) if c)


def test_tar_member_offsets_and_read(tmp_path):
    path = tmp_path / "archive"
    body = os.urandom(5000) + bytes(9000) + b"tail"
    path.write_bytes(b"H" * 512 + body)
    src = FileSource(str(path), len(body), offset=512)
    segs = zeros.content_segments(src, 4096)
    assert segs == [(0, 8192, 512), (12288, len(body) - 12288, 512 + 12288)]
    assert src.read(14000, 100) == b"tail"


def _files(tmp_path, n, seed=0):
    rnd = random.Random(seed)
    out = []
    for i in range(n):
        p = tmp_path / f"f{i}"
        parts = [rnd.randbytes(rnd.randrange(1, 9000)) if rnd.random() < 0.5 else bytes(rnd.randrange(1, 9000))
                 for _ in range(rnd.randrange(1, 5))]
        p.write_bytes(b"".join(parts))
        out.append(FileSource(str(p), p.stat().st_size))
    return out


@pytest.fixture(params=["thread", "child"])
def helper(request, monkeypatch):
    """scan_ahead's helper: the thread, or the child process (forced: the test process runs
    threads of its own, and the trees here are small)."""
    monkeypatch.setattr(zeros, "_may_fork", lambda work: request.param == "child")
    return request.param


@pytest.mark.parametrize("order", ["forward", "backward", "every_other"])
def test_scan_ahead_gives_the_sequential_scans(tmp_path, order, helper):
    """Whichever thread scans a file, the writer gets what scanning it in order gives, in any
    order it asks (the thread starts from the end: "backward" takes only its results)."""
    srcs = _files(tmp_path, 300)
    want = {id(s): zeros.content_segments(s, 1024) for s in srcs}
    asked = {"forward": srcs, "backward": srcs[::-1], "every_other": srcs[::2] + srcs[1::2]}[order]
    with zeros.scan_ahead(srcs, 1024):
        got = {id(s): zeros.content_segments(s, 1024) for s in asked}
        other_bs = zeros.content_segments(srcs[5], 4096)  # another block size: scanned on the spot
    assert got == want
    assert other_bs == zeros.content_segments(srcs[5], 4096)


def test_scan_ahead_raises_a_files_error_when_the_writer_asks(tmp_path, helper):
    srcs = _files(tmp_path, 50)
    os.unlink(srcs[-3].path)  # the helper meets it first; the error waits
    with zeros.scan_ahead(srcs, 4096):
        for s in srcs[:-3]:
            zeros.content_segments(s, 4096)
        with pytest.raises(FileNotFoundError):
            zeros.content_segments(srcs[-3], 4096)


def test_scan_ahead_stops_when_the_block_fails(tmp_path, helper):
    srcs = _files(tmp_path, 200)
    with pytest.raises(RuntimeError):
        with zeros.scan_ahead(srcs, 4096):
            ahead = zeros._ahead.get()
            raise RuntimeError("the writer failed")
    assert not [t for t in __import__("threading").enumerate() if t.name == "fstool-scan"]
    assert zeros._ahead.get() is None
    if helper == "child":  # killed and reaped, its pipe closed
        assert ahead.child.pid == 0 and ahead.child.rfd == -1


def test_the_childs_scans_are_kept_by_the_worker(tmp_path, monkeypatch):
    """Under the persistent worker, what the child scanned is remembered by digest like
    the writer's own scans."""
    monkeypatch.setattr(zeros, "_may_fork", lambda work: True)
    srcs = _files(tmp_path, 60)
    memory = zeros.ScanMemory()
    digests = {os.path.abspath(s.path): f"d{i}" for i, s in enumerate(srcs)}
    with zeros.known_digests(digests, memory):
        with zeros.scan_ahead(srcs, 4096):
            first = [zeros.content_segments(s, 4096) for s in srcs]
        assert len(memory.scans) == 60
        for s in srcs:
            os.unlink(s.path)  # a scan kept is not read again
        assert [zeros.content_segments(s, 4096) for s in srcs] == first


def test_scan_ahead_answers_a_source_asked_for_twice(tmp_path, helper):
    """One source under two entries is asked for twice: the second answer is a scan of its
    own, not a wait for a result already handed out."""
    import threading
    srcs = _files(tmp_path, 40)
    out = {}

    def run():
        with zeros.scan_ahead(srcs + srcs[-5:], 4096):
            out["first"] = [zeros.content_segments(s, 4096) for s in srcs]
            out["again"] = [zeros.content_segments(s, 4096) for s in srcs[-5:]]

    t = threading.Thread(target=run, daemon=True)  # a hang fails the test, not the suite
    t.start()
    t.join(30)
    assert not t.is_alive(), "content_segments waited forever for a scan already handed out"
    assert out["again"] == out["first"][-5:]


def test_a_file_that_shrank_is_one_error_naming_it(tmp_path):
    """The source said more bytes than the file holds when read whole (the small-file scan,
    FileSource.read): one error naming the file and what it wanted. (Readers that follow the
    host's data map see the missing end as a hole.)"""
    from fstool.errors import InputError
    p = tmp_path / "f"
    p.write_bytes(b"x" * 5000)
    src = FileSource(str(p), 6000)
    with pytest.raises(InputError, match=r"file shrank while reading \(wanted 6000 bytes at 0\)") as e:
        zeros.content_segments(src, 4096)  # one read of a small file
    assert str(p) in str(e.value)
    with pytest.raises(InputError, match=r"wanted 1500 bytes at 4500\)"):
        src.read(4500, 1500)
