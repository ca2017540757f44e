"""newc cpio (initramfs): byte-identical to GNU `cpio --reproducible`, extracted by GNU cpio and
bsdtar into a tree equal to the source, every compression the kernel unpacks, concatenated
early + main archives, and our reader."""
from __future__ import annotations

import os
import socket
import stat
import subprocess

import pytest

from conftest import assert_one_line_error, run_fstool
from treegen import describe

pytestmark = pytest.mark.slow

T = 1_700_000_000
DECOMPRESS = {"gzip": ["gzip", "-dc"], "xz": ["xz", "-dc"], "zstd": ["zstd", "-dcq"], "lz4": ["lz4", "-dc"]}


def _file(path, data: bytes, mode=0o644, owner=(0, 0)):
    with open(path, "wb") as f:
        f.write(data)
    os.chown(path, *owner)
    os.chmod(path, mode)  # after chown, which clears set-uid


def make_tree(root) -> None:
    """Every kind of entry an initramfs holds, a few hundred KB in all."""
    os.makedirs(root)
    j = lambda *p: os.path.join(root, *p)  # noqa: E731
    os.makedirs(j("bin"))
    os.makedirs(j("etc", "deep", "er", "still"))
    os.makedirs(j("empty"))
    _file(j("init"), b"#!/bin/sh\nexec /bin/sh\n", 0o755)
    _file(j("bin", "busybox"), os.urandom(0) + bytes(range(256)) * 1000, 0o4755)
    os.link(j("bin", "busybox"), j("bin", "sh"))
    os.link(j("bin", "busybox"), j("etc", "deep", "busybox-too"))
    os.symlink("busybox", j("bin", "ls"))
    os.symlink("/" + "t" * 200, j("long-link"))
    _file(j("etc", "deep", "er", "still", "leaf"), b"leaf\n", 0o600, (1234, 5678))
    _file(j("empty-file"), b"")
    _file(j("odd size"), b"x" * 4097)
    _file(j("\u00fcn\u00efc\u00f8d\u00e9"), b"unicode\n")
    _file(j("n" * 255), b"long name\n")
    _file(j("big-ids"), b"ids\n", 0o640, (70000, 4_000_000_000))
    with open(j("sparse"), "wb") as f:
        f.write(b"head")
        f.seek(3 << 20)
        f.write(b"tail")
    os.mkfifo(j("fifo"))
    s = socket.socket(socket.AF_UNIX)
    s.bind(j("sock"))
    s.close()
    os.mknod(j("console"), 0o600 | stat.S_IFCHR, os.makedev(5, 1))
    os.mknod(j("sda"), 0o660 | stat.S_IFBLK, os.makedev(259, 300000))
    os.chmod(j("etc"), 0o1777)
    for dirpath, dirnames, filenames in os.walk(root):
        for n in dirnames + filenames:
            os.utime(os.path.join(dirpath, n), (T, T), follow_symlinks=False)
    os.utime(root, (T, T))


@pytest.fixture(scope="module")
def src(tmp_path_factory):
    root = tmp_path_factory.mktemp("cpio") / "src"
    make_tree(str(root))
    return root


def walk_names(root) -> list[str]:
    """The member names in fstool's order (pre-order, names sorted by bytes), root as '.'."""
    out = ["."]

    def rec(d, rel):
        for n in sorted(os.listdir(os.path.join(root, d)), key=os.fsencode):
            p = os.path.join(rel, n) if rel else n
            out.append(p)
            if os.path.isdir(os.path.join(root, p)) and not os.path.islink(os.path.join(root, p)):
                rec(p, p)
    rec("", "")
    return out


def gnu_cpio(root, fmt="newc") -> bytes:
    names = "".join(n + "\n" for n in walk_names(root)).encode()
    p = subprocess.run(["cpio", "-o", "-H", fmt, "--reproducible", "--quiet"], cwd=root, input=names,
                       capture_output=True, check=True)
    return p.stdout


def same_tree(src, dst, adjust) -> None:
    """compare() (without xattrs: newc has none), after adjust(path, record) on both sides."""
    want, got = describe(src, xattrs=False), describe(dst, xattrs=False)
    for d in (want, got):
        for path, rec in d.items():
            if isinstance(rec, dict):
                adjust(path, rec)
    diffs = [(k, want[k], got.get(k)) for k in want if want[k] != got.get(k)]
    assert not diffs and set(want) == set(got), diffs[:3]


def build(src, out, *opts):
    args = ["create", "-t", "cpio", src, "-o", out]
    for o in opts:
        args += ["-O", o]
    run_fstool(*args, check=True)
    return out


@pytest.mark.parametrize("fmt,gnu", [("newc", "newc"), ("newc-crc", "crc")])
def test_byte_identical_to_gnu_cpio(tmp_path, src, fmt, gnu):
    ours = build(src, tmp_path / "a.cpio", f"format={fmt}")
    assert ours.read_bytes() == gnu_cpio(src, gnu)


def test_hardlinks_as_the_kernel_expects(tmp_path, src):
    """Every name of a hardlinked file has the same inode number and nlink 3; only the last carries data."""
    img = build(src, tmp_path / "a.cpio")
    data = img.read_bytes()
    pos, seen = 0, []
    while True:
        f = [int(data[pos + 6 + 8 * i:pos + 14 + 8 * i], 16) for i in range(13)]
        name = data[pos + 110:pos + 110 + f[11] - 1]
        if name == b"TRAILER!!!":
            break
        if name in (b"bin/busybox", b"bin/sh", b"etc/deep/busybox-too"):
            seen.append((name, f[0], f[4], f[6]))
        pos = (pos + 110 + f[11] + 3) & ~3
        pos = (pos + f[6] + 3) & ~3
    assert len(seen) == 3 and len({s[1] for s in seen}) == 1 and all(s[2] == 3 for s in seen)
    assert [s[3] for s in seen] == [0, 0, 256000]
    assert len(data) % 512 == 0


@pytest.mark.parametrize("comp", ["none", "gzip", "xz", "zstd", "lz4"])
def test_extracts_equal_with_gnu_cpio_and_bsdtar(tmp_path, src, comp):
    plain = build(src, tmp_path / "plain.cpio")
    img = build(src, tmp_path / f"a-{comp}.cpio", f"compression={comp}")
    raw = img.read_bytes()
    if comp != "none":
        raw = subprocess.run(DECOMPRESS[comp], input=raw, capture_output=True, check=True).stdout
    assert raw == plain.read_bytes()  # the compressed stream holds exactly the plain archive
    x1 = tmp_path / "gnu"
    x1.mkdir()
    p = subprocess.run(["cpio", "-idmv", "--no-absolute-filenames"], cwd=x1, input=raw,
                       capture_output=True)
    assert p.returncode == 0, p.stderr
    # GNU cpio 2.13 never sets a symlink's own time (it extracts them at the clock's time)
    same_tree(src, x1, lambda path, rec: rec.pop("mtime") if rec["fmt"] == stat.S_IFLNK else None)
    x2 = tmp_path / "bsdtar"
    x2.mkdir()
    subprocess.run(["bsdtar", "-xpf", str(img), "-C", str(x2)], check=True)
    # libarchive extracts a socket as an empty regular file (it cannot create sockets);
    # its listing below shows the member is a socket
    same_tree(src, x2, lambda path, rec: rec.clear() if path == "/sock" else None)
    listing = subprocess.run(["bsdtar", "-tvvf", str(img)], capture_output=True, text=True, check=True).stdout
    assert "SVR4" in listing and "bin/busybox" in listing
    assert any(ln.startswith("srwxr-xr-x") and ln.endswith(" sock") for ln in listing.splitlines())


def test_reproducible_and_independent_of_host_path(tmp_path, src):
    other = tmp_path / "elsewhere" / "tree"
    other.parent.mkdir()
    subprocess.run(["cp", "-a", str(src), str(other)], check=True)  # copytree would open the fifo
    for comp in ("gzip", "zstd"):
        a = build(src, tmp_path / f"a-{comp}", f"compression={comp}").read_bytes()
        b = build(other, tmp_path / f"b-{comp}", f"compression={comp}").read_bytes()
        assert a == b
    gz = (tmp_path / "a-gzip").read_bytes()
    assert gz[3] == 0 and gz[4:8] == b"\0\0\0\0"  # no name, mtime 0 (gzip -n)


def test_lz4_uses_the_legacy_framing(tmp_path, src):
    img = build(src, tmp_path / "a.lz4", "compression=lz4")
    assert img.read_bytes()[:4] == (0x184C2102).to_bytes(4, "little")


def test_concatenated_early_microcode(tmp_path, src):
    uc = tmp_path / "ucode"
    (uc / "kernel" / "x86" / "microcode").mkdir(parents=True)
    (uc / "kernel" / "x86" / "microcode" / "GenuineIntel.bin").write_bytes(b"\x01microcode" * 10)
    early = tmp_path / "early.cpio"
    early.write_bytes(gnu_cpio(uc))
    img = build(src, tmp_path / "initrd.img", "compression=zstd", f"early={early}")
    data = img.read_bytes()
    n = len(early.read_bytes())
    assert data[:n] == early.read_bytes() and n % 512 == 0
    # GNU cpio reads the first archive, zstd the rest: as the kernel splits them
    first = subprocess.run(["cpio", "-t", "--quiet"], input=data, capture_output=True, check=True).stdout
    assert b"kernel/x86/microcode/GenuineIntel.bin" in first
    rest = subprocess.run(["zstd", "-dcq"], input=data[n:], capture_output=True, check=True).stdout
    assert rest == build(src, tmp_path / "plain.cpio").read_bytes()
    # our reader sees both
    ls = run_fstool("ls", "-R", img, check=True).stdout
    assert "/kernel/x86/microcode/GenuineIntel.bin" in ls and "/bin/busybox" in ls
    assert run_fstool("cat", img, "/kernel/x86/microcode/GenuineIntel.bin", text_output=False,
                      check=True).stdout == b"\x01microcode" * 10
    info = run_fstool("info", img, check=True).stdout
    assert "newc + zstd" in info


@pytest.mark.parametrize("comp", ["none", "xz", "lz4"])
def test_our_reader_lists_and_reads(tmp_path, src, comp):
    img = build(src, tmp_path / "a.cpio", f"compression={comp}")
    ls = run_fstool("ls", "-R", img, check=True).stdout.splitlines()
    rows = {ln.split("\t")[-1].split(" -> ")[0]: ln.split("\t") for ln in ls}
    assert rows["/bin/ls"][0].startswith("l") and rows["/bin/ls"][-1].endswith("-> busybox")
    assert rows["/sda"][3] == "259,300000" and rows["/sda"][0].startswith("b")
    assert rows["/big-ids"][1:3] == ["70000", "4000000000"]
    assert rows["/etc"][0] == "drwxrwxrwt"
    for name in ("/bin/busybox", "/bin/sh", "/etc/deep/busybox-too"):
        got = run_fstool("cat", img, name, text_output=False, check=True).stdout
        assert got == (src / "bin" / "busybox").read_bytes()
    got = run_fstool("cat", img, "/sparse", text_output=False, check=True).stdout
    assert got == (src / "sparse").read_bytes()
    assert set(rows) == {"/" + n for n in walk_names(src)[1:]}


def test_plain_archive_keeps_holes(tmp_path, src):
    img = build(src, tmp_path / "a.cpio")
    assert os.stat(img).st_blocks * 512 < img.stat().st_size - (2 << 20)


def test_fixed_size_pads_or_fails(tmp_path, src):
    img = tmp_path / "a.cpio"
    run_fstool("create", "-t", "cpio", src, "-o", img, "-O", "compression=gzip", "--size", "1MiB", check=True)
    assert img.stat().st_size == 1 << 20
    assert "/init" in run_fstool("ls", img, check=True).stdout
    p = run_fstool("create", "-t", "cpio", src, "-o", tmp_path / "b.cpio", "--size", "64KiB")
    assert_one_line_error(p, 1, "the archive needs", "size is 64 KiB")
    assert not (tmp_path / "b.cpio").exists()


def test_errors_are_one_line(tmp_path, src):
    p = run_fstool("create", "-t", "cpio", src, "-o", tmp_path / "x", "-O", "compression=bzip2")
    assert_one_line_error(p, 2, "compression", "gzip")
    p = run_fstool("create", "-t", "cpio", src, "-o", tmp_path / "x", "-O", "early=" + str(src / "init"))
    assert_one_line_error(p, 2, "not an uncompressed newc cpio")
    p = run_fstool("create", "-t", "cpio", src, "-o", tmp_path / "x", "-O", "formt=newc")
    assert_one_line_error(p, 2, "did you mean 'format'")
    p = run_fstool("create", "-t", "cpio", src, "-o", tmp_path / "x", "--label", "boot")
    assert_one_line_error(p, 2, "no volume label")
    good = build(src, tmp_path / "good.cpio", "compression=gzip").read_bytes()
    for name, data in (("trunc", good[:len(good) // 2]), ("flip", good[:200] + b"\xff" * 50 + good[250:])):
        bad = tmp_path / name
        bad.write_bytes(data)
        p = run_fstool("ls", "-R", bad)
        assert_one_line_error(p, 1)
    plain = bytearray(build(src, tmp_path / "p.cpio").read_bytes())
    plain[120:128] = b"zzzzzzzz"
    (tmp_path / "badhdr").write_bytes(plain[:4096])
    assert_one_line_error(run_fstool("ls", tmp_path / "badhdr"), 1)


@pytest.fixture(scope="module")
def kernel():
    """A Debian cloud kernel (downloaded and unpacked by scripts/fetch-test-kernel.sh, not installed)."""
    from conftest import REPO
    dest = os.path.join(REPO, "build", "test-kernel")
    subprocess.run([os.path.join(REPO, "scripts", "fetch-test-kernel.sh"), dest], check=True)
    return os.path.join(dest, "vmlinuz")


@pytest.mark.parametrize("comp", ["none", "gzip", "xz", "zstd", "lz4"])
def test_the_kernel_unpacks_and_runs_it(tmp_path, kernel, comp):
    """Linux boots with the archive as its initramfs (after an early microcode archive) and runs
    /init from it: hardlinks are one inode with two links, the device node and data are there."""
    root = tmp_path / "ir"
    for d in ("bin", "dev", "data"):
        (root / d).mkdir(parents=True)
    (root / "bin" / "busybox").write_bytes(open("/bin/busybox", "rb").read())
    os.chmod(root / "bin" / "busybox", 0o755)
    os.link(root / "bin" / "busybox", root / "bin" / "sh")
    (root / "data" / "hello").write_text("hello from the archive\n")
    os.mknod(root / "dev" / "console", 0o600 | stat.S_IFCHR, os.makedev(5, 1))
    (root / "init").write_text("#!/bin/sh\necho FSTOOL-INIT-RAN\n"
                               "/bin/busybox stat -c 'LINKS %h %i' /bin/sh /bin/busybox\n"
                               "/bin/busybox cat /data/hello\n/bin/busybox poweroff -f\n")
    os.chmod(root / "init", 0o755)
    uc = tmp_path / "ucode"
    (uc / "kernel" / "x86" / "microcode").mkdir(parents=True)
    (uc / "kernel" / "x86" / "microcode" / "GenuineIntel.bin").write_bytes(b"\0" * 64)
    early = tmp_path / "early.cpio"
    early.write_bytes(gnu_cpio(uc))
    img = build(root, tmp_path / "initrd.img", f"compression={comp}", f"early={early}")
    log = tmp_path / "serial.log"
    subprocess.run(["qemu-system-x86_64", "-m", "256", "-kernel", kernel, "-initrd", str(img),
                    "-append", "console=ttyS0 panic=-1 quiet", "-display", "none", "-serial", f"file:{log}",
                    "-no-reboot"], timeout=300, check=True, capture_output=True)
    out = log.read_text(errors="replace")
    assert "FSTOOL-INIT-RAN" in out, out[-2000:]
    links = [ln.split() for ln in out.splitlines() if ln.startswith("LINKS")]
    assert len(links) == 2 and links[0] == links[1] and links[0][1] == "2", links
    assert "hello from the archive" in out
