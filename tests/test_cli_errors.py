"""Bad input at the command line: one line on stderr, the right exit status, no output left."""
from __future__ import annotations

import os

import pytest

from conftest import assert_one_line_error, run_fstool


def leftovers(d):
    return sorted(n for n in os.listdir(d) if n.startswith("."))


@pytest.mark.parametrize("args, code, needle", [
    ([], 2, "required"),
    (["frobnicate"], 2, "invalid choice"),
    (["create", "-o", "x.img"], 2, "-t"),
    (["create", "-t", "ext9", "-o", "x.img"], 2, "unknown filesystem type 'ext9'"),
    (["create", "-t", "ext4", "-o", "x.img", "--size", "lots"], 2, "--size"),
    (["create", "-t", "ext4", "-o", "x.img", "-O", "mtime=yesterday"], 2, "-O.mtime"),
    (["create", "-t", "ext4", "-o", "x.img", "-O", "rootdevs=all"], 2, "-O.rootdevs"),
    (["create", "-t", "ext4", "-o", "x.img", "--uuid", "nope"], 2, "invalid UUID"),
    (["create", "-t", "ext4", "missing-dir", "-o", "x.img"], 1, "missing-dir"),
    (["create", "-t", "ext4", "a+", "-o", "x.img"], 2, "empty source"),
    (["build", "no-such-spec.toml", "-o", "x.img"], 1, "no-such-spec.toml"),
    (["info", "no-such.img"], 1, "no-such.img"),
    (["info", "no-such.img:0"], 2, "partition number"),
    (["ls", "no-such.img"], 1, "no-such.img"),
    (["cat", "no-such.img", "/x"], 1, "no-such.img"),
])
def test_usage_errors(tmp_path, args, code, needle):
    p = run_fstool(*args, cwd=tmp_path)
    assert_one_line_error(p, code, needle)
    assert not os.path.exists(tmp_path / "x.img")
    assert leftovers(tmp_path) == []


def test_spec_error_exit_2_and_no_output(tmp_path):
    (tmp_path / "s.toml").write_text('[filesystem]\ntype = "ext4"\nsorce = "x"\n')
    p = run_fstool("build", "s.toml", "-o", "out.img", cwd=tmp_path)
    assert_one_line_error(p, 2, "s.toml", "filesystem.sorce", "did you mean 'source'")
    assert os.listdir(tmp_path) == ["s.toml"]


def test_output_directory_missing(tmp_path):
    (tmp_path / "src").mkdir()
    p = run_fstool("create", "-t", "squashfs", "src", "-o", "nodir/out.img", cwd=tmp_path)
    assert_one_line_error(p, 1, "nodir")


def test_not_an_image(tmp_path):
    (tmp_path / "junk.img").write_bytes(b"\x00" * 65536)
    p = run_fstool("info", "junk.img", cwd=tmp_path)
    assert_one_line_error(p, 1, "junk.img", "no filesystem")
    p = run_fstool("ls", "junk.img:1", cwd=tmp_path)
    assert_one_line_error(p, 1, "junk.img", "no partition table")


def test_version_and_help():
    p = run_fstool("--version")
    assert p.returncode == 0 and p.stdout.startswith("fstool ")
    p = run_fstool("create", "--help")
    assert p.returncode == 0 and "-O K=V" in p.stdout
