"""`fstool add` / `fstool rm`: in-place edits of FAT volumes (bare or a disk's partition);
fsck.vfat clean after each, mtools sees the change, the other files stay byte for byte."""
from __future__ import annotations

import os
import subprocess

import pytest

from conftest import assert_one_line_error, run_fstool

pytestmark = pytest.mark.slow
MiB = 1 << 20


def fsck_clean(img):
    p = subprocess.run(["fsck.vfat", "-n", str(img)], capture_output=True, text=True)
    assert p.returncode == 0 and "differ" not in p.stdout, p.stdout + p.stderr


def mdir(img, path="::/"):
    return subprocess.run(["mdir", "-i", str(img), "-b", "-/", path], capture_output=True,
                          text=True, check=True).stdout


@pytest.fixture
def trees(tmp_path):
    base = tmp_path / "base"
    (base / "EFI" / "BOOT").mkdir(parents=True)
    (base / "EFI" / "BOOT" / "BOOTX64.EFI").write_bytes(os.urandom(70000))
    (base / "config.txt").write_text("arm_64bit=1\n")
    add = tmp_path / "add"
    (add / "overlays").mkdir(parents=True)
    (add / "overlays" / "a-long-overlay-name.dtbo").write_bytes(os.urandom(5000))
    (add / "cmdline.txt").write_text("console=serial0\n")
    for i in range(12):  # 36+ slots: grows a directory past one cluster of 512 bytes
        (add / "overlays" / f"extra-overlay-number-{i:03d}.dtbo").write_bytes(b"x" * i)
    return base, add


@pytest.mark.parametrize("fs_type, size", [("fat12", "4MiB"), ("fat16", "32MiB"),
                                           ("fat32", "40MiB")])
def test_add_and_rm_in_place(tmp_path, trees, fs_type, size):
    base, add = trees
    img = tmp_path / "v.img"
    run_fstool("create", "-t", fs_type, base, "-o", img, "--size", size, check=True)
    before = {p: run_fstool("cat", img, p, text_output=False, check=True).stdout
              for p in ("/config.txt", "/EFI/BOOT/BOOTX64.EFI")}
    run_fstool("add", img, add, "/boot", check=True)          # a tree, to a new name
    run_fstool("add", img, add / "cmdline.txt", "/", check=True)  # a file, into a directory
    fsck_clean(img)
    listing = mdir(img, "::/boot/overlays")
    assert "a-long-overlay-name.dtbo" in listing and "extra-overlay-number-011.dtbo" in listing
    got = subprocess.run(["mtype", "-i", str(img), "::/boot/overlays/a-long-overlay-name.dtbo"],
                         capture_output=True, check=True).stdout
    assert got == (add / "overlays" / "a-long-overlay-name.dtbo").read_bytes()
    assert run_fstool("cat", img, "/cmdline.txt", check=True).stdout == "console=serial0\n"
    for p, data in before.items():
        assert run_fstool("cat", img, p, text_output=False, check=True).stdout == data
    # rm: files, then the emptied directories; a non-empty directory is refused
    p = run_fstool("rm", img, "/boot")
    assert_one_line_error(p, 1, "/boot", "not empty")
    run_fstool("rm", img, "/boot/cmdline.txt", check=True)
    for f in sorted(os.listdir(add / "overlays")):
        run_fstool("rm", "-q", img, f"/boot/overlays/{f}", check=True)
    run_fstool("rm", img, "/boot/overlays", check=True)
    run_fstool("rm", img, "/boot", check=True)
    fsck_clean(img)
    assert "boot" not in mdir(img) and "cmdline.txt" in mdir(img)
    for p, data in before.items():
        assert run_fstool("cat", img, p, text_output=False, check=True).stdout == data


def test_edit_a_partition_and_errors(tmp_path, trees):
    base, add = trees
    run_fstool("create", "-t", "fat", base, "-o", tmp_path / "esp.img", "--size", "8MiB", check=True)
    (tmp_path / "d.toml").write_text('[image]\npartition_table = "mbr"\n[[partitions]]\n'
                                     'name = "boot"\nimage = "esp.img"\n')
    run_fstool("build", "d.toml", "-o", "disk.img", cwd=tmp_path, check=True)
    disk = tmp_path / "disk.img"
    run_fstool("add", f"{disk}:1", add / "cmdline.txt", "/cmdline.txt", check=True)
    assert run_fstool("cat", f"{disk}:1", "/cmdline.txt", check=True).stdout == "console=serial0\n"
    run_fstool("rm", f"{disk}:1", "/config.txt", check=True)
    part = tmp_path / "part.img"
    with open(disk, "rb") as f:
        f.seek(MiB)
        part.write_bytes(f.read(8 * MiB))
    fsck_clean(part)
    p = run_fstool("add", f"{disk}:1", add / "cmdline.txt", "/CMDLINE.TXT")
    assert_one_line_error(p, 1, "already exists")
    p = run_fstool("rm", f"{disk}:1", "/nothing")
    assert_one_line_error(p, 1, "/nothing", "no such file")
    run_fstool("create", "-t", "squashfs", base, "-o", tmp_path / "s.sqfs", check=True)
    p = run_fstool("rm", tmp_path / "s.sqfs", "/config.txt")
    assert_one_line_error(p, 2, "not supported", "repack")
