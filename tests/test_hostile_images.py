"""Damaged and hostile images through the read verbs: one clean line, bounded time, never an
internal error. A seeded mutator runs over small images of every format we read (CI runs a
bounded count); generated nasty images (cycles, truncation) are checked one by one."""
from __future__ import annotations

import contextlib
import io
import os
import random
import signal
import subprocess

import pytest

from conftest import assert_one_line_error, run_fstool

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    d = tmp_path_factory.mktemp("hostile")
    src = d / "src"
    (src / "a" / "b").mkdir(parents=True)
    (src / "a" / "b" / "f").write_text("hello\n" * 100)
    (src / ("long-name-" + "x" * 40)).write_bytes(bytes(range(256)) * 20)
    (src / "link").symlink_to("a/b/f")
    for i in range(30):
        (src / "a" / f"file{i:02d}").write_text(f"{i}\n" * i)
    from fstool.fs import formats
    out = {}
    for fmt in formats():
        if fmt.writer is None or fmt.reader is None:
            continue
        t = fmt.types[0]
        img = d / f"img.{t}"
        extra = ["-O", "follow_symlinks=true"] if not fmt.caps.symlinks else []
        run_fstool("create", "-t", t, src, "-o", img, *extra, check=True)
        out[t] = img
    return out


def test_directory_cycle_is_refused(tmp_path, images):
    img = tmp_path / "cycle.ext4"
    subprocess.run(["cp", str(images["ext2"]), str(img)], check=True)
    subprocess.run(["debugfs", "-w", "-R", "ln /a /a/b/loop", str(img)], check=True, capture_output=True)
    p = run_fstool("ls", "-R", img)
    assert p.returncode == 1 and "directory cycle" in p.stderr and str(img) in p.stderr
    assert "Traceback" not in p.stderr


@pytest.mark.parametrize("cut", [0.1, 0.5, 0.9])
def test_truncated_images_fail_cleanly(tmp_path, images, cut):
    for t, src in images.items():
        data = src.read_bytes()
        img = tmp_path / f"cut-{t}"
        img.write_bytes(data[:int(len(data) * cut)])
        for args in (("info", img), ("ls", "-R", img), ("cat", img, "/a/b/f")):
            p = run_fstool(*args)
            assert "internal error" not in p.stderr and "Traceback" not in p.stderr, (t, args, p.stderr)
            if p.returncode != 0:
                assert_one_line_error(p, p.returncode)


class _Timeout(Exception):
    pass


def _run_cli(argv) -> tuple[int, str]:
    from fstool.cli import main
    err = io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.TextIOWrapper(io.BytesIO())):
        rc = main([str(a) for a in argv])
    return rc, err.getvalue()


def test_seeded_mutations_never_hang_or_crash(tmp_path, images):
    """200 mutated images per format (bytes flipped in the first 64 KiB, where the metadata
    is): every read verb ends within 10 s with exit 0 or a one-line error."""
    def on_alarm(signum, frame):
        raise _Timeout()
    old = signal.signal(signal.SIGALRM, on_alarm)
    try:
        for t, src in sorted(images.items()):
            base = bytearray(src.read_bytes())
            rng = random.Random(f"fstool-fuzz-{t}")
            img = tmp_path / f"m-{t}"
            for case in range(200):
                data = bytearray(base)
                for _ in range(rng.randint(1, 8)):
                    pos = rng.randrange(min(len(data), 65536))
                    data[pos] = rng.randrange(256)
                img.write_bytes(data)
                for argv in (("info", img), ("ls", "-R", img), ("cat", img, "/a/b/f")):
                    signal.alarm(10)
                    try:
                        rc, err = _run_cli(argv)
                    except _Timeout:
                        pytest.fail(f"{t} case {case}: {argv[0]} took over 10 s")
                    finally:
                        signal.alarm(0)
                    assert "internal error" not in err, (t, case, argv[0], err)
                    if rc != 0:
                        assert len(err.strip().splitlines()) == 1, (t, case, argv[0], err)
    finally:
        signal.signal(signal.SIGALRM, old)


@pytest.fixture
def fat_img(tmp_path):
    src = tmp_path / "fsrc"
    (src / "a" / "b").mkdir(parents=True)
    (src / "a" / "b" / "deep").write_text("deep\n")
    (src / "three").write_bytes(b"1" * 512 + b"2" * 512 + b"3" * 100)
    (src / "a long file name.txt").write_text("long\n")
    img = tmp_path / "f.img"
    run_fstool("create", "-t", "fat16", src, "-o", img, "--size", "16MiB", "-O", "cluster_size=512",
               check=True)
    from fstool.fs.fat.reader import open as open_fat
    from fstool.image import Region
    r = open_fat(Region(str(img)))
    return img, r


def _patch(img, off, data):
    with open(img, "r+b") as f:
        f.seek(off)
        f.write(data)


def test_circular_fat_chain_is_refused_not_read(fat_img):
    img, r = fat_img
    _, e = r._lookup("/three")
    c = e.cluster
    fat_bytes = r.boot.fat_sectors * r.boot.sector_size
    for copy in range(r.boot.fats):  # last cluster of /three points back to its first
        _patch(img, r.fat_start + copy * fat_bytes + (c + 2) * 2, c.to_bytes(2, "little"))
    p = run_fstool("cat", img, "/three")
    assert_one_line_error(p, 1, "loops")
    assert subprocess.run(["fsck.vfat", "-n", str(img)], capture_output=True).returncode != 0


def test_fat_directory_pointing_at_its_parent_is_a_cycle(fat_img):
    img, r = fat_img
    _, a = r._lookup("/a")
    data = bytearray(open(img, "rb").read())
    off = r._cluster_off(a.cluster)
    pos = data.index(b"B          ", off)  # b's short entry inside a's directory cluster
    data[pos + 26:pos + 28] = a.cluster.to_bytes(2, "little")
    open(img, "wb").write(bytes(data))
    p = run_fstool("ls", "-R", img)
    assert p.returncode == 1 and "directory cycle" in p.stderr and "Traceback" not in p.stderr


def test_lone_surrogate_in_a_long_name_is_listed(fat_img):
    img, r = fat_img
    data = bytearray(open(img, "rb").read())
    pos = data.index("file".encode("utf-16-le"))
    data[pos:pos + 2] = (0xD800).to_bytes(2, "little")
    open(img, "wb").write(bytes(data))
    p = run_fstool("ls", img, "/")
    assert p.returncode == 0, p.stderr
    assert "\ufffd" in p.stdout


def test_zeroed_primary_gpt_falls_back_to_the_backup(tmp_path):
    src = tmp_path / "gsrc"
    src.mkdir()
    (src / "f").write_text("data\n")
    spec = tmp_path / "d.toml"
    spec.write_text(f'[image]\nsize = "16MiB"\n[[partitions]]\nname = "root"\n'
                    f'[partitions.filesystem]\ntype = "ext4"\nsource = "{src}"\n')
    img = tmp_path / "d.img"
    run_fstool("build", spec, "-o", img, check=True)
    with open(img, "r+b") as f:  # zero the primary header and entry array (LBA 1..33)
        f.seek(512)
        f.write(bytes(33 * 512))
    p = run_fstool("info", img)
    assert p.returncode == 0, p.stderr
    assert "using the backup" in p.stderr and "root" in p.stdout
    p = run_fstool("cat", f"{img}:1", "/f")
    assert p.returncode == 0 and p.stdout == "data\n"
    # sgdisk agrees there is a usable table (it too reads the backup)
    out = subprocess.run(["sgdisk", "-p", str(img)], capture_output=True, text=True)
    assert "root" in out.stdout


def test_squashfs_directory_with_repeated_entries_is_refused(tmp_path):
    src = tmp_path / "ssrc"
    src.mkdir()
    (src / "a1").write_text("one\n")
    (src / "b2").write_text("two\n")
    img = tmp_path / "dup.sqfs"  # uncompressed metadata, so a name can be edited in place
    subprocess.run(["mksquashfs", str(src), str(img), "-noI", "-noD", "-noF", "-noX", "-quiet"],
                   check=True, capture_output=True)
    data = bytearray(img.read_bytes())
    pos = data.rindex(b"b2")
    data[pos:pos + 2] = b"a1"  # the listing now names a1 twice
    img.write_bytes(bytes(data))
    p = run_fstool("ls", "-R", img)
    assert_one_line_error(p, 1, "not sorted and unique")
    assert subprocess.run(["unsquashfs", "-l", str(img)], capture_output=True).returncode != 0
