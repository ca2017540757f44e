"""The exFAT writer and reader, checked by exfatprogs (fsck.exfat, mkfs.exfat, exfatlabel)
and by exfat-fuse mounting the images read-only and comparing them with the source."""
from __future__ import annotations

import contextlib
import filecmp
import os
import re
import struct
import subprocess
import tempfile
import time

import pytest
from hypothesis import HealthCheck, given, settings

from conftest import assert_one_line_error, private_mount, run_fstool
from test_properties import expected, materialise, read_back
from test_properties import trees as random_trees
from fstool.errors import CapacityError, ImageError, InputError, SpecError
from fstool.fs.base import FsParams
from fstool.fs.exfat import reader as exfat_reader
from fstool.fs.exfat.common import (BOOT, FORBIDDEN_NAME_CHARS, UPCASE_CHECKSUM, UPCASE_SIZE,
                                    boot_checksum, from_exfat_time, name_hash, set_checksum,
                                    table_checksum, to_exfat_time, upcase_map, upcase_table,
                                    upcase_units)
from fstool.fs.exfat.writer import geometry_for, parse_options, write
from fstool.image import Region, atomic_output
from fstool.inputs.hostdir import load_dir
from fstool.tree import FileSource, Kind, Node, Tree

pytestmark = pytest.mark.slow

MiB, GiB = 1 << 20, 1 << 30
MTIME = 1_600_000_001  # an odd second: the 10 ms field carries it
TOOL_ENV = dict(os.environ, LANG="C.UTF-8", LC_ALL="C.UTF-8")

NAMES = [
    "HELLO.TXT", "readme.txt", "Makefile", "a.b.c.d", ".hidden", "name with spaces.txt",
    "ünïcödé.txt", "日本語のファイル名.txt", "Ωmega", "x" * 255, "trailing dot.", "emoji 😀 file",
    "Straße", "ǅ title case", "ﬀ ligature", "+plus,semi;eq=[br].txt",
]


def populate(src, *, many=400, depth=40):
    """A source tree with long and Unicode names, deep nesting and a crowded directory."""
    src.mkdir()
    for i, name in enumerate(NAMES):
        (src / name).write_bytes(f"{name} {i}\n".encode() * (i + 1))
    (src / "empty").write_bytes(b"")
    (src / "ro.txt").write_text("read only\n")
    os.chmod(src / "ro.txt", 0o444)
    (src / "cluster.bin").write_bytes(os.urandom(4096))  # exactly one 4 KiB cluster
    (src / "big.bin").write_bytes(os.urandom(300_000))
    with open(src / "holey.bin", "wb") as f:
        f.write(b"head")
        f.seek(3 * MiB)
        f.write(b"tail")
    deep = src
    for i in range(depth):
        deep = deep / f"level {i:02d} with a longer name"
        deep.mkdir()
    (deep / "bottom.txt").write_text("deep down\n")
    crowd = src / "many"
    crowd.mkdir()
    for i in range(many):
        (crowd / f"file number {i:04d} in a crowded directory.txt").write_text(str(i))
    (crowd / "subdir").mkdir()
    (src / "emptydir").mkdir()
    for p in sorted(src.rglob("*"), reverse=True):
        os.utime(p, ns=(MTIME * 10**9 + 250_000_000,) * 2, follow_symlinks=False)
    os.utime(src, (MTIME, MTIME))


@pytest.fixture(scope="module")
def src(tmp_path_factory):
    d = tmp_path_factory.mktemp("exfat") / "src"
    populate(d)
    return d


def tool(*args, check=True):
    p = subprocess.run(list(map(str, args)), capture_output=True, text=True, env=TOOL_ENV)
    if check:
        assert p.returncode == 0, (args, p.returncode, p.stdout, p.stderr)
    return p


def fsck_clean(img):
    """fsck.exfat -n passes and says nothing but its banner and 'clean'; returns (dirs, files).
    Its output is bounded: fsck.exfat 1.2.0 can repeat one question forever on images it trips on."""
    p = subprocess.Popen(["fsck.exfat", "-n", str(img)], stdout=subprocess.PIPE,
                         stderr=subprocess.STDOUT, env=TOOL_ENV)
    data = p.stdout.read(64 << 10)
    if len(data) == 64 << 10:
        p.kill()
    rc = p.wait()
    p.stdout.close()
    out = data.decode(errors="replace").strip()
    assert rc == 0, out[:2000]
    lines = [ln for ln in out.splitlines() if ln.strip()]
    assert len(lines) == 2 and lines[0].startswith("exfatprogs version"), out[:2000]
    m = re.fullmatch(r".*: clean\. directories (\d+), files (\d+)", lines[1])
    assert m, out
    return int(m.group(1)), int(m.group(2))


@contextlib.contextmanager
def fuse_mount(img, where, rw=False):
    """Mount img with exfat-fuse (as root it wants a block device: a loop device)."""
    mnt = os.path.join(str(where), f"fuse{time.monotonic_ns()}")
    os.makedirs(mnt)
    loop = tool("losetup", "-f", "--show", *([] if rw else ["-r"]), img).stdout.strip()
    try:
        if rw:  # written to, then checked: the mount must not outlive our umount (see private_mount)
            with private_mount(["mount.exfat-fuse", "-o", "rw", loop], mnt) as m:
                yield str(m)
        else:
            tool("mount.exfat-fuse", "-o", "ro", loop, mnt)
            try:
                yield mnt
            finally:
                tool("umount", mnt)
    finally:
        tool("losetup", "-d", loop)
        os.rmdir(mnt)


def source_listing(src):
    """{relative path: (is_dir, mtime seconds, bytes or None)} of a host tree."""
    out = {}
    for dirpath, dirnames, filenames in os.walk(src):
        for n in dirnames + filenames:
            p = os.path.join(dirpath, n)
            rel = "/" + os.path.relpath(p, src)
            st = os.stat(p)
            out[rel] = (os.path.isdir(p), int(st.st_mtime), None if os.path.isdir(p) else p)
    return out


def compare_mount(src, mnt):
    """Names, kinds, bytes and mtimes (to the second, what exfat-fuse shows) are the source's."""
    a, b = source_listing(src), source_listing(mnt)
    assert set(a) == set(b), (sorted(set(a) - set(b))[:5], sorted(set(b) - set(a))[:5])
    for rel, (is_dir, mtime, path) in a.items():
        assert b[rel][0] == is_dir, rel
        assert b[rel][1] == mtime, (rel, b[rel][1], mtime)
        if not is_dir:
            assert filecmp.cmp(path, b[rel][2], shallow=False), rel


def check_reader(img, src, *, times=True):
    """Our reader lists the same tree as the source, with the same bytes and mtimes."""
    with Region(str(img)) as region:
        assert exfat_reader.probe(region)
        r = exfat_reader.open(region)
        seen = {e.path: e for e in r.walk("/")}
        want = source_listing(src)
        assert set(seen) - {"/"} == set(want)
        for rel, (is_dir, mtime, path) in want.items():
            e = seen[rel]
            assert (e.kind is Kind.DIR) == is_dir, rel
            if times:
                assert e.mtime == mtime, (rel, e.mtime, mtime)
            if not is_dir:
                assert e.size == os.path.getsize(path), rel
                with open(path, "rb") as f:
                    assert b"".join(r.read_file(rel)) == f.read(), rel
        return r


def build(src, img, **kw):
    params = FsParams(fs_type="exfat", seed=b"test-seed", timestamp=MTIME, **kw)
    params.opts = parse_options(params)
    with atomic_output(str(img)) as out:
        return write(load_dir(str(src)), out, params)


def info(img):
    with Region(str(img)) as region:
        return dict(exfat_reader.open(region).info())


def boot_fields(img):
    with open(img, "rb") as f:
        return BOOT.unpack(f.read(512))


# -- the algorithms ---------------------------------------------------------------

def test_upcase_table_is_the_specifications():
    data = upcase_table()
    assert len(data) == UPCASE_SIZE == 5836 and table_checksum(data) == UPCASE_CHECKSUM == 0xE619D30D
    up = upcase_map()
    assert up[ord("a")] == ord("A") and up[ord("ß")] == ord("ß") and up[ord("ω")] == ord("Ω")
    assert all(up[c] == c for c in range(0xD800, 0xE000))  # surrogates are never mapped


def test_checksums_skip_their_own_fields():
    e = bytearray(os.urandom(96))
    c = set_checksum(e)
    e[2:4] = b"\xff\xff"
    assert set_checksum(e) == c
    e[5] ^= 1
    assert set_checksum(e) != c
    region = bytearray(os.urandom(11 * 512))
    c = boot_checksum(region)
    region[106], region[107], region[112] = 1, 2, 3  # VolumeFlags and PercentInUse
    assert boot_checksum(region) == c
    # the name hash is over the up-cased name: case does not change it
    lower, upper = "readme.txt".encode("utf-16-le"), "README.TXT".encode("utf-16-le")
    assert name_hash(upcase_units(lower, upcase_map())) == name_hash(upper)


def test_timestamps_round_trip_with_10ms():
    for sec, ns in ((MTIME, 250_000_000), (1_700_000_000, 0), (946_684_799, 990_000_000)):
        stamp, ms10 = to_exfat_time(sec, ns)
        assert ms10 == (sec % 2) * 100 + ns // 10_000_000
        assert from_exfat_time(stamp, ms10) == sec
    # a UTC offset of +01:00 (4 quarter hours) is taken off
    stamp, ms10 = to_exfat_time(1_700_000_000)
    assert from_exfat_time(stamp, ms10, 0x80 | 4) == 1_700_000_000 - 3600
    assert time.gmtime(from_exfat_time(*to_exfat_time(0)))[:3] == (1980, 1, 1)
    assert time.gmtime(from_exfat_time(*to_exfat_time(2**40)))[:3] == (2107, 12, 31)


# -- images checked by the real tools ------------------------------------------------

def test_auto_size_fsck_fuse_and_reader(tmp_path, src):
    img = tmp_path / "auto.img"
    size = build(src, img, label="Ünïcode Lbl")
    assert size == img.stat().st_size and size % MiB == 0 and size <= 12 * MiB
    dirs, files = fsck_clean(img)
    assert dirs == 1 + sum(1 for p in src.rglob("*") if p.is_dir())
    assert files == sum(1 for p in src.rglob("*") if not p.is_dir())
    assert "label: Ünïcode Lbl" in tool("exfatlabel", img).stdout
    with fuse_mount(img, tmp_path) as mnt:
        compare_mount(src, mnt)
    r = check_reader(img, src)
    assert r.stat("/ro.txt").mode == 0o444 and r.stat("/readme.txt").mode == 0o644
    assert r.stat("/README.TXT").path == "/readme.txt"  # case-insensitive lookup
    assert r.stat("/STRASSE".lower().replace("ss", "ß")).path == "/Straße"
    # holes stay holes: the 3 MiB gap in holey.bin takes no room
    assert img.stat().st_blocks * 512 < size - 2 * MiB
    # headroom is free space on top
    img2 = tmp_path / "room.img"
    size2 = build(src, img2, headroom=20 * MiB)
    assert size2 >= size + 20 * MiB
    assert int(info(img2)["free clusters"]) * 4096 >= 20 * MiB
    fsck_clean(img2)


@pytest.mark.parametrize("size, options", [
    (64 * MiB, {}),
    (300 * MiB, {}),
    (40 * MiB, {"cluster_size": "512"}),
    (33 * GiB, {}),
    (600 * MiB, {"cluster_size": "256K"}),
])
def test_fixed_sizes_match_mkfs_geometry(tmp_path, src, size, options):
    """Our layout is mkfs.exfat's for the same size and cluster size (exfatprogs 1.2)."""
    ref = tmp_path / "mkfs.img"
    with open(ref, "wb") as f:
        f.truncate(size)
    args = ["-c", options["cluster_size"]] if options else []
    tool("mkfs.exfat", *args, ref)
    img = tmp_path / "ours.img"
    assert build(src, img, size=size, options=options) == size
    mine, theirs = boot_fields(img), boot_fields(ref)
    # VolumeLength, FatOffset, FatLength, ClusterHeapOffset, ClusterCount, FirstClusterOfRootDirectory
    assert mine[4:10] == theirs[4:10]
    # FileSystemRevision, VolumeFlags, BytesPerSectorShift, SectorsPerClusterShift, NumberOfFats, DriveSelect
    assert mine[11:17] == theirs[11:17]
    assert img.stat().st_blocks * 512 < 24 * MiB  # free space and the FAT's tail stay holes
    fsck_clean(img)
    check_reader(img, src)
    if size <= 300 * MiB:
        with fuse_mount(img, tmp_path) as mnt:
            compare_mount(src, mnt)


def test_big_sparse_file_over_4gib(tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    big = src / "huge.bin"
    with open(big, "wb") as f:
        f.write(b"start")
        f.seek(5 * GiB - 3)
        f.write(b"end")
    (src / "small.txt").write_text("small\n")
    img = tmp_path / "big.img"
    size = build(src, img)
    assert 5 * GiB < size <= 5 * GiB + 64 * MiB
    assert img.stat().st_blocks * 512 < 8 * MiB
    fsck_clean(img)
    with Region(str(img)) as region:
        r = exfat_reader.open(region)
        e = r.stat("/huge.bin")
        assert e.size == 5 * GiB
        first = next(iter(r.read_file("/huge.bin")))
        assert first[:5] == b"start"
        assert b"".join(r.read_file("/small.txt")) == b"small\n"
    with fuse_mount(img, tmp_path) as mnt:
        with open(os.path.join(mnt, "huge.bin"), "rb") as f:
            assert f.read(5) == b"start"
            f.seek(5 * GiB - 3)
            assert f.read() == b"end"
            assert os.fstat(f.fileno()).st_size == 5 * GiB


def test_sector_size_4096_and_small_alignment(tmp_path, src):
    img = tmp_path / "s4k.img"
    build(src, img, size=32 * MiB, options={"sector_size": 4096, "boundary_align": "4K"})
    f = boot_fields(img)
    assert f[13] == 12  # BytesPerSectorShift
    assert f[5] * 4096 == 24 * 4096  # the FAT right after the two boot regions
    fsck_clean(img)
    check_reader(img, src)
    with fuse_mount(img, tmp_path) as mnt:
        compare_mount(src, mnt)


def test_reproducible_and_derived_ids(tmp_path, src):
    a, b = tmp_path / "a.img", tmp_path / "b.img"
    for img in (a, b):
        run_fstool("create", "-t", "exfat", src, "-o", img, "--label", "REPRO", cwd=tmp_path,
                   check=True)
    assert filecmp.cmp(a, b, shallow=False)
    c = tmp_path / "c.img"
    build(src, c, size=64 * MiB, volume_id="1234-ABCD")
    assert info(c)["volume id"] == "1234-ABCD"
    assert "volume serial : 0x1234abcd" in tool("exfatlabel", "-i", c).stdout
    d, e = tmp_path / "d.img", tmp_path / "e.img"
    build(src, d, size=64 * MiB)
    build(src, e, size=64 * MiB)
    assert filecmp.cmp(d, e, shallow=False)
    assert info(d)["volume id"] != info(c)["volume id"]


def test_volume_guid(tmp_path, src):
    """The Volume GUID entry is written on request (derived from the seed, or given);
    by default its slot is kept unused, as mkfs.exfat does."""
    img = tmp_path / "g.img"
    build(src, img, size=16 * MiB, options={"volume_guid": "auto"})
    guid = info(img)["volume guid"]
    assert re.fullmatch(r"[0-9a-f-]{36}", guid)
    img2 = tmp_path / "g2.img"
    build(src, img2, size=16 * MiB, options={"volume_guid": "auto"})
    assert info(img2)["volume guid"] == guid
    img3 = tmp_path / "g3.img"
    build(src, img3, size=16 * MiB, uuid="12345678-1234-5678-9abc-def012345678")
    assert info(img3)["volume guid"] == "12345678-1234-5678-9abc-def012345678"
    plain = tmp_path / "plain.img"
    build(src, plain, size=16 * MiB)
    assert info(plain)["volume guid"] == ""
    fsck_clean(plain)


def test_cli_ls_cat_info(tmp_path, src):
    img = tmp_path / "x.img"
    run_fstool("create", "-t", "exfat", src, "-o", img, "--label", "CLI", cwd=tmp_path, check=True)
    p = run_fstool("info", img, check=True)
    assert "exfat" in p.stdout and "cluster size: 4096" in p.stdout and "label: CLI" in p.stdout
    p = run_fstool("ls", "-R", img, "/", check=True)
    assert "日本語のファイル名.txt" in p.stdout and "-r--r--r--" in p.stdout
    assert p.stdout.count("\n") == sum(1 for _ in src.rglob("*"))
    p = run_fstool("cat", img, "/Ωmega", check=True)
    assert p.stdout == "Ωmega 8\n" * 9


def test_exfat_partition_in_disk(tmp_path, src):
    spec = tmp_path / "disk.toml"
    spec.write_text(f"""
[image]
size = "80MiB"
partition_table = "gpt"

[[partitions]]
name = "data"
type = "msdata"
size = "40MiB"
[partitions.filesystem]
type = "exfat"
source = "{src}"
label = "DATA"
""")
    run_fstool("build", spec, "-o", tmp_path / "disk.img", cwd=tmp_path, check=True)
    part = tmp_path / "part.img"
    with open(tmp_path / "disk.img", "rb") as f, open(part, "wb") as g:
        f.seek(MiB)
        g.write(f.read(40 * MiB))
    fsck_clean(part)
    check_reader(part, src)
    p = run_fstool("ls", f"{tmp_path / 'disk.img'}:1", "/", check=True)
    assert "readme.txt" in p.stdout


# -- images made by mkfs.exfat and exfat-fuse, read by us -------------------------------

@pytest.mark.parametrize("size, cluster", [(64 * MiB, None), (300 * MiB, "32K"), (48 * MiB, "512")])
def test_reader_on_mkfs_images(tmp_path, src, size, cluster):
    img = tmp_path / "mk.img"
    with open(img, "wb") as f:
        f.truncate(size)
    tool("mkfs.exfat", "-L", "MKFS", *(["-c", cluster] if cluster else []), img)
    with fuse_mount(img, tmp_path, rw=True) as mnt:
        tool("cp", "-r", "--preserve=timestamps", f"{src}/.", mnt)
    if cluster != "512":
        # fsck.exfat 1.2.0 loops on entry sets that straddle two fragmented 512-byte
        # clusters (exfat-fuse fragments the root here); our reader must still read them
        fsck_clean(img)
    check_reader(img, src)
    rows = info(img)
    assert rows["label"] == "MKFS"
    assert rows["type"] == "exFAT" and int(rows["free clusters"]) < int(rows["clusters"])


# -- what exFAT cannot store, and bad requests ---------------------------------------------

def test_special_files_are_one_error(tmp_path):
    src = tmp_path / "src"
    (src / "dir").mkdir(parents=True)
    (src / "dir" / "file").write_text("x")
    os.symlink("file", src / "dir" / "link")
    os.symlink("nowhere", src / "dangling")
    os.mkfifo(src / "fifo")
    p = run_fstool("create", "-t", "exfat", src, "-o", tmp_path / "x.img", cwd=tmp_path)
    assert_one_line_error(p, 1, "2 symlinks", "1 fifos", "/dir/link", "follow_symlinks")
    assert not (tmp_path / "x.img").exists()
    os.unlink(src / "fifo")
    os.unlink(src / "dangling")
    img = tmp_path / "f.img"
    run_fstool("create", "-t", "exfat", src, "-o", img, "-O", "follow_symlinks=true", check=True)
    fsck_clean(img)
    with Region(str(img)) as region:
        r = exfat_reader.open(region)
        assert b"".join(r.read_file("/dir/link")) == b"x"


def test_names_exfat_cannot_hold(tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    (src / "Readme").write_text("a")
    (src / "README").write_text("b")
    with pytest.raises(InputError, match="differ only by case"):
        build(src, tmp_path / "x.img")
    for bad in ("a:b", "q?", "tab\there"):
        tree = Tree()
        tree.add("/" + bad, Node(Kind.FILE, source=FileSource(None, 0)))
        with atomic_output(str(tmp_path / "y.img")) as out, pytest.raises(InputError, match="cannot"):
            write(tree, out, FsParams(fs_type="exfat"))


def test_too_small_is_a_capacity_error(tmp_path, src):
    with pytest.raises(CapacityError, match=r"needs .* clusters.*would hold it"):
        build(src, tmp_path / "x.img", size=3 * MiB)
    p = run_fstool("create", "-t", "exfat", src, "-o", tmp_path / "y.img", "--size", "3MiB",
                   cwd=tmp_path)
    assert_one_line_error(p, 1, "needs")
    assert not (tmp_path / "y.img").exists()
    with pytest.raises(SpecError, match="too small for exFAT"):
        build(src, tmp_path / "z.img", size=512 * 1024)


@pytest.mark.parametrize("opt, needle", [
    ("bogus=1", "bogus"),
    ("cluster_size=3000", "cluster size"),
    ("cluster_size=64M", "cluster size"),
    ("sector_size=777", "sector_size"),
    ("boundary_align=100", "boundary_align"),
    ("volume_guid=not-a-guid", "volume_guid"),
])
def test_bad_options(tmp_path, src, opt, needle):
    p = run_fstool("create", "-t", "exfat", src, "-o", tmp_path / "x.img", "-O", opt, cwd=tmp_path)
    assert_one_line_error(p, 2, needle)


def test_long_label_is_cut_with_a_warning(tmp_path, src):
    # 11 UTF-16 units, as FAT and ext labels are cut (with one warning)
    p = run_fstool("create", "-t", "exfat", src, "-o", tmp_path / "x.img", "--label",
                   "twelve chars", cwd=tmp_path)
    assert p.returncode == 0 and "warning" in p.stderr and "'twelve char'" in p.stderr, p.stderr
    out = subprocess.run(["exfatlabel", str(tmp_path / "x.img")], capture_output=True, text=True)
    assert "twelve char" in out.stdout, out.stdout + out.stderr


# -- malformed images ----------------------------------------------------------------------

def _root_entries(data, fields):
    """(offset of the root directory, cluster size) of an image's bytes."""
    ss, cs = 1 << fields[13], 1 << (fields[13] + fields[14])
    return fields[7] * ss + (fields[9] - 2) * cs, cs


def _find_set(data, root, name):
    """Offset of the entry set of a root child by name."""
    pos = root
    while data[pos] != 0:
        if data[pos] == 0x85:
            n = data[pos + 1]
            units = b"".join(data[pos + 32 * i + 2:pos + 32 * i + 32] for i in range(2, n + 1))
            if units.decode("utf-16-le").rstrip("\0").startswith(name):
                return pos, n
            pos += 32 * (n + 1)
        else:
            pos += 32
    raise AssertionError(name)


def _rechecksum(data, pos, n):
    s = data[pos:pos + 32 * (n + 1)]
    data[pos + 2:pos + 4] = set_checksum(s).to_bytes(2, "little")


def _reopen(tmp_path, data, name):
    p = tmp_path / name
    p.write_bytes(bytes(data))
    return p


def test_reader_refuses_malformed_images(tmp_path, src):
    junk = tmp_path / "junk.img"
    junk.write_bytes(b"\0" * 8192)
    with Region(str(junk)) as region:
        assert not exfat_reader.probe(region)
    img = tmp_path / "t.img"
    build(src, img, size=8 * MiB, options={"boundary_align": "4K"})
    data = bytearray(img.read_bytes())
    fields = BOOT.unpack_from(data, 0)
    root, cs = _root_entries(data, fields)

    def refused(d, name, pattern, path="/readme.txt"):
        p = _reopen(tmp_path, d, name)
        with Region(str(p)) as region, pytest.raises(ImageError, match=pattern):
            r = exfat_reader.open(region)
            list(r.walk("/"))
            b"".join(r.read_file(path))

    refused(data[:4 * MiB], "trunc.img", "truncated")
    bad = bytearray(data)
    bad[100] ^= 0xFF  # the serial number, under the boot checksum
    refused(bad, "boot.img", "boot region checksum")
    bad = bytearray(data)
    pos, n = _find_set(bad, root, "readme.txt")
    bad[pos + 4] ^= 0x01  # an attribute bit, without a new SetChecksum
    refused(bad, "set.img", "entry set checksum")
    bad = bytearray(data)
    struct.pack_into("<I", bad, pos + 32 + 20, 0x00FFFFFF)  # FirstCluster far outside the heap
    _rechecksum(bad, pos, n)
    refused(bad, "range.img", "outside the heap|past the end")
    bad = bytearray(data)
    bad[pos + 64 + 2] ^= 0x01  # r -> s (not a case change): the hash no longer matches
    _rechecksum(bad, pos, n)
    refused(bad, "hash.img", "name hash")
    bad = bytearray(data)
    fat = fields[5] * 512
    root_cluster = fields[9]
    struct.pack_into("<I", bad, fat + 4 * root_cluster, root_cluster)  # the root chain loops
    refused(bad, "loop.img", "loops")
    bad = bytearray(data)
    # a subdirectory that points back at an ancestor: the walk must stop, not spin
    dpos, dn = _find_set(bad, root, "many")
    struct.pack_into("<I", bad, dpos + 32 + 20, root_cluster)
    struct.pack_into("<Q", bad, dpos + 32 + 8, cs)
    struct.pack_into("<Q", bad, dpos + 32 + 24, cs)
    _rechecksum(bad, dpos, dn)
    refused(bad, "cycle.img", "directory cycle")


# -- random trees ----------------------------------------------------------------------------

def _sanitise(entries):
    """Random trees made storable: no symlinks, no forbidden characters, no case clashes."""
    up = upcase_map()
    keep, seen, dirs = [], set(), set()
    rename = {}
    for path, kind, payload in entries:
        if kind == "symlink":
            continue
        parts = path.strip("/").split("/")
        parts = ["".join("_" if c in FORBIDDEN_NAME_CHARS or ord(c) < 0x20 else c for c in p)
                 for p in parts]
        new = "/" + "/".join(parts)
        key = upcase_units(new.encode("utf-16-le", "surrogatepass"), up)
        parent = new.rsplit("/", 1)[0] or "/"
        parent_key = upcase_units(parent.encode("utf-16-le", "surrogatepass"), up)
        if key in seen or (parent != "/" and parent_key not in dirs):  # a kept directory
            continue
        if kind == "hardlink":
            if payload not in rename:
                continue
            payload = rename[payload]
        seen.add(key)
        if kind == "dir":
            dirs.add(key)
        rename[path] = new
        keep.append((new, kind, payload))
    return keep


@settings(max_examples=25, deadline=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(entries=random_trees())
def test_random_trees(entries):
    entries = _sanitise(entries)
    with tempfile.TemporaryDirectory() as work:
        tree = materialise(entries, work)
        img = os.path.join(work, "t.img")
        with atomic_output(img) as out:
            write(tree, out, FsParams(fs_type="exfat", seed=b"property", timestamp=1_600_000_000))
        fsck_clean(img)
        with Region(img) as region:
            assert read_back(exfat_reader.open(region)) == expected(tree)


def test_geometry_default_cluster_sizes():
    opts = parse_options(FsParams(fs_type="exfat"))
    for size, cs in ((8 * MiB, 4096), (256 * MiB, 4096), (257 * MiB, 32768), (32 * GiB, 32768),
                     (33 * GiB, 131072)):
        assert geometry_for(size, opts).cluster_size == cs
