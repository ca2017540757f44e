"""The F2FS writer and reader, checked by f2fs-tools: fsck.f2fs, dump.f2fs (files and xattrs
dumped back), mkfs.f2fs (the same layout) and sload.f2fs (its images read by our reader).
This kernel has no F2FS, so nothing is mounted."""
from __future__ import annotations

import filecmp
import os
import re
import subprocess
import tempfile

import pytest
from hypothesis import HealthCheck, given, settings

from conftest import assert_one_line_error, run_fstool
from test_properties import expected, materialise, read_back
from test_properties import trees as random_trees
from treegen import make_rich_tree
from fstool.errors import CapacityError, ImageError, SpecError
from fstool.fs.base import FsParams
from fstool.fs.f2fs import reader as f2fs_reader
from fstool.fs.f2fs.layout import SUPER, SUPER_OFFSET
from fstool.fs.f2fs.writer import parse_options, write
from fstool.image import Region, atomic_output
from fstool.inputs.hostdir import load_dir
from fstool.tree import Kind

pytestmark = pytest.mark.slow

MiB = 1 << 20


@pytest.fixture(scope="module")
def rich(tmp_path_factory):
    d = tmp_path_factory.mktemp("f2fs") / "rich"
    make_rich_tree(str(d))
    return d


@pytest.fixture(scope="module")
def small(tmp_path_factory):
    d = tmp_path_factory.mktemp("f2fs") / "small"
    (d / "sub" / "deeper").mkdir(parents=True)
    (d / "hello.txt").write_text("hello\n")
    (d / "sub" / "data.bin").write_bytes(os.urandom(50_000))
    (d / "sub" / "deeper" / "ünïcødé 日本").write_text("unicode\n")
    (d / "empty").write_bytes(b"")
    os.symlink("sub/data.bin", d / "link")
    return d


def build(src, img, **kw):
    params = FsParams(fs_type="f2fs", seed=b"test-seed", timestamp=1_700_000_000, **kw)
    params.opts = parse_options(params)
    with atomic_output(str(img)) as out:
        return write(load_dir(str(src)), out, params)


def fsck_clean(img):
    """fsck.f2fs passes with every check [Ok..] (it prints 'fixing SIT types' for mkfs.f2fs's
    own images too)."""
    p = subprocess.run(["fsck.f2fs", str(img)], capture_output=True, text=True)
    out = p.stdout + p.stderr
    assert p.returncode == 0, out
    checks = re.findall(r"^\[FSCK\] ([^\[\]\r\n]*?)\s+\[(Ok|Fail)\.*\]", out, re.M)
    assert len(checks) >= 9 and all(state == "Ok" for _, state in checks), out
    assert "[Fail]" not in out and "Error" not in out, out
    return out


def superblock(img):
    with open(img, "rb") as f:
        f.seek(SUPER_OFFSET)
        return SUPER.unpack(f.read(SUPER.size))


def dump_file(img, ino, workdir):
    """dump.f2fs -i INO writes the file into ./lost_found; return its bytes and the inode text."""
    os.makedirs(workdir, exist_ok=True)
    p = subprocess.run(["dump.f2fs", "-i", hex(ino), str(img)], input="y\n", capture_output=True,
                       text=True, cwd=workdir)
    assert p.returncode == 0, p.stdout + p.stderr
    found = os.listdir(os.path.join(workdir, "lost_found"))
    with open(os.path.join(workdir, "lost_found", found[0]), "rb") as f:
        data = f.read()
    subprocess.run(["rm", "-rf", os.path.join(workdir, "lost_found")], check=True)
    return data, p.stdout


@pytest.mark.parametrize("options", [{}, {"inline_data": False, "inline_xattr": False,
                                      "inline_dentry": False}])
def test_rich_tree(tmp_path, rich, options):
    """Every kind of entry: fsck.f2fs is clean, our reader gives back the source, dump.f2fs
    dumps the same bytes and lists the same xattrs."""
    img = tmp_path / "rich.f2fs"
    size = build(rich, img, label="RICH", options=options)
    assert size == img.stat().st_size and size % (2 * MiB) == 0
    assert img.stat().st_blocks * 512 < size  # the sparse file's holes and free space stay holes
    fsck_clean(img)
    tree = load_dir(str(rich))
    with Region(str(img)) as region:
        r = f2fs_reader.open(region)
        assert read_back(r) == expected(tree)
        assert dict(r.info())["label"] == "RICH"
        text = r.stat("/text.txt")
        assert text.xattrs == {"user.comment": b"plain text", "user.mime_type": b"text/plain"}
        assert r.stat("/dir").xattrs == {"user.dir-note": "café".encode()}
        assert r.stat("/owned").uid == 1234 and r.stat("/owned").gid == 5678
        assert r.stat("/big-ids").uid == 70000 and r.stat("/big-ids").gid == 4_000_000_000
        assert r.stat("/blk").rdev == (259, 300000) and r.stat("/chr").rdev == (4, 64)
        assert r.stat("/dir/exec").nlink == 3 and r.stat("/dir/setuid").mode == 0o4755
        assert r.stat("/sparse").size == 80 * MiB + 3
        assert r.stat("/").nlink == 2 + sum(1 for p in rich.iterdir() if not p.is_symlink() and p.is_dir())
        checks = [("/text.txt", text.inode), ("/big.bin", r.stat("/big.bin").inode),
                  ("/size-393223", r.stat("/size-393223").inode), ("/dup-a", r.stat("/dup-a").inode),
                  ("/small-dup-1", r.stat("/small-dup-1").inode)]
    for path, ino in checks:
        data, info = dump_file(img, ino, tmp_path / "dump")
        with open(os.path.join(rich, path.lstrip("/")), "rb") as f:
            assert data == f.read(), path
        if path == "/text.txt":
            assert "e_name:comment" in info and "e_name:mime_type" in info


def test_xattrs_spill_from_inline_area_to_block(tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    (src / "f").write_text("x")
    values = {f"user.attr{i}": bytes([65 + i]) * 150 for i in range(10)}  # ~1.7 KB: past 200 bytes
    for k, v in values.items():
        os.setxattr(src / "f", k, v)
    subprocess.run(["setfacl", "-m", "u:1234:rw,g:55:r", str(src / "f")], check=True)
    acl = os.getxattr(src / "f", "system.posix_acl_access")
    img = tmp_path / "x.f2fs"
    build(src, img)
    fsck_clean(img)
    with Region(str(img)) as region:
        r = f2fs_reader.open(region)
        e = r.stat("/f")
        assert e.xattrs == dict(values, **{"system.posix_acl_access": acl})
        ino = e.inode
    _data, info = dump_file(img, ino, tmp_path / "dump")
    assert all(f"e_name:attr{i} " in info for i in range(10)), info
    assert "e_name_index:2" in info  # the ACL, in its own name index


def test_geometry_is_mkfs_f2fs(tmp_path, small):
    for size in (64 * MiB, 300 * MiB, 2048 * MiB):
        ref = tmp_path / "mkfs.img"
        with open(ref, "wb") as f:
            f.truncate(size)
        subprocess.run(["mkfs.f2fs", "-q", "-f", str(ref)], check=True, capture_output=True)
        img = tmp_path / "ours.img"
        assert build(small, img, size=size) == size
        mine, theirs = superblock(img), superblock(ref)
        # block_count .. main_blkaddr: the whole layout
        assert mine[10:24] == theirs[10:24], size
        fsck_clean(img)
        ref.unlink()


def test_sload_images_read_back(tmp_path, rich):
    """mkfs.f2fs + sload.f2fs (inline data and dentries, its own allocation) read by our reader."""
    img = tmp_path / "sload.img"
    with open(img, "wb") as f:
        f.truncate(200 * MiB)
    subprocess.run(["mkfs.f2fs", "-q", "-f", str(img)], check=True, capture_output=True)
    subprocess.run(["sload.f2fs", "-f", str(rich), str(img)], check=True, capture_output=True)
    fsck_clean(img)
    want = expected(load_dir(str(rich)))
    with Region(str(img)) as region:
        got = read_back(f2fs_reader.open(region))
    # sload.f2fs copies neither device nodes, fifos nor sockets
    skipped = {p for p, (k, _t, _d) in want.items() if k in (Kind.CHR, Kind.BLK, Kind.FIFO, Kind.SOCK)}
    assert set(got) == set(want) - skipped
    assert all(got[p] == want[p] for p in got)


def test_reproducible(tmp_path, small):
    a, b = tmp_path / "a.img", tmp_path / "b.img"
    for img in (a, b):
        run_fstool("create", "-t", "f2fs", small, "-o", img, "--label", "REPRO", cwd=tmp_path,
                   check=True)
    assert filecmp.cmp(a, b, shallow=False)
    c = tmp_path / "c.img"
    build(small, c, uuid="12345678-1234-5678-9abc-def012345678")
    with Region(str(c)) as region:
        assert dict(f2fs_reader.open(region).info())["uuid"] == "12345678-1234-5678-9abc-def012345678"


def test_cli_ls_cat_info(tmp_path, small):
    img = tmp_path / "x.f2fs"
    run_fstool("create", "-t", "f2fs", small, "-o", img, cwd=tmp_path, check=True)
    p = run_fstool("info", img, check=True)
    entries = 1 + sum(len(d) + len(f) for _, d, f in os.walk(small))
    assert "f2fs" in p.stdout and f"valid inodes: {entries}" in p.stdout
    p = run_fstool("ls", "-R", img, "/", check=True)
    assert "ünïcødé 日本" in p.stdout and "lrwxrwxrwx" in p.stdout
    p = run_fstool("cat", img, "/sub/deeper/ünïcødé 日本", check=True)
    assert p.stdout == "unicode\n"


def test_too_small_and_bad_options(tmp_path, rich, small):
    with pytest.raises(CapacityError, match="needs"):
        build(rich, tmp_path / "x.img", size=64 * MiB)
    with pytest.raises(SpecError, match="too small"):
        build(small, tmp_path / "y.img", size=8 * MiB)
    p = run_fstool("create", "-t", "f2fs", small, "-o", tmp_path / "z.img", "-O", "bogus=1",
                   cwd=tmp_path)
    assert_one_line_error(p, 2, "bogus")
    p = run_fstool("create", "-t", "f2fs", small, "-o", tmp_path / "z.img", "-O", "overprovision=200",
                   cwd=tmp_path)
    assert_one_line_error(p, 2, "overprovision")


def test_reader_refuses_malformed_images(tmp_path, small):
    img = tmp_path / "t.img"
    build(small, img)
    data = bytearray(img.read_bytes())
    sb = SUPER.unpack_from(data, SUPER_OFFSET)
    cp = sb[19] * 4096
    bad = bytearray(data)
    bad[cp + 100] ^= 0xFF  # under the checkpoint CRC, in both packs
    bad[cp + 512 * 4096 + 100] ^= 0xFF
    (tmp_path / "cp.img").write_bytes(bytes(bad))
    with Region(str(tmp_path / "cp.img")) as region, pytest.raises(ImageError, match="checkpoint"):
        f2fs_reader.open(region)
    (tmp_path / "trunc.img").write_bytes(bytes(data[:len(data) // 2]))
    with Region(str(tmp_path / "trunc.img")) as region, pytest.raises(ImageError, match="truncated"):
        f2fs_reader.open(region)
    # the root's NAT entry pointing at a block that is not the root's node
    nat = sb[21] * 4096
    bad = bytearray(data)
    off = nat + 3 * 9 + 5
    bad[off:off + 4] = (sb[23] + 1).to_bytes(4, "little")
    (tmp_path / "nat.img").write_bytes(bytes(bad))
    with Region(str(tmp_path / "nat.img")) as region, pytest.raises(ImageError, match="not node 3"):
        list(f2fs_reader.open(region).walk("/"))


@settings(max_examples=20, deadline=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(entries=random_trees())
def test_random_trees(entries):
    with tempfile.TemporaryDirectory() as work:
        tree = materialise(entries, work)
        img = os.path.join(work, "t.img")
        with atomic_output(img) as out:
            write(tree, out, FsParams(fs_type="f2fs", seed=b"property", timestamp=1_600_000_000))
        fsck_clean(img)
        with Region(img) as region:
            assert read_back(f2fs_reader.open(region)) == expected(tree)


def test_sparse_false_stores_every_block(tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    with open(src / "holey", "wb") as f:
        f.write(b"head")
        f.seek(4 * MiB)
        f.write(b"tail")
    sparse, dense = tmp_path / "sparse.img", tmp_path / "dense.img"
    build(src, sparse)
    build(src, dense, sparse=False)
    fsck_clean(sparse)
    fsck_clean(dense)
    for img in (sparse, dense):
        with Region(str(img)) as region:
            r = f2fs_reader.open(region)
            data = b"".join(r.read_file("/holey"))
            assert data[:4] == b"head" and data[-4:] == b"tail" and len(data) == 4 * MiB + 4
            valid = int(dict(r.info())["valid blocks"])
        if img == sparse:
            few = valid
    assert valid - few >= 4 * MiB // 4096 - 2  # the hole's blocks are allocated when not sparse
    assert dense.stat().st_blocks * 512 > sparse.stat().st_blocks * 512 + 3 * MiB


def test_file_over_8gib_uses_double_indirect_nodes(tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    marks = {0: b"start", 5 << 30: b"five", (9 << 30) - 3: b"end"}
    with open(src / "huge", "wb") as f:
        for off, data in marks.items():
            f.seek(off)
            f.write(data)
    img = tmp_path / "big.f2fs"
    build(src, img)
    fsck_clean(img)
    with Region(str(img)) as region:
        r = f2fs_reader.open(region)
        e = r.stat("/huge")
        assert e.size == 9 << 30
        ino = e.inode
        pos = 0
        found = {}
        for chunk in r.read_file("/huge"):
            for off, data in marks.items():
                if pos <= off < pos + len(chunk):
                    found[off] = chunk[off - pos:off - pos + len(data)]
            pos += len(chunk)
        assert found == marks and pos == 9 << 30
    info = subprocess.run(["dump.f2fs", "-i", hex(ino), str(img)], input="n\n", capture_output=True,
                          text=True).stdout
    assert re.search(r"i_nid\[4\]\s+\[0x\s*[1-9a-f]", info), info  # the double indirect slot


@pytest.mark.parametrize("inline_xattr", [True, False])
def test_features_extra_attr_inode_checksum_sb_checksum(tmp_path, rich, inline_xattr):
    """mkfs.f2fs -O extra_attr,inode_checksum,sb_checksum (as Android formats userdata)."""
    img = tmp_path / "feat.f2fs"
    build(rich, img, options={"features": ["extra_attr", "inode_checksum", "sb_checksum"],
                              "inline_xattr": inline_xattr})
    out = fsck_clean(img)
    assert "extra_attr inode_checksum sb_checksum" in out
    with Region(str(img)) as region:
        r = f2fs_reader.open(region)
        assert read_back(r) == expected(load_dir(str(rich)))
        root_nid = r.root_ino
        _ino, root_addr = r._nat(root_nid)
    data = bytearray(img.read_bytes())
    bad = bytearray(data)
    bad[root_addr * 4096 + 368] ^= 1  # the root inode's checksum
    (tmp_path / "ino.img").write_bytes(bytes(bad))
    p = subprocess.run(["fsck.f2fs", str(tmp_path / "ino.img")], capture_output=True, text=True)
    assert "checksum" in p.stdout + p.stderr  # fsck.f2fs checks the same field
    with Region(str(tmp_path / "ino.img")) as region, pytest.raises(ImageError, match="checksum"):
        list(f2fs_reader.open(region).walk("/"))
    bad = bytearray(data)
    for copy in (0, 4096):
        bad[copy + SUPER_OFFSET + 3068] ^= 1  # both superblocks' CRC
    (tmp_path / "sb.img").write_bytes(bytes(bad))
    with Region(str(tmp_path / "sb.img")) as region, pytest.raises(ImageError, match="superblock"):
        f2fs_reader.open(region)


def test_features_from_the_command_line(tmp_path, small):
    img = tmp_path / "f.img"
    run_fstool("create", "-t", "f2fs", small, "-o", img, "-O", "features=extra_attr:inode_checksum",
               check=True)
    assert "extra_attr inode_checksum" in fsck_clean(img)
    p = run_fstool("create", "-t", "f2fs", small, "-o", tmp_path / "g.img", "-O", "features=compression",
                   cwd=tmp_path)
    assert_one_line_error(p, 2, "features", "compression")
    p = run_fstool("create", "-t", "f2fs", small, "-o", tmp_path / "g.img", "-O",
                   "features=inode_checksum", cwd=tmp_path)
    assert_one_line_error(p, 2, "extra_attr")
