"""The Rust fstool's spec semantics: paths against the working directory, symlinked and
layered sources, images and partitions as sources, labels, FAT types, dropped entries."""
from __future__ import annotations

import os
import shutil
import stat
import subprocess
import tarfile

import pytest

from conftest import assert_one_line_error, loop_mount, run_fstool
from treegen import describe

MiB = 1 << 20
T = 1_700_000_000


def small_tree(root, *, devices=True):
    """Every kind of entry, a few KiB: files, hardlinks, symlinks, devices, a fifo, xattrs."""
    os.makedirs(os.path.join(root, "etc", "deep"))
    def w(rel, data, mode=0o644):
        p = os.path.join(root, rel)
        with open(p, "wb") as f:
            f.write(data)
        os.chmod(p, mode)
    w("etc/app.conf", b"mode=on\n")
    w("etc/deep/leaf", b"leaf\n" * 1000, 0o600)
    w("run.sh", b"#!/bin/sh\n", 0o4755)
    w("empty", b"")
    with open(os.path.join(root, "holey"), "wb") as f:
        f.write(b"start")
        f.seek(3 * MiB)
        f.write(b"end")
    os.link(os.path.join(root, "run.sh"), os.path.join(root, "etc", "run-link"))
    os.symlink("etc/app.conf", os.path.join(root, "conf"))
    os.chown(os.path.join(root, "etc", "deep"), 42, 43)
    os.chown(os.path.join(root, "etc", "app.conf"), 1000, 100)
    os.setxattr(os.path.join(root, "etc", "app.conf"), "user.note", b"hello")
    if devices:
        os.mknod(os.path.join(root, "null"), 0o666 | stat.S_IFCHR, os.makedev(1, 3))
        os.mknod(os.path.join(root, "sda"), 0o660 | stat.S_IFBLK, os.makedev(8, 0))
        os.mkfifo(os.path.join(root, "fifo"))
    for dirpath, dirnames, filenames in os.walk(root):
        for n in dirnames + filenames:
            os.utime(os.path.join(dirpath, n), (T, T), follow_symlinks=False)
    os.utime(root, (T, T))


def checkout(tmp_path):
    """A checkout-root-like directory: examples/ beside rootfs/."""
    (tmp_path / "examples").mkdir()
    small_tree(str(tmp_path / "rootfs"))
    return tmp_path


def fsck_ext(img):
    p = subprocess.run(["e2fsck", "-fn", str(img)], capture_output=True, text=True)
    assert p.returncode == 0, p.stdout + p.stderr


def fsck_fat(img):
    p = subprocess.run(["fsck.vfat", "-n", str(img)], capture_output=True, text=True)
    assert p.returncode == 0, p.stdout + p.stderr


# -- step 1: paths and sources -------------------------------------------------------------

def test_relative_source_resolves_against_the_working_directory(tmp_path):
    root = checkout(tmp_path)
    (root / "examples" / "bare.toml").write_text('[filesystem]\ntype = "ext4"\nsource = "./rootfs"\n')
    run_fstool("build", "examples/bare.toml", "-o", "out.img", cwd=root, check=True)
    fsck_ext(root / "out.img")
    assert "app.conf" in run_fstool("ls", root / "out.img", "/etc", check=True).stdout
    # from inside examples/ the same spec looks in examples/: one line naming where it looked
    p = run_fstool("build", "bare.toml", "-o", "x.img", cwd=root / "examples")
    assert_one_line_error(p, 1, "bare.toml", "filesystem.source", str(root / "examples"),
                          "working directory")
    # a spec whose path only exists beside it: the error says so
    (root / "examples" / "tree").mkdir()
    (root / "examples" / "beside.toml").write_text('[filesystem]\ntype = "ext4"\nsource = "tree"\n')
    p = run_fstool("build", "examples/beside.toml", "-o", "x.img", cwd=root)
    assert_one_line_error(p, 1, str(root / "tree"), "exists beside the spec as examples/tree")
    assert not (root / "x.img").exists()


def test_relative_to_spec_and_json_specs(tmp_path):
    root = checkout(tmp_path)
    shutil.move(str(root / "rootfs"), str(root / "examples" / "rootfs"))
    (root / "examples" / "s.toml").write_text(
        'relative_to = "spec"\n[filesystem]\ntype = "squashfs"\nsource = "rootfs"\n')
    (root / "examples" / "s.json").write_text('{"filesystem": {"type": "squashfs", "source": "rootfs"}}')
    run_fstool("build", "examples/s.toml", "-o", "a.sqfs", cwd=root, check=True)
    run_fstool("build", "examples/s.json", "-o", "b.sqfs", cwd=root, check=True)
    assert (root / "a.sqfs").read_bytes() != b""
    (root / "examples" / "bad.toml").write_text('relative_to = "here"\n[filesystem]\ntype = "ext4"\n')
    p = run_fstool("build", "examples/bad.toml", "-o", "x.img", cwd=root)
    assert_one_line_error(p, 2, "relative_to", "\"cwd\"")


def test_partition_image_and_device_table_resolve_against_cwd(tmp_path):
    root = checkout(tmp_path)
    run_fstool("create", "-t", "fat", "rootfs/etc", "-o", "esp.img", cwd=root, check=True)
    (root / "devs.txt").write_text("/dev/console c 600 0 0 5 1 0 0 -\n")
    (root / "examples" / "d.toml").write_text(
        '[image]\n[[partitions]]\nname = "esp"\nimage = "esp.img"\n'
        '[[partitions]]\nname = "root"\n[partitions.filesystem]\ntype = "ext4"\n'
        'device_table = "devs.txt"\n')
    run_fstool("build", "examples/d.toml", "-o", "d.img", cwd=root, check=True)
    assert "console" in run_fstool("ls", f"{root / 'd.img'}:2", "/dev", check=True).stdout
    p = run_fstool("build", "d.toml", "-o", "d.img", cwd=root / "examples")
    assert_one_line_error(p, 1, "partitions[0] (esp).image", "esp.img", str(root / "examples"))


def test_source_symlink_to_dir_and_archive_is_followed_at_the_top_only(tmp_path):
    root = checkout(tmp_path)
    os.symlink("rootfs", root / "current")
    with tarfile.open(root / "base.tar", "w") as t:
        t.add(root / "rootfs" / "etc", arcname="etc")
    os.symlink("base.tar", root / "latest.tar")
    run_fstool("create", "-t", "ext4", "current", "-o", "a.img", cwd=root, check=True)
    (root / "s.toml").write_text('[filesystem]\ntype = "ext4"\nsource = ["latest.tar", "current"]\n')
    run_fstool("build", "s.toml", "-o", "b.img", cwd=root, check=True)
    for img in ("a.img", "b.img"):
        fsck_ext(root / img)
        out = run_fstool("ls", root / img, "/", check=True).stdout
        assert "/conf -> etc/app.conf" in out  # the symlink inside stays a symlink


def test_plus_layers_with_whiteouts(tmp_path):
    root = checkout(tmp_path)
    with tarfile.open(root / "base.tar", "w") as t:
        t.add(root / "rootfs", arcname=".")
    (root / "overlay" / "etc").mkdir(parents=True)
    (root / "overlay" / "etc" / ".wh.app.conf").write_text("")
    (root / "overlay" / "added").write_text("new\n")
    (root / "s.toml").write_text('[filesystem]\ntype = "squashfs"\nsource = "base.tar+overlay/"\n')
    run_fstool("build", "s.toml", "-o", "s.sqfs", cwd=root, check=True)
    out = run_fstool("ls", "-R", root / "s.sqfs", check=True).stdout
    paths = [ln.split("\t")[-1] for ln in out.splitlines()]
    assert "/added" in paths and "/etc/deep/leaf" in paths and "/etc/app.conf" not in paths


def test_image_as_source_keeps_all_metadata(tmp_path):
    """ext4 image -> SquashFS through `source = "rootfs.img"`: the kernel sees the same tree."""
    root = checkout(tmp_path)
    (root / "a.toml").write_text('[filesystem]\ntype = "ext4"\nsource = "rootfs"\n')
    run_fstool("build", "a.toml", "-o", "rootfs.img", cwd=root, check=True)
    (root / "b.toml").write_text('[filesystem]\ntype = "squashfs"\nsource = "rootfs.img"\n')
    run_fstool("build", "b.toml", "-o", "rootfs.sqfs", cwd=root, check=True)
    with loop_mount(root / "rootfs.sqfs", tmp_path) as mnt:
        got = describe(mnt)
        assert got.pop("/lost+found")["fmt"] == stat.S_IFDIR  # the ext image's own
        assert got == describe(root / "rootfs")
    # and a partition of a disk: FAT files are referenced in place, not copied first
    run_fstool("create", "-t", "fat", "rootfs/etc", "-o", "esp.img", cwd=root, check=True)
    (root / "d.toml").write_text('[image]\n[[partitions]]\nname = "esp"\nimage = "esp.img"\n')
    run_fstool("build", "d.toml", "-o", "disk.img", cwd=root, check=True)
    (root / "c.toml").write_text('[filesystem]\ntype = "ext4"\nsource = "disk.img:1"\n')
    run_fstool("build", "c.toml", "-o", "from-part.img", cwd=root, check=True)
    fsck_ext(root / "from-part.img")
    got = run_fstool("cat", root / "from-part.img", "/deep/leaf", check=True).stdout
    assert got == "leaf\n" * 1000
    (root / "e.toml").write_text('[filesystem]\ntype = "ext4"\nsource = "disk.img:7"\n')
    p = run_fstool("build", "e.toml", "-o", "x.img", cwd=root)
    assert_one_line_error(p, 1, "has no partition 7")


# -- step 2: labels, FAT types, ignored keys ----------------------------------------------

def _fat_type(img):
    from fstool.fs.fat import reader as fat_reader
    from fstool.image import Region
    with Region(str(img)) as region:
        return dict(fat_reader.open(region).info())


def test_vfat_and_fat32_make_fat32_fat_and_msdos_choose_by_size(tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    (src / "EFI").mkdir()
    (src / "EFI" / "BOOTX64.EFI").write_bytes(b"MZ" * 100)
    for t in ("vfat", "fat32"):
        img = tmp_path / f"{t}.img"
        run_fstool("create", "-t", t, src, "-o", img, "--size", "256MiB", check=True)
        assert _fat_type(img)["type"] == "FAT32"
        fsck_fat(img)
    for t, size, want in (("fat", "256MiB", "FAT16"), ("msdos", "4MiB", "FAT12"),
                          ("fat16", "64MiB", "FAT16"), ("fat12", "2MiB", "FAT12")):
        img = tmp_path / f"{t}.img"
        run_fstool("create", "-t", t, src, "-o", img, "--size", size, check=True)
        assert _fat_type(img)["type"] == want, t
    # auto size: the smallest FAT32
    run_fstool("create", "-t", "vfat", src, "-o", tmp_path / "auto.img", check=True)
    assert _fat_type(tmp_path / "auto.img")["type"] == "FAT32"
    p = run_fstool("create", "-t", "vfat", src, "-o", tmp_path / "small.img", "--size", "16MiB")
    assert_one_line_error(p, 2, "too small for FAT32", "the smallest that works is 33 MiB")


def test_ext_label_cut_to_16_bytes_rootdevs_any_case_and_ignored_keys(tmp_path):
    (tmp_path / "s.toml").write_text(
        '[filesystem]\ntype = "ext2"\nvolume_label = "a-label-of-twenty-two"\n'
        'journal_blocks = 1024\nrootdevs = "Minimal"\n')
    p = run_fstool("build", "s.toml", "-o", "e.img", cwd=tmp_path)
    assert p.returncode == 0, p.stderr
    lines = [ln for ln in p.stderr.splitlines() if "warning" in ln]
    assert len(lines) == 2 and "'a-label-of-twent'" in lines[0] and "journal_blocks" in lines[1]
    fsck_ext(tmp_path / "e.img")
    info = run_fstool("info", tmp_path / "e.img", check=True).stdout
    assert "label: a-label-of-twent\n" in info
    assert "/dev/null" in run_fstool("ls", tmp_path / "e.img", "/dev", check=True).stdout
    # -q silences warnings
    p = run_fstool("build", "-q", "s.toml", "-o", "e.img", cwd=tmp_path)
    assert p.returncode == 0 and p.stderr == ""
    # rootdevs on FAT: ignored with a warning, as the Rust fstool does
    (tmp_path / "f.toml").write_text('[filesystem]\ntype = "fat32"\nsize = "40MiB"\n'
                                     'rootdevs = "standard"\nvolume_label = "boot"\n')
    p = run_fstool("build", "f.toml", "-o", "f.img", cwd=tmp_path)
    assert p.returncode == 0 and "rootdevs: ignored" in p.stderr and "'BOOT'" in p.stderr
    assert len(p.stderr.splitlines()) == 3  # two warnings and the "built" line
    fsck_fat(tmp_path / "f.img")
    assert _fat_type(tmp_path / "f.img")["label"] == "BOOT"


# -- step 3: --force and the build line ------------------------------------------------------

@pytest.fixture
def loopdev(tmp_path):
    backing = tmp_path / "backing.img"
    with open(backing, "wb") as f:
        f.write(b"\xaa" * MiB)  # old data that must not show through
        f.truncate(40 * MiB)
    dev = subprocess.run(["losetup", "-f", "--show", str(backing)], capture_output=True, text=True,
                         check=True).stdout.strip()
    try:
        yield dev
    finally:
        subprocess.run(["losetup", "-d", dev], check=True)


def test_create_and_build_onto_a_block_device_need_force(tmp_path, loopdev):
    src = tmp_path / "src"
    small_tree(str(src), devices=False)
    (tmp_path / "s.toml").write_text(f'[filesystem]\ntype = "fat32"\nsource = "{src}"\n')
    p = run_fstool("build", "s.toml", "-o", loopdev, cwd=tmp_path)
    assert_one_line_error(p, 1, "--force")
    p = run_fstool("build", "s.toml", "-o", loopdev, "--force", cwd=tmp_path, check=True)
    assert p.stderr.splitlines()[-1] == f"fstool: built {loopdev} from s.toml (fat32, 40 MiB)"
    fsck_fat(loopdev)
    p = run_fstool("create", "-t", "ext4", src, "-o", loopdev)
    assert_one_line_error(p, 1, loopdev, "block device", "--force")
    run_fstool("create", "-t", "ext4", src, "-o", loopdev, "--force", check=True)
    fsck_ext(loopdev)
    assert run_fstool("cat", loopdev, "/etc/app.conf", check=True).stdout == "mode=on\n"
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    subprocess.run(["mount", "-o", "ro", loopdev, str(mnt)], check=True)
    try:
        p = run_fstool("create", "-t", "ext4", src, "-o", loopdev, "--force")
        assert_one_line_error(p, 1, loopdev, "mounted on", str(mnt))
    finally:
        subprocess.run(["umount", str(mnt)], check=True)


def test_build_prints_one_line_naming_what_it_wrote(tmp_path):
    root = checkout(tmp_path)
    (root / "s.toml").write_text('[filesystem]\ntype = "squashfs"\nsource = "rootfs"\n')
    p = run_fstool("build", "s.toml", "-o", "out.sqfs", cwd=root, check=True)
    size = os.path.getsize(root / "out.sqfs")
    assert p.stderr.startswith("fstool: built out.sqfs from s.toml (squashfs, ") and \
        len(p.stderr.splitlines()) == 1, p.stderr
    assert size > 0
    assert run_fstool("build", "-q", "s.toml", "-o", "out.sqfs", cwd=root, check=True).stderr == ""


def test_overlayfs_whiteouts_as_the_rust_fstool_detects_them(tmp_path):
    root = checkout(tmp_path)
    up = root / "up"
    (up / "etc").mkdir(parents=True)
    os.mknod(up / "run.sh", 0o600 | stat.S_IFCHR, os.makedev(0, 0))  # deletes /run.sh
    os.setxattr(up / "etc", "trusted.overlay.opaque", b"y")  # hides the lower /etc
    (up / "etc" / "only").write_text("upper\n")
    run_fstool("create", "-t", "squashfs", "rootfs+up", "-o", "o.sqfs", cwd=root, check=True)
    with loop_mount(root / "o.sqfs", tmp_path) as mnt:
        assert sorted(os.listdir(os.path.join(mnt, "etc"))) == ["only"]
        assert not os.path.lexists(os.path.join(mnt, "run.sh"))
        try:
            names = os.listxattr(os.path.join(mnt, "etc"))
        except OSError:  # an image without any xattr table
            names = []
        assert "trusted.overlay.opaque" not in names
