"""XFS v5: images checked by xfs_repair -n, xfs_db and the kernel (loop mount, plain and
norecovery, + full tree compare with xattrs), our reader checked against the source and
against mkfs.xfs -p protofile images, random trees through the property generator."""
from __future__ import annotations

import io
import os
import re
import subprocess
import tarfile
import tempfile

import pytest
from hypothesis import given

from conftest import assert_one_line_error, diff_r, mount, private_mount, run_fstool
from fstool.tree import FileSource, Kind, Node, Tree
from test_properties import SETTINGS, build, expected, materialise, open_reader, read_back, trees
from treegen import compare, make_rich_tree
from xfsproto import write_protofile

pytestmark = pytest.mark.slow

MTIME = 1_700_000_000
QA_ENV = dict(os.environ, TEST_DIR="1", TEST_DEV="1", QA_CHECK_FS="1")  # mkfs.xfs: allow < 300 MB


@pytest.fixture(scope="module")
def rich(tmp_path_factory):
    """The rich tree, with devices XFS can hold (its sysv encoding keeps 18 bits of minor)."""
    root = tmp_path_factory.mktemp("rich") / "src"
    make_rich_tree(str(root), devices=False)
    os.mknod(root / "chr", 0o620 | 0o020000, os.makedev(4, 64))
    os.mknod(root / "blk", 0o660 | 0o060000, os.makedev(259, 3000))
    os.utime(root, (MTIME, MTIME))
    return root


def create(src, img, *args, check=True, **kw):
    return run_fstool("create", "-t", "xfs", src, "-o", img, *args, check=check, **kw)


def repair_ok(img, *extra):
    p = subprocess.run(["xfs_repair", "-n", *extra, str(img)], capture_output=True, text=True)
    assert p.returncode == 0, p.stdout + p.stderr
    # what a clean run prints: the phase lines and the note about images in plain files
    benign = re.compile(r"Phase \d|\s+- |Cannot get host filesystem geometry|Repair may fail if|"
                        r"the image and the host filesystem|No modify flag set")
    bad = [ln for ln in (p.stdout + p.stderr).splitlines() if ln.strip() and not benign.match(ln)]
    assert not bad, "\n".join(bad[:20])
    # xfs_db's check accounts for every block and inode (and the superblock's feature bits)
    c = subprocess.run(["xfs_db", "-r", "-c", "check", str(img)], capture_output=True, text=True)
    assert c.returncode == 0 and not c.stdout.strip() and not c.stderr.strip(), c.stdout + c.stderr


def xfs_db(img, *cmds) -> dict[str, str]:
    args = ["xfs_db", "-r"]
    for c in cmds:
        args += ["-c", c]
    p = subprocess.run(args + [str(img)], capture_output=True, text=True)
    assert p.returncode == 0 and "CRC error" not in p.stderr and "corrupt" not in p.stderr.lower(), p.stderr
    out = {}
    for line in p.stdout.splitlines():
        if " = " in line:
            k, v = line.split(" = ", 1)
            out[k.strip()] = v.strip()
    return out


@pytest.fixture
def mounted(tmp_path):
    """mounted(img, opts) -> the mount point, unmounted at teardown."""
    points = []

    def do(img, opts="loop,ro"):
        mnt = tmp_path / f"mnt{len(points)}"
        mnt.mkdir()
        p = mount(["-o", opts, str(img), str(mnt)])
        assert p.returncode == 0, f"the kernel refused {img}: {p.stderr}"
        points.append(mnt)
        return mnt

    yield do
    for m in reversed(points):
        subprocess.run(["umount", str(m)], check=True)


def test_rich_tree_repairs_clean_and_mounts(tmp_path, rich, mounted):
    img = tmp_path / "r.xfs"
    create(rich, img)
    repair_ok(img)
    sb = xfs_db(img, "sb 0", "print")
    # mkfs.xfs's 0xb4a5 plus the attr bit the kernel adds with the first xattr
    assert sb["versionnum"] == "0xb4b5" and sb["features_incompat"] == "0xb"  # ftype, sparse, bigtime
    assert sb["features_ro_compat"] == "0x9"  # finobt, inobtcount (no reflink, no rmapbt)
    assert int(sb["agcount"]) >= 2 and sb["inodesize"] == "512"
    for opts in ("loop,ro", "loop,ro,norecovery"):
        mnt = mounted(img, opts)
        compare(rich, mnt)
        diff_r(rich, mnt)
    # every name form the rich tree makes: the 6000-entry directory is a node directory
    ino = os.stat(mnt / "many").st_ino
    d = xfs_db(img, f"inode {ino}", "print core.format core.size", "dblock 8388608", "print lhdr.info.hdr.magic")
    assert d["core.format"].startswith("2") and int(d["core.size"]) > 8 * 4096


def _tree_of_dirs(root):
    sizes = {"sf": 5, "block": 60, "leaf": 300, "node": 3000}
    for form, n in sizes.items():
        d = root / form
        d.mkdir(parents=True)
        for i in range(n):
            (d / f"{form}-entry-{i:05d}{'-' * (i % 17)}").write_bytes(str(i).encode())
    return sizes


def test_directory_forms(tmp_path, mounted):
    src = tmp_path / "src"
    _tree_of_dirs(src)
    img = tmp_path / "d.xfs"
    create(src, img)
    repair_ok(img)
    mnt = mounted(img)
    compare(src, mnt)
    magics = {}
    for form in ("sf", "block", "leaf", "node"):
        ino = os.stat(mnt / form).st_ino
        core = xfs_db(img, f"inode {ino}", "print core.format")
        if form == "sf":
            assert core["core.format"].startswith("1 (local)")
            continue
        blk0 = subprocess.run(["xfs_db", "-r", "-c", f"inode {ino}", "-c", "dblock 0", "-c", "type data",
                               "-c", "print", str(img)], capture_output=True, text=True).stdout
        magics[form] = blk0.split()[1]
    assert magics["block"] == "58444233"  # XDB3
    assert magics["leaf"] == magics["node"] == "58444433"  # XDD3 data blocks
    leaf = xfs_db(img, f"inode {os.stat(mnt / 'leaf').st_ino}", "dblock 8388608", "print")
    node = xfs_db(img, f"inode {os.stat(mnt / 'node').st_ino}", "dblock 8388608", "print")
    assert leaf["lhdr.info.hdr.magic"] == "0x3df1"  # leaf1
    assert node["nhdr.info.hdr.magic"] == "0x3ebe"  # da node over leafn blocks
    r = run_fstool("ls", img, "/node", check=True).stdout.splitlines()
    assert len(r) == 3000


def test_directory_form_boundaries(tmp_path, mounted):
    """Around the leaf1/node switch (a node directory with a single leafn block), long names
    (fewer leaf entries fit beside the best-free table), and more data blocks than one
    free-index block covers."""
    tree = Tree()
    counts = {f"d{c}": (c, 6) for c in range(490, 515)}
    counts.update({f"long{c}": (c, 255) for c in (380, 400, 420, 440)})
    counts["huge"] = (31000, 255)
    for dname, (c, namelen) in counts.items():
        tree.add(f"/{dname}", Node(Kind.DIR, mode=0o755, mtime=MTIME))
        for i in range(c):
            name = (f"{i:06d}" + "n" * namelen)[:namelen]
            tree.add(f"/{dname}/{name}", Node(Kind.FILE, mode=0o644, mtime=MTIME, source=FileSource(None, 0)))
    img = tmp_path / "b.xfs"
    build(tree, "xfs", str(img))
    repair_ok(img)
    mnt = mounted(img)
    reader = open_reader(str(img))
    for dname, (c, _) in counts.items():
        assert len(os.listdir(mnt / dname)) == c, dname
        assert len(reader.listdir("/" + dname)) == c, dname


def test_kernel_writes_to_our_images(tmp_path, rich):
    """A read-write mount can allocate from our free-space btrees and AGFL, and the result is
    still clean."""
    img = tmp_path / "w.xfs"
    create(rich, img, "--headroom", "16m")
    (tmp_path / "rw").mkdir()
    with private_mount(["mount", "-o", "loop", img], tmp_path / "rw") as mnt:
        (mnt / "new").write_bytes(os.urandom(5 << 20))
        for i in range(300):
            (mnt / "many" / f"new-{i}").write_text(str(i))
        for name in list(os.listdir(mnt / "many"))[:100]:
            os.unlink(mnt / "many" / name)
        os.setxattr(mnt / "text.txt", "user.added", b"x" * 500)
    repair_ok(img)


def test_auto_size_leaves_the_per_ag_reservation(tmp_path, rich):
    """An auto-sized image is tight, yet every AG keeps the free blocks the kernel reserves for
    the finobt at mount, so a read-write mount does not warn "ENOSPC reserving per-AG metadata"."""
    img = tmp_path / "t.xfs"
    create(rich, img)
    agcount = int(xfs_db(img, "sb 0", "print agcount")["agcount"])
    free = [int(xfs_db(img, f"agf {a}", "print freeblks")["freeblks"]) for a in range(agcount)]
    assert all(f >= 10 for f in free) and sum(free) * 4096 < 16 << 20, free
    before = subprocess.run(["dmesg"], capture_output=True, text=True).stdout.count("\n")
    dev = subprocess.run(["losetup", "-f", "--show", str(img)], capture_output=True, text=True,
                         check=True).stdout.strip()
    mnt = tmp_path / "m"
    mnt.mkdir()
    try:
        with private_mount(["mount", dev], mnt):
            pass
    finally:
        subprocess.run(["losetup", "-d", dev])
    new = subprocess.run(["dmesg"], capture_output=True, text=True).stdout.splitlines()[before:]
    name = os.path.basename(dev)
    assert not [ln for ln in new if f"({name})" in ln and "ENOSPC" in ln]
    repair_ok(img)


def test_fragmented_and_sparse_files(tmp_path, mounted):
    src = tmp_path / "src"
    src.mkdir()
    with open(src / "frag300", "wb") as f:  # 300 extents: a one-level bmbt
        for i in range(300):
            f.seek(i * 65536)
            f.write(os.urandom(4096))
    with open(src / "frag6000", "wb") as f:  # 6000 extents: a two-level bmbt
        for i in range(6000):
            f.seek(i * 8192)
            f.write(bytes([i % 251]) * 100)
    with open(src / "huge-sparse", "wb") as f:  # 5 GiB, three data blocks
        f.write(b"start")
        f.seek(2 << 30)
        f.write(b"mid")
        f.seek(5 << 30)
        f.write(b"end")
    img = tmp_path / "f.xfs"
    create(src, img)
    assert os.stat(img).st_blocks * 512 < 64 << 20  # holes stay holes
    repair_ok(img)
    mnt = mounted(img)
    compare(src, mnt)
    for name, levels in (("frag300", "1"), ("frag6000", "2")):
        d = xfs_db(img, f"inode {os.stat(mnt / name).st_ino}", "print core.format core.nextents u3.bmbt.level")
        assert d["core.format"].startswith("3 (btree)") and d["u3.bmbt.level"] == levels
    out = run_fstool("cat", img, "/frag6000", check=True, text_output=False).stdout
    assert out == (src / "frag6000").read_bytes()


def _xattr_tar(path):
    with tarfile.open(path, "w", format=tarfile.PAX_FORMAT) as t:
        for name, attrs in [
            ("sf", {"SCHILY.xattr.user.a": "1", "SCHILY.xattr.trusted.b": "2",
                    "SCHILY.xattr.security.c": "3"}),
            ("leaf", {f"SCHILY.xattr.user.k{i:02d}": "v" * 40 for i in range(30)}),
            ("remote", {"SCHILY.xattr.user.big": "r" * 10000, "SCHILY.xattr.user.small": "s"}),
            ("max", {"SCHILY.xattr.user.max": "m" * 65536, "SCHILY.xattr.user.mid": "q" * 3000}),
            ("node", dict({f"SCHILY.xattr.user.attribute-{i:04d}": "v" * (i % 50) for i in range(800)},
                          **{"SCHILY.xattr.user.big": "B" * 20000})),
        ]:
            ti = tarfile.TarInfo(name)
            ti.size, ti.mtime, ti.pax_headers = 5, MTIME, attrs
            t.addfile(ti, io.BytesIO(b"hello"))
        for name, typ in (("fifo", tarfile.FIFOTYPE), ("dev", tarfile.CHRTYPE)):
            ti = tarfile.TarInfo(name)
            ti.type, ti.mtime, ti.devmajor, ti.devminor = typ, MTIME, 1, 3
            ti.pax_headers = {"SCHILY.xattr.trusted.x": "on a special file"}
            t.addfile(ti)
        d = tarfile.TarInfo("dir")
        d.type, d.mode, d.mtime = tarfile.DIRTYPE, 0o755, MTIME
        d.pax_headers = {"SCHILY.xattr.user.dir": "y" * 200}
        t.addfile(d)


def test_xattrs(tmp_path, mounted):
    tar = tmp_path / "x.tar"
    _xattr_tar(tar)
    img = tmp_path / "x.xfs"
    create(tar, img)
    repair_ok(img)
    mnt = mounted(img)
    with tarfile.open(tar) as t:
        want = {m.name: {k[len("SCHILY.xattr."):]: v.encode() for k, v in m.pax_headers.items()}
                for m in t.getmembers()}
    reader = open_reader(str(img))
    for name, attrs in want.items():
        got = {k: os.getxattr(mnt / name, k, follow_symlinks=False)
               for k in os.listxattr(mnt / name, follow_symlinks=False)}
        assert got == attrs, name
        assert reader.stat("/" + name).xattrs == attrs, name
    # the forms on disk: shortform in the inode, and a leaf block with remote values
    assert xfs_db(img, f"inode {os.stat(mnt / 'sf').st_ino}", "print core.aformat")["core.aformat"].startswith("1")
    assert xfs_db(img, f"inode {os.stat(mnt / 'remote').st_ino}", "print core.aformat")["core.aformat"].startswith("2")
    node = xfs_db(img, f"inode {os.stat(mnt / 'node').st_ino}", "ablock 0", "print")
    assert node["hdr.info.hdr.magic"] == "0x3ebe"  # leaves under a da node


def _acl(*entries) -> bytes:
    """A POSIX ACL in the VFS xattr form: version 2, then (tag, perm, id) little-endian."""
    import struct
    return struct.pack("<I", 2) + b"".join(struct.pack("<HHI", t, p, i) for t, p, i in entries)


def test_posix_acls(tmp_path, mounted):
    src = tmp_path / "src"
    (src / "d").mkdir(parents=True)
    (src / "f").write_bytes(b"x")
    none = 0xFFFFFFFF
    access = _acl((1, 6, none), (2, 7, 1234), (4, 4, none), (8, 4, 55), (0x10, 7, none), (0x20, 4, none))
    default = _acl((1, 7, none), (2, 5, 99), (4, 5, none), (0x10, 5, none), (0x20, 5, none))
    os.setxattr(src / "f", "system.posix_acl_access", access)
    os.setxattr(src / "d", "system.posix_acl_default", default)
    img = tmp_path / "a.xfs"
    create(src, img)
    repair_ok(img)
    mnt = mounted(img)
    assert os.getxattr(mnt / "f", "system.posix_acl_access") == access
    assert os.getxattr(mnt / "d", "system.posix_acl_default") == default
    # XFS keeps them as trusted.SGI_ACL_FILE / SGI_ACL_DEFAULT; our reader shows the Linux names
    assert "trusted.SGI_ACL_FILE" in os.listxattr(mnt / "f")
    reader = open_reader(str(img))
    assert reader.stat("/f").xattrs == {"system.posix_acl_access": access}
    assert reader.stat("/d").xattrs == {"system.posix_acl_default": default}


def test_symlinks_devices_and_hardlinks(tmp_path, mounted):
    src = tmp_path / "src"
    src.mkdir()
    (src / "f").write_bytes(b"data")
    os.link(src / "f", src / "f2")
    os.symlink("x" * 300, src / "local-link")  # fits in the inode
    os.symlink("y" * 1023, src / "remote-link")  # the longest, in a block with a CRC header
    os.mknod(src / "null", 0o666 | 0o020000, os.makedev(1, 3))
    os.mknod(src / "disk", 0o660 | 0o060000, os.makedev(511, (1 << 18) - 1))
    os.mkfifo(src / "fifo")
    for name, ns in (("old", -1_000_000_000_123_456_789), ("new", 4_102_444_800_987_654_321)):
        (src / name).write_bytes(name.encode())
        os.utime(src / name, ns=(ns, ns))
    img = tmp_path / "s.xfs"
    create(src, img)
    repair_ok(img)
    mnt = mounted(img)
    compare(src, mnt)
    diff_r(src, mnt)
    assert os.stat(mnt / "f").st_nlink == 2
    # nanosecond times (bigtime), before 1970 and after 2038
    for name, ns in (("old", -1_000_000_000_123_456_789), ("new", 4_102_444_800_987_654_321)):
        assert os.stat(mnt / name, follow_symlinks=False).st_mtime_ns == ns, name
    long = tmp_path / "toolong"
    long.mkdir()
    os.symlink("z" * 1024, long / "l")
    assert_one_line_error(create(long, tmp_path / "l.xfs", check=False), 1, "1023")


def test_multi_ag_and_many_inodes(tmp_path, rich, mounted):
    src = tmp_path / "src"
    (src / "rich").parent.mkdir(parents=True, exist_ok=True)
    subprocess.run(["cp", "-a", str(rich), str(src / "rich")], check=True)
    (src / "big").write_bytes(os.urandom(20 << 20))  # spans AGs of 16 MiB
    img = tmp_path / "m.xfs"
    create(src, img, "-O", "agsize=16m")
    repair_ok(img)
    sb = xfs_db(img, "sb 0", "print agcount agblocks")
    assert int(sb["agcount"]) >= 3 and sb["agblocks"] == "4096"
    mnt = mounted(img)
    compare(src, mnt)
    # 17000 inodes: more chunks than one inobt leaf holds, so a two-level inode btree
    many = tmp_path / "many"
    many.mkdir()
    for i in range(17000):
        (many / f"e{i}").touch()
    img2 = tmp_path / "i.xfs"
    create(many, img2, "--size", "96m", "-O", "agcount=3")
    repair_ok(img2)
    agi = xfs_db(img2, "agi 0", "print count level ino_blocks")
    assert agi["level"] == "2" and int(agi["count"]) >= 17002


def test_reproducible_and_seeded(tmp_path, rich):
    a, b = tmp_path / "a.xfs", tmp_path / "b.xfs"
    copy = tmp_path / "elsewhere" / "tree"
    copy.parent.mkdir()
    subprocess.run(["cp", "-a", str(rich), str(copy)], check=True)
    create(rich, a)
    create(copy, b, env={"TZ": "Asia/Tokyo"})
    assert a.read_bytes() == b.read_bytes()
    c = tmp_path / "c.xfs"
    create(rich, c, "--label", "data", "--uuid", "12345678-1234-5678-1234-567812345678")
    sb = xfs_db(c, "sb 0", "print uuid fname")
    assert sb["uuid"] == "12345678-1234-5678-1234-567812345678" and sb["fname"].startswith('"data')
    repair_ok(c)


def test_options_and_fixed_size(tmp_path, mounted):
    src = tmp_path / "src"
    src.mkdir()
    (src / "f").write_bytes(os.urandom(100_000))
    img = tmp_path / "o.xfs"
    create(src, img, "--size", "200m", "-O", "agcount=5", "-O", "inode_size=1024", "-O", "log_size=8m")
    assert os.path.getsize(img) == 200 << 20
    sb = xfs_db(img, "sb 0", "print agcount inodesize logblocks inoalignmt")
    assert (sb["agcount"], sb["inodesize"], sb["logblocks"], sb["inoalignmt"]) == ("5", "1024", "2048", "16")
    repair_ok(img)
    compare(src, mounted(img))
    # one AG (the log then sits in AG 0, before the root inode chunk): xfs_repair needs
    # -o force_geometry, having no secondary superblock to compare
    one = tmp_path / "one.xfs"
    create(src, one, "-O", "agcount=1")
    assert xfs_db(one, "sb 0", "print agcount")["agcount"] == "1"
    repair_ok(one, "-o", "force_geometry")
    compare(src, mounted(one, "loop,ro,nouuid"))  # same tree, same derived UUID as o.xfs, mounted
    # mkfs.xfs's own AG rule for a 1 GiB device: 4 AGs and a 64 MiB log (the mkfs.xfs default)
    img2 = tmp_path / "g.xfs"
    create(src, img2, "--size", "1g")
    sb = xfs_db(img2, "sb 0", "print agcount logblocks")
    assert sb == {"agcount": "4", "logblocks": "16384"}
    repair_ok(img2)


def test_large_sparse_device(tmp_path, mounted):
    """A 2 TiB device: mkfs.xfs's geometry (4 AGs of 512 GiB, a 1 GiB log, imaxpct 5) in a few
    MiB on the host."""
    src = tmp_path / "src"
    src.mkdir()
    (src / "f").write_bytes(os.urandom(1 << 20))
    img = tmp_path / "big.xfs"
    create(src, img, "--size", "2t")
    assert os.stat(img).st_blocks * 512 < 16 << 20
    sb = xfs_db(img, "sb 0", "print agcount agblocks logblocks imax_pct")
    assert sb == {"agcount": "4", "agblocks": "134217728", "logblocks": "262144", "imax_pct": "5"}
    repair_ok(img)
    compare(src, mounted(img))


def test_4k_sectors(tmp_path, rich):
    """sector_size=4096: the AG headers take a block each, a 4 KiB log sector and stripe unit,
    and the kernel mounts it from a device with 4096-byte logical sectors."""
    img = tmp_path / "s.xfs"
    create(rich, img, "-O", "sector_size=4096")
    sb = xfs_db(img, "sb 0", "print sectsize logsectsize versionnum rootino")
    assert (sb["sectsize"], sb["logsectsize"], sb["versionnum"]) == ("4096", "4096", "0xbcb5")
    repair_ok(img)
    dev = subprocess.run(["losetup", "-f", "--show", "--sector-size", "4096", str(img)],
                         capture_output=True, text=True, check=True).stdout.strip()
    mnt = tmp_path / "m"
    mnt.mkdir()
    try:
        subprocess.run(["mount", "-o", "ro", dev, str(mnt)], check=True)
        try:
            compare(rich, mnt)
        finally:
            subprocess.run(["umount", str(mnt)], check=True)
    finally:
        subprocess.run(["losetup", "-d", dev])
    assert run_fstool("cat", img, "/text.txt", check=True, text_output=False).stdout == (rich / "text.txt").read_bytes()


@pytest.mark.parametrize("opt, needle", [
    ("inode_size=256", "inode_size"), ("agsize=1m", "agsize"), ("log_size=1m", "log_size"),
    ("agcount=0", "agcount"), ("bogus=1", "unknown option"), ("block_size=1024", "4096"),
    ("journal_blocks=30", "journal_blocks"),
    ("sector_size=1024", "sector_size"),
])
def test_option_errors(tmp_path, opt, needle):
    src = tmp_path / "src"
    src.mkdir()
    args = ["-O", opt]
    p = create(src, tmp_path / "x.xfs", *args, check=False)
    assert_one_line_error(p, 2, needle)


def test_capacity_and_label_errors(tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    (src / "f").write_bytes(os.urandom(40 << 20))
    assert_one_line_error(create(src, tmp_path / "x.xfs", "--size", "32m", check=False), 1, "does not fit")
    # a long label is cut to XFS's 12 bytes with a warning, as the Rust fstool does
    small_src = tmp_path / "lbl"
    small_src.mkdir()
    p = create(small_src, tmp_path / "y.xfs", "--label", "thirteen-char")
    assert "warning" in p.stderr and xfs_db(tmp_path / "y.xfs", "sb 0", "print fname")["fname"] == '"thirteen-cha"'
    assert not (tmp_path / "x.xfs").exists()
    small = tmp_path / "small"
    small.mkdir()
    assert_one_line_error(create(small, tmp_path / "z.xfs", "--size", "64m", "-O", "agcount=8", check=False),
                          1, "16 MiB")


def test_reader_matches_the_source(tmp_path, rich):
    img = tmp_path / "r.xfs"
    create(rich, img)
    lines = run_fstool("ls", "-R", img, check=True).stdout.splitlines()
    listed = {line.split("\t")[-1].split(" -> ")[0] for line in lines}
    expect = {"/" + os.path.relpath(os.path.join(d, n), rich) for d, ds, fs in os.walk(rich) for n in ds + fs}
    assert listed == expect
    for name in ("size-393223", "text.txt", "sparse", "big.bin", "many/entry-05999-" + "x" * 39):
        out = run_fstool("cat", img, "/" + name, check=True, text_output=False)
        assert out.stdout == (rich / name).read_bytes(), name
    assert any(line.endswith("/long-symlink -> /" + "t" * 300) for line in lines)
    assert any("\t70000\t4000000000\t" in line and line.endswith("/big-ids") for line in lines)
    info = run_fstool("info", img, check=True).stdout
    assert ": xfs" in info and "finobt" in info and "bigtime" in info


def test_an_xfs_image_as_a_source(tmp_path, rich, mounted):
    """Our reader feeds other builds: an XFS image of the rich tree rebuilt as XFS keeps every
    mode, owner, time, xattr, device and hardlink."""
    first = tmp_path / "first.xfs"
    create(rich, first)
    again = tmp_path / "again.xfs"
    create(first, again)
    repair_ok(again)
    compare(rich, mounted(again, "loop,ro,nouuid"))


def test_reader_reads_mkfs_protofile_images(tmp_path):
    src = tmp_path / "src"
    (src / "sub" / "deeper").mkdir(parents=True)
    (src / "a.txt").write_bytes(b"hello\n")
    os.chmod(src / "a.txt", 0o4755)
    (src / "sub" / "blob").write_bytes(os.urandom(300_000))
    for i in range(500):  # a leaf directory in mkfs's hands
        (src / "sub" / f"f{i}").write_bytes(str(i).encode())
    os.symlink("a.txt", src / "link")
    os.symlink("x" * 400, src / "longlink")
    os.mkfifo(src / "fifo")
    os.chown(src / "sub" / "f7", 1234, 5678)
    proto = tmp_path / "proto"
    assert write_protofile(str(src), str(proto)) == []
    img = tmp_path / "mk.img"
    with open(img, "wb") as f:
        f.truncate(64 << 20)
    subprocess.run(["mkfs.xfs", "-q", "-f", "-p", str(proto), str(img)], check=True, env=QA_ENV)
    ours = tmp_path / "ours.xfs"
    create(src, ours)

    def strip(lines):  # mkfs stamps the current time, and directory sizes depend on the form
        return [re.sub(r"\t\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\t", "\t", ln) for ln in lines if not ln.startswith("d")]
    a = run_fstool("ls", "-R", img, check=True).stdout.splitlines()
    b = run_fstool("ls", "-R", ours, check=True).stdout.splitlines()
    assert strip(a) == strip(b)
    for name in ("sub/blob", "sub/f499", "a.txt"):
        assert run_fstool("cat", img, "/" + name, check=True, text_output=False).stdout == (src / name).read_bytes()
    assert "xfs" in run_fstool("info", img, check=True).stdout
    # 8 KiB directory blocks, 1 KiB inodes, large extent counters (nrext64), reflink
    img2 = tmp_path / "mk2.img"
    with open(img2, "wb") as f:
        f.truncate(64 << 20)
    subprocess.run(["mkfs.xfs", "-q", "-f", "-n", "size=8192", "-i", "size=1024,nrext64=1", "-p", str(proto),
                    str(img2)], check=True, env=QA_ENV)
    assert strip(run_fstool("ls", "-R", img2, check=True).stdout.splitlines()) == strip(b)
    assert run_fstool("cat", img2, "/sub/blob", check=True, text_output=False).stdout == (src / "sub/blob").read_bytes()
    assert "nrext64" in run_fstool("info", img2, check=True).stdout


def test_corrupt_images_are_refused(tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    (src / "f").write_bytes(b"x")
    img = tmp_path / "c.xfs"
    create(src, img)
    root = int(xfs_db(img, "sb 0", "print rootino")["rootino"])
    data = bytearray(img.read_bytes())
    bad = tmp_path / "bad.xfs"
    data[root * 512 + 200] ^= 0xFF  # inside the root inode (AG 0, so byte offset = ino * 512)
    bad.write_bytes(data)
    assert_one_line_error(run_fstool("ls", bad, "/", check=False), 1, "checksum")
    short = tmp_path / "short.xfs"
    short.write_bytes(bytes(img.read_bytes()[:1 << 20]))
    assert_one_line_error(run_fstool("ls", short, "/", check=False), 1, "truncated")


@pytest.mark.parametrize("fs_type", ["xfs"])
@SETTINGS
@given(entries=trees())
def test_random_trees(fs_type, entries):
    with tempfile.TemporaryDirectory() as work:
        tree = materialise(entries, work)
        img = os.path.join(work, "t.img")
        build(tree, fs_type, img)
        p = subprocess.run(["xfs_repair", "-n", img], capture_output=True, text=True)
        assert p.returncode == 0, p.stdout + p.stderr
        c = subprocess.run(["xfs_db", "-r", "-c", "check", img], capture_output=True, text=True)
        assert c.returncode == 0 and not (c.stdout + c.stderr).strip(), c.stdout + c.stderr
        assert read_back(open_reader(img)) == expected(tree)
