"""dm-verity hash trees: `veritysetup verify` accepts them, and `veritysetup format` with our
salt and UUID writes the very same bytes (so the superblock is as veritysetup writes it)."""
from __future__ import annotations

import os
import random
import subprocess

import pytest

from fstool.image import ImageFile
from fstool.verity import build, hash_size


def run(*cmd):
    p = subprocess.run(list(map(str, cmd)), capture_output=True, text=True)
    assert p.returncode == 0, f"{cmd}: {p.stdout}{p.stderr}"
    return p.stdout


def make_data(path, blocks, seed=0):
    rnd = random.Random(seed)
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o644)
    os.ftruncate(fd, blocks * 4096)
    os.pwrite(fd, rnd.randbytes(5000), 0)
    os.pwrite(fd, rnd.randbytes(100), blocks * 4096 - 100)
    return fd


# 1 block (root = the data block's digest), one hash block, exactly full, one more, 3 levels
@pytest.mark.parametrize("blocks", [1, 2, 128, 129, 16385])
def test_separate_hash_device_matches_veritysetup(tmp_path, blocks):
    data, hsh, ref = tmp_path / "data", tmp_path / "hash", tmp_path / "ref"
    fd = make_data(data, blocks)
    hf = os.open(hsh, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        info = build(fd, 0, blocks * 4096, ImageFile(hf), 0)
    finally:
        os.close(hf), os.close(fd)
    assert os.path.getsize(hsh) == info.hash_size == hash_size(blocks * 4096)
    run("veritysetup", "verify", data, hsh, info.root_hash.hex())
    out = run("veritysetup", "format", data, ref, f"--salt={info.salt.hex()}",
              f"--uuid={info.hash_uuid}")
    assert info.root_hash.hex() in out
    assert open(ref, "rb").read() == open(hsh, "rb").read()
    dump = run("veritysetup", "dump", hsh)
    assert f"Data blocks:     \t{blocks}" in dump and "sha256" in dump


def test_appended_tree_verifies(tmp_path):
    data = tmp_path / "data"
    fd = make_data(data, 300)
    try:
        info = build(fd, 0, 300 * 4096, ImageFile(fd), 300 * 4096)
    finally:
        os.close(fd)
    run("veritysetup", "verify", data, data, info.root_hash.hex(), f"--hash-offset={300 * 4096}")
    # any changed data byte is caught
    with open(data, "r+b") as f:
        f.seek(4096 * 7 + 3)
        f.write(b"X")
    p = subprocess.run(["veritysetup", "verify", data, data, info.root_hash.hex(),
                        f"--hash-offset={300 * 4096}"], capture_output=True, text=True)
    assert p.returncode != 0


def test_same_content_same_salt_and_root(tmp_path):
    roots = []
    for name in ("a", "b"):
        fd = make_data(tmp_path / name, 50, seed=5)
        hf = os.open(tmp_path / (name + ".h"), os.O_RDWR | os.O_CREAT, 0o644)
        roots.append(build(fd, 0, 50 * 4096, ImageFile(hf), 0))
        os.close(hf), os.close(fd)
    assert roots[0].root_hash == roots[1].root_hash and roots[0].salt == roots[1].salt
    fd = make_data(tmp_path / "c", 50, seed=6)
    hf = os.open(tmp_path / "c.h", os.O_RDWR | os.O_CREAT, 0o644)
    other = build(fd, 0, 50 * 4096, ImageFile(hf), 0)
    os.close(hf), os.close(fd)
    assert other.salt != roots[0].salt
    # systemd-repart's UUIDs: first and last 128 bits of the root hash
    r = roots[0]
    assert r.data_uuid.bytes == r.root_hash[:16] and r.hash_uuid.bytes == r.root_hash[16:]
