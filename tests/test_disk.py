"""The disk assembler: GPT and MBR disks from specs, checked by sgdisk, sfdisk and fdisk."""
from __future__ import annotations

import contextlib
import json
import os
import subprocess

import pytest

from conftest import assert_one_line_error, run_fstool, same_file

MiB = 1 << 20


def make_image(path, size, seed):
    """A prebuilt 'partition image': data at the start and the end, a hole between."""
    with open(path, "wb") as f:
        f.write(bytes([seed]) * 4096 + os.urandom(0) + f"image {seed}".encode())
        f.truncate(size)
        f.seek(size - 4096)
        f.write(bytes([seed ^ 0xFF]) * 4096)


def sfdisk_json(img):
    out = subprocess.run(["sfdisk", "--json", str(img)], capture_output=True, text=True, check=True).stdout
    return json.loads(out)["partitiontable"]


@contextlib.contextmanager
def as_device(img, ss):
    """The image as the tools should see it: the file itself for 512-byte sectors, a read-only
    loop device with 4096-byte logical sectors otherwise (sgdisk and sfdisk assume 512 on files)."""
    if ss == 512:
        yield str(img)
        return
    dev = subprocess.run(["losetup", "--find", "--show", "--read-only", "--sector-size", str(ss), str(img)],
                         capture_output=True, text=True, check=True).stdout.strip()
    try:
        yield dev
    finally:
        subprocess.run(["losetup", "-d", dev], check=True)


def sgdisk_ok(img):
    p = subprocess.run(["sgdisk", "-v", str(img)], capture_output=True, text=True)
    assert p.returncode == 0 and "No problems found" in p.stdout, p.stdout + p.stderr
    assert "Creating new GPT" not in p.stdout, p.stdout  # sgdisk found no table at all


GPT_SPEC = """
[image]
size = "{size}"
partition_table = "gpt"
uuid = "0f0e0d0c-0b0a-0908-0706-050403020100"
sector_size = {ss}

[[partitions]]
name = "esp"
type = "esp"
size = "8MiB"
image = "a.img"
attributes = ["required", "legacy-bios-bootable", 60]

[[partitions]]
name = "root"
type = "linux-root-x86-64"
image = "b.img"
uuid = "11111111-2222-3333-4444-555555555555"

[[partitions]]
name = "rest"
type = "linux-home"
size = "remaining"
"""


@pytest.mark.parametrize("ss", [512, 4096])
def test_gpt_disk_matches_spec(tmp_path, ss):
    make_image(tmp_path / "a.img", 3 * MiB, 1)
    make_image(tmp_path / "b.img", 5 * MiB + 3 * 4096, 2)
    (tmp_path / "disk.toml").write_text(GPT_SPEC.format(size="64MiB", ss=ss))
    run_fstool("build", "disk.toml", "-o", "disk.img", "--layout-json", "layout.json",
               cwd=tmp_path, check=True)
    img = tmp_path / "disk.img"
    assert img.stat().st_size == 64 * MiB
    with as_device(img, ss) as dev:
        sgdisk_ok(dev)
        t = sfdisk_json(dev)
        fdisk = subprocess.run(["fdisk", "-l", dev], capture_output=True, text=True, check=True).stdout
    assert t["label"] == "gpt" and t["id"].lower() == "0f0e0d0c-0b0a-0908-0706-050403020100"
    assert t.get("sectorsize", 512) == ss
    p1, p2, p3 = t["partitions"]
    assert p1["start"] * ss == 1 * MiB and p1["size"] * ss == 8 * MiB
    assert p1["type"].upper() == "C12A7328-F81F-11D2-BA4B-00A0C93EC93B" and p1["name"] == "esp"
    assert p1["attrs"] == "RequiredPartition LegacyBIOSBootable GUID:60"
    assert p2["start"] * ss == 9 * MiB and p2["size"] * ss == 5 * MiB + 3 * 4096
    assert p2["type"].upper() == "4F68BCE3-E8CD-4DB1-96E7-FBCAF984B709"
    assert p2["uuid"].lower() == "11111111-2222-3333-4444-555555555555"
    assert p3["start"] * ss == 15 * MiB and p3["type"].upper() == "933AC7E1-2EB4-4F13-B844-0E14E2AEF915"
    backup_gpt = ss + max(16384, ss)  # header sector + 128 x 128-byte entries
    assert (p3["start"] + p3["size"]) * ss <= 64 * MiB - backup_gpt
    layout = json.loads((tmp_path / "layout.json").read_text())
    assert [p["offset"] for p in layout["partitions"]] == [MiB, 9 * MiB, 15 * MiB]
    assert [p["uuid"] for p in layout["partitions"]][1] == "11111111-2222-3333-4444-555555555555"
    assert layout["partitions"][0]["uuid"].lower() == p1["uuid"].lower()
    # partition content is the image, byte for byte
    data = img.read_bytes()
    assert data[MiB:MiB + 3 * MiB] == (tmp_path / "a.img").read_bytes()
    assert data[9 * MiB:9 * MiB + p2["size"] * ss] == (tmp_path / "b.img").read_bytes()
    assert "EFI System" in fdisk and "Linux root (x86-64)" in fdisk


def test_gpt_disk_is_reproducible_and_sparse(tmp_path):
    make_image(tmp_path / "a.img", 3 * MiB, 1)
    make_image(tmp_path / "b.img", 5 * MiB, 2)
    spec = GPT_SPEC.format(size="8GiB", ss=512).replace('uuid = "0f0e0d0c-0b0a-0908-0706-050403020100"\n', "")
    (tmp_path / "disk.toml").write_text(spec)
    run_fstool("build", "disk.toml", "-o", "one.img", cwd=tmp_path, check=True)
    other = tmp_path / "elsewhere"
    other.mkdir()
    for n in ("a.img", "b.img", "disk.toml"):
        os.link(tmp_path / n, other / n)
    run_fstool("build", "disk.toml", "-o", "two.img", cwd=other, check=True)
    one, two = tmp_path / "one.img", other / "two.img"
    assert one.stat().st_size == 8 << 30
    assert same_file(one, two)
    assert one.stat().st_blocks * 512 < 1 * MiB  # an 8 GiB disk with a few KiB of data
    sgdisk_ok(one)


def test_auto_sized_disk(tmp_path):
    make_image(tmp_path / "a.img", 3 * MiB, 1)
    (tmp_path / "disk.toml").write_text('[image]\n[[partitions]]\nname = "only"\nimage = "a.img"\n'
                                        'headroom = "1MiB"\n')
    run_fstool("build", "disk.toml", "-o", "d.img", cwd=tmp_path, check=True)
    size = (tmp_path / "d.img").stat().st_size
    assert size == 1 * MiB + 4 * MiB + 33 * 512 or size == 6 * MiB  # aligned end + backup GPT
    sgdisk_ok(tmp_path / "d.img")
    t = sfdisk_json(tmp_path / "d.img")
    assert t["partitions"][0]["size"] * 512 == 4 * MiB


MBR_SPEC = """
[image]
size = "128MiB"
partition_table = "mbr"
disk_signature = "0x12345678"
{parts}
"""


def test_mbr_with_logical_partitions(tmp_path):
    make_image(tmp_path / "a.img", 2 * MiB, 3)
    parts = ['[[partitions]]\nname = "boot"\ntype = "fat32"\nsize = "16MiB"\nbootable = true\nimage = "a.img"']
    for i, t in enumerate(["linux", "linux-swap", "linux", "0x83", "linux"]):
        parts.append(f'[[partitions]]\nname = "p{i}"\ntype = "{t}"\nsize = "{8 + i}MiB"')
    (tmp_path / "disk.toml").write_text(MBR_SPEC.format(parts="\n".join(parts)))
    run_fstool("build", "disk.toml", "-o", "d.img", "--layout-json", "l.json", cwd=tmp_path, check=True)
    t = sfdisk_json(tmp_path / "d.img")
    assert t["label"] == "dos" and t["id"] == "0x12345678"
    nodes = [(p["node"].rsplit("img", 1)[1], p["type"], p["size"] * 512) for p in t["partitions"]]
    assert nodes[0] == ("1", "c", 16 * MiB)
    assert t["partitions"][0].get("bootable") is True
    assert nodes[1] == ("2", "83", 8 * MiB) and nodes[2] == ("3", "82", 9 * MiB)
    assert nodes[3][0] == "4" and nodes[3][1] in ("f", "5")  # the extended container
    assert [n[0] for n in nodes[4:]] == ["5", "6", "7"]
    assert [n[2] for n in nodes[4:]] == [10 * MiB, 11 * MiB, 12 * MiB]
    dump = subprocess.run(["sfdisk", "--dump", str(tmp_path / "d.img")], capture_output=True,
                          text=True, check=True).stdout
    assert "label: dos" in dump and "bootable" in dump
    layout = json.loads((tmp_path / "l.json").read_text())
    assert [p["index"] for p in layout["partitions"]] == [1, 2, 3, 5, 6, 7]
    with open(tmp_path / "d.img", "rb") as f:
        f.seek(MiB)
        assert f.read(2 * MiB) == (tmp_path / "a.img").read_bytes()


@pytest.mark.parametrize("spec, where, needle", [
    ('[image]\nsize = "4MiB"\n[[partitions]]\nsize = "8MiB"\n', "partitions[0]", "disk ends"),
    ('[image]\nsize = "4MiB"\n[[partitions]]\nsize = "1MiB"\ntype = "linux-rot"\n', "partitions[0].type", ""),
    ('[image]\nsize = "8MiB"\n[[partitions]]\nname = "' + "n" * 37 + '"\nsize = "1MiB"\n', "", "36"),
    ('[image]\n[[partitions]]\nimage = "missing.img"\n', "partitions[0].image", "missing.img"),
    ('[image]\nsize = "8MiB"\n[[partitions]]\nimage = "big.img"\nsize = "1MiB"\n', "partitions[0].size", "big.img"),
])
def test_disk_errors(tmp_path, spec, where, needle):
    with open(tmp_path / "big.img", "wb") as f:
        f.truncate(2 * MiB)
    (tmp_path / "disk.toml").write_text(spec)
    p = run_fstool("build", "disk.toml", "-o", "d.img", cwd=tmp_path)
    assert p.returncode != 0
    assert_one_line_error(p, p.returncode, "disk.toml" if where else "", where, needle)
    assert not (tmp_path / "d.img").exists()
    assert sorted(os.listdir(tmp_path)) == ["big.img", "disk.toml"]


def test_info_prints_the_table(tmp_path):
    make_image(tmp_path / "a.img", 3 * MiB, 1)
    make_image(tmp_path / "b.img", 2 * MiB, 2)
    (tmp_path / "disk.toml").write_text(GPT_SPEC.format(size="32MiB", ss=512))
    run_fstool("build", "disk.toml", "-o", "disk.img", cwd=tmp_path, check=True)
    p = run_fstool("info", "disk.img", cwd=tmp_path, check=True)
    assert "GPT" in p.stdout and "esp" in p.stdout and "11111111-2222-3333-4444-555555555555" in p.stdout
    assert "C12A7328-F81F-11D2-BA4B-00A0C93EC93B".lower() in p.stdout.lower()
    p = run_fstool("info", "disk.img:9", cwd=tmp_path)
    assert_one_line_error(p, 1, "no partition 9")
