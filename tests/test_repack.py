"""`fstool repack` (images, IMG:N, tars and directories merged into any format) and `analyze`."""
from __future__ import annotations

import json
import os
import tarfile

import pytest

from conftest import assert_one_line_error, loop_mount, run_fstool
from test_compat import fsck_ext, fsck_fat, small_tree
from treegen import describe

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def rootfs(tmp_path_factory):
    d = tmp_path_factory.mktemp("repack")
    small_tree(str(d / "src"))
    (d / "src" / "lost+found").mkdir(mode=0o700)
    os.utime(d / "src" / "lost+found", (1_700_000_000,) * 2)
    run_fstool("create", "-t", "ext4", d / "src", "-o", d / "rootfs.img", check=True)
    return d


def test_image_to_tar_and_back_round_trips_all_tar_metadata(tmp_path, rootfs):
    img = rootfs / "rootfs.img"
    run_fstool("repack", img, tmp_path / "rootfs.tar", check=True)
    with tarfile.open(tmp_path / "rootfs.tar") as t:
        m = {x.name: x for x in t.getmembers()}
    assert m["etc/app.conf"].uid == 1000 and m["etc/app.conf"].pax_headers["SCHILY.xattr.user.note"] == "hello"
    assert m["run.sh"].islnk() and m["run.sh"].linkname == "etc/run-link" and m["null"].ischr() and m["fifo"].isfifo()
    run_fstool("repack", tmp_path / "rootfs.tar", tmp_path / "back.ext4", check=True)
    fsck_ext(tmp_path / "back.ext4")
    with loop_mount(img, tmp_path) as a, loop_mount(tmp_path / "back.ext4", tmp_path) as b:
        assert describe(a) == describe(b)
        assert describe(b) == describe(rootfs / "src")


def test_type_from_the_name_img_keeps_the_type_and_shrink(tmp_path, rootfs):
    img = rootfs / "rootfs.img"
    p = run_fstool("repack", img, tmp_path / "same.img", check=True)
    # the same size, or (ext lays out a fixed size with more inodes) the smallest, with a warning
    assert os.path.getsize(tmp_path / "same.img") == os.path.getsize(img) or "warning" in p.stderr
    assert "ext4" in run_fstool("info", tmp_path / "same.img", check=True).stdout.splitlines()[0]
    fsck_ext(tmp_path / "same.img")
    p = run_fstool("repack", img, tmp_path / "s.sqfs", check=True)
    assert "(squashfs," in p.stderr
    with loop_mount(tmp_path / "s.sqfs", tmp_path) as m:
        assert describe(m) == describe(rootfs / "src")
    # FAT source, partition of a disk, .img keeps FAT; --shrink makes it as small as it can be
    run_fstool("create", "-t", "fat", rootfs / "src" / "etc", "-o", tmp_path / "esp.img",
               "--size", "8MiB", check=True)
    (tmp_path / "d.toml").write_text('[image]\n[[partitions]]\nname = "esp"\nimage = "esp.img"\n')
    run_fstool("build", "d.toml", "-o", "disk.img", cwd=tmp_path, check=True)
    run_fstool("repack", f"{tmp_path / 'disk.img'}:1", tmp_path / "fat.img", check=True)
    assert os.path.getsize(tmp_path / "fat.img") == 8 << 20
    fsck_fat(tmp_path / "fat.img")
    run_fstool("repack", f"{tmp_path / 'disk.img'}:1", tmp_path / "small.img", "--shrink", check=True)
    assert os.path.getsize(tmp_path / "small.img") < 8 << 20
    assert run_fstool("cat", tmp_path / "small.img", "/deep/leaf", check=True).stdout == "leaf\n" * 1000
    p = run_fstool("repack", rootfs / "src", tmp_path / "x.img")
    assert_one_line_error(p, 2, "--fs-type")
    p = run_fstool("repack", rootfs / "src", tmp_path / "x.bin")
    assert_one_line_error(p, 2, "--fs-type")


def test_layers_merge_with_whiteouts(tmp_path, rootfs):
    up = tmp_path / "up"
    (up / "etc").mkdir(parents=True)
    (up / "etc" / ".wh.app.conf").write_text("")
    (up / "etc" / "new.conf").write_text("new\n")
    with tarfile.open(tmp_path / "patch.tar", "w") as t:
        t.add(up, arcname=".")
    run_fstool("repack", rootfs / "rootfs.img", tmp_path / "patch.tar", tmp_path / "flat.tar.gz",
               check=True)
    with tarfile.open(tmp_path / "flat.tar.gz") as t:
        names = t.getnames()
    assert "etc/new.conf" in names and "etc/app.conf" not in names and "etc/deep/leaf" in names
    assert not any(".wh." in n for n in names)


def test_analyze_counts_and_smallest_sizes(tmp_path, rootfs):
    p = run_fstool("analyze", rootfs / "src", "--json", check=True)
    rep = json.loads(p.stdout)
    c = rep["counts"]
    assert (c["files"], c["symlinks"], c["devices"], c["fifos"], c["hardlinks"]) == (5, 1, 2, 1, 1)
    assert c["bytes"] == 8 + 5000 + 10 + 0 + 3 * (1 << 20) + 3 and c["data_bytes"] < c["bytes"]
    # the numbers are what `size = "auto"` gives
    for t in ("ext4", "squashfs", "fat", "tar"):
        out = tmp_path / f"auto.{t}"
        run_fstool("create", "-q", "-t", t, rootfs / "src", "-o", out, check=True)
        assert rep["smallest"][t] == os.path.getsize(out), t
    assert rep["smallest"]["fat32"] >= 32 << 20
    text = run_fstool("analyze", rootfs / "rootfs.img", check=True).stdout
    assert "5 files" in text and "ext4:" in text
