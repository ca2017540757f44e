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
