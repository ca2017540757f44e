"""EROFS fragments (`fragments = true`, `mkfs.erofs -E fragments`): file tails and small files
packed into the packed inode. Checked by the kernel (loop mount, full tree compare) for every
compressor, by our reader, by byte-identical rebuilds (1 and 2 threads, another path), and
against the same image without fragments.

fsck.erofs here is 1.5, older than fragments (erofs-utils 1.6): it refuses these images
("unidentified incompatible feature 20") and is not run on them; the kernel, which has read
fragments since 6.1, is the reference reader.
"""
from __future__ import annotations

import os
import random
import struct
import subprocess

import pytest

from conftest import assert_one_line_error, diff_r, loop_mount, run_fstool, same_file
from test_erofs import assert_reader_matches
from treegen import compare, make_rich_tree

pytestmark = pytest.mark.slow

COMPRESSORS = ["lz4", "lz4hc", "lzma", "deflate", "zstd"]
MTIME = 1_650_000_000


def _put(path, data: bytes, mode=0o644):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "wb") as f:
        f.write(data)
    os.chmod(path, mode)
    os.utime(path, (MTIME, MTIME))


def _small_files_tree(root):
    """Many small text files (each a whole fragment), larger ones whose last extent is a
    fragment, random data (raw pclusters, then a fragment), xattrs (inline and shared),
    hardlinks, duplicates, an empty file and a symlink: about 2 MiB."""
    rnd = random.Random(11)
    words = [bytes(rnd.choice(b"abcdefghijklmnopqrstuvwxyz") for _ in range(rnd.randint(2, 9)))
             for _ in range(500)]

    def text(n: int) -> bytes:
        return b" ".join(rnd.choice(words) for _ in range(n // 4 + 2))[:n]

    for i in range(600):
        _put(os.path.join(root, f"d{i % 7}", f"small-{i:03d}.txt"), text(rnd.randint(1, 6000)))
    for n in (4095, 4096, 4097, 8192, 12289, 70000, 200003):
        _put(os.path.join(root, "sizes", f"text-{n}"), text(n))
    _put(os.path.join(root, "random-3000"), rnd.randbytes(3000))
    _put(os.path.join(root, "random-50000"), rnd.randbytes(50000))
    _put(os.path.join(root, "random-300000"), rnd.randbytes(300000))  # raw blocks, then a fragment
    _put(os.path.join(root, "zeros-12288"), bytes(12288))
    _put(os.path.join(root, "empty"), b"")
    _put(os.path.join(root, "dup-1"), b"duplicated content, twice in the tree\n" * 300)
    _put(os.path.join(root, "dup-2"), b"duplicated content, twice in the tree\n" * 300)
    _put(os.path.join(root, "dup-small-1"), b"a small duplicate\n")
    _put(os.path.join(root, "dup-small-2"), b"a small duplicate\n")
    for i in range(5):
        p = os.path.join(root, "d0", f"small-{7 * i:03d}.txt")
        os.setxattr(p, "user.shared", b"the same on five files")  # shared (more than 2)
        os.setxattr(p, "user.own", b"x" * (100 * i + 1))  # inline, of varied sizes
    os.setxattr(os.path.join(root, "sizes", "text-70000"), "user.note", b"a tail in fragments")
    os.link(os.path.join(root, "sizes", "text-12289"), os.path.join(root, "hardlink-12289"))
    os.symlink("sizes/text-4097", os.path.join(root, "symlink"))
    for dirpath, dirs, files in os.walk(root):
        for n in dirs + files:
            os.utime(os.path.join(dirpath, n), (MTIME, MTIME), follow_symlinks=False)


@pytest.fixture(scope="module")
def small(tmp_path_factory):
    root = tmp_path_factory.mktemp("frag") / "src"
    _small_files_tree(str(root))
    return root


def _build(src, img, opt, threads="2", **kw):
    run_fstool("create", "-t", "erofs", src, "-o", img, "-O", opt,
               env={"FSTOOL_THREADS": threads, "SOURCE_DATE_EPOCH": str(MTIME)}, check=True, **kw)


def _map_header(region, r, ino) -> bytes:
    pos = -(-(r._iloc(ino.nid) + ino.isize + ino.xattr_size) // 8) * 8
    return region.pread(8, pos)


def _fragment_kinds(img) -> dict[str, str]:
    """path -> 'whole' (in the packed inode whole), 'tail' (last extent there) or another
    layout name, for every regular file; also checks the packed inode is in no directory."""
    from fstool.fs.erofs.format import INCOMPAT_FRAGMENTS, Z_ADVISE_FRAGMENT_PCLUSTER, Z_MAP_HEADER
    from fstool.fs.erofs.reader import ErofsReader
    from fstool.image import Region
    from fstool.tree import Kind

    kinds = {}
    with Region(str(img)) as region:
        r = ErofsReader(region)
        assert r.sb.feature_incompat & INCOMPAT_FRAGMENTS
        assert r.sb.packed_nid
        packed = r._inode(r.sb.packed_nid)
        assert packed.kind is Kind.FILE and packed.mode & 0o7777 == 0o600 and packed.size > 0
        nids = set()
        for e in r.walk():
            nids.add(e.inode)
            if e.kind is not Kind.FILE:
                continue
            ino = r._lookup(e.path)
            if ino.layout not in (1, 3):
                kinds[e.path] = f"layout {ino.layout}"
                continue
            raw = _map_header(region, r, ino)
            if struct.unpack("<Q", raw)[0] >> 63:
                assert ino.layout == 1  # full-index layout, no indexes, as mkfs.erofs writes it
                kinds[e.path] = "whole"
            elif Z_MAP_HEADER.unpack(raw).advise & Z_ADVISE_FRAGMENT_PCLUSTER:
                kinds[e.path] = "tail"
            else:
                kinds[e.path] = "compressed"
        assert r.sb.packed_nid not in nids  # the packed inode is named by the superblock only
    return kinds


@pytest.mark.parametrize("comp", COMPRESSORS)
def test_fragments_mount_read_rebuild_and_save_space(tmp_path, small, comp):
    img = tmp_path / "frag.erofs"
    _build(small, img, f"compression={comp},fragments=true")
    with loop_mount(img, tmp_path) as mnt:
        compare(small, mnt)
        diff_r(small, mnt)
    assert_reader_matches(small, img)
    kinds = _fragment_kinds(img)
    sizes = {p: os.path.getsize(os.path.join(small, p.lstrip("/"))) for p in kinds}
    # every non-empty file up to a pcluster is whole in the packed inode; bigger ones keep
    # pclusters of their own and most end in a fragment
    assert all(kinds[p] == "whole" for p in kinds if 0 < sizes[p] <= 4096), kinds
    assert kinds["/empty"] == "layout 0"
    assert kinds["/sizes/text-200003"] in ("tail", "compressed")
    assert sum(k == "tail" for k in kinds.values()) >= 3, kinds
    # byte-identical: one thread, from a copy elsewhere
    other = tmp_path / "elsewhere" / "src"
    other.parent.mkdir()
    subprocess.run(["cp", "-a", str(small), str(other)], check=True)
    again = tmp_path / "again.erofs"
    _build(other, again, f"compression={comp},fragments=true", threads="1", cwd=tmp_path)
    assert same_file(img, again)
    # many small files: packed together they compress (without fragments a file up to a block
    # is stored flat); measured 0.89 (lz4) to 0.78 (lzma) of the size without fragments
    plain = tmp_path / "plain.erofs"
    _build(small, plain, f"compression={comp}")
    assert img.stat().st_size < plain.stat().st_size * 0.95, (img.stat().st_size, plain.stat().st_size)
    out = run_fstool("cat", img, "/sizes/text-70000", check=True, text_output=False)
    assert out.stdout == (small / "sizes" / "text-70000").read_bytes()


@pytest.mark.parametrize("opt", [
    "compression=lz4hc,fragments=true,ztailpacking=true",
    "compression=lz4hc,fragments=true,legacy_compress=true",
    "compression=lzma,fragments=true,pcluster_size=64KiB",
    "compression=zstd,fragments=true,pcluster_size=16KiB,legacy_compress=true,ztailpacking=true",
    "compression=deflate,fragments=true,dedupe=true",
])
def test_fragments_with_other_options(tmp_path, small, opt):
    img = tmp_path / "o.erofs"
    _build(small, img, opt)
    with loop_mount(img, tmp_path) as mnt:
        compare(small, mnt)
    assert_reader_matches(small, img)
    kinds = _fragment_kinds(img)
    assert "tail" in kinds.values() and "whole" in kinds.values()
    again = tmp_path / "again.erofs"
    _build(small, again, opt, threads="1")
    assert same_file(img, again)


def test_dedupe_shares_fragments(tmp_path, small):
    """A duplicate takes the first file's pclusters and fragment: its bytes are packed once."""
    sizes = {}
    for dedupe in ("false", "true"):
        img = tmp_path / f"{dedupe}.erofs"
        _build(small, img, f"compression=lz4hc,fragments=true,dedupe={dedupe}")
        from fstool.fs.erofs.reader import ErofsReader
        from fstool.image import Region
        with Region(str(img)) as region:
            r = ErofsReader(region)
            sizes[dedupe] = r._inode(r.sb.packed_nid).size
            heads = {p: _map_header(region, r, r._lookup(p)) for p in ("/dup-1", "/dup-2", "/dup-small-1",
                                                                     "/dup-small-2")}
        if dedupe == "true":
            assert heads["/dup-small-1"] == heads["/dup-small-2"]  # the same offset in the packed inode
            with loop_mount(img, tmp_path) as mnt:
                compare(small, mnt)
    assert sizes["true"] <= sizes["false"] - len(b"a small duplicate\n")


def test_rich_tree_with_fragments_and_as_a_source(tmp_path):
    """Every kind of entry, xattrs, hardlinks, a chunk-based sparse file and 6,000 tiny files;
    the image then serves as the source of a squashfs image."""
    rich = tmp_path / "rich"
    make_rich_tree(str(rich), big=1_000_000)
    img = tmp_path / "r.erofs"
    run_fstool("create", "-t", "erofs", rich, "-o", img, "-O",
               "compression=lz4hc,fragments=true,ztailpacking=true,dedupe=true", check=True)
    with loop_mount(img, tmp_path) as mnt:
        compare(rich, mnt)
        diff_r(rich, mnt)
    assert_reader_matches(rich, img)
    # (compressed files are decompressed into a temporary directory: a private TMPDIR, so that
    # test_erofs.py's check for leftovers in the shared one does not see it while it exists)
    tmp = tmp_path / "tmp"
    tmp.mkdir()
    sq = tmp_path / "from-erofs.sqfs"
    run_fstool("create", "-t", "squashfs", img, "-o", sq, env={"TMPDIR": str(tmp)}, check=True)
    with loop_mount(sq, tmp_path) as mnt:
        compare(rich, mnt)
    assert os.listdir(tmp) == []


def test_missing_packed_inode_is_refused(tmp_path, small):
    from fstool.fs.erofs.format import SB_OFFSET, SUPERBLOCK, sb_checksum
    img = tmp_path / "f.erofs"
    _build(small, img, "compression=lz4,fragments=true")
    data = bytearray(img.read_bytes())
    fields = SUPERBLOCK.unpack(data, SB_OFFSET)._asdict()
    fields.update(packed_nid=0, checksum=0)
    SUPERBLOCK.pack_into(data, SB_OFFSET, **fields)
    fields["checksum"] = sb_checksum(bytes(data[SB_OFFSET:4096]))
    SUPERBLOCK.pack_into(data, SB_OFFSET, **fields)
    bad = tmp_path / "bad.erofs"
    bad.write_bytes(data)
    p = run_fstool("cat", bad, "/dup-small-1")  # 18 bytes: whole in the packed inode
    assert_one_line_error(p, 1, "bad.erofs", "no packed inode")


def test_fragments_need_a_compression(tmp_path):
    (tmp_path / "src").mkdir()
    p = run_fstool("create", "-t", "erofs", "src", "-o", "o.erofs", "-O", "fragments=true", cwd=tmp_path)
    assert_one_line_error(p, 2, "fragments needs a compression")
    assert sorted(os.listdir(tmp_path)) == ["src"]


def test_a_failed_build_leaves_no_packed_file(tmp_path, small):
    """The packed inode's bytes wait in a temporary file: removed when the build fails too."""
    tmp = tmp_path / "tmp"
    tmp.mkdir()
    p = run_fstool("create", "-t", "erofs", small, "-o", tmp_path / "s.erofs", "--size", "256KiB", "-O",
                   "compression=lz4,fragments=true", env={"TMPDIR": str(tmp)})
    assert_one_line_error(p, 1, "256 KiB")
    assert os.listdir(tmp) == []
    run_fstool("create", "-t", "erofs", small, "-o", tmp_path / "ok.erofs", "-O", "compression=lz4,fragments=true",
               env={"TMPDIR": str(tmp)}, check=True)
    assert os.listdir(tmp) == []


def test_packed_inode_limit_names_the_file(tmp_path, monkeypatch, capsys):
    """A tail past the packed inode's 4 GiB of 32-bit offsets is one error naming the file
    whose tail did not fit (the packed inode is made to look 4 GiB long already)."""
    from fstool.cli import main
    from fstool.fs.erofs import fragments

    src = tmp_path / "src"
    _put(src / "dir" / "big", random.Random(7).randbytes(10000))  # two pclusters and a tail
    real_init = fragments.Packer.__init__

    def init(self, *a, **kw):
        real_init(self, *a, **kw)
        self.length = (1 << 32) + 1

    monkeypatch.setattr(fragments.Packer, "__init__", init)
    assert main(["create", "-q", "-t", "erofs", str(src), "-o", str(tmp_path / "x.img"),
                 "-O", "compression=lz4,fragments=true"]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "passed 4 GiB" in err[0] and "dir/big" in err[0], err
