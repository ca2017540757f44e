"""SquashFS: images checked by unsquashfs and by the kernel (loop mount + full tree compare)."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import tarfile

import pytest

from conftest import REPO, assert_one_line_error, diff_r, loop_mount, run_fstool, same_file
from treegen import compare, make_rich_tree

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def rich(tmp_path_factory):
    root = tmp_path_factory.mktemp("rich") / "src"
    make_rich_tree(str(root))
    return root


def unsquashfs_ok(img, dest):
    p = subprocess.run(["unsquashfs", "-n", "-d", str(dest), str(img)], capture_output=True, text=True)
    assert p.returncode == 0, p.stdout + p.stderr
    return dest


def superblock(img):
    return subprocess.run(["unsquashfs", "-s", str(img)], capture_output=True, text=True, check=True).stdout


@pytest.mark.parametrize("comp", ["gzip", "xz", "lz4", "zstd"])
def test_rich_tree_mounts_and_extracts_identically(tmp_path, rich, comp):
    img = tmp_path / f"r-{comp}.sqfs"
    run_fstool("create", "-t", "squashfs", rich, "-o", img, "-O", f"compression={comp}", check=True)
    assert f"Compression {comp}" in superblock(img)
    with loop_mount(img, tmp_path) as mnt:
        compare(rich, mnt)
        diff_r(rich, mnt)
        st = os.stat(os.path.join(mnt, "sparse"))
        assert st.st_size == (80 << 20) + 3
    out = unsquashfs_ok(img, tmp_path / "x")
    compare(rich, out)  # unsquashfs, run as root, restores owners and xattrs too
    # holes and duplicates cost nothing
    assert img.stat().st_size < 16 << 20


def test_sparse_blocks_and_dedup_are_used(tmp_path, rich):
    img = tmp_path / "r.sqfs"
    run_fstool("create", "-t", "squashfs", rich, "-o", img, check=True)
    no_dedup = tmp_path / "nodedup.sqfs"
    run_fstool("create", "-t", "squashfs", rich, "-o", no_dedup, "-O", "dedup=false,no_fragments=true",
               check=True)
    assert img.stat().st_size < no_dedup.stat().st_size
    assert "Duplicates are removed" in superblock(img)
    sb = superblock(no_dedup)
    assert "Duplicates are not removed" in sb and "Fragments are not stored" in sb
    with loop_mount(no_dedup, tmp_path) as mnt:
        compare(rich, mnt)


@pytest.mark.parametrize("comp", ["gzip", "zstd"])
def test_compare_with_mksquashfs(tmp_path, rich, comp):
    """Same content as mksquashfs writes, and within 2% of its size (same compressor, level, block)."""
    ours, ref = tmp_path / "ours.sqfs", tmp_path / "ref.sqfs"
    run_fstool("create", "-t", "squashfs", rich, "-o", ours, "-O", f"compression={comp}", check=True)
    subprocess.run(["mksquashfs", str(rich), str(ref), "-quiet", "-no-progress", "-noappend", "-comp", comp],
                   check=True, capture_output=True)
    a, b = unsquashfs_ok(ours, tmp_path / "a"), unsquashfs_ok(ref, tmp_path / "b")
    compare(a, b, xattrs=False)
    assert ours.stat().st_size <= ref.stat().st_size * 1.02, (ours.stat().st_size, ref.stat().st_size)


def _unsquashfs_listing(img):
    """unsquashfs -lln as {path: (mode string, uid, gid, size or 'major,minor', mtime, target)}."""
    out = subprocess.run(["unsquashfs", "-lln", "-d", "", str(img)], capture_output=True, text=True, check=True,
                         env={**os.environ, "TZ": "UTC"}).stdout
    rows = {}
    for line in out.splitlines():
        if not line[:1] in "-dlcbps" or "/" not in line.split(" ", 2)[1]:
            continue
        mode, owner, rest = line.split(None, 2)
        uid, gid = owner.split("/")
        if mode[0] in "cb":
            major, rest = rest.split(",", 1)
            minor, rest = rest.split(None, 1)
            # unsquashfs prints rdev >> 8 and rdev & 0xff, which is wrong for minors over 255;
            # undo that and decode the kernel's new_encode_dev layout
            rdev = (int(major) << 8) | int(minor)
            size = f"{(rdev >> 8) & 0xFFF},{(rdev & 0xFF) | ((rdev >> 12) & 0xFFF00)}"
        else:
            size, rest = rest.split(None, 1)
        date, clock, name = rest.split(" ", 2)
        target = None
        if mode[0] == "l":
            name, target = name.split(" -> ", 1)
        rows[name or "/"] = (mode, int(uid), int(gid), size, f"{date} {clock}", target)
    return rows


def _our_listing(img):
    out = run_fstool("ls", "-R", img, check=True).stdout
    rows = {}
    for line in out.splitlines():
        mode, uid, gid, size, mtime, name = line.split("\t")
        target = None
        if mode[0] == "l":
            name, target = name.split(" -> ", 1)
        rows[name] = (mode, int(uid), int(gid), size, mtime[:16], target)
    return rows


@pytest.mark.parametrize("comp", ["gzip", "lzma", "lzo", "lz4", "xz", "zstd"])
def test_our_reader_reads_mksquashfs_images(tmp_path, rich, comp):
    img = tmp_path / f"m-{comp}.sqfs"
    subprocess.run(["mksquashfs", str(rich), str(img), "-quiet", "-no-progress", "-noappend", "-comp", comp],
                   check=True, capture_output=True)
    theirs, ours = _unsquashfs_listing(img), _our_listing(img)
    theirs.pop("/", None)
    ours.pop("/", None)
    assert theirs == ours
    for name in ("big.bin", "text.txt", "size-393223"):
        out = run_fstool("cat", img, f"/{name}", check=True, text_output=False)
        assert out.stdout == (rich / name).read_bytes(), name


def test_file_over_4gib_costs_nothing(tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    with open(src / "huge", "wb") as f:
        f.write(b"head")
        f.seek((5 << 30) - 4)
        f.write(b"tail")
    img = tmp_path / "h.sqfs"
    run_fstool("create", "-t", "squashfs", src, "-o", img, check=True)
    assert img.stat().st_size < 1 << 20
    with loop_mount(img, tmp_path) as mnt:
        with open(os.path.join(mnt, "huge"), "rb") as f:
            assert os.fstat(f.fileno()).st_size == 5 << 30
            assert f.read(4) == b"head"
            f.seek(3 << 30)
            assert f.read(8) == bytes(8)
            f.seek((5 << 30) - 4)
            assert f.read() == b"tail"


def test_memory_stays_bounded(tmp_path):
    """A 400 MB file streams through: peak RSS stays far below its size."""
    src = tmp_path / "src"
    src.mkdir()
    chunk = os.urandom(1 << 20)
    with open(src / "large", "wb") as f:
        for i in range(400):
            f.write(chunk[i:] + chunk[:i])
    img = tmp_path / "l.sqfs"
    p = subprocess.run(["/usr/bin/time", "-f", "%M", sys.executable, "-m", "fstool", "create", "-t", "squashfs",
                        str(src), "-o", str(img), "-O", "compression=lz4"],
                       capture_output=True, text=True, env={**os.environ, "PYTHONPATH": REPO})
    assert p.returncode == 0, p.stderr
    peak_kib = int(p.stderr.strip().splitlines()[-1])
    assert peak_kib < 200 * 1024, f"peak RSS {peak_kib} KiB"
    with loop_mount(img, tmp_path) as mnt:
        assert same_file(src / "large", os.path.join(mnt, "large"))


def test_xattrs_from_a_tar(tmp_path):
    """xattrs come through (tar PAX records, so the host filesystem does not matter)."""
    import io
    with tarfile.open(tmp_path / "x.tar", "w", format=tarfile.PAX_FORMAT) as tf:
        for i, (name, attrs) in enumerate([("a", {"user.color": "blue", "security.selinux": "system_u:x"}),
                                           ("b", {"user.color": "blue", "security.selinux": "system_u:x"}),
                                           ("c", {"trusted.big": "v" * 3000})]):
            ti = tarfile.TarInfo(name)
            ti.size = 2
            ti.mtime = 1_600_000_000
            ti.pax_headers = {f"SCHILY.xattr.{k}": v for k, v in attrs.items()}
            tf.addfile(ti, io.BytesIO(b"%d\n" % i))
    img = tmp_path / "x.sqfs"
    run_fstool("create", "-t", "squashfs", tmp_path / "x.tar", "-o", img, check=True)
    with loop_mount(img, tmp_path) as mnt:
        assert os.getxattr(os.path.join(mnt, "a"), "user.color") == b"blue"
        assert os.getxattr(os.path.join(mnt, "b"), "security.selinux") == b"system_u:x"
        assert os.getxattr(os.path.join(mnt, "c"), "trusted.big") == b"v" * 3000
    p = run_fstool("ls", img, "/", check=True)
    assert "/c" in p.stdout
    from fstool.fs.squashfs.reader import SquashfsReader
    from fstool.image import Region
    r = SquashfsReader(Region(str(img)))
    assert r.stat("/c").xattrs == {"trusted.big": b"v" * 3000}
    assert r.stat("/a").xattrs == {"security.selinux": b"system_u:x", "user.color": b"blue"}


def test_reproducible_across_paths_threads_and_clock(tmp_path, rich):
    a, b = tmp_path / "a", tmp_path / "elsewhere" / "b"
    b.parent.mkdir()
    for d in (a, b):  # cp -a: keeps hardlinks, devices and fifos (copytree would block on the fifo)
        subprocess.run(["cp", "-a", str(rich), str(d)], check=True)
    # a clock change: the sources' mtimes differ, SOURCE_DATE_EPOCH clamps them all
    for dirpath, dirs, files in os.walk(b):
        for n in dirs + files:
            os.utime(os.path.join(dirpath, n), (1_800_000_000, 1_800_000_000), follow_symlinks=False)
    env = {"SOURCE_DATE_EPOCH": "1600000000"}
    run_fstool("create", "-t", "squashfs", a, "-o", tmp_path / "1.sqfs", env={**env, "FSTOOL_THREADS": "1"},
               check=True)
    for threads in ("2", "4"):
        run_fstool("create", "-t", "squashfs", b, "-o", tmp_path / "2.sqfs",
                   env={**env, "FSTOOL_THREADS": threads}, cwd=tmp_path, check=True)
        assert same_file(tmp_path / "1.sqfs", tmp_path / "2.sqfs")
    assert "Jan  1 00:00:00 1970" not in superblock(tmp_path / "1.sqfs")


def test_our_reader_matches_the_source(tmp_path, rich):
    img = tmp_path / "r.sqfs"
    run_fstool("create", "-t", "squashfs", rich, "-o", img, "-O", "compression=zstd", check=True)
    p = run_fstool("ls", "-R", img, check=True)
    listed = {line.split("\t")[-1].split(" -> ")[0] for line in p.stdout.splitlines()}
    expect = {"/" + os.path.relpath(os.path.join(d, n), rich) for d, ds, fs in os.walk(rich) for n in ds + fs}
    assert expect <= listed
    out = run_fstool("cat", img, "/size-393223", check=True, text_output=False)
    assert out.stdout == (rich / "size-393223").read_bytes()
    info = run_fstool("info", img, check=True).stdout
    assert "compression: zstd" in info


def test_spec_build_with_options_and_capacity(tmp_path, rich):
    spec = {"filesystem": {"type": "squashfs", "source": str(rich), "block_size": "64KiB",
                           "options": {"compression": "xz", "compression_level": 3}}}
    (tmp_path / "s.json").write_text(json.dumps(spec))
    run_fstool("build", "s.json", "-o", "o.sqfs", cwd=tmp_path, check=True)
    assert "Block size 65536" in superblock(tmp_path / "o.sqfs")
    spec["filesystem"]["size"] = "1MiB"
    (tmp_path / "s.json").write_text(json.dumps(spec))
    p = run_fstool("build", "s.json", "-o", "small.sqfs", cwd=tmp_path)
    assert_one_line_error(p, 1, "s.json", "1 MiB")
    assert not (tmp_path / "small.sqfs").exists()


@pytest.mark.parametrize("opt, code, needle", [
    ("compression=lzo", 2, "compression"),
    ("compresion=xz", 2, "did you mean 'compression'"),
    ("compression_level=99", 2, "compression_level"),
    ("no_fragments=maybe", 2, "no_fragments"),
])
def test_option_errors(tmp_path, opt, code, needle):
    (tmp_path / "src").mkdir()
    p = run_fstool("create", "-t", "squashfs", "src", "-o", "o.sqfs", "-O", opt, cwd=tmp_path)
    assert_one_line_error(p, code, needle)
    assert sorted(os.listdir(tmp_path)) == ["src"]


def test_corrupt_images_are_refused(tmp_path):
    (tmp_path / "src").mkdir()
    (tmp_path / "src" / "f").write_bytes(b"x" * 300000)
    img = tmp_path / "o.sqfs"
    run_fstool("create", "-t", "squashfs", tmp_path / "src", "-o", img, check=True)
    data = bytearray(img.read_bytes())
    (tmp_path / "trunc.sqfs").write_bytes(data[:200])
    p = run_fstool("ls", tmp_path / "trunc.sqfs")
    assert_one_line_error(p, 1, "trunc.sqfs", "truncated")
    bad = bytearray(data)
    bad[40:48] = (10 ** 12).to_bytes(8, "little")  # bytes_used
    (tmp_path / "bad.sqfs").write_bytes(bad)
    p = run_fstool("info", tmp_path / "bad.sqfs")
    assert_one_line_error(p, 1, "bad.sqfs")


def test_empty_tree(tmp_path):
    (tmp_path / "src").mkdir()
    img = tmp_path / "e.sqfs"
    run_fstool("create", "-t", "squashfs", tmp_path / "src", "-o", img, check=True)
    with loop_mount(img, tmp_path) as mnt:
        assert os.listdir(mnt) == []
    unsquashfs_ok(img, tmp_path / "x")
    assert os.listdir(tmp_path / "x") == []


def test_lzo_decoder_refuses_garbage():
    from fstool.fs.squashfs.lzo import LzoError, decompress
    import zlib
    for bad in (b"", b"\x00", b"\x15abc", b"\x40\xff", zlib.compress(b"not lzo")):
        with pytest.raises(LzoError):
            decompress(bad, 131072)
    # the smallest valid stream: four literals, then the end marker
    assert decompress(b"\x15abcd\x11\x00\x00", 16) == b"abcd"
    with pytest.raises(LzoError, match="larger than the block"):
        decompress(b"\x15abcd\x11\x00\x00", 3)
