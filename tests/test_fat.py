"""The FAT12/16/32 writer and reader, checked by dosfstools (fsck.vfat) and mtools."""
from __future__ import annotations

import filecmp
import os
import stat
import re
import subprocess
import time

import pytest

from conftest import assert_one_line_error, run_fstool
from fstool.errors import CapacityError, ImageError, InputError, SpecError
from fstool.fs.base import FsParams
from fstool.fs.fat import reader as fat_reader
from fstool.fs.fat.common import lfn_checksum
from fstool.fs.fat.writer import write
from fstool.image import Region, atomic_output
from fstool.inputs.hostdir import load_dir
from fstool.tree import FileSource, Kind, Node, Tree

MiB = 1 << 20
TOOL_ENV = dict(os.environ, LANG="C.UTF-8", LC_ALL="C.UTF-8")
MTIME = 1_600_000_000  # 2020-09-13 12:26:40 UTC

NAMES = [
    "HELLO.TXT", "readme.txt", "Makefile", "a.b.c.d", ".hidden", "name with spaces.txt",
    "ünïcödé.txt", "日本語のファイル名.txt", "Ωmega", "x" * 200, "UPPER", "lower",
    "Mixed.Case.JPEG", "tab~1.txt", "tab le.txt", "+plus,semi;eq=[br].txt", "123456789.1234",
]


def populate(src, *, big=True):
    """A source tree with every kind of name and size FAT has to handle."""
    src.mkdir()
    for i, name in enumerate(NAMES):
        (src / name).write_bytes(f"{name} {i}\n".encode() * (i + 1))
    (src / "empty").write_bytes(b"")
    (src / "EMPTY.DAT").write_bytes(b"")
    (src / "ro.txt").write_text("read only\n")
    os.chmod(src / "ro.txt", 0o444)
    deep = src
    for i in range(20):
        deep = deep / f"level {i} with a long name"
        deep.mkdir()
    (deep / "bottom.txt").write_text("deep down\n")
    many = src / "many"
    many.mkdir()
    for i in range(250):
        (many / f"file number {i:04d} with a long name.txt").write_text(str(i))
    (many / "subdir").mkdir()
    (src / "emptydir").mkdir()
    if big:
        (src / "big.bin").write_bytes(os.urandom(5_000_000))
        with open(src / "sparse.bin", "wb") as f:  # data, a 4 MiB hole, data
            f.write(b"start" * 1000)
            f.seek(4 * MiB)
            f.write(b"end" * 1000)
    for p in sorted(src.rglob("*"), reverse=True):
        os.utime(p, (MTIME, MTIME), follow_symlinks=False)
    os.utime(src, (MTIME, MTIME))


@pytest.fixture(scope="module")
def src(tmp_path_factory):
    d = tmp_path_factory.mktemp("fat") / "src"
    populate(d)
    return d


@pytest.fixture(scope="module")
def small_src(tmp_path_factory):
    d = tmp_path_factory.mktemp("fat") / "small"
    populate(d, big=False)
    return d


def tool(*args, check=True):
    p = subprocess.run(list(map(str, args)), capture_output=True, text=True, env=TOOL_ENV)
    if check:
        assert p.returncode == 0, (args, p.returncode, p.stdout, p.stderr)
    return p


def fsck_clean(img):
    """fsck.vfat -n passes and prints nothing but its banner and the summary line."""
    p = tool("fsck.vfat", "-n", img, check=False)
    lines = [ln for ln in (p.stdout + p.stderr).splitlines() if ln.strip()]
    assert p.returncode == 0, p.stdout + p.stderr
    assert len(lines) == 2 and lines[0].startswith("fsck.fat"), p.stdout + p.stderr
    assert re.search(r": \d+ files, \d+/\d+ clusters$", lines[1]), lines[1]
    return lines[1]


def compare_trees(a, b):
    """Same names, kinds and file contents (byte for byte) below a and b."""
    cmp = filecmp.dircmp(a, b)
    assert not cmp.left_only and not cmp.right_only and not cmp.funny_files, (
        a, cmp.left_only, cmp.right_only, cmp.funny_files)
    for name in cmp.common_files:
        assert filecmp.cmp(os.path.join(a, name), os.path.join(b, name), shallow=False), name
    for name in cmp.common_dirs:
        compare_trees(os.path.join(a, name), os.path.join(b, name))


def check_with_mtools(img, src, tmp_path):
    tool("mdir", "-i", img, "-/", "::")
    out = tmp_path / "extracted"
    if out.exists():
        subprocess.run(["rm", "-rf", str(out)], check=True)
    out.mkdir()
    tool("mcopy", "-i", img, "-s", "-n", "::/", out)
    compare_trees(src, out)


def check_reader(img, src):
    """Our reader lists the same tree as the source, with the same bytes."""
    with Region(str(img)) as region:
        assert fat_reader.probe(region)
        r = fat_reader.open(region)
        seen = {}
        for e in r.walk("/"):
            seen[e.path] = e
        expected = {"/"}
        for dirpath, dirnames, filenames in os.walk(src):
            rel = os.path.relpath(dirpath, src)
            base = "" if rel == "." else "/" + rel
            for n in dirnames + filenames:
                expected.add(f"{base}/{n}")
        assert set(seen) == expected
        for path, e in seen.items():
            host = os.path.join(src, path.lstrip("/"))
            if os.path.isdir(host):
                assert e.kind is Kind.DIR
                continue
            assert e.kind is Kind.FILE and e.size == os.path.getsize(host), path
            with open(host, "rb") as f:
                assert b"".join(r.read_file(path)) == f.read(), path
            if path != "/":
                assert e.mtime == MTIME, path
        return r


def build(src, img, fs_type="fat", **kw):
    params = FsParams(fs_type=fs_type, seed=b"test-seed", timestamp=MTIME, **kw)
    with atomic_output(str(img)) as out:
        return write(load_dir(str(src)), out, params)


def fat_info(img):
    with Region(str(img)) as region:
        return dict(fat_reader.open(region).info())


# -- the three FAT types ---------------------------------------------------

def test_fat12_small_image(tmp_path, small_src):
    img = tmp_path / "fat12.img"
    size = build(small_src, img, size=2 * MiB)
    assert size == 2 * MiB == img.stat().st_size
    assert fat_info(img)["type"] == "FAT12"
    fsck_clean(img)
    check_with_mtools(img, small_src, tmp_path)
    check_reader(img, small_src)
    assert "FAT (12 bit)" in tool("file", img).stdout


def test_fat16_via_cli(tmp_path, src):
    img = tmp_path / "fat16.img"
    run_fstool("create", "-t", "fat", src, "-o", img, "--size", "64MiB", "--label", "MY DISK",
               "-O", "volume_id=1234-ABCD", cwd=tmp_path, check=True)
    assert img.stat().st_size == 64 * MiB
    info = fat_info(img)
    assert info["type"] == "FAT16" and info["label"] == "MY DISK" and info["volume id"] == "1234-ABCD"
    fsck_clean(img)
    check_with_mtools(img, src, tmp_path)
    check_reader(img, src)
    assert "Volume label is MY DISK" in tool("mlabel", "-i", img, "-s", "::").stdout
    mdir = tool("mdir", "-i", img, "::").stdout
    assert "Volume Serial Number is 1234-ABCD" in mdir
    f = tool("file", img).stdout
    assert "serial number 0x1234abcd" in f and "FAT (16 bit)" in f
    # the image is sparse: the 4 MiB hole and free space take no room
    assert img.stat().st_blocks * 512 < 16 * MiB


def test_fat32_forced_and_sparse(tmp_path, src):
    img = tmp_path / "fat32.img"
    run_fstool("create", "-t", "fat32", src, "-o", img, "--size", "300MiB", "--label", "BIG",
               cwd=tmp_path, check=True)
    assert img.stat().st_size == 300 * MiB
    assert img.stat().st_blocks * 512 < 20 * MiB
    info = fat_info(img)
    assert info["type"] == "FAT32" and info["label"] == "BIG"
    summary = fsck_clean(img)
    used, total = map(int, re.search(r"(\d+)/(\d+) clusters", summary).groups())
    assert int(info["free clusters"]) == total - used  # FSInfo is right
    check_with_mtools(img, src, tmp_path)
    check_reader(img, src)
    data = img.read_bytes()[:8 * 512]
    assert data[0:3] == b"\xeb\x58\x90" and data[3:11] == b"FSTOOL  " and data[82:90] == b"FAT32   "
    assert data[6 * 512:7 * 512] == data[:512]  # backup boot sector
    assert data[512:516] == b"RRaA" and data[7 * 512:8 * 512] == data[512:1024]


def test_fat16_boot_sector_fields(tmp_path, small_src):
    img = tmp_path / "f.img"
    build(small_src, img, fs_type="fat16", size=32 * MiB, label="LBL", volume_id="DEADBEEF",
          options={"sectors_per_cluster": "4", "hidden_sectors": "2048", "media": "0xF8",
                   "reserved_sectors": "4", "fats": "1"})
    data = img.read_bytes()[:512]
    assert data[0:3] == b"\xeb\x3c\x90" and data[54:62] == b"FAT16   " and data[510:] == b"\x55\xaa"
    assert data[43:54] == b"LBL        " and data[39:43] == bytes.fromhex("efbeadde")
    info = fat_info(img)
    assert info["cluster size"] == "2048" and info["hidden sectors"] == "2048"
    assert info["reserved sectors"] == "4" and info["fats"] == "1"
    fsck_clean(img)
    check_with_mtools(img, small_src, tmp_path)


def test_fat_picks_type_by_cluster_count(tmp_path, small_src):
    for size, want in ((4 * MiB, "FAT12"), (100 * MiB, "FAT16"), (600 * MiB, "FAT32")):
        img = tmp_path / f"{size}.img"
        build(small_src, img, size=size)
        assert fat_info(img)["type"] == want, size
        fsck_clean(img)
    # small clusters on 64 MiB make too many clusters for FAT16
    img = tmp_path / "spc1.img"
    build(small_src, img, size=64 * MiB, options={"sectors_per_cluster": 1})
    assert fat_info(img)["type"] == "FAT32"
    fsck_clean(img)
    check_with_mtools(img, small_src, tmp_path)


@pytest.mark.parametrize("sectors", [4140, 4142, 4145, 4150])
def test_cluster_count_boundary(tmp_path, small_src, sectors):
    """Around 4085 clusters neither a FAT12 nor a FAT16 layout may be legal as is;
    the writer pads the reserved area so the count matches the type it writes."""
    img = tmp_path / "b.img"
    tree = Tree()
    tree.add("/a.txt", Node(Kind.FILE, mtime=MTIME, source=FileSource(str(small_src / "lower"), 18)))
    with atomic_output(str(img)) as out:
        write(tree, out, FsParams(fs_type="fat", size=sectors * 512,
                                  options={"sectors_per_cluster": 1}))
    info = fat_info(img)
    clusters = int(info["clusters"])
    assert info["type"] == ("FAT12" if clusters < 4085 else "FAT16")
    fsck_clean(img)
    tool("mdir", "-i", img, "::")


def test_auto_size(tmp_path, src, small_src):
    img = tmp_path / "auto.img"
    size = build(src, img)
    assert size % MiB == 0 and size == img.stat().st_size
    assert size <= 16 * MiB  # about 9.2 MB of content
    fsck_clean(img)
    check_with_mtools(img, src, tmp_path)
    # headroom is free space on top
    img2 = tmp_path / "auto-headroom.img"
    size2 = build(src, img2, headroom=20 * MiB)
    assert size2 >= size + 20 * MiB
    fsck_clean(img2)
    # a forced FAT32 gets at least the FAT32 minimum
    img3 = tmp_path / "auto32.img"
    size3 = build(small_src, img3, fs_type="fat32")
    assert 32 * MiB < size3 <= 40 * MiB and fat_info(img3)["type"] == "FAT32"
    fsck_clean(img3)
    check_with_mtools(img3, small_src, tmp_path)


def test_big_root_directory_on_fat16(tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    for i in range(600):
        (src / f"root file {i:03d}.txt").write_text(str(i))
    img = tmp_path / "r.img"
    build(src, img, fs_type="fat16", size=16 * MiB)
    fsck_clean(img)
    check_with_mtools(img, src, tmp_path)
    assert int(fat_info(img)["root entries"]) >= 1200


# -- names, attributes, times -------------------------------------------------

def test_short_names_and_lfn(tmp_path, small_src):
    img = tmp_path / "n.img"
    build(small_src, img, size=4 * MiB)
    listing = tool("mdir", "-i", img, "::").stdout
    # a valid 8.3 upper-case name is stored as is, without a long name
    assert re.search(r"^HELLO\s+TXT\s+\d+ \S+\s+\S+\s*$", listing, re.M), listing
    assert re.search(r"^README\s+TXT\s+.*readme\.txt$", listing, re.M), listing
    shorts = re.findall(r"^(\S+)\s+(\S*)\s+(?:<DIR>|\d)", listing, re.M)
    assert len(shorts) == len(set(shorts))
    # the short names written are unique, upper case, NAME~N style where lossy
    with Region(str(img)) as region:
        r = fat_reader.open(region)
        ents = r._read_dir(None)
    by_name = {e.name: e.short for e in ents}
    assert by_name["name with spaces.txt"] == "NAMEWI~1.TXT"
    assert by_name["tab le.txt"] == "TABLE~1.TXT"
    assert by_name["tab~1.txt"] == "TAB~1.TXT"
    assert by_name["a.b.c.d"] == "ABC~1.D"
    assert by_name[".hidden"] == "HIDDEN~1"
    assert by_name["x" * 200] == "XXXXXX~1"
    assert all(s == s.upper() for s in by_name.values())


def test_lfn_checksum_known_value():
    # Every LFN entry carries this checksum of its 11-byte short name.
    s = 0
    for b in b"README  TXT":
        s = (((s & 1) << 7) + (s >> 1) + b) & 0xFF
    assert lfn_checksum(b"README  TXT") == s


def test_read_only_attribute_and_times(tmp_path, small_src):
    img = tmp_path / "a.img"
    build(small_src, img, size=4 * MiB)
    attrs = tool("mattrib", "-i", img, "::/ro.txt", "::/readme.txt").stdout.splitlines()
    assert "R" in attrs[0].split("::")[0] and "R" not in attrs[1].split("::")[0]
    with Region(str(img)) as region:
        r = fat_reader.open(region)
        assert r.stat("/ro.txt").mode == 0o444 and r.stat("/readme.txt").mode == 0o644
        assert r.stat("/README.TXT").path == "/readme.txt"  # case-insensitive lookup
        assert r.stat("/readme.txt").mtime == MTIME
    assert "2020-09-13" in tool("mdir", "-i", img, "::/readme.txt").stdout


def test_times_clamped_to_fat_range(tmp_path):
    tree = Tree()
    tree.add("/old", Node(Kind.FILE, mtime=0, source=FileSource(None, 0)))
    tree.add("/future", Node(Kind.FILE, mtime=2**40, source=FileSource(None, 0)))
    img = tmp_path / "t.img"
    with atomic_output(str(img)) as out:
        write(tree, out, FsParams(fs_type="fat", size=MiB))
    fsck_clean(img)
    with Region(str(img)) as region:
        r = fat_reader.open(region)
        assert time.gmtime(r.stat("/old").mtime)[:3] == (1980, 1, 1)
        assert time.gmtime(r.stat("/future").mtime)[:3] == (2107, 12, 31)


def test_reproducible(tmp_path, src):
    a, b = tmp_path / "a.img", tmp_path / "b.img"
    for img in (a, b):
        run_fstool("create", "-t", "fat", src, "-o", img, "--label", "REPRO", cwd=tmp_path, check=True)
    assert filecmp.cmp(a, b, shallow=False)
    c, d = tmp_path / "c.img", tmp_path / "d.img"
    build(src, c, fs_type="fat32", size=64 * MiB)
    build(src, d, fs_type="fat32", size=64 * MiB)
    assert filecmp.cmp(c, d, shallow=False)
    # the volume id is derived from the seed, not random
    assert fat_info(c)["volume id"] == fat_info(d)["volume id"]


def test_cli_ls_cat_info(tmp_path, small_src):
    img = tmp_path / "x.img"
    run_fstool("create", "-t", "fat12", small_src, "-o", img, cwd=tmp_path, check=True)
    p = run_fstool("info", img, check=True)
    assert "fat12" in p.stdout and "cluster size" in p.stdout
    p = run_fstool("ls", img, "/", check=True)
    assert "日本語のファイル名.txt" in p.stdout and "-r--r--r--" in p.stdout
    p = run_fstool("cat", img, "/Ωmega", check=True)
    assert p.stdout == "Ωmega 8\n" * 9


def test_fat_partition_in_disk(tmp_path, small_src):
    spec = tmp_path / "disk.toml"
    spec.write_text(f"""
[image]
size = "80MiB"
partition_table = "gpt"

[[partitions]]
name = "esp"
type = "esp"
size = "40MiB"
[partitions.filesystem]
type = "fat32"
source = "{small_src}"
label = "ESP"
""")
    run_fstool("build", spec, "-o", tmp_path / "disk.img", cwd=tmp_path, check=True)
    v = tool("sgdisk", "-v", tmp_path / "disk.img")
    assert "No problems found" in v.stdout and "Creating new GPT" not in v.stdout, v.stdout
    part = tmp_path / "part.img"
    with open(tmp_path / "disk.img", "rb") as f, open(part, "wb") as g:
        f.seek(MiB)
        g.write(f.read(40 * MiB))
    fsck_clean(part)
    assert fat_info(part)["hidden sectors"] == str(MiB // 512)
    check_with_mtools(part, small_src, tmp_path)
    p = run_fstool("ls", f"{tmp_path / 'disk.img'}:1", "/", check=True)
    assert "readme.txt" in p.stdout


# -- errors --------------------------------------------------------------------

def test_symlink_is_an_error_when_strict(tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    (src / "dir").mkdir()
    os.symlink("target", src / "dir" / "link")
    p = run_fstool("create", "-t", "fat", src, "-o", tmp_path / "x.img", "-O", "strict=true",
                   cwd=tmp_path)
    assert_one_line_error(p, 1, "/dir/link", "symlinks")
    assert not (tmp_path / "x.img").exists()


def test_unstorable_entries_are_left_out_with_one_warning(tmp_path):
    """As the Rust fstool: symlinks, devices, fifos are dropped, one warning counts and names them."""
    src = tmp_path / "src"
    (src / "dir").mkdir(parents=True)
    (src / "dir" / "file").write_bytes(b"kept\n")
    os.symlink("target", src / "dir" / "link")
    os.mkfifo(src / "fifo")
    os.mknod(src / "null", 0o666 | stat.S_IFCHR, os.makedev(1, 3))
    img = tmp_path / "x.img"
    p = run_fstool("create", "-t", "fat", src, "-o", img, cwd=tmp_path)
    assert p.returncode == 0, p.stderr
    lines = p.stderr.splitlines()
    assert len(lines) == 1 and "left out 3 entries" in lines[0], p.stderr
    for needle in ("1 symlinks", "1 fifos", "1 character devices", "/dir/link", "/fifo", "/null"):
        assert needle in lines[0]
    fsck_clean(img)
    out = run_fstool("ls", "-R", img, check=True).stdout
    assert "/dir/file" in out and "link" not in out and "fifo" not in out
    assert run_fstool("create", "-q", "-t", "fat", src, "-o", img, cwd=tmp_path).stderr == ""


def test_case_clash_is_an_error(tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    (src / "Readme").write_text("a")
    (src / "README").write_text("b")
    with pytest.raises(InputError, match="differ only by case"):
        build(src, tmp_path / "x.img")


def test_unrepresentable_names(tmp_path):
    for bad in ("a:b", "trailing.", "q?"):
        tree = Tree()
        tree.add("/" + bad, Node(Kind.FILE, source=FileSource(None, 0)))
        with atomic_output(str(tmp_path / "x.img")) as out, pytest.raises(InputError):
            write(tree, out, FsParams(fs_type="fat"))


def test_too_small_is_a_capacity_error(tmp_path, src):
    with pytest.raises(CapacityError, match=r"needs .* clusters.*would hold it"):
        build(src, tmp_path / "x.img", size=2 * MiB)
    p = run_fstool("create", "-t", "fat", src, "-o", tmp_path / "y.img", "--size", "2MiB",
                   cwd=tmp_path)
    assert_one_line_error(p, 1, "needs")
    assert not (tmp_path / "y.img").exists()


def test_size_outside_type_range(tmp_path, small_src):
    with pytest.raises(SpecError, match="too small for FAT32"):
        build(small_src, tmp_path / "x.img", fs_type="fat32", size=16 * MiB)
    with pytest.raises(SpecError, match="too small for FAT16"):
        build(small_src, tmp_path / "x.img", fs_type="fat16", size=MiB)
    with pytest.raises(SpecError, match="too large for FAT12"):
        build(small_src, tmp_path / "x.img", fs_type="fat12", size=64 * MiB,
              options={"sectors_per_cluster": 1})
    p = run_fstool("create", "-t", "fat32", small_src, "-o", tmp_path / "z.img", "--size", "8MiB",
                   cwd=tmp_path)
    assert_one_line_error(p, 2, "FAT32")


@pytest.mark.parametrize("opt, needle", [
    ("bogus=1", "bogus"),
    ("sectors_per_cluster=3", "power of 2"),
    ("fats=3", "fats"),
    ("media=0xF3", "media"),
])
def test_bad_options(tmp_path, small_src, opt, needle):
    p = run_fstool("create", "-t", "fat", small_src, "-o", tmp_path / "x.img", "-O", opt, cwd=tmp_path)
    assert_one_line_error(p, 2, needle)


@pytest.mark.parametrize("label, stored", [("lower", "LOWER"), ("TWELVE CHARS", "TWELVE CHAR"),
                                           ("BAD*CHAR", "BAD_CHAR"), ("caf\u00e9", "CAF_")])
def test_labels_are_stored_as_the_rust_fstool_stores_them(tmp_path, small_src, label, stored):
    """Upper-cased, cut to 11 bytes, unstorable characters as '_', with one warning."""
    img = tmp_path / "x.img"
    p = run_fstool("create", "-t", "fat", small_src, "-o", img, "--label", label, cwd=tmp_path)
    assert p.returncode == 0 and len(p.stderr.splitlines()) == 1, p.stderr
    assert repr(stored) in p.stderr and "label" in p.stderr
    assert fat_info(img)["label"] == stored
    fsck_clean(img)


def test_reader_rejects_garbage(tmp_path, small_src):
    junk = tmp_path / "junk.img"
    junk.write_bytes(b"\0" * 4096)
    with Region(str(junk)) as region:
        assert not fat_reader.probe(region)
    img = tmp_path / "t.img"
    build(small_src, img, size=4 * MiB)
    data = bytearray(img.read_bytes())
    trunc = tmp_path / "trunc.img"
    trunc.write_bytes(data[:MiB])
    with Region(str(trunc)) as region, pytest.raises(ImageError, match="truncated"):
        fat_reader.open(region)
    # break the chain of a file: its first FAT entry now points outside the volume
    with Region(str(img)) as region:
        r = fat_reader.open(region)
        e = next(x for x in r._read_dir(None) if x.name == "Makefile")
        off, bits = r.fat_start, r.bits
    assert bits == 12
    pos = off + e.cluster + e.cluster // 2
    raw = int.from_bytes(data[pos:pos + 2], "little")
    value = 0xFF0  # a reserved value, not a cluster of this volume
    raw = (raw & 0x000F) | (value << 4) if e.cluster & 1 else (raw & 0xF000) | value
    data[pos:pos + 2] = raw.to_bytes(2, "little")
    img.write_bytes(bytes(data))
    with Region(str(img)) as region:
        r = fat_reader.open(region)
        with pytest.raises(ImageError, match="invalid cluster"):
            b"".join(r.read_file("/Makefile"))


def test_holes_and_hardlinks(tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    with open(src / "holey", "wb") as f:
        f.write(b"head")
        f.seek(8 * MiB)
        f.write(b"tail")
    os.link(src / "holey", src / "again")  # FAT has no hardlinks: stored twice
    os.utime(src / "holey", (MTIME, MTIME))
    sparse, dense = tmp_path / "sparse.img", tmp_path / "dense.img"
    build(src, sparse, size=64 * MiB)
    build(src, dense, size=64 * MiB, sparse=False)
    assert filecmp.cmp(sparse, dense, shallow=False)
    assert sparse.stat().st_blocks * 512 < 2 * MiB
    assert dense.stat().st_blocks * 512 > 15 * MiB
    fsck_clean(sparse)
    check_with_mtools(sparse, src, tmp_path)
    check_reader(sparse, src)


def test_follow_symlinks_stores_the_files(tmp_path):
    src = tmp_path / "src"
    (src / "boot").mkdir(parents=True)
    (src / "boot" / "vmlinuz-6.1").write_bytes(b"kernel" * 1000)
    os.symlink("vmlinuz-6.1", src / "boot" / "vmlinuz")
    os.symlink("/boot/vmlinuz", src / "kernel")  # absolute, through another link
    os.symlink("boot", src / "dirlink")
    os.symlink("nothing", src / "dangling")
    p = run_fstool("create", "-t", "fat", src, "-o", tmp_path / "x.img", "-O", "strict=true",
                   cwd=tmp_path)
    assert_one_line_error(p, 1, "4 symlinks", "follow_symlinks")
    os.unlink(src / "dirlink")
    os.unlink(src / "dangling")
    img = tmp_path / "f.img"
    run_fstool("create", "-t", "fat", src, "-o", img, "-O", "follow_symlinks=true", check=True)
    fsck_clean(img)
    out = tmp_path / "out"
    out.mkdir()
    tool("mcopy", "-i", img, "-s", "-n", "::/", out)
    assert (out / "kernel").read_bytes() == (out / "boot" / "vmlinuz").read_bytes() == b"kernel" * 1000


def test_cluster_size_and_minfo_geometry(tmp_path, small_src):
    img = tmp_path / "c.img"
    run_fstool("create", "-t", "fat16", small_src, "-o", img, "--size", "64MiB",
               "-O", "cluster_size=8KiB", check=True)
    fsck_clean(img)
    info = tool("minfo", "-i", img, "::").stdout
    assert re.search(r"cluster size: 16 sectors", info), info
    assert re.search(r"sector size: 512 bytes", info), info
    ours = fat_info(img)
    assert "8192" in ours.get("cluster size", ""), ours
    p = run_fstool("create", "-t", "fat16", small_src, "-o", tmp_path / "d.img", "-O",
                   "cluster_size=3000", cwd=tmp_path)
    assert_one_line_error(p, 2, "cluster_size")


def test_file_of_4gib_is_refused(tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    with open(src / "huge", "wb") as f:
        f.truncate(4 << 30)
    p = run_fstool("create", "-t", "fat", src, "-o", tmp_path / "x.img", cwd=tmp_path)
    assert_one_line_error(p, 1, "/huge", "4 GiB")
    assert not (tmp_path / "x.img").exists()


def test_uuid_is_refused_volume_id_is_used(tmp_path, small_src):
    p = run_fstool("create", "-t", "fat", small_src, "-o", tmp_path / "x.img", "--uuid",
                   "11111111-2222-3333-4444-555555555555", cwd=tmp_path)
    assert_one_line_error(p, 2, "volume_id")
    img = tmp_path / "v.img"
    run_fstool("create", "-t", "fat", small_src, "-o", img, "-O", "volume_id=1234-ABCD", check=True)
    assert "serial number: 1234ABCD" in tool("minfo", "-i", img, "::").stdout


# -- alignment ---------------------------------------------------------------

@pytest.mark.parametrize("fs_type, size_mib, options", [
    ("fat12", 5, {}), ("fat16", 16, {}), ("fat16", 200, {"sectors_per_cluster": 64}),
    ("fat32", 64, {}), ("fat32", 512, {}), ("fat32", 1100, {"cluster_size": "16K"}),
    ("fat32", 1100, {"fats": 1}), ("fat", 40, {}),
])
def test_data_area_starts_on_a_cluster_boundary(tmp_path, small_src, fs_type, size_mib, options):
    """As mkfs.fat (unless -a): the reserved area, the FATs and the root directory take whole
    clusters, so every cluster is aligned as the partition is (flash pages, erase blocks,
    4 KiB host pages). fsck.fat prints where the data area starts."""
    img = tmp_path / "a.img"
    build(small_src, img, fs_type, size=size_mib * MiB, options=options)
    out = tool("fsck.vfat", "-v", "-n", img).stdout
    fsck_clean(img)
    cluster = int(re.search(r"(\d+) bytes per cluster", out).group(1))
    start = int(re.search(r"Data area starts at byte (\d+)", out).group(1))
    assert start % cluster == 0, (start, cluster)
    check_reader(img, small_src)
    # align = false: the smallest layout, as mkfs.fat -a
    build(small_src, tmp_path / "u.img", fs_type, size=size_mib * MiB, options={**options, "align": False})
    fsck_clean(tmp_path / "u.img")
    check_reader(tmp_path / "u.img", small_src)


def test_tiny_volumes_and_explicit_reserved_sectors_are_left_as_asked(tmp_path, small_src):
    """Up to 4 MiB mkfs.fat does not align (a floppy); reserved_sectors given is kept."""
    build(small_src, tmp_path / "t.img", "fat12", size=2 * MiB)
    assert int(fat_info(tmp_path / "t.img")["reserved sectors"]) == 1
    build(small_src, tmp_path / "r.img", "fat32", size=64 * MiB, options={"reserved_sectors": 33})
    assert int(fat_info(tmp_path / "r.img")["reserved sectors"]) == 33
    fsck_clean(tmp_path / "r.img")
