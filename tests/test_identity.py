"""Derived identifiers: from the spec's parsed content (never its text) plus the tree's
fingerprint; a `seed` key pins them whatever the tree holds."""
from __future__ import annotations

import json
import os
import subprocess

import pytest

from conftest import loop_mount, run_fstool, same_file

pytestmark = pytest.mark.slow


def _uuid(img) -> str:
    out = subprocess.run(["dumpe2fs", "-h", str(img)], capture_output=True, text=True, check=True).stdout
    return next(ln.split(":", 1)[1].strip() for ln in out.splitlines() if ln.startswith("Filesystem UUID"))


@pytest.fixture
def tree(tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    (src / "hello").write_text("hello\n")
    return src


def test_comments_whitespace_order_and_json_change_nothing(tmp_path, tree):
    a = tmp_path / "a.toml"
    a.write_text(f'[filesystem]\ntype = "ext4"\nsource = "{tree}"\nmtime = 1700000000\nlabel = "root"\n')
    b = tmp_path / "b.toml"
    b.write_text(f'# a comment\n\n[filesystem]\nlabel   = "root"   # same label\n'
                 f'mtime = 1700000000\nsource = "{tree}"\ntype = "ext4"\n')
    c = tmp_path / "c.json"
    c.write_text(json.dumps({"filesystem": {"type": "ext4", "source": str(tree), "mtime": 1700000000,
                                            "label": "root"}}))
    imgs = []
    for spec in (a, b, c):
        img = tmp_path / (spec.stem + ".img")
        run_fstool("build", spec, "-o", img, check=True)
        imgs.append(img)
    assert same_file(imgs[0], imgs[1]) and same_file(imgs[0], imgs[2])
    d = tmp_path / "d.toml"  # a different value is a different identity
    d.write_text(a.read_text().replace('"root"', '"other"'))
    run_fstool("build", d, "-o", tmp_path / "d.img", check=True)
    assert _uuid(tmp_path / "d.img") != _uuid(imgs[0])


def test_two_trees_under_one_spec_get_two_uuids_unless_seeded(tmp_path, tree):
    spec = tmp_path / "s.toml"
    spec.write_text(f'[filesystem]\ntype = "ext4"\nsource = "{tree}"\nmtime = 1700000000\n')
    run_fstool("build", spec, "-o", tmp_path / "1.img", check=True)
    (tree / "more").write_text("another file\n")
    run_fstool("build", spec, "-o", tmp_path / "2.img", check=True)
    assert _uuid(tmp_path / "1.img") != _uuid(tmp_path / "2.img")
    pinned = tmp_path / "p.toml"
    pinned.write_text(spec.read_text() + 'seed = "my-board"\n')
    run_fstool("build", pinned, "-o", tmp_path / "3.img", check=True)
    (tree / "more").unlink()
    run_fstool("build", pinned, "-o", tmp_path / "4.img", check=True)
    assert _uuid(tmp_path / "3.img") == _uuid(tmp_path / "4.img")


def _holes_and_zeros(root, sparse: bool) -> None:
    """The same bytes, stored with holes (sparse) or written out (dense): a file all zero, a
    random block with a zero tail, data with a zero MiB in the middle, and 2 MiB of zeros."""
    import random
    rnd = random.Random(42)
    root.mkdir()
    pieces = {"small": [(1000, None)],
              "tail": [(4096 * 33, rnd.randbytes(4096 * 33)), (100, None)],
              "middle": [(8192, rnd.randbytes(8192)), (1 << 20, None), (5000, rnd.randbytes(5000))],
              "zeros": [(2 << 20, None)]}
    for name, parts in pieces.items():
        with open(root / name, "wb") as f:
            for n, data in parts:
                if data is not None:
                    f.write(data)
                elif sparse:
                    f.seek(n, 1)
                else:
                    f.write(bytes(n))
            f.truncate(sum(n for n, _ in parts))
    for p in [*root.iterdir(), root]:
        os.utime(p, (1_700_000_000, 1_700_000_000))


@pytest.mark.parametrize("fs_type", ["ext4", "ext2", "erofs", "f2fs", "xfs", "squashfs"])
def test_host_holes_do_not_change_the_image(tmp_path, fs_type):
    """Bazel's action key holds file contents, not how the host stores them: a remote executor
    stages inputs whole, a local sandbox links the sparse originals. Zero blocks and holes are
    the same bytes, so they make the same image (and a hole in it, as `mke2fs -d` does)."""
    imgs = []
    for kind in ("sparse", "dense"):
        src = tmp_path / kind
        _holes_and_zeros(src, kind == "sparse")
        img = tmp_path / f"{kind}.img"
        run_fstool("create", "-q", "-t", fs_type, src, "-o", img, check=True)
        imgs.append(img)
    assert os.stat(tmp_path / "sparse" / "zeros").st_blocks == 0
    assert os.stat(tmp_path / "dense" / "zeros").st_blocks > 0
    assert same_file(*imgs)
    if fs_type == "f2fs":  # this kernel has no f2fs driver: the checker reads it
        subprocess.run(["fsck.f2fs", str(imgs[1])], check=True, capture_output=True)
        return
    with loop_mount(imgs[1], tmp_path) as mnt:
        subprocess.run(["diff", "-r", "-x", "lost+found", str(tmp_path / "dense"), mnt], check=True)
        if fs_type in ("ext4", "ext2", "xfs"):  # a zero block is a hole there: no blocks taken
            assert os.stat(os.path.join(mnt, "zeros")).st_blocks * 512 < 64 << 10


def test_xfs_uuid_comes_from_the_tree_not_the_option_parser(tmp_path):
    """XFS options are parsed when the spec is read, before any seed exists: the UUID is
    derived when writing, so two trees get two UUIDs (one UUID for every image made the
    kernel refuse to mount two of them at once)."""
    uuids = []
    for name in ("one", "two"):
        src = tmp_path / name
        src.mkdir()
        (src / name).write_text(name)
        img = tmp_path / f"{name}.xfs"
        run_fstool("create", "-q", "-t", "xfs", src, "-o", img, check=True)
        out = subprocess.run(["xfs_db", "-r", "-c", "uuid", str(img)], capture_output=True, text=True,
                             check=True).stdout
        uuids.append(out.split("=", 1)[1].strip())
    assert uuids[0] != uuids[1]
