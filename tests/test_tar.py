"""The tar writer: GNU tar and bsdtar extract the same tree (every kind, long names, xattrs,
nanosecond times, big ids, hardlinks), archives are sorted and byte-reproducible, compressed
variants by extension, and fstool reads them back."""
from __future__ import annotations

import os
import subprocess
import tarfile

import pytest

from conftest import assert_one_line_error, run_fstool, same_file
from test_compat import small_tree
from treegen import compare

LONG = "a-directory-with-a-rather-long-name-" + "x" * 60


def rich(root):
    small_tree(str(root))
    d = root / LONG / ("sub-" + "y" * 90)
    d.mkdir(parents=True)
    (d / ("file-" + "z" * 200)).write_bytes(b"deep and long\n")
    os.symlink("../" * 2 + "t" * 150, d / "long-link")
    (root / "big-ids").write_bytes(b"ids\n")
    os.chown(root / "big-ids", 70000, 4_000_000_000)
    (root / "caf\u00e9").write_bytes(b"unicode\n")
    with open(os.path.join(os.fsencode(root), b"latin1-\xe9t\xe9-" + b"n" * 100), "wb") as f:
        f.write(b"not UTF-8, and long\n")
    os.setxattr(root / LONG, "user.dir-note", "caf\u00e9".encode())
    for dirpath, dirnames, filenames in os.walk(root):
        for n in dirnames + filenames:
            os.utime(os.path.join(dirpath, n), ns=(1_700_000_000_123_456_789,) * 2,
                     follow_symlinks=False)


@pytest.fixture(scope="module")
def src(tmp_path_factory):
    root = tmp_path_factory.mktemp("tar") / "src"
    rich(root)
    return root


def extract(tool, archive, dest):
    dest.mkdir()
    if tool == "gnu":
        cmd = ["tar", "--xattrs", "--xattrs-include=*", "--numeric-owner", "-xpf", str(archive),
               "-C", str(dest)]
    else:
        cmd = ["bsdtar", "--xattrs", "--numeric-owner", "-xpf", str(archive), "-C", str(dest)]
    # a UTF-8 locale, as users have: libarchive converts PAX (UTF-8) names to the locale's charset
    p = subprocess.run(cmd, capture_output=True, text=True, env=dict(os.environ, LC_ALL="C.UTF-8"))
    noise = "tar: Ignoring unknown extended header keyword 'hdrcharset'"  # GNU tar, harmless
    assert p.returncode == 0 and not p.stderr.replace(noise, "").strip(), p.stderr


@pytest.mark.parametrize("name", ["out.tar", "out.tar.gz", "out.tar.zst", "out.tar.xz"])
def test_gnu_tar_and_bsdtar_extract_the_same_tree(tmp_path, src, name):
    out = tmp_path / name
    run_fstool("create", "-t", "tar", src, "-o", out, check=True)
    for tool in ("gnu", "bsd"):
        dest = tmp_path / tool
        extract(tool, out, dest)
        compare(src, dest)
        # nanosecond times survive (GNU tar and bsdtar both set them from PAX mtime)
        assert os.stat(dest / "etc" / "app.conf").st_mtime_ns == 1_700_000_000_123_456_789


def test_sorted_reproducible_and_read_back(tmp_path, src):
    a, b = tmp_path / "a.tar", tmp_path / "b.tar"
    run_fstool("create", "-t", "tar", src, "-o", a, check=True)
    run_fstool("create", "-t", "tar", src, "-o", b, check=True)
    assert same_file(a, b)
    assert os.path.getsize(a) % 10240 == 0  # whole 10 KiB records, as GNU tar writes
    for ext in ("tar.gz", "tar.zst", "tar.xz"):
        x, y = tmp_path / f"x.{ext}", tmp_path / f"y.{ext}"
        run_fstool("create", "-t", "tar", src, "-o", x, check=True)
        run_fstool("create", "-t", "tar", src, "-o", y, check=True)
        assert same_file(x, y), ext
    with tarfile.open(a) as t:
        names = t.getnames()
    # the member order is the tree's walk order: the root, then parents first, names sorted
    assert names[0] == "."
    assert names.index("etc") < names.index("etc/app.conf") < names.index("etc/deep")
    # holes of sparse files stay holes in an uncompressed archive
    assert os.stat(a).st_blocks * 512 < 2 << 20
    # fstool reads its own archives: ls, cat, and as a source again
    assert run_fstool("cat", a, "/etc/app.conf", check=True).stdout == "mode=on\n"
    run_fstool("create", "-t", "tar", a, "-o", tmp_path / "again.tar", check=True)
    assert same_file(a, tmp_path / "again.tar")


def test_tar_options_and_sockets(tmp_path):
    import socket
    s = tmp_path / "s"
    s.mkdir()
    (s / "f").write_text("x")
    sock = socket.socket(socket.AF_UNIX)
    sock.bind(str(s / "sock"))
    sock.close()
    p = run_fstool("create", "-t", "tar", s, "-o", tmp_path / "o.tar", "-O", "compression=zstd,level=3")
    assert p.returncode == 0 and "left out 1 sockets" in p.stderr and len(p.stderr.splitlines()) == 1
    assert (tmp_path / "o.tar").read_bytes()[:4] == b"\x28\xb5\x2f\xfd"
    p = run_fstool("create", "-t", "tar", s, "-o", tmp_path / "o.tar", "-O", "level=3")
    assert_one_line_error(p, 2, "level needs a compression")
    p = run_fstool("create", "-t", "tar", s, "-o", tmp_path / "o.tar", "--label", "x")
    assert_one_line_error(p, 2, "tar has no volume label")
