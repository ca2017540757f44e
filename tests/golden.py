"""Byte-identity check: rebuild a fixed set of images and compare their SHA-256 with the
recorded ones (tests/golden_hashes.json).

A refactoring of a writer must not change one byte of what it writes. This script builds,
through the CLI as a user would, ext2/ext3/ext4 images (1 KiB and 4 KiB blocks, with and
without metadata_csum, 64bit, no flex_bg, 128-byte inodes, not sparse), SquashFS with every
compressor and fragment mode, FAT12/16/32, GPT and MBR disks and the example disk, from a
source tree made here with fixed contents, owners and times (a big HTree directory, xattrs
in the inode and in a shared block, sparse and fragmented files, hardlinks, long symlinks,
devices).

    python tests/golden.py            # compare (exit 1 on any difference)
    python tests/golden.py --record   # write tests/golden_hashes.json

tests/test_golden.py runs the comparison under pytest.
"""
from __future__ import annotations

import hashlib
import json
import os
import random
import stat
import subprocess
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
HASHES = os.path.join(HERE, "golden_hashes.json")
MTIME = 1_700_000_000
KiB, MiB = 1024, 1 << 20


def _file(path: str, data: bytes, mode: int = 0o644, uid: int = 0, gid: int = 0) -> None:
    with open(path, "wb") as f:
        f.write(data)
    os.chmod(path, mode)
    os.chown(path, uid, gid)


def _sparse(path: str, pieces: list[tuple[int, bytes]], size: int) -> None:
    with open(path, "wb") as f:
        for off, data in pieces:
            f.seek(off)
            f.write(data)
        f.truncate(size)
    os.chmod(path, 0o644)


def make_tree(root: str) -> None:
    """The POSIX tree: every kind of entry and every on-disk structure of ext and squashfs."""
    rnd = random.Random(20261126)
    j = lambda *p: os.path.join(root, *p)  # noqa: E731
    os.makedirs(root)
    for n in (0, 1, 59, 60, 1023, 1024, 1025, 4095, 4096, 4097, 131071, 131072, 131073, 300_000):
        _file(j(f"size-{n}"), rnd.randbytes(n))
    _file(j("text.txt"), b"the quick brown fox\n" * 4000, uid=1000, gid=1000)
    _file(j("dup-a"), b"same content\n" * 3000)
    _file(j("dup-b"), b"same content\n" * 3000)
    _file(j("zeros"), bytes(200_000))
    # holes: data at 0, 5 MiB, 40 MiB (double indirect with 1 KiB blocks) and 80 MiB (triple).
    # Every data piece is 64 KiB at a 64 KiB boundary, so any host filesystem (tmpfs, ext4,
    # xfs, btrfs) reports the same data segments and the images do not depend on it.
    piece = lambda tag: (tag * (64 * KiB // len(tag) + 1))[:64 * KiB]  # noqa: E731
    _sparse(j("sparse"), [(0, piece(b"start")), (5 * MiB, piece(b"five")), (40 * MiB, piece(b"forty")),
                          (80 * MiB, piece(b"end"))], 80 * MiB + 64 * KiB)
    # nine separate data runs: more extents than the inode holds (an extent tree block)
    _sparse(j("fragmented"), [(i * 256 * KiB, rnd.randbytes(64 * KiB)) for i in range(9)], 3 * MiB)
    _sparse(j("hole-only"), [], 2 * MiB)
    os.makedirs(j("dir", "sub", "deeper"))
    _file(j("dir", "sub", "deeper", "leaf"), b"leaf\n", mode=0o600, uid=42, gid=43)
    _file(j("dir", "exec"), b"#!/bin/sh\nexit 0\n", mode=0o755)
    _file(j("dir", "setuid"), b"x", mode=0o4755)
    os.chmod(j("dir", "sub"), 0o1777)
    os.link(j("dir", "exec"), j("hardlink-to-exec"))
    os.link(j("dir", "exec"), j("dir", "sub", "another-link"))
    os.symlink("dir/exec", j("symlink"))
    os.symlink("/" + "t" * 59, j("symlink-59"))
    os.symlink("/" + "l" * 300, j("long-symlink"))
    _file(j("\u00fcn\u00efc\u00f8d\u00e9-\u65e5\u672c"), b"unicode\n")
    _file(j("n" * 255), b"longest name\n")
    os.makedirs(j("many"))  # an HTree of several leaves (two levels with 1 KiB blocks)
    for i in range(5000):
        _file(j("many", f"entry-{i:05d}-{'x' * (i % 37)}"), str(i).encode())
    os.makedirs(j("subdirs"))
    for i in range(40):
        os.makedirs(j("subdirs", f"d{i:02d}"))
    os.makedirs(j("empty-dir"))
    _file(j("big-ids"), b"ids\n", uid=70000, gid=4_000_000_000)
    os.mkfifo(j("fifo"))
    os.mknod(j("chr"), 0o620 | stat.S_IFCHR, os.makedev(4, 64))
    os.mknod(j("blk"), 0o660 | stat.S_IFBLK, os.makedev(259, 300000))
    # xattrs: small ones fit in a 256-byte inode; the big set needs a shared block, used twice
    os.setxattr(j("text.txt"), "user.comment", b"plain text")
    os.setxattr(j("text.txt"), "user.mime_type", b"text/plain")
    os.setxattr(j("dir"), "user.dir-note", "caf\u00e9".encode())
    os.setxattr(j("symlink-59"), "trusted.note", b"on a link", follow_symlinks=False)
    for name in ("dup-a", "dup-b"):
        for k in range(4):
            os.setxattr(j(name), f"user.big{k}", bytes([65 + k]) * 150)
    for dirpath, dirnames, filenames in os.walk(root):
        for n in dirnames + filenames:
            os.utime(os.path.join(dirpath, n), (MTIME, MTIME), follow_symlinks=False)
    os.utime(root, (MTIME, MTIME))


def make_fat_tree(root: str) -> None:
    """What FAT can hold: files and directories, long and short names."""
    rnd = random.Random(7)
    os.makedirs(os.path.join(root, "EFI", "BOOT"))
    _file(os.path.join(root, "EFI", "BOOT", "BOOTX64.EFI"), rnd.randbytes(70_000))
    _file(os.path.join(root, "readme.txt"), b"hello fat\n" * 100)
    _file(os.path.join(root, "A Long File Name With Spaces.data"), rnd.randbytes(5000))
    _file(os.path.join(root, "empty"), b"")
    os.makedirs(os.path.join(root, "lots"))
    for i in range(300):
        _file(os.path.join(root, "lots", f"file-number-{i:04d}.txt"), str(i).encode() * 10)
    for dirpath, dirnames, filenames in os.walk(root):
        for n in dirnames + filenames:
            os.utime(os.path.join(dirpath, n), (MTIME, MTIME))
    os.utime(root, (MTIME, MTIME))


def _fs(type_: str, source: str, extra: str = "", options: str = "") -> str:
    spec = f'[filesystem]\ntype = "{type_}"\nsource = "{source}"\nmtime = {MTIME}\n{extra}\n'
    if options:
        spec += f"[filesystem.options]\n{options}\n"
    return spec


EXT_CASES = {
    "ext2-1k": ("ext2", 'block_size = 1024\nsize = "120MiB"', ""),
    "ext2-4k": ("ext2", "block_size = 4096", ""),
    "ext3-1k": ("ext3", "block_size = 1024", ""),
    "ext3-4k": ("ext3", 'block_size = 4096\nvolume_label = "ext3label"', ""),
    "ext4-1k": ("ext4", "block_size = 1024", ""),
    "ext4-4k": ("ext4", 'block_size = 4096\nuuid = "01234567-89ab-cdef-0123-456789abcdef"', ""),
    "ext4-1k-nocsum": ("ext4", "block_size = 1024", "metadata_csum = false"),
    "ext4-4k-nocsum": ("ext4", "block_size = 4096", "metadata_csum = false"),
    "ext4-4k-64bit": ("ext4", "block_size = 4096", '"64bit" = true'),
    "ext4-1k-noflex": ("ext4", "block_size = 1024", "flex_bg = false\ninode_size = 128"),
    "ext4-nodirindex": ("ext4", "", "dir_index = false"),
    "ext4-fixed-64m": ("ext4", 'size = "64MiB"\njournal_blocks = 1024', "reserved_blocks_percent = 0"),
    "ext4-auto-headroom": ("ext4", 'headroom = "3MiB"', "inode_ratio = 8192"),
    "ext4-not-sparse": ("ext4", 'block_size = 1024\nsparse = false\nheadroom = "1MiB"', ""),
    "ext3-noextra": ("ext3", "block_size = 2048", "inode_size = 128\nsparse_super = false"),
}
SQUASHFS_CASES = {
    "squashfs-zstd": ("", ""),
    "squashfs-gzip": ("", 'compression = "gzip"'),
    "squashfs-xz": ("block_size = 65536", 'compression = "xz"'),
    "squashfs-lzma": ("", 'compression = "lzma"'),
    "squashfs-lz4": ("", 'compression = "lz4"\ncompression_level = 1'),
    "squashfs-always-frag": ("block_size = 4096", "always_fragments = true\nexportable = false"),
    "squashfs-no-frag-nodedup": ("", "no_fragments = true\ndedup = false\nxattrs = false\npad = false"),
}
FAT_CASES = {
    "fat12": ("fat12", "", ""),
    "fat16": ("fat16", "", ""),
    "fat32": ("fat32", 'size = "40MiB"', ""),
    "vfat-not-sparse": ("fat", 'size = "8MiB"\nsparse = false\nvolume_label = "NOSPARSE"', ""),
}

GPT_DISK = f"""
[image]
size = "auto"
partition_table = "gpt"
uuid = "0f0e0d0c-0b0a-0908-0706-050403020100"

[[partitions]]
name = "esp"
type = "esp"
size = "16MiB"
[partitions.filesystem]
type = "fat"
source = "fat"
mtime = {MTIME}

[[partitions]]
name = "root"
type = "linux-root-x86-64"
size = "auto"
headroom = "2MiB"
attributes = ["legacy-bios-bootable", 60]
[partitions.filesystem]
type = "ext4"
source = "tree"
mtime = {MTIME}

[[partitions]]
name = "data"
type = "linux"
[partitions.filesystem]
type = "squashfs"
source = "tree/many"
mtime = {MTIME}
"""

MBR_DISK = f"""
[image]
size = "96MiB"
partition_table = "mbr"
disk_signature = "0x12345678"

[[partitions]]
name = "boot"
type = "fat16"
size = "16MiB"
bootable = true
[partitions.filesystem]
type = "fat16"
source = "fat"
mtime = {MTIME}

[[partitions]]
name = "a"
type = "linux"
size = "8MiB"
[partitions.filesystem]
type = "ext2"
source = "tree/dir"
mtime = {MTIME}

[[partitions]]
name = "b"
type = "linux-swap"
size = "4MiB"

[[partitions]]
name = "c"
type = "linux"
size = "8MiB"
[partitions.filesystem]
type = "squashfs"
source = "tree/dir"
mtime = {MTIME}

[[partitions]]
name = "d"
type = "0x83"
size = "9MiB"
[partitions.filesystem]
type = "ext3"
source = "tree/subdirs"
mtime = {MTIME}
"""


def specs() -> dict[str, str]:
    out = {}
    for name, (t, extra, opts) in EXT_CASES.items():
        out[name] = _fs(t, "tree", extra, opts)
    for name, (extra, opts) in SQUASHFS_CASES.items():
        out[name] = _fs("squashfs", "tree", extra, opts)
    for name, (t, extra, opts) in FAT_CASES.items():
        out[name] = _fs(t, "fat", extra, opts)
    out["disk-gpt"] = GPT_DISK
    out["disk-mbr"] = MBR_DISK
    return out


def sha256(path: str) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            h.update(chunk)
    return h.hexdigest()


def _run(args: list[str], cwd: str) -> None:
    env = dict(os.environ)
    env["PYTHONPATH"] = REPO + os.pathsep + env.get("PYTHONPATH", "")
    env["SOURCE_DATE_EPOCH"] = str(MTIME)
    env.pop("FSTOOL_THREADS", None)
    p = subprocess.run([sys.executable, "-m", "fstool", *args], cwd=cwd, env=env,
                       capture_output=True, text=True)
    if p.returncode != 0:
        raise RuntimeError(f"fstool {' '.join(args)} failed: {p.stderr.strip()}")


def build_all(work: str, only: set[str] | None = None) -> dict[str, str]:
    """Build every image under work; return {name: sha256}."""
    os.umask(0o022)
    make_tree(os.path.join(work, "tree"))
    make_fat_tree(os.path.join(work, "fat"))
    hashes = {}
    for name, spec in specs().items():
        if only and name not in only:
            continue
        with open(os.path.join(work, f"{name}.toml"), "w") as f:
            f.write(spec)
        img = os.path.join(work, f"{name}.img")
        _run(["build", f"{name}.toml", "-o", img], work)
        hashes[name] = sha256(img)
        os.unlink(img)
    if not only or "example-disk" in only:  # as scripts/demo.sh builds it
        img = os.path.join(work, "example-disk.img")
        _run(["build", "examples/disk.toml", "-o", img], REPO)
        hashes["example-disk"] = sha256(img)
        os.unlink(img)
    return hashes


def compare(hashes: dict[str, str], want: dict[str, str]) -> list[str]:
    return [f"{k}: {hashes.get(k)} != recorded {want.get(k)}" for k in sorted(set(hashes) | set(want))
            if hashes.get(k) != want.get(k)]


def main(argv: list[str]) -> int:
    record = "--record" in argv
    only = {a for a in argv if not a.startswith("-")} or None
    with tempfile.TemporaryDirectory(prefix="fstool-golden-") as work:
        hashes = build_all(work, only)
    for k, v in sorted(hashes.items()):
        print(f"{v}  {k}")
    if record:
        with open(HASHES, "w") as f:
            json.dump(dict(sorted(hashes.items())), f, indent=1)
            f.write("\n")
        print(f"recorded {len(hashes)} hashes in {HASHES}")
        return 0
    with open(HASHES) as f:
        want = json.load(f)
    if only:
        want = {k: v for k, v in want.items() if k in only}
    bad = compare(hashes, want)
    for line in bad:
        print("DIFFERENT", line)
    print("all identical" if not bad else f"{len(bad)} images differ")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
