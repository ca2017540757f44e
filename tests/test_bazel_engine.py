"""What the Bazel rules need from the engine, tested without Bazel (fast):

- manifests with `"file_modes": "explicit"`: modes come from the entries only, never from
  the host's mode bits (which are not part of Bazel's action key);
- `fstool build --mtime-from-status` (the rules' `stamp`);
- the plain read/write path where `os.copy_file_range` or SEEK_DATA is missing (macOS);
- a prebuilt FAT image on a disk gets the msdata type by probing.
"""
from __future__ import annotations

import errno
import json
import os

import pytest

from conftest import assert_one_line_error, run_fstool
from fstool import image as image_mod
from fstool import tree as tree_mod
from fstool.inputs.manifest import load_manifest
from fstool.tree import Kind


def _write(path, data: bytes | str, mode: int = 0o644) -> str:
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "wb") as f:
        f.write(data.encode() if isinstance(data, str) else data)
    os.chmod(path, mode)
    return path


def _manifest(tmp_path, entries, file_modes="explicit") -> str:
    path = str(tmp_path / "m.json")
    with open(path, "w") as f:
        json.dump({"relative_to": "cwd", "file_modes": file_modes, "entries": entries}, f)
    return path


def test_explicit_modes_ignore_the_host_bits(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    _write(str(tmp_path / "a"), "a", 0o755)
    _write(str(tmp_path / "b"), "b", 0o600)
    m = _manifest(tmp_path, [{"kind": "file", "path": "/a", "source": "a", "mode": "0644"},
                             {"kind": "file", "path": "/b", "source": "b", "mode": "0755"}])
    first = {p: n.mode for p, n in load_manifest(m).walk()}
    os.chmod("a", 0o600)
    os.chmod("b", 0o777)
    again = {p: n.mode for p, n in load_manifest(m).walk()}
    assert first == again
    assert first["/a"] == 0o644 and first["/b"] == 0o755


def test_explicit_modes_refuse_a_file_without_mode_and_tree_entries(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    _write(str(tmp_path / "a"), "a")
    os.makedirs(tmp_path / "d")
    for entry, needle in (({"kind": "file", "path": "/a", "source": "a"}, "needs \"mode\""),
                          ({"kind": "tree", "path": "/d", "source": "d"}, "list its files")):
        m = _manifest(tmp_path, [entry])
        p = run_fstool("create", "-t", "squashfs", m, "-o", str(tmp_path / "o.img"), cwd=str(tmp_path))
        assert_one_line_error(p, 1, "entries[0]", needle)


def _status(tmp_path, text: str) -> str:
    return _write(str(tmp_path / "volatile-status.txt"), text)


def test_mtime_from_status(tmp_path):
    _write(str(tmp_path / "src" / "f"), "x")
    spec = _write(str(tmp_path / "s.json"), json.dumps(
        {"filesystem": {"type": "squashfs", "source": "src", "mtime": 0}}))
    out = str(tmp_path / "o.img")
    status = _status(tmp_path, "BUILD_TIMESTAMP 4102444800\nOTHER 1\n")
    run_fstool("build", spec, "-o", out, "--mtime-from-status", status, check=True)
    listing = run_fstool("ls", out, "/", check=True).stdout
    assert "2100-01-01" in listing, listing

    bad = _status(tmp_path, "BUILD_EMBED_LABEL x\n")
    p = run_fstool("build", spec, "-o", out, "--mtime-from-status", bad)
    assert_one_line_error(p, 1, "volatile-status.txt", "BUILD_TIMESTAMP")


def _copy_roundtrip(tmp_path) -> bytes:
    data = os.urandom(3 << 20)
    src = _write(str(tmp_path / "src.bin"), data)
    dst = str(tmp_path / "dst.bin")
    with open(dst, "wb"):
        pass
    fd_out = os.open(dst, os.O_RDWR)
    fd_in = os.open(src, os.O_RDONLY)
    try:
        image_mod.ImageFile(fd_out, 4096, None, dst).copy_from(fd_in, 100, len(data) - 100, 10)
    finally:
        os.close(fd_in)
        os.close(fd_out)
    with open(dst, "rb") as f:
        f.seek(4096 + 10)
        assert f.read() == data[100:]
    return data


def test_copy_without_copy_file_range(tmp_path, monkeypatch):
    """macOS has no os.copy_file_range: the bytes go through pread/pwrite."""
    monkeypatch.delattr(os, "copy_file_range", raising=False)
    _copy_roundtrip(tmp_path)


def test_build_without_copy_file_range_or_seek_data(tmp_path, monkeypatch):
    """A whole build (in-process) where copy_file_range is missing and SEEK_DATA refused:
    the image is byte-identical to the one built with them."""
    src = tmp_path / "src"
    _write(str(src / "big"), os.urandom(1 << 20) + b"\0" * (1 << 20) + b"tail")
    _write(str(src / "small"), "small")
    spec = _write(str(tmp_path / "s.json"), json.dumps(
        {"filesystem": {"type": "vfat", "source": "src", "mtime": 0}}))
    ref = str(tmp_path / "ref.img")
    run_fstool("build", spec, "-o", ref, check=True)

    from fstool.cli import main
    real_lseek = os.lseek

    def lseek(fd, pos, how):
        if how in (tree_mod.SEEK_DATA, tree_mod.SEEK_HOLE):
            raise OSError(errno.EINVAL, "Invalid argument")
        return real_lseek(fd, pos, how)

    monkeypatch.delattr(os, "copy_file_range", raising=False)
    monkeypatch.setattr(os, "lseek", lseek)
    out = str(tmp_path / "out.img")
    assert main(["build", spec, "-o", out, "-q"]) == 0
    with open(ref, "rb") as a, open(out, "rb") as b:
        assert a.read() == b.read()


def test_prebuilt_fat_image_gets_msdata(tmp_path):
    _write(str(tmp_path / "esp" / "f"), "x")
    run_fstool("create", "-t", "vfat", str(tmp_path / "esp"), "-o", str(tmp_path / "esp.img"), check=True)
    run_fstool("create", "-t", "squashfs", str(tmp_path / "esp"), "-o", str(tmp_path / "sq.img"),
               check=True)
    spec = _write(str(tmp_path / "d.json"), json.dumps({
        "image": {"partition_table": "gpt"},
        "partitions": [{"name": "a", "image": "esp.img"}, {"name": "b", "image": "sq.img"}]}))
    layout = str(tmp_path / "layout.json")
    run_fstool("build", spec, "-o", str(tmp_path / "d.img"), "--layout-json", layout, check=True)
    with open(layout) as f:
        types = [p["type"] for p in json.load(f)["partitions"]]
    assert types == ["msdata", "linux"]


def test_relative_to_flag_gives_the_default_a_spec_does_not_set(tmp_path):
    """`fstool build --relative-to spec` (what fstool_image passes): a TOML spec's relative
    paths start at its own directory, not the working directory; a spec's own relative_to
    still wins."""
    d = tmp_path / "stage"
    _write(str(d / "files" / "a.txt"), "a\n")
    spec = _write(str(d / "fs.toml"), '[filesystem]\ntype = "squashfs"\nsource = "files"\nmtime = 0\n')
    p = run_fstool("build", spec, "-o", str(tmp_path / "x.img"), cwd=tmp_path)
    assert_one_line_error(p, 1, "files")
    run_fstool("build", spec, "-o", str(tmp_path / "x.img"), "--relative-to", "spec", cwd=tmp_path, check=True)
    assert run_fstool("cat", str(tmp_path / "x.img"), "/a.txt", check=True).stdout == "a\n"
    _write(spec, 'relative_to = "cwd"\n[filesystem]\ntype = "squashfs"\nsource = "files"\n')
    p = run_fstool("build", spec, "-o", str(tmp_path / "y.img"), "--relative-to", "spec", cwd=tmp_path)
    assert_one_line_error(p, 1, "files")
