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


# --- a disk with a verity-protected root ----------------------------------------------------

def _extract(img, offset, size, dest):
    with open(img, "rb") as src, open(dest, "wb") as out:
        src.seek(offset)
        left = size
        while left:
            chunk = src.read(min(left, 1 << 20))
            out.write(chunk)
            left -= len(chunk)


VERITY_DISK = """
[image]
partition_table = "gpt"

[[partitions]]
name = "root"
type = "linux-root-x86-64"
verity = "data"
[partitions.filesystem]
type = "{fs}"
source = "rootfs"

[[partitions]]
name = "root-verity"
verity = "hash"
verity_data = "root"
"""


@pytest.mark.parametrize("fs", ["ext4", "squashfs"])
def test_disk_with_verity_partitions(tmp_path, fs):
    import json
    from conftest import run_fstool
    root = tmp_path / "rootfs" / "etc"
    root.mkdir(parents=True)
    (root / "os-release").write_text("ID=board\n")
    (tmp_path / "disk.toml").write_text(VERITY_DISK.format(fs=fs))
    run_fstool("build", "disk.toml", "-o", "disk.img", "--layout-json", "layout.json",
               "--roothash", "root.roothash", cwd=tmp_path, check=True)
    layout = json.loads((tmp_path / "layout.json").read_text())
    data, hsh = layout["partitions"]
    root_hash = data["verity"]["root_hash"]
    assert hsh["verity"]["root_hash"] == root_hash
    assert (tmp_path / "root.roothash").read_text().strip() == root_hash
    # systemd-repart's convention: the partition UUIDs are the root hash's two halves
    import uuid
    assert data["uuid"] == str(uuid.UUID(root_hash[:32]))
    assert hsh["uuid"] == str(uuid.UUID(root_hash[32:]))
    sf = json.loads(subprocess.run(["sfdisk", "--json", str(tmp_path / "disk.img")], capture_output=True,
                                   text=True, check=True).stdout)["partitiontable"]["partitions"]
    assert [p["uuid"].lower() for p in sf] == [data["uuid"], hsh["uuid"]]
    # the hash partition's type follows its data partition's (Discoverable Partitions)
    assert sf[1]["type"].upper() == "2C7357ED-EBD2-46D9-AEC1-23D437EC2BF5"
    assert data["size"] % 4096 == 0 and hsh["size"] >= hash_size(data["size"])
    _extract(tmp_path / "disk.img", data["offset"], data["size"], tmp_path / "data.img")
    _extract(tmp_path / "disk.img", hsh["offset"], hsh["size"], tmp_path / "hash.img")
    run("veritysetup", "verify", tmp_path / "data.img", tmp_path / "hash.img", root_hash)
    info = run_fstool("info", tmp_path / "disk.img", check=True).stdout
    assert f"partition 2: dm-verity hash tree (format 1, sha256, {data['size'] // 4096} data blocks" in info
    # reproducible: a second build gives the same root hash
    run_fstool("build", "disk.toml", "-o", "again.img", "--layout-json", "l2.json", cwd=tmp_path, check=True)
    assert json.loads((tmp_path / "l2.json").read_text())["partitions"][0]["verity"]["root_hash"] == root_hash


def test_disk_with_appended_verity(tmp_path):
    import json
    from conftest import run_fstool
    root = tmp_path / "rootfs"
    root.mkdir()
    (root / "hello").write_text("hi\n")
    (tmp_path / "disk.toml").write_text("""
[image]
partition_table = "gpt"
[[partitions]]
name = "usr"
type = "linux-usr-arm64"
verity = "append"
[partitions.filesystem]
type = "squashfs"
source = "rootfs"
""")
    run_fstool("build", "disk.toml", "-o", "disk.img", "--layout-json", "layout.json", cwd=tmp_path,
               check=True)
    part = json.loads((tmp_path / "layout.json").read_text())["partitions"][0]
    v = part["verity"]
    assert v["hash_offset"] % 4096 == 0 and v["hash_offset"] + v["hash_size"] <= part["size"]
    _extract(tmp_path / "disk.img", part["offset"], part["size"], tmp_path / "usr.img")
    run("veritysetup", "verify", tmp_path / "usr.img", tmp_path / "usr.img", v["root_hash"],
        f"--hash-offset={v['hash_offset']}")
    assert run_fstool("cat", f"{tmp_path / 'disk.img'}:1", "/hello").stdout == "hi\n"


def test_prebuilt_image_with_appended_verity(tmp_path):
    """An auto-sized partition holding a prebuilt image (what the Bazel rules write) grows
    to take the tree appended after the image."""
    import json
    from conftest import run_fstool
    root = tmp_path / "rootfs"
    root.mkdir()
    (root / "hello").write_text("hi\n")
    run_fstool("create", "-t", "squashfs", str(root), "-o", str(tmp_path / "usr.sqfs"), check=True)
    (tmp_path / "disk.toml").write_text('[image]\npartition_table = "gpt"\n[[partitions]]\nname = "usr"\n'
                                        'verity = "append"\nimage = "usr.sqfs"\n')
    run_fstool("build", "disk.toml", "-o", "disk.img", "--layout-json", "layout.json", "--roothash", "rh",
               cwd=tmp_path, check=True)
    part = json.loads((tmp_path / "layout.json").read_text())["partitions"][0]
    v = part["verity"]
    assert v["hash_offset"] >= (tmp_path / "usr.sqfs").stat().st_size
    assert v["hash_offset"] + v["hash_size"] <= part["size"]
    assert (tmp_path / "rh").read_text().strip() == v["root_hash"]
    _extract(tmp_path / "disk.img", part["offset"], part["size"], tmp_path / "usr.img")
    run("veritysetup", "verify", tmp_path / "usr.img", tmp_path / "usr.img", v["root_hash"],
        f"--hash-offset={v['hash_offset']}")


@pytest.mark.parametrize("parts, needle", [
    ('[[partitions]]\nname = "h"\nverity = "hash"\n', "no verity = \"data\" partition"),
    ('[[partitions]]\nname = "d"\nverity = "data"\nimage = "x.img"\n', "no verity = \"hash\" partition"),
    ('[[partitions]]\nname = "d"\nverity = "sideways"\nsize = "1MiB"\n', "sideways"),
    ('[[partitions]]\nname = "d"\nverity = "data"\nimage = "x.img"\n'
     '[[partitions]]\nname = "h"\nverity = "hash"\nverity_data = "x"\n', "'x'"),
    ('[[partitions]]\nname = "d"\nverity = "data"\nimage = "x.img"\nholes = ["0..512"]\n', "holes"),
])
def test_verity_spec_errors(tmp_path, parts, needle):
    from conftest import assert_one_line_error, run_fstool
    (tmp_path / "disk.toml").write_text('[image]\nsize = "16MiB"\n' + parts)
    p = run_fstool("build", "disk.toml", "-o", "d.img", cwd=tmp_path)
    assert_one_line_error(p, 2, needle)
