"""The Rust fstool's ext option names (use_64bit, log_groups_per_flex, create_lost_found,
sparse_super2) and the in-place ext editor (`fstool add` / `fstool rm` on ext2/3/4)."""
from __future__ import annotations

import os
import subprocess

import pytest

from conftest import assert_one_line_error, loop_mount, run_fstool

pytestmark = pytest.mark.slow


def fsck_clean(img):
    p = subprocess.run(["e2fsck", "-fn", str(img)], capture_output=True, text=True)
    assert p.returncode == 0, p.stdout + p.stderr


def dumpe2fs_h(img) -> dict[str, str]:
    out = subprocess.run(["dumpe2fs", "-h", str(img)], capture_output=True, text=True,
                         check=True).stdout
    return {k.strip(): v.strip() for k, _, v in (ln.partition(":") for ln in out.splitlines()) if v}


def same_tree(a, b):
    """diff -r finds nothing but the image's lost+found."""
    p = subprocess.run(["diff", "-r", "--no-dereference", "-x", "lost+found", str(a), str(b)],
                       capture_output=True, text=True)
    assert p.returncode == 0, p.stdout + p.stderr


@pytest.fixture
def src(tmp_path):
    s = tmp_path / "src"
    (s / "d" / "e").mkdir(parents=True)
    (s / "a.txt").write_text("hello\n")
    (s / "d" / "big").write_bytes(os.urandom(300_000))
    (s / "d" / "e" / "f").write_bytes(b"f" * 5000)
    os.symlink("a.txt", s / "link")
    return s


@pytest.mark.parametrize("size", ["3MiB", "40MiB"])
def test_sparse_super2_as_mke2fs(tmp_path, src, size):
    img = tmp_path / "x.img"
    run_fstool("create", "-t", "ext4", src, "-o", img, "--size", size, "-O", "sparse_super2=true",
               check=True)
    fsck_clean(img)
    h = dumpe2fs_h(img)
    assert "sparse_super2" in h["Filesystem features"].split()
    ref = tmp_path / "ref.img"
    with open(ref, "wb") as f:
        f.truncate(os.path.getsize(img))
    subprocess.run(["mke2fs", "-q", "-F", "-t", "ext4", "-O", "sparse_super2", str(ref)], check=True)
    # the same backup groups as mke2fs for the same geometry (none when there is one group)
    assert h.get("Backup block groups") == dumpe2fs_h(ref).get("Backup block groups")
    fdb, bpg = int(h["First block"]), int(h["Blocks per group"])
    groups = -(-(int(h["Block count"]) - fdb) // bpg)
    if groups > 2:
        assert h["Backup block groups"].split() == ["1", str(groups - 1)]
    with loop_mount(img, tmp_path) as mnt:
        same_tree(src, mnt)
        assert sorted(os.listdir(mnt)) == sorted(os.listdir(src) + ["lost+found"])


def test_rust_option_names(tmp_path, src):
    img = tmp_path / "x.img"
    run_fstool("create", "-t", "ext4", src, "-o", img, "--size", "40MiB", "-O",
               "use_64bit=true,log_groups_per_flex=2,create_lost_found=false", check=True)
    fsck_clean(img)
    h = dumpe2fs_h(img)
    feats = h["Filesystem features"].split()
    assert "64bit" in feats and "flex_bg" in feats
    assert h["Flex block group size"] == "4"
    ls = subprocess.run(["debugfs", "-R", "ls -l /", str(img)], capture_output=True, text=True,
                        check=True).stdout
    assert "lost+found" not in ls
    run_fstool("create", "-t", "ext4", src, "-o", img, "--size", "40MiB", "-O",
               "log_groups_per_flex=0", check=True)
    fsck_clean(img)
    h = dumpe2fs_h(img)
    assert "flex_bg" not in h["Filesystem features"].split()
    ls = subprocess.run(["debugfs", "-R", "ls -l /", str(img)], capture_output=True, text=True,
                        check=True).stdout
    assert "lost+found" in ls


@pytest.mark.parametrize("opts, needle", [
    ("log_groups_per_flex=2,flex_bg=false", "contradicts flex_bg"),
    ("log_groups_per_flex=2,flex_bg_size=8", "flex_bg_size = 4"),
    ("log_groups_per_flex=17", "log_groups_per_flex"),
    ("sparse_super2=true,sparse_super=false", "sparse_super2 needs sparse_super"),
    ("use_64bit=true,extents=false", "64bit needs extents"),
])
def test_option_conflicts(tmp_path, src, opts, needle):
    p = run_fstool("create", "-t", "ext4", src, "-o", tmp_path / "x.img", "-O", opts)
    assert_one_line_error(p, 2, needle)
    assert not (tmp_path / "x.img").exists()
