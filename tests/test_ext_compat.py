"""The Rust fstool's ext option names (use_64bit, log_groups_per_flex, create_lost_found,
sparse_super2) and the in-place ext editor (`fstool add` / `fstool rm` on ext2/3/4)."""
from __future__ import annotations

import os
import subprocess

import pytest

from conftest import assert_one_line_error, diff_r, loop_mount, run_fstool

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


# -- fstool add / rm on ext ------------------------------------------------------------------
@pytest.fixture
def addtree(tmp_path):
    a = tmp_path / "add"
    (a / "sub" / "deeper").mkdir(parents=True)
    (a / "s.txt").write_text("small\n")
    (a / "sub" / "big.bin").write_bytes(os.urandom(200_000))
    for i in range(60):  # the new directory needs more than one block
        (a / "sub" / "deeper" / f"a-rather-long-file-name-number-{i:03d}").write_bytes(b"y" * i)
    os.symlink("s.txt", a / "fast-link")
    os.symlink("x" * 100, a / "slow-link")
    os.link(a / "s.txt", a / "sub" / "hard")
    with open(a / "sparse", "wb") as f:
        f.truncate(3 << 20)
        f.seek(1 << 20)
        f.write(b"z" * 5000)
    os.mkfifo(a / "fifo")
    return a


def tree_of(img, tmp_path, sub=""):
    """{path: (kind, bytes or target)} of the image through debugfs-free means: the kernel."""
    out = {}
    with loop_mount(img, tmp_path) as mnt:
        top = os.path.join(mnt, sub)
        for d, dirs, files in os.walk(top):
            for n in dirs + files:
                p = os.path.join(d, n)
                rel = os.path.relpath(p, top)
                if os.path.islink(p):
                    out[rel] = ("l", os.readlink(p))
                elif os.path.isfile(p):
                    with open(p, "rb") as f:
                        out[rel] = ("f", f.read(), os.stat(p).st_nlink)
                else:
                    out[rel] = ("o", os.lstat(p).st_mode)
    return out


@pytest.mark.parametrize("fs_type, size, opts", [
    ("ext4", "8MiB", "extents=true"), ("ext3", "8MiB", "extents=false"),
    ("ext2", "300MiB", "extents=false"),
    ("ext4", "40MiB", "sparse_super2=true,log_groups_per_flex=2,use_64bit=true")])
def test_add_and_rm_in_place(tmp_path, src, addtree, fs_type, size, opts):
    img = tmp_path / "e.img"
    run_fstool("create", "-t", fs_type, src, "-o", img, "--size", size, "-O", opts, check=True)
    before = tree_of(img, tmp_path)
    run_fstool("add", img, addtree, "/added", check=True)          # a tree, to a new name
    run_fstool("add", img, addtree / "s.txt", "/d", check=True)     # a file, into a directory
    fsck_clean(img)
    with loop_mount(img, tmp_path) as mnt:
        diff_r(addtree, os.path.join(mnt, "added"))
        assert os.stat(os.path.join(mnt, "added", "sub", "hard")).st_nlink == 2
        assert open(os.path.join(mnt, "d", "s.txt")).read() == "small\n"
    after = tree_of(img, tmp_path)
    for k, v in before.items():  # the other files did not move
        assert after[k] == v or k in ("d",), k
    # rm: a file, a symlink, then a whole directory tree; back to the original content
    run_fstool("rm", img, "/d/s.txt", check=True)
    run_fstool("rm", img, "/added/fast-link", check=True)
    fsck_clean(img)
    run_fstool("rm", img, "/added", check=True)
    fsck_clean(img)
    assert tree_of(img, tmp_path) == before
    h = dumpe2fs_h(img)
    ref = tmp_path / "ref.img"
    run_fstool("create", "-t", fs_type, src, "-o", ref, "--size", size, "-O", opts, check=True)
    assert h["Free blocks"] == dumpe2fs_h(ref)["Free blocks"]
    assert h["Free inodes"] == dumpe2fs_h(ref)["Free inodes"]


def test_edit_deterministic_and_htree(tmp_path, addtree):
    s = tmp_path / "many"
    (s / "big").mkdir(parents=True)
    for i in range(300):
        (s / "big" / f"entry-{i:04d}").write_text(str(i))
    imgs = []
    for n in ("a.img", "b.img"):
        img = tmp_path / n
        run_fstool("create", "-t", "ext4", s, "-o", img, "--size", "8MiB", check=True)
        out = subprocess.run(["debugfs", "-R", "stat /big", str(img)], capture_output=True,
                             text=True).stdout
        assert "Flags: 0x81000" in out  # an HTree directory
        run_fstool("add", img, addtree, "/big/new", check=True)
        run_fstool("rm", img, "/big/entry-0007", check=True)
        fsck_clean(img)
        imgs.append(img.read_bytes())
    assert imgs[0] == imgs[1]
    with loop_mount(tmp_path / "a.img", tmp_path) as mnt:
        names = os.listdir(os.path.join(mnt, "big"))
        assert len(names) == 300 and "new" in names and "entry-0007" not in names
        diff_r(addtree, os.path.join(mnt, "big", "new"))


def test_mke2fs_image(tmp_path, src, addtree):
    img = tmp_path / "m.img"
    with open(img, "wb") as f:
        f.truncate(64 << 20)
    subprocess.run(["mke2fs", "-q", "-F", "-t", "ext4", "-d", str(src), str(img)], check=True)
    run_fstool("add", img, addtree, "/added", check=True)
    fsck_clean(img)
    run_fstool("rm", img, "/d", check=True)
    fsck_clean(img)
    with loop_mount(img, tmp_path) as mnt:
        diff_r(addtree, os.path.join(mnt, "added"))
        assert not os.path.exists(os.path.join(mnt, "d"))


def test_edit_errors_leave_the_image_untouched(tmp_path, src, addtree):
    img = tmp_path / "e.img"
    run_fstool("create", "-t", "ext4", src, "-o", img, check=True)  # auto: little free space
    data = img.read_bytes()
    big = tmp_path / "huge"
    with open(big, "wb") as f:
        f.write(os.urandom(4 << 20))
    for args, code, needle in [
        (("add", img, big, "/huge"), 1, "no space left"),
        (("add", img, addtree / "s.txt", "/a.txt"), 1, "already exists"),
        (("add", img, addtree / "s.txt", "/nope/x"), 1, "no such file"),
        (("rm", img, "/nope"), 1, "no such file"),
        (("rm", img, "/"), 1, "root directory"),
    ]:
        assert_one_line_error(run_fstool(*args), code, needle)
        assert img.read_bytes() == data
    subprocess.run(["debugfs", "-w", "-R", "feature needs_recovery", str(img)], check=True,
                   capture_output=True)
    data = img.read_bytes()
    assert_one_line_error(run_fstool("rm", img, "/a.txt"), 1, "journal needs recovery")
    assert img.read_bytes() == data


@pytest.mark.parametrize("fs_type", ["ext4", "ext2"])
def test_add_into_fragmented_free_space(tmp_path, fs_type):
    """Free space in 3-block holes: a new file takes them in order, mapped by an extent tree
    with an index block (ext4) or indirect blocks (ext2)."""
    s = tmp_path / "frag"
    s.mkdir()
    for i in range(80):
        (s / f"f{i:03d}").write_bytes(os.urandom(3000))
    img = tmp_path / "g.img"
    run_fstool("create", "-t", fs_type, s, "-o", img, check=True)
    for i in range(1, 80, 2):
        run_fstool("rm", img, f"/f{i:03d}", check=True)
    fsck_clean(img)
    big = tmp_path / "big"
    big.write_bytes(os.urandom(100_000))
    run_fstool("add", img, big, "/big", check=True)
    fsck_clean(img)
    st = subprocess.run(["debugfs", "-R", "stat /big", str(img)], capture_output=True, text=True,
                        check=True).stdout
    assert ("(ETB0)" if fs_type == "ext4" else "(IND)") in st, st
    with loop_mount(img, tmp_path) as mnt:
        assert open(os.path.join(mnt, "big"), "rb").read() == big.read_bytes()
        for i in range(0, 80, 2):
            assert open(os.path.join(mnt, f"f{i:03d}"), "rb").read() == (s / f"f{i:03d}").read_bytes()


def test_edit_a_partition(tmp_path, src, addtree):
    fs = tmp_path / "e.img"
    run_fstool("create", "-t", "ext4", src, "-o", fs, "--size", "8MiB", check=True)
    disk = tmp_path / "disk.img"
    with open(disk, "wb") as f:
        f.truncate(12 << 20)
    subprocess.run(["sgdisk", "-n", "1:2048:+8M", str(disk)], check=True, capture_output=True)
    with open(disk, "r+b") as f:
        f.seek(1 << 20)
        f.write(fs.read_bytes())
    run_fstool("add", f"{disk}:1", addtree, "/added", check=True)
    run_fstool("rm", f"{disk}:1", "/d", check=True)
    with open(disk, "rb") as f:
        f.seek(1 << 20)
        fs.write_bytes(f.read(8 << 20))
    fsck_clean(fs)
    with loop_mount(fs, tmp_path) as mnt:
        diff_r(addtree, os.path.join(mnt, "added"))
        assert not os.path.exists(os.path.join(mnt, "d"))
