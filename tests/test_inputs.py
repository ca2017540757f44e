"""Inputs: tar archives (every compression and member type), layers with whiteouts, JSON
manifests, device tables, rootdevs and the shared metadata rules."""
from __future__ import annotations

import io
import json
import os
import subprocess
import tarfile

import pytest
import zstandard

from conftest import assert_one_line_error, run_fstool
from fstool.errors import InputError
from fstool.inputs import load_sources
from fstool.inputs.devtable import apply_device_table
from fstool.inputs.policy import apply_policy
from fstool.inputs.rootdevs import add_rootdevs
from fstool.tree import Kind, Tree


def snapshot(tree: Tree) -> dict:
    """Everything a writer would see, file bytes included (read through the streaming API)."""
    out = {}
    for path, n in tree.walk():
        data = b"".join(d if d is not None else bytes(ln) for _, d, ln in n.source.iter_chunks()) \
            if n.kind is Kind.FILE else None
        out[path] = (n.kind.value, oct(n.mode), n.uid, n.gid, n.mtime, n.target, n.rdev,
                     dict(n.xattrs), data)
    return out


def add(tf, name, type_=tarfile.REGTYPE, data=b"", **kw):
    ti = tarfile.TarInfo(name)
    ti.type = type_
    ti.size = len(data) if type_ == tarfile.REGTYPE else 0
    ti.mode = kw.pop("mode", 0o644)
    ti.mtime = kw.pop("mtime", 1_600_000_000)
    for k, v in kw.items():
        setattr(ti, k, v)
    tf.addfile(ti, io.BytesIO(data) if type_ == tarfile.REGTYPE else None)


def make_tar(path, fmt=tarfile.PAX_FORMAT):
    with tarfile.open(path, "w", format=fmt) as tf:
        add(tf, "./", tarfile.DIRTYPE, mode=0o755)
        add(tf, "./etc/", tarfile.DIRTYPE, mode=0o750, uid=0, gid=4)
        add(tf, "./etc/passwd", data=b"root:x:0:0::/root:/bin/sh\n", uid=0, gid=0)
        add(tf, "./usr/bin/tool", data=b"#!/bin/sh\necho hi\n" * 1000, mode=0o4755, uid=1000, gid=100,
            pax_headers={"SCHILY.xattr.security.capability": "\x01\x00\x00\x02",
                         "SCHILY.xattr.user.note": "caf\u00e9", "mtime": "1600000000.25"})
        add(tf, "./usr/bin/tool-again", tarfile.LNKTYPE, linkname="./usr/bin/tool")
        add(tf, "./bin", tarfile.SYMTYPE, linkname="usr/bin", mode=0o777)
        add(tf, "./dev/sda1", tarfile.BLKTYPE, devmajor=8, devminor=1, mode=0o660)
        add(tf, "./dev/null", tarfile.CHRTYPE, devmajor=1, devminor=3, mode=0o666)
        add(tf, "./run/fifo", tarfile.FIFOTYPE, mode=0o600)
        add(tf, "./empty", data=b"")


def test_tar_members_all_kinds(tmp_path):
    make_tar(tmp_path / "a.tar")
    tree = load_sources([str(tmp_path / "a.tar")])
    snap = snapshot(tree)
    assert snap["/etc"][:4] == ("dir", "0o750", 0, 4)
    assert snap["/etc/passwd"][8] == b"root:x:0:0::/root:/bin/sh\n"
    tool = tree.lookup("/usr/bin/tool")
    assert tool is tree.lookup("/usr/bin/tool-again") and tree.nlink(tool) == 2
    assert tool.mode == 0o4755 and (tool.uid, tool.gid) == (1000, 100)
    assert tool.mtime == 1_600_000_000 and tool.mtime_ns == 250_000_000
    assert tool.xattrs == {"security.capability": b"\x01\x00\x00\x02", "user.note": "café".encode()}
    assert snap["/bin"][0] == "symlink" and snap["/bin"][5] == "usr/bin"
    assert snap["/dev/sda1"][0] == "blk" and snap["/dev/sda1"][6] == (8, 1)
    assert snap["/dev/null"][6] == (1, 3) and snap["/run/fifo"][0] == "fifo"
    assert snap["/empty"][8] == b""
    # implicit parents are plain 0755 directories
    assert snap["/usr"][:2] == ("dir", "0o755")


@pytest.mark.parametrize("kind", ["gz", "xz", "bz2", "zst"])
def test_compressed_tars_give_the_same_tree(tmp_path, kind):
    make_tar(tmp_path / "a.tar")
    raw = (tmp_path / "a.tar").read_bytes()
    name = tmp_path / f"a.tar.{kind}"
    if kind == "zst":
        name.write_bytes(zstandard.ZstdCompressor().compress(raw))
    else:
        import bz2
        import gzip
        import lzma
        name.write_bytes({"gz": gzip.compress, "xz": lzma.compress, "bz2": bz2.compress}[kind](raw))
    before = set(os.listdir(os.environ.get("TMPDIR", "/tmp")))
    assert snapshot(load_sources([str(name)])) == snapshot(load_sources([str(tmp_path / "a.tar")]))
    # the spool is an unlinked file: nothing new is left in TMPDIR
    leftovers = {n for n in set(os.listdir(os.environ.get("TMPDIR", "/tmp"))) - before
                 if n.startswith("fstool-spool")}
    assert leftovers == set()
    # found by magic bytes, whatever the name says
    renamed = tmp_path / "archive.bin"
    os.link(name, renamed)
    assert snapshot(load_sources([str(renamed)]))["/etc/passwd"][8].startswith(b"root:")


def test_gnu_sparse_member_keeps_holes(tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    with open(src / "sparse", "wb") as f:
        f.write(b"head")
        f.seek(50 << 20)
        f.write(b"tail")
    subprocess.run(["tar", "--sparse", "--format=gnu", "-cf", str(tmp_path / "s.tar"), "-C", str(src), "."],
                   check=True)
    assert (tmp_path / "s.tar").stat().st_size < 1 << 20
    tree = load_sources([str(tmp_path / "s.tar")])
    node = tree.lookup("/sparse")
    assert node.size == (50 << 20) + 4
    segs = node.source.data_segments()
    assert sum(n for _, n, _ in segs) < 1 << 20  # holes are never read
    assert node.source.read(0, 4) == b"head" and node.source.read(50 << 20, 4) == b"tail"


@pytest.mark.parametrize("name, needle", [
    ("../escape", "'..'"),
    ("a/../../b", "'..'"),
    ("x" * 256, "255"),
])
def test_tar_bad_names(tmp_path, name, needle):
    with tarfile.open(tmp_path / "bad.tar", "w", format=tarfile.PAX_FORMAT) as tf:
        add(tf, name, data=b"x")
    with pytest.raises(InputError) as e:
        load_sources([str(tmp_path / "bad.tar")])
    assert needle in str(e.value) and "bad.tar" in str(e.value)


def test_tar_hardlink_errors_and_kind_conflict(tmp_path):
    with tarfile.open(tmp_path / "h.tar", "w") as tf:
        add(tf, "link", tarfile.LNKTYPE, linkname="nowhere")
    with pytest.raises(InputError, match="h.tar: link.*nowhere"):
        load_sources([str(tmp_path / "h.tar")])
    with tarfile.open(tmp_path / "c.tar", "w") as tf:
        add(tf, "thing", data=b"a")
        add(tf, "thing", tarfile.DIRTYPE)
    with pytest.raises(InputError, match="thing.*duplicate path"):
        load_sources([str(tmp_path / "c.tar")])
    # the same kind twice: the later member wins, as with tar -x
    with tarfile.open(tmp_path / "d.tar", "w") as tf:
        add(tf, "f", data=b"old")
        add(tf, "f", data=b"new")
    assert snapshot(load_sources([str(tmp_path / "d.tar")]))["/f"][8] == b"new"


def test_not_a_source(tmp_path):
    (tmp_path / "notes.txt").write_text("hello")
    with pytest.raises(InputError, match="notes.txt: not a directory, a tar"):
        load_sources([str(tmp_path / "notes.txt")])
    (tmp_path / "broken.tar.gz").write_bytes(b"\x1f\x8b" + b"garbage" * 10)
    with pytest.raises(InputError, match="broken.tar.gz: cannot decompress"):
        load_sources([str(tmp_path / "broken.tar.gz")])


def test_layers_with_whiteouts(tmp_path):
    with tarfile.open(tmp_path / "base.tar", "w") as tf:
        add(tf, "etc/motd", data=b"base motd")
        add(tf, "etc/keep", data=b"keep")
        add(tf, "opt/app/old1", data=b"1")
        add(tf, "opt/app/old2", data=b"2")
        add(tf, "var/gone", data=b"x")
    up = tmp_path / "overlay"
    (up / "etc").mkdir(parents=True)
    (up / "etc" / "motd").write_bytes(b"overlay motd")
    (up / "var").mkdir()
    (up / "var" / ".wh.gone").write_bytes(b"")
    (up / "opt" / "app").mkdir(parents=True)
    (up / "opt" / "app" / ".wh..wh..opq").write_bytes(b"")
    (up / "opt" / "app" / "new").write_bytes(b"n")
    tree = load_sources([str(tmp_path / "base.tar"), str(up)])
    snap = snapshot(tree)
    assert snap["/etc/motd"][8] == b"overlay motd" and snap["/etc/keep"][8] == b"keep"
    assert "/var/gone" not in snap and "/var" in snap
    assert sorted(p for p in snap if p.startswith("/opt/app/")) == ["/opt/app/new"]
    assert not any(".wh." in p for p in snap)


def test_manifest_every_kind(tmp_path):
    (tmp_path / "motd").write_bytes(b"hello\n")
    os.chmod(tmp_path / "motd", 0o640)
    (tmp_path / "app").mkdir()
    (tmp_path / "app" / "run.sh").write_bytes(b"#!/bin/sh\n")
    make_tar(tmp_path / "base.tar")
    entries = [
        {"kind": "tar", "path": "/", "source": "base.tar"},
        {"kind": "dir", "path": "/srv", "mode": "0700", "uid": 5, "gid": 6, "mtime": 7},
        {"kind": "file", "path": "/srv/motd", "source": "motd", "xattrs": {"user.a": "b",
                                                                          "user.bin": "base64:AAEC"}},
        {"kind": "file", "path": "/srv/motd2", "source": "motd", "mode": 420},
        {"kind": "hardlink", "path": "/srv/motd.link", "target": "/srv/motd"},
        {"kind": "symlink", "path": "/srv/latest", "target": "motd"},
        {"kind": "chr", "path": "/dev/zero", "major": 1, "minor": 5, "mode": "0666"},
        {"kind": "blk", "path": "/dev/vda", "major": 254, "minor": 0},
        {"kind": "fifo", "path": "/run/ctl"},
        {"kind": "sock", "path": "/run/sock"},
        {"kind": "tree", "path": "/opt/app", "source": "app"},
    ]
    (tmp_path / "m.json").write_text(json.dumps({"version": 1, "entries": entries}))
    tree = load_sources([str(tmp_path / "m.json")])
    snap = snapshot(tree)
    assert snap["/srv"][:5] == ("dir", "0o700", 5, 6, 7)
    assert snap["/srv/motd"][1] == "0o640" and snap["/srv/motd"][7] == {"user.a": b"b", "user.bin": b"\0\1\2"}
    assert snap["/srv/motd2"][1] == "0o644" and snap["/srv/motd2"][8] == b"hello\n"
    assert tree.lookup("/srv/motd") is tree.lookup("/srv/motd.link")
    assert snap["/dev/zero"][6] == (1, 5) and snap["/dev/vda"][0] == "blk"
    assert snap["/run/sock"][0] == "sock" and snap["/opt/app/run.sh"][8] == b"#!/bin/sh\n"
    assert snap["/etc/passwd"][8].startswith(b"root:")  # from the tar entry


@pytest.mark.parametrize("entry, needle", [
    ({"kind": "file", "path": "/x", "source": "missing"}, "entries[0] (/x)"),
    ({"kind": "gadget", "path": "/x"}, "unknown kind 'gadget'"),
    ({"kind": "dir", "path": "/x", "colour": 1}, "unknown key 'colour'"),
    ({"kind": "dir", "path": "/x", "mode": "rwx"}, "octal"),
    ({"kind": "hardlink", "path": "/x", "target": "/nope"}, "not a non-directory"),
    ({"kind": "dir", "path": "/a/../x"}, "'..'"),
])
def test_manifest_errors(tmp_path, entry, needle):
    (tmp_path / "m.json").write_text(json.dumps([entry]))
    with pytest.raises(InputError) as e:
        load_sources([str(tmp_path / "m.json")])
    assert "m.json" in str(e.value) and needle in str(e.value)


def test_device_table(tmp_path):
    (tmp_path / "devs.txt").write_text(
        "# path type mode uid gid major minor start inc count\n"
        "/dev d 755 0 0 - - - - -\n"
        "/dev/console c 600 0 5 5 1 - - -\n"
        "/dev/hda b 640 0 6 3 1 1 1 4\n"
        "/etc d 700 0 0 - - - - -\n"
        "/etc/fstab f 644 0 0 - - - - -\n")
    tree = Tree()
    apply_device_table(tree, str(tmp_path / "devs.txt"))
    snap = snapshot(tree)
    assert snap["/dev/console"][:4] == ("chr", "0o600", 0, 5) and snap["/dev/console"][6] == (5, 1)
    assert [snap[f"/dev/hda{i}"][6] for i in (1, 2, 3, 4)] == [(3, 1), (3, 2), (3, 3), (3, 4)]
    assert "/dev/hda5" not in snap and snap["/etc"][1] == "0o700" and snap["/etc/fstab"][8] == b""


@pytest.mark.parametrize("line, needle", [
    ("/dev/x c 600 0 0 1", "10 columns"),
    ("/dev/x q 600 0 0 1 1 - - -", "unknown type 'q'"),
    ("/dev/x c 900 0 0 1 1 - - -", "octal"),
    ("dev/x c 600 0 0 1 1 - - -", "absolute"),
])
def test_device_table_errors(tmp_path, line, needle):
    (tmp_path / "devs.txt").write_text("# header\n" + line + "\n")
    with pytest.raises(InputError) as e:
        apply_device_table(Tree(), str(tmp_path / "devs.txt"))
    assert "devs.txt:2" in str(e.value) and needle in str(e.value)


def test_rootdevs_levels():
    t = Tree()
    add_rootdevs(t, "minimal")
    names = sorted(t.lookup("/dev").children)
    assert names == sorted(["console", "null", "zero", "ptmx", "tty", "fuse", "random", "urandom"])
    assert t.lookup("/dev/null").rdev == (1, 3) and t.lookup("/dev/null").mode == 0o666
    s = Tree()
    add_rootdevs(s, "standard")
    d = s.lookup("/dev").children
    assert {"tty15", "ttyS3", "kmsg", "mem", "port", "sda", "sda4", "hdd4"} <= set(d)
    assert d["sdb2"].rdev == (8, 18) and d["sdb2"].kind is Kind.BLK


def test_policy_order(tmp_path):
    (tmp_path / "src").mkdir()
    (tmp_path / "src" / "a").write_text("a")
    (tmp_path / "src" / "b").write_text("b")
    os.utime(tmp_path / "src" / "a", (2_000_000_000, 2_000_000_000))
    os.utime(tmp_path / "src" / "b", (1_000_000_000, 1_000_000_000))
    tree = load_sources([str(tmp_path / "src")])
    apply_policy(tree, all_root=True, clamp=1_500_000_000,
                 overrides=[{"path": "/b", "uid": 7, "mode": 0o600, "where": "ov[0]"}])
    a, b = tree.lookup("/a"), tree.lookup("/b")
    assert (a.uid, a.gid, a.mtime) == (0, 0, 1_500_000_000)
    assert (b.uid, b.mode, b.mtime) == (7, 0o600, 1_000_000_000)
    apply_policy(tree, mtime=42)
    assert {n.mtime for _, n in tree.walk()} == {42}
    with pytest.raises(InputError, match="ov.1.*'/nope'.*no such path"):
        apply_policy(tree, overrides=[{"path": "/nope", "uid": 1, "where": "ov[1]"}])


def test_manifest_file_modes_by_exec_bit(tmp_path):
    """Two checkouts made under different umasks give the same modes with file_modes=exec_bit."""
    for name, mode in (("tool", 0o700), ("data", 0o600), ("shared", 0o664)):
        (tmp_path / name).write_bytes(b"x")
        os.chmod(tmp_path / name, mode)
    entries = [{"kind": "file", "path": f"/{n}", "source": n} for n in ("tool", "data", "shared")]
    entries.append({"kind": "symlink", "path": "/link", "target": "tool"})
    (tmp_path / "m.json").write_text(json.dumps({"file_modes": "exec_bit", "entries": entries}))
    tree = load_sources([str(tmp_path / "m.json")])
    assert {p: oct(n.mode) for p, n in tree.walk() if p != "/"} == {
        "/tool": "0o755", "/data": "0o644", "/shared": "0o644", "/link": "0o777"}
    (tmp_path / "k.json").write_text(json.dumps({"entries": entries}))
    assert load_sources([str(tmp_path / "k.json")]).lookup("/data").mode == 0o600
    (tmp_path / "bad.json").write_text(json.dumps({"file_modes": "umask", "entries": []}))
    with pytest.raises(InputError, match="bad.json: file_modes"):
        load_sources([str(tmp_path / "bad.json")])


class _Zeros:
    """A file object of n zero bytes (never held in memory)."""

    def __init__(self, n):
        self.left = n

    def read(self, k=-1):
        k = self.left if k < 0 else min(k, self.left)
        self.left -= k
        return bytes(k)


@pytest.mark.slow
def test_compressed_tar_bomb_costs_no_spool_and_no_image_space(tmp_path):
    """512 MiB of zeros in a few hundred KiB of .tar.zst: the spool keeps zeros as holes
    (a 32 MiB $TMPDIR is plenty) and the image keeps them as holes too."""
    import tarfile
    import zstandard
    bomb = tmp_path / "bomb.tar.zst"
    with open(bomb, "wb") as raw, zstandard.ZstdCompressor(level=1).stream_writer(raw) as z, \
            tarfile.open(fileobj=z, mode="w|") as tf:
        ti = tarfile.TarInfo("zeros")
        ti.size = 512 << 20
        tf.addfile(ti, _Zeros(ti.size))
        ti = tarfile.TarInfo("hello")
        ti.size = 6
        tf.addfile(ti, io.BytesIO(b"hello\n"))
    assert bomb.stat().st_size < 1 << 20
    small_tmp = tmp_path / "tmpfs"
    small_tmp.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=32m", "tmpfs", str(small_tmp)], check=True)
    try:
        for t in ("ext4", "squashfs"):
            img = tmp_path / f"bomb.{t}"
            run_fstool("create", "-t", t, bomb, "-o", img, env={"TMPDIR": str(small_tmp)}, check=True)
            assert os.stat(img).st_blocks * 512 < 16 << 20, t
            out = run_fstool("cat", img, "/hello", text_output=False, check=True)
            assert out.stdout == b"hello\n"
    finally:
        subprocess.run(["umount", str(small_tmp)], check=True)


def test_fifo_source_is_refused_not_waited_on(tmp_path):
    fifo = tmp_path / "src.tar"
    os.mkfifo(fifo)
    p = run_fstool("create", "-t", "ext4", fifo, "-o", tmp_path / "x.img")
    assert_one_line_error(p, 1, str(fifo), "not a regular file")


def test_hostile_inputs_are_one_line_errors(tmp_path):
    """A negative tar size, a manifest that includes itself, JSON nested 100,000 deep."""
    ti = tarfile.TarInfo("f")
    ti.size = 5
    b = bytearray(ti.tobuf(tarfile.USTAR_FORMAT))
    b[124:136] = b"\xff" * 12  # base-256: -1
    b[148:156] = b" " * 8
    b[148:156] = ("%06o\0 " % sum(b[:512])).encode()
    (tmp_path / "neg.tar").write_bytes(bytes(b) + bytes(1024))
    (tmp_path / "self.json").write_text(json.dumps({"entries": [{"kind": "tar", "path": "/",
                                                                  "source": "self.json"}]}))
    (tmp_path / "deep.json").write_text("[" * 100_000 + "]" * 100_000)
    for name, needle in (("neg.tar", "negative size"), ("self.json", "includes itself"),
                         ("deep.json", "nested too deeply")):
        p = run_fstool("create", "-t", "ext4", tmp_path / name, "-o", tmp_path / "x.img")
        assert_one_line_error(p, 1, name, needle)


def test_oversized_pax_and_long_name_records_are_refused_unread(tmp_path):
    """tarfile reads a PAX header or a GNU long name whole: one over 1 MiB (Go's archive/tar
    limit) is refused before it is read; one under it builds."""
    for name, fmt, member in (
            ("pax.tar", tarfile.PAX_FORMAT, ("a", {"comment": "x" * (2 << 20)})),
            ("ok.tar", tarfile.PAX_FORMAT, ("a", {"comment": "x" * (500 << 10)})),
            ("long.tar", tarfile.GNU_FORMAT, ("d/" * (600 << 10) + "a", {}))):
        with tarfile.open(tmp_path / name, "w", format=fmt) as t:
            ti = tarfile.TarInfo(member[0])
            ti.size, ti.pax_headers = 1, member[1]
            t.addfile(ti, io.BytesIO(b"A"))
    for name, needle in (("pax.tar", "PAX extended header of"), ("long.tar", "GNU long name record of")):
        p = run_fstool("create", "-t", "squashfs", tmp_path / name, "-o", tmp_path / "x.img")
        assert_one_line_error(p, 1, name, needle, "over the 1 MiB limit")
        assert not (tmp_path / "x.img").exists()
    p = run_fstool("create", "-q", "-t", "squashfs", tmp_path / "ok.tar", "-o", tmp_path / "ok.img")
    assert p.returncode == 0, p.stderr
    out = subprocess.run(["unsquashfs", "-cat", tmp_path / "ok.img", "a"], capture_output=True, check=True)
    assert out.stdout == b"A"


def test_manifest_sources_stay_in_their_directory(tmp_path):
    """A manifest cannot read host files outside its directory ('..' or an absolute path)
    unless --source-root names their directory; a '..' that stays inside is fine."""
    secret = tmp_path / "secret"
    secret.mkdir()
    (secret / "key").write_text("hunter2")
    m = tmp_path / "m"
    (m / "sub").mkdir(parents=True)
    (m / "ok").write_text("fine")
    for name, src in (("up.json", "../secret/key"), ("abs.json", str(secret / "key")),
                      ("deep.json", "sub/../../secret/key")):
        (m / name).write_text(json.dumps([{"kind": "file", "path": "/k", "source": src, "mode": "0644"}]))
        p = run_fstool("create", "-t", "squashfs", m / name, "-o", tmp_path / "x.img", cwd=m)
        assert_one_line_error(p, 1, f"{name}: entries[0] (/k)", repr(src), "lies outside", "--source-root")
        assert not (tmp_path / "x.img").exists()
    (m / "tree.json").write_text(json.dumps([{"kind": "tree", "path": "/t", "source": "../secret"}]))
    assert_one_line_error(run_fstool("create", "-t", "squashfs", m / "tree.json", "-o", tmp_path / "x.img",
                                     cwd=m), 1, "lies outside")
    # the working directory is a root too (a checkout, Bazel's exec root)
    p = run_fstool("create", "-q", "-t", "squashfs", m / "up.json", "-o", tmp_path / "cwd.img", cwd=tmp_path)
    assert p.returncode == 0, p.stderr
    (m / "in.json").write_text(json.dumps([{"kind": "file", "path": "/k", "source": "sub/../ok", "mode": "0644"}]))
    p = run_fstool("create", "-q", "-t", "squashfs", m / "in.json", "-o", tmp_path / "in.img")
    assert p.returncode == 0, p.stderr
    p = run_fstool("create", "-q", "-t", "squashfs", m / "up.json", "-o", tmp_path / "up.img",
                   "--source-root", secret)
    assert p.returncode == 0, p.stderr
    out = subprocess.run(["unsquashfs", "-cat", tmp_path / "up.img", "k"], capture_output=True, check=True)
    assert out.stdout == b"hunter2"


@pytest.mark.slow
@pytest.mark.parametrize("fs_type", ["ext4", "squashfs"])
def test_host_tree_1500_levels_deep(tmp_path, fs_type):
    top = tmp_path / "deep"
    cur = str(top)
    os.mkdir(cur)
    for _ in range(1500):
        cur = os.path.join(cur, "d")
        os.mkdir(cur)
    with open(os.path.join(cur, "leaf"), "w") as f:
        f.write("bottom\n")
    img = tmp_path / f"deep.{fs_type}"
    try:
        run_fstool("create", "-t", fs_type, top, "-o", img, check=True)
        p = run_fstool("cat", img, "/d" * 1500 + "/leaf", check=True)
        assert p.stdout == "bottom\n"
    finally:  # pytest's own clean-up recurses per level and gives up on a tree this deep
        subprocess.run(["rm", "-rf", str(top)], check=True)
