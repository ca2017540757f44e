"""EROFS: images checked by fsck.erofs and by the kernel (loop mount + full tree compare), our
reader checked against the source on our images and on mkfs.erofs's."""
from __future__ import annotations

import hashlib
import os
import stat
import subprocess

import pytest

from conftest import assert_one_line_error, diff_r, loop_mount, run_fstool, same_file
from treegen import compare, describe, make_rich_tree

pytestmark = pytest.mark.slow

LONG_NAME = "n" * 255


@pytest.fixture(scope="module")
def rich(tmp_path_factory):
    root = tmp_path_factory.mktemp("rich") / "src"
    make_rich_tree(str(root))
    return root


def fsck_ok(img, extract=None):
    cmd = ["fsck.erofs", str(img)] if extract is None else ["fsck.erofs", f"--extract={extract}", str(img)]
    p = subprocess.run(cmd, capture_output=True, text=True)
    assert p.returncode == 0, p.stdout + p.stderr


def reader_describe(img) -> dict:
    """The same record as treegen.describe, built from our reader's walk of the image."""
    from fstool.fs import open_reader
    from fstool.image import Region
    from fstool.tree import Kind

    out, groups = {}, {}
    with Region(str(img)) as region:
        r = open_reader(region)
        assert r.fs_type == "erofs"
        for e in r.walk():
            rec = {"fmt": e.kind.s_ifmt, "mode": e.mode, "owner": (e.uid, e.gid)}
            if e.kind is not Kind.DIR:
                rec["mtime"] = e.mtime
            if e.kind is Kind.FILE:
                h = hashlib.sha256()
                for piece in r.read_file(e.path):
                    h.update(piece)
                rec.update(size=e.size, sha=h.hexdigest(), nlink=e.nlink)
                groups.setdefault(e.inode, []).append(e.path)
            elif e.kind is Kind.SYMLINK:
                rec["target"] = e.target
            elif e.kind in (Kind.CHR, Kind.BLK):
                rec["rdev"] = e.rdev
            rec["xattrs"] = dict(sorted(e.xattrs.items()))
            out[e.path] = rec
    out["__hardlink_groups__"] = sorted(sorted(v) for v in groups.values() if len(v) > 1)
    return out


def assert_reader_matches(src, img):
    want, got = describe(src), reader_describe(img)
    assert sorted(want) == sorted(got)
    diffs = [(k, want[k], got[k]) for k in want if want[k] != got[k]]
    assert not diffs, f"{len(diffs)} entries differ, first: {diffs[:3]}"


def test_rich_tree_fsck_mount_and_reader(tmp_path, rich):
    img = tmp_path / "r.erofs"
    run_fstool("create", "-t", "erofs", rich, "-o", img, "-L", "rich", check=True)
    fsck_ok(img)
    with loop_mount(img, tmp_path) as mnt:
        compare(rich, mnt)
        diff_r(rich, mnt)
        assert os.stat(os.path.join(mnt, "sparse")).st_size == (80 << 20) + 3
        assert len(os.listdir(os.path.join(mnt, "many"))) == 6000  # a directory of many blocks
    assert_reader_matches(rich, img)
    # the 80 MiB sparse file is chunk-based with null chunks: it costs (almost) nothing
    assert img.stat().st_size < 8 << 20
    info = run_fstool("info", img, check=True).stdout
    assert "label: rich" in info and "compression: none" in info
    out = tmp_path / "x"
    fsck_ok(img, extract=out)  # fsck.erofs 1.5 extracts contents and modes (not owners or xattrs)
    # (not "sparse" nor "big.bin", whose zero half is a hole: fsck.erofs 1.5 writes a chunk-based
    # file's data chunks back to back, dropping its holes; the kernel and our reader read them
    # right, checked above)
    for name in ("text.txt", "dir/exec", LONG_NAME):
        assert same_file(rich / name, out / name), name


def test_compact_inodes_when_mtime_is_the_build_time(tmp_path, rich):
    """SOURCE_DATE_EPOCH clamps every mtime to the build time: compact 32-byte inodes then,
    except where ids or sizes need the extended form (as mkfs.erofs chooses)."""
    from fstool.fs.erofs.reader import ErofsReader
    from fstool.image import Region

    compact, full = tmp_path / "c.erofs", tmp_path / "f.erofs"
    run_fstool("create", "-t", "erofs", rich, "-o", compact, env={"SOURCE_DATE_EPOCH": "1600000000"}, check=True)
    run_fstool("create", "-t", "erofs", rich, "-o", full, check=True)
    assert compact.stat().st_size < full.stat().st_size
    fsck_ok(compact)
    with Region(str(compact)) as region:
        r = ErofsReader(region)
        assert not r._lookup("/text.txt").extended
        assert r._lookup("/big-ids").extended  # uid 70000 > 65535
        assert r.stat("/text.txt").mtime == 1600000000
    with loop_mount(compact, tmp_path) as mnt:
        st = os.lstat(os.path.join(mnt, "owned"))
        assert (st.st_uid, st.st_gid, int(st.st_mtime)) == (1234, 5678, 1600000000)
        assert os.lstat(os.path.join(mnt, "big-ids")).st_gid == 4_000_000_000
        compare(rich, mnt, mtime=False)


def test_our_reader_reads_mkfs_erofs_images(tmp_path, rich):
    # mkfs.erofs 1.5 cannot store a 255-byte name (it fails with ENOENT) and writes holes out
    # as data; build from a copy without those two
    src = tmp_path / "src"
    subprocess.run(["cp", "-a", str(rich), str(src)], check=True)
    os.unlink(src / LONG_NAME)
    os.unlink(src / "sparse")
    img = tmp_path / "m.erofs"
    subprocess.run(["mkfs.erofs", "--quiet", str(img), str(src)], check=True, capture_output=True)
    assert_reader_matches(src, img)
    ls = run_fstool("ls", "-R", img, check=True).stdout
    assert "/many/entry-05999-" in ls
    out = run_fstool("cat", img, "/size-393223", check=True, text_output=False)
    assert out.stdout == (src / "size-393223").read_bytes()


def _compressible_tree(root):
    """Text that compresses (so there are many extents, heads and non-heads) beside random data."""
    import random
    rnd = random.Random(7)
    words = [bytes(rnd.choice(b"abcdefghijklmnopqrstuvwxyz") for _ in range(rnd.randint(2, 9)))
             for _ in range(400)]
    os.makedirs(root / "sub")
    (root / "words.txt").write_bytes(b" ".join(rnd.choice(words) for _ in range(300000)))
    (root / "sub" / "log.txt").write_bytes(b"".join(b"line %d: %s\n" % (i, rnd.choice(words)) for i in range(40000)))
    (root / "random.bin").write_bytes(rnd.randbytes(300000))
    (root / "zeros").write_bytes(bytes(3 << 20))
    (root / "small").write_bytes(b"small file\n" * 30)


@pytest.mark.parametrize("comp", ["lz4", "lz4hc", "lzma", "deflate", "zstd"])
def test_compressed_images_mount_and_read(tmp_path, rich, comp):
    src = tmp_path / "src"
    _compressible_tree(src)
    # the rich tree (every kind of entry, xattrs, hardlinks, a sparse file) once, with lz4hc
    trees = {"src": src, "rich": rich} if comp == "lz4hc" else {"src": src}
    for name, tree in trees.items():
        img = tmp_path / f"{name}-{comp}.erofs"
        run_fstool("create", "-t", "erofs", tree, "-o", img, "-O", f"compression={comp}", check=True)
        if comp in ("lz4", "lz4hc", "lzma"):  # what fsck.erofs 1.5 knows
            fsck_ok(img)
        with loop_mount(img, tmp_path) as mnt:
            compare(tree, mnt)
            diff_r(tree, mnt)
        assert_reader_matches(tree, img)
    from fstool.fs.erofs.reader import ErofsReader
    from fstool.image import Region
    with Region(str(tmp_path / f"src-{comp}.erofs")) as region:
        r = ErofsReader(region)
        assert r._lookup("/words.txt").layout == 3  # compressed, compact indexes (as mkfs.erofs)
        assert r._lookup("/random.bin").layout in (0, 2)  # saves nothing: stored flat, as mkfs.erofs does
        assert dict(r.info())["compression"] == ("lz4" if comp.startswith("lz4") else comp)
    assert (tmp_path / f"src-{comp}.erofs").stat().st_size < 2 << 20


def test_big_pclusters_and_levels(tmp_path):
    src = tmp_path / "src"
    _compressible_tree(src)
    sizes = {}
    for opt in ("compression=lz4hc", "compression=lz4hc,pcluster_size=64KiB", "compression=lz4,legacy_compress=true",
                "compression=lz4hc,ztailpacking=true", "compression=lzma,ztailpacking=true,legacy_compress=true",
                "compression=zstd,ztailpacking=true,pcluster_size=16KiB",
                "compression=lz4hc,pcluster_size=16KiB,legacy_compress=true",
                "compression=lz4hc,compression_level=12,pcluster_size=16KiB", "compression=zstd,pcluster_size=32KiB"):
        img = tmp_path / f"{len(sizes)}.erofs"
        run_fstool("create", "-t", "erofs", src, "-o", img, "-O", opt, check=True)
        if "zstd" not in opt:
            fsck_ok(img)
        with loop_mount(img, tmp_path) as mnt:
            compare(src, mnt)
        assert_reader_matches(src, img)
        sizes[opt] = img.stat().st_size
    assert sizes["compression=lz4hc,pcluster_size=64KiB"] < sizes["compression=lz4hc"]
    assert sizes["compression=lz4hc,ztailpacking=true"] <= sizes["compression=lz4hc"]
    # with ztailpacking even a 330-byte file is compressed, into its inode's block
    from fstool.fs.erofs.reader import ErofsReader
    from fstool.image import Region
    names = list(sizes)
    for opt, layout in (("compression=lz4hc", 2), ("compression=lz4hc,ztailpacking=true", 3)):
        with Region(str(tmp_path / f"{names.index(opt)}.erofs")) as region:
            assert ErofsReader(region)._lookup("/small").layout == layout, opt


@pytest.mark.parametrize("comp", ["none", "lz4hc,ztailpacking=true"])
def test_dedupe_shares_identical_files(tmp_path, comp):
    src = tmp_path / "src"
    _compressible_tree(src)
    subprocess.run(["cp", "-a", str(src / "sub"), str(src / "copy")], check=True)
    subprocess.run(["cp", "-a", str(src / "words.txt"), str(src / "words-again.txt")], check=True)
    os.setxattr(src / "words-again.txt", "user.big", b"x" * 3000)  # other inode size, same data
    sizes = {}
    for dedupe in ("false", "true"):
        img = tmp_path / f"{dedupe}.erofs"
        run_fstool("create", "-t", "erofs", src, "-o", img, "-O", f"compression={comp},dedupe={dedupe}", check=True)
        fsck_ok(img)
        with loop_mount(img, tmp_path) as mnt:
            compare(src, mnt)
        assert_reader_matches(src, img)
        sizes[dedupe] = img.stat().st_size
    assert sizes["true"] < sizes["false"] - (100 << 10)


@pytest.mark.parametrize("args", [["-zlz4"], ["-zlz4hc"], ["-zlz4hc", "-C65536"], ["-zlz4hc", "-Elegacy-compress"],
                                  ["-zlz4hc", "-Eztailpacking"]])
def test_our_reader_reads_compressed_mkfs_erofs_images(tmp_path, args):
    """mkfs.erofs's compact (2- and 4-byte) indexes, with and without big pclusters, and its
    full ("legacy") ones."""
    src = tmp_path / "src"
    _compressible_tree(src)
    img = tmp_path / "m.erofs"
    subprocess.run(["mkfs.erofs", "--quiet", *args, str(img), str(src)], check=True, capture_output=True)
    assert_reader_matches(src, img)


def test_lz4hc_size_against_mkfs_erofs(tmp_path):
    src = tmp_path / "src"
    _compressible_tree(src)
    ours, ref = tmp_path / "ours.erofs", tmp_path / "ref.erofs"
    run_fstool("create", "-t", "erofs", src, "-o", ours, "-O", "compression=lz4hc", check=True)
    subprocess.run(["mkfs.erofs", "--quiet", "-zlz4hc", str(ref), str(src)], check=True, capture_output=True)
    assert ours.stat().st_size <= ref.stat().st_size * 1.02, (ours.stat().st_size, ref.stat().st_size)


def test_erofs_images_as_sources(tmp_path, rich):
    """An EROFS image (ours, compressed, or mkfs.erofs's) is a source like a directory: flat files
    are read from the image in place, compressed ones through a temporary copy."""
    # a TMPDIR of this test's own: the leftovers checked at the end are these builds' alone, not
    # those of another test reading an EROFS image beside it (pytest-xdist)
    tmp = tmp_path / "tmpdir"
    tmp.mkdir()
    env = {"TMPDIR": str(tmp)}
    ours = tmp_path / "ours.erofs"
    run_fstool("create", "-t", "erofs", rich, "-o", ours, "-O", "compression=lz4hc,ztailpacking=true", check=True)
    sq = tmp_path / "from-erofs.sqfs"
    run_fstool("create", "-t", "squashfs", ours, "-o", sq, env=env, check=True)
    with loop_mount(sq, tmp_path) as mnt:
        compare(rich, mnt)
    src = tmp_path / "src"
    _compressible_tree(src)
    theirs = tmp_path / "theirs.erofs"
    subprocess.run(["mkfs.erofs", "--quiet", "-zlz4hc", str(theirs), str(src)], check=True, capture_output=True)
    again = tmp_path / "again.erofs"
    run_fstool("create", "-t", "erofs", theirs, "-o", again, env=env, check=True)
    with loop_mount(again, tmp_path) as mnt:
        compare(src, mnt)
    assert not [n for n in os.listdir(tmp) if n.startswith("fstool-erofs-")]


def test_reproducible_across_paths_umask_clock_and_threads(tmp_path, rich):
    a, b = tmp_path / "a", tmp_path / "elsewhere" / "b"
    b.parent.mkdir()
    for d in (a, b):
        subprocess.run(["cp", "-a", str(rich), str(d)], check=True)
    for dirpath, dirs, files in os.walk(b):
        for n in dirs + files:
            os.utime(os.path.join(dirpath, n), (1_800_000_000, 1_800_000_000), follow_symlinks=False)
    env = {"SOURCE_DATE_EPOCH": "1600000000"}
    run_fstool("create", "-t", "erofs", a, "-o", tmp_path / "1.erofs", env=env, check=True)
    old = os.umask(0o077)
    try:
        run_fstool("create", "-t", "erofs", b, "-o", tmp_path / "2.erofs", env=env, cwd=tmp_path, check=True)
    finally:
        os.umask(old)
    assert same_file(tmp_path / "1.erofs", tmp_path / "2.erofs")
    # compressed, in one thread and in three
    opt = "compression=lz4hc,ztailpacking=true,dedupe=true"
    run_fstool("create", "-t", "erofs", a, "-o", tmp_path / "z1.erofs", "-O", opt,
               env={**env, "FSTOOL_THREADS": "1"}, check=True)
    run_fstool("create", "-t", "erofs", b, "-o", tmp_path / "z3.erofs", "-O", opt,
               env={**env, "FSTOOL_THREADS": "3"}, check=True)
    assert same_file(tmp_path / "z1.erofs", tmp_path / "z3.erofs")
    info = run_fstool("info", tmp_path / "1.erofs", check=True).stdout
    assert "created: 1600000000" in info
    # another seed, another UUID; nothing else changes
    run_fstool("create", "-t", "erofs", a, "-o", tmp_path / "3.erofs", "-U", "11111111-2222-3333-4444-555555555555",
               env=env, check=True)
    assert "uuid: 11111111-2222-3333-4444-555555555555" in run_fstool("info", tmp_path / "3.erofs", check=True).stdout


@pytest.mark.parametrize("chunked", [True, False])
def test_file_over_4gib(tmp_path, chunked):
    src = tmp_path / "src"
    src.mkdir()
    with open(src / "huge", "wb") as f:
        f.write(b"head")
        f.seek((5 << 30) - 4)
        f.write(b"tail")
    img = tmp_path / "h.erofs"
    run_fstool("create", "-t", "erofs", src, "-o", img, "-O", f"chunked_sparse={str(chunked).lower()}", check=True)
    fsck_ok(img)
    # holes stay holes: chunk-based, or flat with the image file itself sparse
    assert img.stat().st_blocks * 512 < 1 << 20
    if chunked:
        assert img.stat().st_size < 1 << 20
    with loop_mount(img, tmp_path) as mnt:
        with open(os.path.join(mnt, "huge"), "rb") as f:
            assert os.fstat(f.fileno()).st_size == 5 << 30
            assert f.read(4) == b"head"
            f.seek(3 << 30)
            assert f.read(8) == bytes(8)
            f.seek((5 << 30) - 4)
            assert f.read() == b"tail"


def test_shared_xattrs_and_acls(tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    for i in range(5):
        p = src / f"f{i}"
        p.write_bytes(b"x" * i)
        os.setxattr(p, "user.common", b"shared by every file")
        os.setxattr(p, "user.own", f"only {i}".encode())
        os.setxattr(p, "trusted.t", b"trusted value")
    subprocess.run(["setfacl", "-m", "u:1234:r", str(src / "f0")], check=True)
    img = tmp_path / "x.erofs"
    run_fstool("create", "-t", "erofs", src, "-o", img, check=True)
    fsck_ok(img)
    from fstool.fs.erofs.reader import ErofsReader
    from fstool.image import Region
    with Region(str(img)) as region:
        r = ErofsReader(region)
        assert r.sb.xattr_blkaddr != 0  # a shared-xattr area exists
        ino = r._lookup("/f3")
        body = region.pread(ino.xattr_size, r._iloc(ino.nid) + ino.isize)
        assert body[4] == 2  # user.common and trusted.t are shared, user.own inline
    with loop_mount(img, tmp_path) as mnt:
        compare(src, mnt)
        acl = subprocess.run(["getfacl", "-n", os.path.join(mnt, "f0")], capture_output=True, text=True).stdout
        assert "user:1234:r--" in acl


def test_empty_tree_and_tiny_files(tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    img = tmp_path / "e.erofs"
    run_fstool("create", "-t", "erofs", src, "-o", img, check=True)
    fsck_ok(img)
    assert img.stat().st_size == 4096
    with loop_mount(img, tmp_path) as mnt:
        assert os.listdir(mnt) == []
    # sizes around the block size: inline tails, plain blocks, both
    for n in (1, 4095, 4096, 4097, 8191, 12288, 4096 - 64):
        (src / f"s{n}").write_bytes(os.urandom(n))
    os.mknod(src / "dev", 0o600 | stat.S_IFCHR, os.makedev(4095, (1 << 20) - 1))
    os.utime(src / "s1", (-86400, -86400))  # before 1970
    os.utime(src / "s4095", ns=(1_700_000_000_123_456_789,) * 2)
    run_fstool("create", "-t", "erofs", src, "-o", img, check=True)
    fsck_ok(img)
    with loop_mount(img, tmp_path) as mnt:
        compare(src, mnt, mtime=False)
        assert os.stat(os.path.join(mnt, "s1")).st_mtime_ns == -86400 * 10**9
        assert os.stat(os.path.join(mnt, "s4095")).st_mtime_ns == 1_700_000_000_123_456_789
    assert_reader_matches(src, img)


def test_layout_options(tmp_path, rich):
    """No inline tails, no shared xattrs, holes written flat, compact inodes whatever the mtimes."""
    from fstool.fs.erofs.reader import ErofsReader
    from fstool.image import Region
    img = tmp_path / "o.erofs"
    run_fstool("create", "-t", "erofs", rich, "-o", img, "-O",
               "inline_data=false,xattr_tolerance=-1,chunked_sparse=false,ignore_mtime=true", check=True)
    fsck_ok(img)
    with loop_mount(img, tmp_path) as mnt:
        compare(rich, mnt, mtime=False)
        assert os.stat(os.path.join(mnt, "text.txt")).st_mtime == 0  # the build time: no SOURCE_DATE_EPOCH
    with Region(str(img)) as region:
        r = ErofsReader(region)
        assert r.sb.xattr_blkaddr == 0
        text = r._lookup("/text.txt")
        assert text.layout == 0 and not text.extended  # FLAT_PLAIN, compact
        assert r._lookup("/sparse").layout == 0
        assert r._lookup("/big-ids").extended  # ids over 16 bits still need the extended form
    st = img.stat()
    assert st.st_blocks * 512 < st.st_size - (64 << 20)  # the sparse file's 80 MiB hole is still one on the host


def test_spec_size_and_capacity(tmp_path, rich):
    p = run_fstool("create", "-t", "erofs", rich, "-o", tmp_path / "small.erofs", "--size", "1MiB")
    assert_one_line_error(p, 1, "1 MiB")
    assert not (tmp_path / "small.erofs").exists()
    run_fstool("create", "-t", "erofs", rich, "-o", tmp_path / "big.erofs", "--size", "64MiB", check=True)
    assert (tmp_path / "big.erofs").stat().st_size == 64 << 20
    fsck_ok(tmp_path / "big.erofs")


@pytest.mark.parametrize("opt, needle", [
    ("compresion=lz4", "did you mean 'compression'"),
    ("compression=brotli", "compression"),
    ("pcluster_size=5000", "pcluster_size"),
    ("fragments=true", "fragments needs a compression"),
    ("inline_data=maybe", "inline_data"),
    ("compression=lz4hc,compression_level=13", "compression_level"),
])
def test_option_errors(tmp_path, opt, needle):
    (tmp_path / "src").mkdir()
    p = run_fstool("create", "-t", "erofs", "src", "-o", "o.erofs", "-O", opt, cwd=tmp_path)
    assert_one_line_error(p, 2, needle)
    assert sorted(os.listdir(tmp_path)) == ["src"]


def _xattr_tar(path, entries):
    import io
    import tarfile
    with tarfile.open(path, "w", format=tarfile.PAX_FORMAT) as tf:
        for i, (name, attrs) in enumerate(entries):
            ti = tarfile.TarInfo(name)
            ti.size = 2
            ti.mtime = 1_600_000_000
            ti.pax_headers = {f"SCHILY.xattr.{k}": v for k, v in attrs.items()}
            tf.addfile(ti, io.BytesIO(b"%d\n" % i))


def test_xattrs_from_a_tar(tmp_path):
    """security.* and big values come through a tar (PAX records); a name no erofs prefix
    covers is refused with its path, never dropped."""
    _xattr_tar(tmp_path / "x.tar", [("a", {"user.color": "blue", "security.selinux": "system_u:x"}),
                                    ("c", {"trusted.big": "v" * 3000})])
    img = tmp_path / "x.erofs"
    run_fstool("create", "-t", "erofs", tmp_path / "x.tar", "-o", img, check=True)
    fsck_ok(img)
    with loop_mount(img, tmp_path) as mnt:
        assert os.getxattr(os.path.join(mnt, "a"), "security.selinux") == b"system_u:x"
        assert os.getxattr(os.path.join(mnt, "c"), "trusted.big") == b"v" * 3000
    _xattr_tar(tmp_path / "bad.tar", [("f", {"system.weird": "v"})])
    p = run_fstool("create", "-t", "erofs", tmp_path / "bad.tar", "-o", tmp_path / "bad.erofs")
    assert_one_line_error(p, 1, "system.weird", "/f")
    assert not (tmp_path / "bad.erofs").exists()


def test_corrupt_images_are_refused(tmp_path):
    (tmp_path / "src").mkdir()
    (tmp_path / "src" / "f").write_bytes(b"x" * 300000)
    img = tmp_path / "o.erofs"
    run_fstool("create", "-t", "erofs", tmp_path / "src", "-o", img, check=True)
    data = bytearray(img.read_bytes())
    (tmp_path / "trunc.erofs").write_bytes(data[:5000])
    p = run_fstool("cat", tmp_path / "trunc.erofs", "/f")
    assert_one_line_error(p, 1, "trunc.erofs")
    bad = bytearray(data)
    bad[1024 + 12] ^= 1  # a flipped superblock bit: the crc32c no longer matches
    (tmp_path / "bad.erofs").write_bytes(bad)
    p = run_fstool("info", tmp_path / "bad.erofs")
    assert_one_line_error(p, 1, "bad.erofs", "checksum")


@pytest.mark.parametrize("comp", ["zstd", "deflate"])
def test_searched_codecs_do_not_depend_on_thread_count(tmp_path, comp):
    """deflate and zstd find each pcluster's input length by a search that starts from the
    previous pcluster's ratio: that start must come from the same file segment, never from
    whatever segment a thread happened to compress before (1, 2 and 3 threads, same bytes)."""
    import random
    rng = random.Random(1)
    src = tmp_path / "src"
    src.mkdir()
    words = ["alpha", "beta", "gamma", "delta", "eps", "zeta", "eta", "theta"]
    for i in range(24):
        (src / f"f{i}").write_text(" ".join(rng.choice(words) for _ in range(rng.randint(2000, 40000))))
    imgs = []
    for threads in (1, 2, 3):
        img = tmp_path / f"t{threads}.erofs"
        run_fstool("create", "-t", "erofs", src, "-o", img, "-O",
                   f"compression={comp},pcluster_size=16KiB", env={"FSTOOL_THREADS": str(threads)},
                   check=True)
        imgs.append(img.read_bytes())
    assert imgs[0] == imgs[1] == imgs[2]


def test_a_few_zero_blocks_do_not_stop_compression(tmp_path):
    """Zero blocks are holes (fstool.zeros), but a compressed file with a few of them stays
    compressed: chunk-based storage (uncompressed, holes as null chunks) is for files that are
    mostly holes. Found by bench_erofs: the image had grown 5% for binaries' zero padding."""
    src = tmp_path / "src"
    src.mkdir()
    text = b"the quick brown fox jumps over the lazy dog\n" * 3000
    (src / "padded").write_bytes(text[:65536] + bytes(8192) + text[:65536])
    (src / "sparse").write_bytes(bytes(1 << 20) + text[:4096])
    sizes = {}
    for comp in ("none", "lz4hc"):
        img = tmp_path / f"{comp}.erofs"
        run_fstool("create", "-q", "-t", "erofs", src, "-o", img, "-O", f"compression={comp}", check=True)
        sizes[comp] = img.stat().st_size
        with loop_mount(img, tmp_path) as mnt:
            diff_r(src, mnt)
    assert sizes["lz4hc"] < sizes["none"] - 100_000  # "padded" compressed, "sparse" a null chunk
    assert sizes["none"] < 300_000  # the 1 MiB of zeros costs no blocks either way
