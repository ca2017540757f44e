"""Output containers (qcow2, Android sparse, bmap) checked by their real tools:
`qemu-img check/compare`, `simg2img`, `bmaptool copy`, and our readers against images
the tools themselves made (`qemu-img convert`, `img2simg`)."""
from __future__ import annotations

import json
import os
import random
import struct
import subprocess
import zlib

import pytest

from fstool.container import convert, open_region, plan_output
from fstool.container.simg import crc32_zeros
from fstool.errors import ImageError, SpecError
from conftest import assert_one_line_error, run_fstool, same_file


def make_raw(path, size=24 << 20, seed=1):
    """A sparse raw image: random data, a repeated word, written zeros, data at the end."""
    rnd = random.Random(seed)
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o644)
    try:
        os.ftruncate(fd, size)
        os.pwrite(fd, rnd.randbytes(10000), 0)
        os.pwrite(fd, b"\xab\xcd\xef\x01" * 4096 * 3, 1 << 20)
        os.pwrite(fd, bytes(8192), 5 << 20)  # zeros that were written: data, not a hole
        os.pwrite(fd, rnd.randbytes(70000), size - 70000 - 1000)
        os.pwrite(fd, rnd.randbytes(3), size - 3)
    finally:
        os.close(fd)
    return path


def run(*cmd):
    p = subprocess.run(list(map(str, cmd)), capture_output=True, text=True)
    assert p.returncode == 0, f"{cmd}: {p.stdout}{p.stderr}"
    return p.stdout + p.stderr


@pytest.fixture
def raw(tmp_path):
    return make_raw(tmp_path / "raw.img")


def test_qcow2_written_is_clean_and_equal(raw, tmp_path):
    q = tmp_path / "d.qcow2"
    assert convert(str(raw), str(q)).format == "qcow2"
    out = run("qemu-img", "check", "-f", "qcow2", q)
    assert "No errors were found" in out
    assert "Images are identical" in run("qemu-img", "compare", "-f", "raw", "-F", "qcow2", raw, q)
    info = run("qemu-img", "info", "--output=json", q)
    assert '"compat": "1.1"' in info  # qcow2 version 3
    assert os.path.getsize(q) < os.path.getsize(raw) // 10


@pytest.mark.parametrize("args", [[], ["-c"]], ids=["plain", "compressed"])
def test_qcow2_reader_reads_qemu_images(raw, tmp_path, args):
    q = tmp_path / "qemu.qcow2"
    run("qemu-img", "convert", *args, "-O", "qcow2", raw, q)
    back = tmp_path / "back.img"
    convert(str(q), str(back))
    assert same_file(back, raw)


def test_android_sparse_expands_to_raw(raw, tmp_path):
    s = tmp_path / "d.simg"
    assert convert(str(raw), str(s)).format == "android-sparse"
    run("simg2img", s, tmp_path / "out.img")
    assert same_file(tmp_path / "out.img", raw)
    # DONT_CARE for holes and FILL for the repeated word: far smaller than the image
    assert os.path.getsize(s) < 100_000


def test_android_sparse_crc(raw, tmp_path):
    s = tmp_path / "c.simg"
    convert(str(raw), str(s), "android-sparse-crc")
    run("simg2img", s, tmp_path / "out.img")
    assert same_file(tmp_path / "out.img", raw)
    data = open(raw, "rb").read()
    blob = open(s, "rb").read()
    crc = zlib.crc32(data)
    assert struct.unpack_from("<I", blob, 24)[0] == crc  # header image_checksum
    assert struct.unpack_from("<HHII", blob, len(blob) - 16) == (0xCAC4, 0, 0, 16)
    assert struct.unpack_from("<I", blob, len(blob) - 4)[0] == crc


def test_crc32_zeros_matches_zlib():
    for crc in (0, 0x12345678):
        for n in (0, 1, 7, 4096, 123457):
            assert crc32_zeros(crc, n) == zlib.crc32(bytes(n), crc)


def test_android_sparse_reader_reads_img2simg(raw, tmp_path):
    s = tmp_path / "a.simg"
    run("img2simg", raw, s)
    back = tmp_path / "back.img"
    convert(str(s), str(back))
    assert same_file(back, raw)


@pytest.mark.slow
def test_android_sparse_over_4gib(tmp_path):
    big = tmp_path / "big.img"
    size = (4 << 30) + (64 << 20)
    fd = os.open(big, os.O_RDWR | os.O_CREAT, 0o644)
    os.ftruncate(fd, size)
    os.pwrite(fd, b"head" * 1000, 0)
    os.pwrite(fd, random.Random(3).randbytes(50000), (4 << 30) + 12345)  # past 4 GiB
    os.close(fd)
    s = tmp_path / "big.simg"
    convert(str(big), str(s))
    assert os.path.getsize(s) < 200_000
    run("simg2img", s, tmp_path / "out.img")
    run("cmp", big, tmp_path / "out.img")
    # and the reader: the bytes past 4 GiB come back
    r = open_region(str(s))
    assert r.length == size
    assert r.pread(50000, (4 << 30) + 12345) == random.Random(3).randbytes(50000)
    r.close()


def test_bmap_copy_reproduces_image(raw, tmp_path):
    plan = convert(str(raw), str(tmp_path / "d.img.bmap"))
    assert plan.image == str(tmp_path / "d.img") and plan.bmap == str(tmp_path / "d.img.bmap")
    assert same_file(plan.image, raw)
    text = open(plan.bmap).read()
    assert '<bmap version="2.0">' in text
    # the written zeros at 5 MiB are data (blocks 1280-1281): mapped, not skipped
    assert "1280-1281" in text
    # a target full of garbage: bmaptool must rewrite every mapped block, zeros included
    target = tmp_path / "target.img"
    with open(target, "wb") as f:
        f.write(b"\xff" * os.path.getsize(raw))
    out = run("bmaptool", "copy", "--bmap", plan.bmap, plan.image, target)
    assert "mapped" in out
    # what bmaptool leaves unwritten is the holes: compare only mapped data
    fd_raw, fd_t = os.open(raw, os.O_RDONLY), os.open(target, os.O_RDONLY)
    try:
        from fstool.container import block_ranges
        for first, end in block_ranges(fd_raw, os.path.getsize(raw), 4096):
            n = min(end * 4096, os.path.getsize(raw)) - first * 4096
            assert os.pread(fd_raw, n, first * 4096) == os.pread(fd_t, n, first * 4096)
    finally:
        os.close(fd_raw), os.close(fd_t)
    run("bmaptool", "copy", plan.image, tmp_path / "fresh.img")
    assert same_file(tmp_path / "fresh.img", raw)


def test_bmap_checksum_is_checked(raw, tmp_path):
    plan = convert(str(raw), str(tmp_path / "d.img"), "bmap")
    text = open(plan.bmap).read()
    open(plan.bmap, "w").write(text.replace("<ImageSize>", "<ImageSize> ", 1))
    p = subprocess.run(["bmaptool", "copy", plan.image, tmp_path / "x.img"], capture_output=True, text=True)
    assert p.returncode != 0 and "checksum" in p.stderr.lower()


def test_round_trip_between_containers(raw, tmp_path):
    convert(str(raw), str(tmp_path / "a.simg"))
    convert(str(tmp_path / "a.simg"), str(tmp_path / "b.qcow2"))
    assert "No errors" in run("qemu-img", "check", tmp_path / "b.qcow2")
    convert(str(tmp_path / "b.qcow2"), str(tmp_path / "c.simg"))
    convert(str(tmp_path / "c.simg"), str(tmp_path / "d.img"))
    assert same_file(tmp_path / "d.img", raw)


def test_plan_by_extension_and_name():
    assert plan_output("x.qcow2").format == "qcow2"
    assert plan_output("x.simg").format == "android-sparse"
    assert plan_output("x.img").format == "raw"
    assert plan_output("x.img", "simg").format == "android-sparse"
    with pytest.raises(SpecError, match="unknown output format 'vmdk'"):
        plan_output("x.img", "vmdk")


@pytest.mark.parametrize("kind", ["qcow2", "simg"])
def test_malformed_containers_are_refused(raw, tmp_path, kind):
    c = tmp_path / f"d.{kind}"
    convert(str(raw), str(c))
    data = bytearray(open(c, "rb").read())
    if kind == "qcow2":
        data[36:40] = struct.pack(">I", 0x7FFFFFFF)  # an L1 table far larger than the file
    else:
        data[20:24] = struct.pack("<I", 0xFFFFFFF0)  # chunk count past the file
    bad = tmp_path / f"bad.{kind}"
    open(bad, "wb").write(data)
    with pytest.raises(ImageError):
        open_region(str(bad))
    # truncated in the middle of its payload
    open(bad, "wb").write(open(c, "rb").read()[:5000])
    with pytest.raises(ImageError):
        r = open_region(str(bad))
        r.pread(r.length, 0)


# --- through the command line ---------------------------------------------------------------

DISK = """
[image]
partition_table = "gpt"
{extra}
[[partitions]]
name = "boot"
type = "esp"
size = "8MiB"
[partitions.filesystem]
type = "fat"
source = "root"

[[partitions]]
name = "root"
type = "linux"
[partitions.filesystem]
type = "ext4"
source = "root"
"""


@pytest.fixture
def disk_dir(tmp_path):
    (tmp_path / "root" / "etc").mkdir(parents=True)
    (tmp_path / "root" / "etc" / "motd").write_text("hello from a container\n")
    (tmp_path / "disk.toml").write_text(DISK.format(extra=""))
    run_fstool("build", "disk.toml", "-o", "raw.img", cwd=tmp_path, check=True)
    return tmp_path


@pytest.mark.parametrize("out, args, fmt", [
    ("d.qcow2", [], "qcow2"), ("d.simg", [], "android-sparse"), ("d.img", ["--format", "qcow2"], "qcow2"),
    ("d.img", ["--format", "simg-crc"], "android-sparse")])
def test_build_disk_into_container_and_read_it(disk_dir, out, args, fmt):
    run_fstool("build", "disk.toml", "-o", out, *args, cwd=disk_dir, check=True)
    img = disk_dir / out
    if fmt == "qcow2":
        assert "No errors" in run("qemu-img", "check", "-f", "qcow2", img)
        assert "identical" in run("qemu-img", "compare", "-f", "raw", "-F", "qcow2", disk_dir / "raw.img", img)
    else:
        run("simg2img", img, disk_dir / "x.img")
        assert same_file(disk_dir / "x.img", disk_dir / "raw.img")
    info = run_fstool("info", img, check=True).stdout
    assert "GPT disk in " in info and "partition 2: ext4" in info and "partition 1: fat" in info
    for n in (1, 2):
        assert run_fstool("cat", f"{img}:{n}", "/etc/motd", check=True).stdout == "hello from a container\n"
    assert "motd" in run_fstool("ls", "-R", f"{img}:2", check=True).stdout
    assert not [f for f in os.listdir(disk_dir) if f.endswith((".tmp", ".raw"))]


def test_image_format_key_and_bmap(disk_dir):
    (disk_dir / "b.toml").write_text(DISK.format(extra='format = "bmap"'))
    run_fstool("build", "b.toml", "-o", "b.img", cwd=disk_dir, check=True)
    run_fstool("build", "b.toml", "-o", "plain.img", "--format", "raw", cwd=disk_dir, check=True)
    assert not (disk_dir / "plain.img.bmap").exists()  # --format wins over the spec's key
    assert same_file(disk_dir / "b.img", disk_dir / "plain.img")
    run("bmaptool", "copy", disk_dir / "b.img", disk_dir / "copy.img")
    assert same_file(disk_dir / "copy.img", disk_dir / "plain.img")
    # the partition tables and the filesystems' metadata are mapped
    text = (disk_dir / "b.img.bmap").read_text()
    assert "<Range" in text and '> 0' in text


def test_create_and_convert_cli(disk_dir):
    run_fstool("create", "-t", "squashfs", "root", "-o", "fs.simg", cwd=disk_dir, check=True)
    assert run_fstool("cat", disk_dir / "fs.simg", "/etc/motd", check=True).stdout.startswith("hello")
    run_fstool("convert", "raw.img", "c.qcow2", cwd=disk_dir, check=True)
    run_fstool("convert", "c.qcow2", "c.simg", cwd=disk_dir, check=True)
    run_fstool("convert", "c.simg", "back.img", cwd=disk_dir, check=True)
    assert same_file(disk_dir / "back.img", disk_dir / "raw.img")
    p = run_fstool("convert", "raw.img", "x.vmdk", "--format", "vmdk", cwd=disk_dir)
    assert_one_line_error(p, 2, "unknown output format 'vmdk'")
    p = run_fstool("convert", "missing.img", "x.qcow2", cwd=disk_dir)
    assert_one_line_error(p, 1, "missing.img")
    (disk_dir / "bad.qcow2").write_bytes(b"QFI\xfb" + bytes(200))
    p = run_fstool("info", "bad.qcow2", cwd=disk_dir)
    assert_one_line_error(p, 1, "bad.qcow2", "qcow2")


@pytest.mark.parametrize("kind", ["qcow2", "simg"])
def test_mutated_containers_give_clean_errors(tmp_path, kind):
    """A seeded mutator over small containers: reading them back either works or raises
    ImageError; never another exception, never an unbounded read."""
    raw = make_raw(tmp_path / "m.img", size=4 << 20, seed=7)
    c = tmp_path / f"m.{kind}"
    convert(str(raw), str(c))
    orig = c.read_bytes()
    rnd = random.Random(kind)
    bad = tmp_path / "bad"
    for _ in range(300):
        d = bytearray(orig)
        for _ in range(rnd.randint(1, 6)):
            pos = rnd.randrange(min(len(d), 300) if rnd.random() < 0.7 else len(d))
            d[pos] = rnd.randrange(256)
        if rnd.random() < 0.2:
            d = d[:rnd.randrange(len(d))]
        bad.write_bytes(d)
        try:
            r = open_region(str(bad))
            try:
                r.pread(min(r.length, 8 << 20), 0)
            finally:
                r.close()
        except ImageError:
            pass


def test_odd_sizes(tmp_path):
    """An image that is not a whole number of clusters or 4 KiB blocks (a FAT image, say)."""
    raw = make_raw(tmp_path / "odd.img", size=(6 << 20) + 1536, seed=11)
    convert(str(raw), str(tmp_path / "o.qcow2"))
    assert "No errors" in run("qemu-img", "check", tmp_path / "o.qcow2")
    assert "identical" in run("qemu-img", "compare", "-f", "raw", "-F", "qcow2", raw, tmp_path / "o.qcow2")
    convert(str(raw), str(tmp_path / "o.simg"))
    blob = (tmp_path / "o.simg").read_bytes()
    assert struct.unpack_from("<I", blob, 12)[0] == 512  # 512-byte blocks when 4 KiB do not divide
    run("simg2img", tmp_path / "o.simg", tmp_path / "o.out")
    assert same_file(tmp_path / "o.out", raw)
    for c in ("o.qcow2", "o.simg"):
        convert(str(tmp_path / c), str(tmp_path / (c + ".raw")))
        assert same_file(tmp_path / (c + ".raw"), raw)
    with pytest.raises(SpecError, match="multiple of 512"):
        make_raw(tmp_path / "odd2.img", size=(6 << 20) + 100, seed=1)
        convert(str(tmp_path / "odd2.img"), str(tmp_path / "x.simg"))


def test_create_cluster_size_sets_the_qcow2_cluster_size(tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    (src / "f").write_bytes(os.urandom(100_000))
    raw, q = tmp_path / "x.img", tmp_path / "x.qcow2"
    run_fstool("create", "-t", "ext4", src, "-o", raw, check=True)
    run_fstool("create", "-t", "ext4", src, "-o", q, "--cluster-size", "4KiB", check=True)
    info = json.loads(subprocess.run(["qemu-img", "info", "--output=json", str(q)], capture_output=True,
                                     text=True, check=True).stdout)
    assert info["cluster-size"] == 4096
    assert subprocess.run(["qemu-img", "check", str(q)], capture_output=True).returncode == 0
    assert subprocess.run(["qemu-img", "compare", str(raw), str(q)], capture_output=True).returncode == 0
    p = run_fstool("create", "-t", "ext4", src, "-o", tmp_path / "y.img", "--cluster-size", "4KiB")
    assert p.returncode == 2 and "needs qcow2 output" in p.stderr
