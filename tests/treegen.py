"""Build demanding source trees on the host and compare trees entry by entry.

`make_rich_tree` writes every kind of entry a writer must handle; `compare`
checks a tree the kernel mounted (or a tool extracted) against the source:
kind, permissions, owner, mtime, size, bytes, link targets, device numbers,
xattrs and hardlink groups.
"""
from __future__ import annotations

import hashlib
import os
import random
import socket
import stat

BS = 131072


def _write(path, data: bytes, mode=0o644, mtime=1_700_000_000):
    with open(path, "wb") as f:
        f.write(data)
    os.chmod(path, mode)
    os.utime(path, (mtime, mtime))


def make_rich_tree(root, *, devices=True, big=5_000_000) -> None:
    rnd = random.Random(1234)
    os.makedirs(root, exist_ok=True)
    j = lambda *p: os.path.join(root, *p)  # noqa: E731
    for n in (0, 1, BS - 1, BS, BS + 1, 3 * BS + 7):
        _write(j(f"size-{n}"), rnd.randbytes(n))
    _write(j("text.txt"), b"hello squash\n" * 20000)
    _write(j("big.bin"), rnd.randbytes(big // 2) + b"\0" * (big // 2))
    _write(j("dup-a"), b"same content\n" * 5000)
    _write(j("dup-b"), b"same content\n" * 5000)
    _write(j("small-dup-1"), b"tiny")
    _write(j("small-dup-2"), b"tiny")
    with open(j("sparse"), "wb") as f:
        f.write(b"start")
        f.seek(40 << 20)
        f.write(b"middle")
        f.seek(80 << 20)
        f.write(b"end")
    os.utime(j("sparse"), (1_700_000_000, 1_700_000_000))
    os.makedirs(j("dir", "sub", "deeper", "deepest"))
    _write(j("dir", "sub", "deeper", "deepest", "leaf"), b"leaf\n", mode=0o600)
    _write(j("dir", "exec"), b"#!/bin/sh\nexit 0\n", mode=0o755)
    _write(j("dir", "setuid"), b"x", mode=0o4755)
    os.chmod(j("dir", "sub"), 0o1777)
    os.link(j("dir", "exec"), j("hardlink-to-exec"))
    os.link(j("dir", "exec"), j("dir", "sub", "another-link"))
    os.symlink("dir/exec", j("symlink"))
    os.symlink("/" + "t" * 300, j("long-symlink"))
    os.symlink("nowhere", j("dangling"))
    _write(j("\u00fcn\u00efc\u00f8d\u00e9-\u65e5\u672c"), b"unicode\n")
    _write(j("n" * 255), b"longest name\n")
    os.makedirs(j("many"))
    for i in range(6000):
        _write(j("many", f"entry-{i:05d}-{'x' * (i % 40)}"), str(i).encode())
    os.makedirs(j("empty-dir"))
    deep = j(*[f"d{i:02d}" for i in range(60)])
    os.makedirs(deep)
    _write(os.path.join(deep, "bottom"), b"60 levels down\n")
    _write(j("name with  spaces "), b"spaces\n")
    _write(j("big-ids"), b"ids\n")
    os.chown(j("big-ids"), 70000, 4_000_000_000)
    _write(j("owned"), b"owned\n")
    os.chown(j("owned"), 1234, 5678)
    os.chown(j("dir", "sub", "deeper"), 42, 43)
    os.mkfifo(j("fifo"))
    s = socket.socket(socket.AF_UNIX)
    s.bind(j("sock"))
    s.close()
    if devices:
        os.mknod(j("chr"), 0o620 | stat.S_IFCHR, os.makedev(4, 64))
        os.mknod(j("blk"), 0o660 | stat.S_IFBLK, os.makedev(259, 300000))
    # user xattrs (the host filesystem under the tests, ext4 or tmpfs, keeps them)
    os.setxattr(j("text.txt"), "user.comment", b"plain text")
    os.setxattr(j("text.txt"), "user.mime_type", b"text/plain")
    os.setxattr(j("dir"), "user.dir-note", "caf\u00e9".encode())
    os.setxattr(j("dup-a"), "user.comment", b"plain text")
    for dirpath, dirnames, filenames in os.walk(root):
        for n in dirnames + filenames:
            p = os.path.join(dirpath, n)
            os.utime(p, (1_700_000_000, 1_700_000_000), follow_symlinks=False)
    os.utime(root, (1_700_000_000, 1_700_000_000))


def _digest(path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            h.update(chunk)
    return h.hexdigest()


def describe(root, *, owner=True, mtime=True, xattrs=True) -> dict:
    root = str(root)
    out = {}
    inodes: dict = {}
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames.sort()
        for n in [""] + sorted(dirnames + filenames):
            p = os.path.join(dirpath, n) if n else dirpath
            if not n and dirpath != root:
                continue
            rel = "/" + os.path.relpath(p, root) if p != root else "/"
            st = os.lstat(p)
            rec = {"fmt": stat.S_IFMT(st.st_mode), "mode": stat.S_IMODE(st.st_mode)}
            if owner:
                rec["owner"] = (st.st_uid, st.st_gid)
            if mtime and not stat.S_ISDIR(st.st_mode):
                rec["mtime"] = int(st.st_mtime)
            if stat.S_ISREG(st.st_mode):
                rec["size"] = st.st_size
                rec["sha"] = _digest(p)
                rec["nlink"] = st.st_nlink
                inodes.setdefault((st.st_dev, st.st_ino), []).append(rel)
            elif stat.S_ISLNK(st.st_mode):
                rec["target"] = os.readlink(p)
            elif stat.S_ISCHR(st.st_mode) or stat.S_ISBLK(st.st_mode):
                rec["rdev"] = (os.major(st.st_rdev), os.minor(st.st_rdev))
            if xattrs:
                try:
                    rec["xattrs"] = {k: os.getxattr(p, k, follow_symlinks=False)
                                     for k in sorted(os.listxattr(p, follow_symlinks=False))}
                except OSError:
                    rec["xattrs"] = {}
            out[rel] = rec
    out["__hardlink_groups__"] = sorted(sorted(v) for v in inodes.values() if len(v) > 1)
    return out


def compare(src, dst, **kw) -> None:
    a, b = describe(src, **kw), describe(dst, **kw)
    missing = sorted(set(a) - set(b))
    extra = sorted(set(b) - set(a))
    assert not missing and not extra, f"missing {missing[:5]}, extra {extra[:5]}"
    diffs = [(k, a[k], b[k]) for k in a if a[k] != b[k]]
    assert not diffs, f"{len(diffs)} entries differ, first: {diffs[:3]}"
