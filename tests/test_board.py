"""Board layouts modelled on Buildroot boards (written here, not copied): raw blobs at fixed
offsets, moved GPT arrays, hybrid MBRs, holes, fill. Checked with sfdisk -J, sgdisk -v, fdisk and
cmp of every blob at its offset."""
from __future__ import annotations

import json
import os
import random
import struct
import subprocess

import pytest

from conftest import assert_one_line_error, run_fstool

KiB, MiB = 1 << 10, 1 << 20


def blob(path, size, seed):
    """A bootloader-like blob: random bytes (no zeros runs), so a misplaced byte shows."""
    data = random.Random(seed).randbytes(size)
    path.write_bytes(data)
    return data


def cmp_at(blob_path, img, offset, skip=()):
    """`cmp` the blob against the image at offset (skip: (start, end) ranges of the blob, its holes)."""
    size = os.path.getsize(blob_path)
    cuts = [0] + [x for h in skip for x in h] + [size]
    for a, b in zip(cuts[::2], cuts[1::2]):
        if a == b:
            continue
        p = subprocess.run(["cmp", "-n", str(b - a), f"--ignore-initial={a}:{offset + a}",
                            str(blob_path), str(img)], capture_output=True, text=True)
        assert p.returncode == 0, p.stdout + p.stderr


def sfdisk_json(img):
    out = subprocess.run(["sfdisk", "--json", str(img)], capture_output=True, text=True, check=True).stdout
    return json.loads(out)["partitiontable"]


def sgdisk_ok(img):
    p = subprocess.run(["sgdisk", "-v", str(img)], capture_output=True, text=True)
    assert p.returncode == 0 and "No problems found" in p.stdout, p.stdout + p.stderr


def build(tmp_path, spec, *args):
    (tmp_path / "disk.toml").write_text(spec)
    return run_fstool("build", "disk.toml", "-o", "disk.img", "--layout-json", "layout.json", *args,
                      cwd=tmp_path)


def built(tmp_path, spec, *args):
    p = build(tmp_path, spec, *args)
    assert p.returncode == 0, p.stderr
    return tmp_path / "disk.img"


def rootfs(tmp_path):
    root = tmp_path / "rootfs"
    (root / "etc").mkdir(parents=True, exist_ok=True)
    (root / "etc" / "hostname").write_text("board\n")
    return root


ROCKCHIP = """
[image]
size = "64MiB"
partition_table = "gpt"

[[partitions]]
name = "u-boot"
in_partition_table = false
image = "u-boot-rockchip.bin"
offset = "32KiB"

[[partitions]]
name = "rootfs"
type = "linux"
offset = "16MiB"
[partitions.filesystem]
type = "ext4"
source = "rootfs"
"""


def test_rockchip_uboot_at_32k(tmp_path):
    blob(tmp_path / "u-boot-rockchip.bin", 900 * KiB + 17, 1)
    rootfs(tmp_path)
    img = built(tmp_path, ROCKCHIP)
    sgdisk_ok(img)
    t = sfdisk_json(img)
    assert t["label"] == "gpt" and len(t["partitions"]) == 1
    p = t["partitions"][0]
    assert p["start"] * 512 == 16 * MiB
    # the first usable LBA lies after the blob that follows the entry array (as genimage)
    assert t["firstlba"] * 512 >= 32 * KiB + 900 * KiB + 17
    cmp_at(tmp_path / "u-boot-rockchip.bin", img, 32 * KiB)
    layout = json.loads((tmp_path / "layout.json").read_text())
    blobs = [b for b in layout["blobs"]]
    assert blobs == [{"name": "u-boot", "offset": 32 * KiB, "size": 900 * KiB + 17, "holes": []}]
    assert run_fstool("cat", f"{img}:1", "/etc/hostname").stdout == "board\n"


def test_allwinner_uboot_at_8k_needs_gpt_moved(tmp_path):
    blob(tmp_path / "u-boot-sunxi-with-spl.bin", 600 * KiB, 2)
    spec = """
[image]
size = "32MiB"
partition_table = "gpt"
{extra}
[[partitions]]
name = "u-boot"
in_partition_table = false
image = "u-boot-sunxi-with-spl.bin"
offset = "8KiB"

[[partitions]]
name = "boot"
type = "esp"
size = "8MiB"
offset = "2MiB"
"""
    p = build(tmp_path, spec.format(extra=""))
    assert_one_line_error(p, 2, "blob u-boot (bytes 8192..622592)",
                          "the primary GPT entry array (bytes 1024..17408)")
    assert not (tmp_path / "disk.img").exists()
    img = built(tmp_path, spec.format(extra='gpt_location = "1MiB"'))
    sgdisk_ok(img)
    t = sfdisk_json(img)
    assert t["partitions"][0]["start"] * 512 == 2 * MiB
    hdr = img.read_bytes()[512:512 + 92]
    assert hdr[:8] == b"EFI PART"
    assert struct.unpack_from("<Q", hdr, 72)[0] == MiB // 512  # entry array LBA
    assert struct.unpack_from("<Q", hdr, 40)[0] == (MiB + 16 * KiB) // 512  # first usable
    cmp_at(tmp_path / "u-boot-sunxi-with-spl.bin", img, 8 * KiB)


def test_allwinner_mbr(tmp_path):
    blob(tmp_path / "u-boot-sunxi-with-spl.bin", 500 * KiB, 3)
    rootfs(tmp_path)
    img = built(tmp_path, """
[image]
partition_table = "mbr"
disk_signature = "0x0badcafe"

[[partitions]]
name = "u-boot"
in_partition_table = false
image = "u-boot-sunxi-with-spl.bin"
offset = "8KiB"

[[partitions]]
name = "boot"
type = "0x0c"
bootable = true
offset = "1MiB"
size = "16MiB"
[partitions.filesystem]
type = "fat"
source = "rootfs"

[[partitions]]
name = "rootfs"
type = "0x83"
[partitions.filesystem]
type = "ext4"
source = "rootfs"
""")
    t = sfdisk_json(img)
    assert t["label"] == "dos" and t["id"] == "0x0badcafe"
    a, b = t["partitions"]
    assert a["start"] * 512 == MiB and a["type"] == "c" and a.get("bootable") is True
    assert b["start"] * 512 == 17 * MiB and b["type"] == "83"
    cmp_at(tmp_path / "u-boot-sunxi-with-spl.bin", img, 8 * KiB)
    r = run_fstool("cat", f"{img}:2", "/etc/hostname", cwd=tmp_path)
    assert r.stdout == "board\n"


def test_imx8m_flash_bin_at_33k(tmp_path):
    blob(tmp_path / "flash.bin", 1500 * KiB + 3, 4)
    img = built(tmp_path, """
[image]
size = "32MiB"
partition_table = "mbr"
alignment = "4MiB"

[[partitions]]
name = "imx-boot"
in_partition_table = false
image = "flash.bin"
offset = "33KiB"

[[partitions]]
name = "boot"
type = "0x0c"
size = "8MiB"
""")
    t = sfdisk_json(img)
    # after the blob, at the next 4 MiB boundary
    assert t["partitions"][0]["start"] * 512 == 4 * MiB
    cmp_at(tmp_path / "flash.bin", img, 33 * KiB)


def test_amlogic_bl1_at_0_with_mbr_hole(tmp_path):
    data = blob(tmp_path / "bl1.bin", 64 * KiB, 5)
    spec = """
[image]
size = "16MiB"
partition_table = "mbr"
disk_signature = "0x11223344"

[[partitions]]
name = "bl1"
in_partition_table = false
image = "bl1.bin"
offset = 0
{holes}

[[partitions]]
name = "data"
type = "0x83"
offset = "1MiB"
size = "4MiB"
"""
    p = build(tmp_path, spec.format(holes=""))
    assert_one_line_error(p, 2, "blob bl1 (bytes 0..65536)", "the MBR (bytes 440..512)",
                          'holes = ["440..512"]')
    img = built(tmp_path, spec.format(holes='holes = ["440..512"]'))
    t = sfdisk_json(img)
    assert t["id"] == "0x11223344" and t["partitions"][0]["start"] * 512 == MiB
    cmp_at(tmp_path / "bl1.bin", img, 0, skip=[(440, 512)])
    raw = img.read_bytes()
    assert raw[:440] == data[:440] and raw[510:512] == b"\x55\xaa"
    # genimage's spelling of holes reads too
    built(tmp_path, spec.format(holes='holes = ["(440; 512)"]'))


def test_raspberry_pi_mbr(tmp_path):
    root = rootfs(tmp_path)
    boot = tmp_path / "boot"
    boot.mkdir()
    (boot / "config.txt").write_text("arm_64bit=1\n")
    img = built(tmp_path, """
[image]
partition_table = "mbr"
alignment = "4MiB"

[[partitions]]
name = "boot"
type = "0x0c"
bootable = true
size = "32MiB"
[partitions.filesystem]
type = "fat"
source = "boot"

[[partitions]]
name = "rootfs"
type = "0x83"
[partitions.filesystem]
type = "ext4"
source = "rootfs"
""")
    t = sfdisk_json(img)
    a, b = t["partitions"]
    assert (a["start"] * 512, a["type"], a.get("bootable")) == (4 * MiB, "c", True)
    assert b["start"] * 512 == 36 * MiB and b["type"] == "83"
    assert run_fstool("cat", f"{img}:1", "/config.txt").stdout == "arm_64bit=1\n"
    assert root.exists()


def test_hybrid_mbr(tmp_path):
    img = built(tmp_path, """
[image]
size = "64MiB"
partition_table = "hybrid"
disk_signature = "0xcafef00d"

[[partitions]]
name = "boot"
type = "esp"
mbr_type = "0x0c"
bootable = true
size = "16MiB"

[[partitions]]
name = "rootfs"
type = "linux"
mbr_type = "0x83"
size = "16MiB"

[[partitions]]
name = "data"
type = "linux-home"
size = "8MiB"
""")
    sgdisk_ok(img)
    t = sfdisk_json(img)
    assert t["label"] == "gpt" and len(t["partitions"]) == 3
    mbr = img.read_bytes()[:512]
    entries = [struct.unpack_from("<B3sB3sII", mbr, 446 + 16 * i) for i in range(4)]
    assert [(e[0], e[2], e[4] * 512, e[5] * 512) for e in entries[:2]] == [
        (0x80, 0x0C, MiB, 16 * MiB), (0, 0x83, 17 * MiB, 16 * MiB)]
    assert entries[2][2] == 0xEE and entries[2][4] == 1 and entries[2][5] == 33  # header + array
    assert entries[3][2] == 0
    fd = subprocess.run(["fdisk", "-l", "-t", "dos", str(img)], capture_output=True, text=True)
    assert "Disk identifier: 0xcafef00d" in fd.stdout
    assert fd.returncode == 0 and "W95 FAT32 (LBA)" in fd.stdout and " ee GPT" in fd.stdout
    gd = subprocess.run(["gdisk", "-l", str(img)], capture_output=True, text=True, input="")
    assert "hybrid" in gd.stdout.lower()


def test_fill_and_entry_count(tmp_path):
    img = built(tmp_path, """
[image]
size = "8MiB"
partition_table = "gpt"
fill = true
gpt_entries = 32

[[partitions]]
name = "a"
size = "2MiB"
fill = true
""")
    sgdisk_ok(img)
    fd = os.open(img, os.O_RDONLY)
    try:
        # the partition (1..3 MiB) and the tail are data; the gap before it may stay a hole
        assert os.lseek(fd, MiB, os.SEEK_DATA) == MiB
        assert os.lseek(fd, MiB, os.SEEK_HOLE) == os.path.getsize(img)
    finally:
        os.close(fd)
    hdr = img.read_bytes()[512:512 + 92]
    assert struct.unpack_from("<I", hdr, 80)[0] == 32


@pytest.mark.parametrize("spec, needles", [
    # two partitions at the same place
    ('[[partitions]]\nname = "a"\noffset = "1MiB"\nsize = "2MiB"\n'
     '[[partitions]]\nname = "b"\noffset = "2MiB"\nsize = "1MiB"\n',
     ["partition 1 (a) (bytes 1048576..3145728)", "partition 2 (b) (bytes 2097152..3145728)"]),
    # a blob over a partition
    ('[[partitions]]\nname = "a"\noffset = "1MiB"\nsize = "2MiB"\n'
     '[[partitions]]\nname = "spl"\nin_partition_table = false\nimage = "x.bin"\noffset = "2MiB"\n',
     ["blob spl (bytes 2097152..2162688)", "partition 1 (a)"]),
    # a partition over the backup GPT
    ('[[partitions]]\nname = "a"\noffset = "15MiB"\nsize = "1MiB"\n',
     ["partition 1 (a) (bytes 15728640..16777216)", "the backup GPT entry array"]),
    # a partition before the GPT's first usable LBA
    ('[[partitions]]\nname = "a"\noffset = "8KiB"\nsize = "1MiB"\n', ["the primary GPT entry array"]),
    ('[[partitions]]\nname = "a"\noffset = "1000"\nsize = "1MiB"\n', ["multiple of the sector size"]),
    ('[[partitions]]\nname = "s"\nin_partition_table = false\nsize = "1MiB"\n', ["needs an image"]),
    ('[[partitions]]\nname = "s"\nin_partition_table = false\nimage = "x.bin"\ntype = "linux"\n',
     ["'type'"]),
    ('[[partitions]]\nname = "s"\nsize = "1MiB"\nholes = ["512..440"]\n', ["empty"]),
])
def test_overlap_and_layout_errors(tmp_path, spec, needles):
    blob(tmp_path / "x.bin", 64 * KiB, 9)
    p = build(tmp_path, '[image]\nsize = "16MiB"\npartition_table = "gpt"\n' + spec)
    assert_one_line_error(p, 2, *needles)
    assert not (tmp_path / "disk.img").exists()


# --- the overlap rules on their own ---------------------------------------------------------

def test_overlap_rules():
    from fstool.errors import SpecError
    from fstool.part.overlap import Piece, check_overlaps, parse_holes
    assert parse_holes(["440..512", "(1K; 2K)", [4096, 8192]], "h") == [(440, 512), (1024, 2048),
                                                                          (4096, 8192)]
    for bad in (["512..440"], ["440-512"], "440..512", [[1]]):
        with pytest.raises(SpecError):
            parse_holes(bad, "h")
    mbr = Piece("the MBR", 440, 512)
    # touching is not overlapping
    check_overlaps([Piece("a", 0, 440), mbr, Piece("b", 512, 1024)])
    # a hole must cover the whole shared range: 440..500 leaves 500..512
    with pytest.raises(SpecError, match="at bytes 500..512"):
        check_overlaps([Piece("blob x", 0, 4096, [(440, 500)], blob=True), mbr])
    # holes on either side count; two holes together may cover it
    check_overlaps([Piece("blob x", 0, 4096, [(440, 480)], blob=True), Piece("m", 440, 512, [(480, 512)])])
    # every pair is checked, not only neighbours
    with pytest.raises(SpecError, match="big .* overlaps .*c"):
        check_overlaps([Piece("big", 0, 100), Piece("b", 0, 10, [(0, 10)]), Piece("c", 50, 60)])
