"""Property tests: random trees (odd names, deep nesting, hardlinks, sparse files) survive every
writer, checked by the reference tool and read back by our reader."""
from __future__ import annotations

import os
import subprocess
import tempfile

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fstool.fs.base import FsParams
from fstool.image import Region, atomic_output
from fstool.tree import FileSource, Kind, Node, Tree

# Any character but '/' and NUL, including spaces, newlines, combining marks and non-BMP.
NAME_CHARS = st.characters(blacklist_characters="/\0", blacklist_categories=("Cs",))
NAMES = st.text(NAME_CHARS, min_size=1, max_size=40).filter(
    lambda n: n not in (".", "..") and len(n.encode()) <= 255)
CONTENT = st.one_of(st.binary(max_size=300), st.binary(min_size=1, max_size=8).map(lambda b: b * 5000))


@st.composite
def trees(draw):
    """(list of (path, kind, payload)) describing a tree; payload is bytes, a target, or a hole size."""
    entries: list[tuple[str, str, object]] = []
    dirs = ["/"]
    for _ in range(draw(st.integers(1, 25))):
        parent = draw(st.sampled_from(dirs))
        name = draw(NAMES)
        path = parent.rstrip("/") + "/" + name
        if any(p == path for p, _, _ in entries):
            continue
        kind = draw(st.sampled_from(["dir", "file", "file", "symlink", "hardlink", "sparse", "deep"]))
        if kind == "dir":
            dirs.append(path)
            entries.append((path, "dir", None))
        elif kind == "deep":
            depth = draw(st.integers(10, 40))
            p = path
            entries.append((p, "dir", None))
            for i in range(depth):
                p = f"{p}/{i}"
                entries.append((p, "dir", None))
            dirs.append(p)
        elif kind == "file":
            entries.append((path, "file", draw(CONTENT)))
        elif kind == "sparse":
            entries.append((path, "sparse", draw(st.integers(1, 3 << 20))))
        elif kind == "symlink":
            entries.append((path, "symlink", draw(st.text(NAME_CHARS, min_size=1, max_size=80))))
        else:
            files = [p for p, k, _ in entries if k == "file"]
            if files:
                entries.append((path, "hardlink", draw(st.sampled_from(files))))
    return entries


def materialise(entries, workdir) -> Tree:
    tree = Tree()
    tree.root.mtime = 1_600_000_000
    for i, (path, kind, payload) in enumerate(entries):
        if kind == "dir":
            node = Node(Kind.DIR, mode=0o755, mtime=1_600_000_000)
        elif kind == "file":
            host = os.path.join(workdir, f"f{i}")
            with open(host, "wb") as f:
                f.write(payload)
            node = Node(Kind.FILE, mode=0o644, mtime=1_600_000_000,
                        source=FileSource(host if payload else None, len(payload)))
        elif kind == "sparse":
            host = os.path.join(workdir, f"s{i}")
            with open(host, "wb") as f:
                f.truncate(payload)
                f.seek(payload - 1)
                f.write(b"!")
            node = Node(Kind.FILE, mode=0o600, mtime=1_600_000_000, source=FileSource(host, payload))
        elif kind == "symlink":
            node = Node(Kind.SYMLINK, mode=0o777, mtime=1_600_000_000, target=payload)
        else:
            node = tree.lookup(payload)
        tree.add(path, node)
    return tree


def read_back(reader, path="/"):
    out = {}
    for e in reader.walk(path):
        if e.path == "/lost+found" or e.path.startswith("/lost+found/"):
            continue
        data = b"".join(reader.read_file(e.path)) if e.kind is Kind.FILE else None
        out[e.path] = (e.kind, e.target, data)
    return out


def expected(tree):
    out = {}
    for path, n in tree.walk():
        data = b"".join(d if d is not None else bytes(ln) for _, d, ln in n.source.iter_chunks()) \
            if n.kind is Kind.FILE else None
        out[path] = (n.kind, n.target, data)
    return out


def build(tree, fs_type, img):
    from fstool.fs import writer_for
    params = FsParams(fs_type=fs_type, seed=b"property", timestamp=1_600_000_000,
                      options=dict(OPTIONS.get(fs_type, {})))
    with atomic_output(img) as out:
        writer_for(fs_type).write(tree, out, params)


def open_reader(img):
    from fstool.fs import open_reader as _open
    return _open(Region(img))


SETTINGS = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow,
                                                                           HealthCheck.data_too_large])


CHECKERS = {
    "squashfs": lambda img, work: ["unsquashfs", "-n", "-d", os.path.join(work, "x"), img],
    "ext4": lambda img, work: ["e2fsck", "-fn", img],
    "erofs": lambda img, work: ["fsck.erofs", img],
}
OPTIONS = {
    "squashfs": {"compression": "gzip"},
    "erofs": {"compression": "lz4hc", "ztailpacking": True, "dedupe": True},
}


@pytest.mark.parametrize("fs_type", sorted(CHECKERS))
@SETTINGS
@given(entries=trees())
def test_round_trip(fs_type, entries):
    with tempfile.TemporaryDirectory() as work:
        tree = materialise(entries, work)
        img = os.path.join(work, "t.img")
        build(tree, fs_type, img)
        p = subprocess.run(CHECKERS[fs_type](img, work), capture_output=True, text=True)
        assert p.returncode == 0, p.stdout + p.stderr
        assert read_back(open_reader(img)) == expected(tree)
