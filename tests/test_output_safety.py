"""Output paths: never clobber an input, a device or a symlink; never leave a partial file,
even after SIGKILL; signals exit 128+N; a full disk names the path."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest

from conftest import REPO, assert_one_line_error, run_fstool


@pytest.fixture
def src(tmp_path):
    d = tmp_path / "src"
    (d / "etc").mkdir(parents=True)
    (d / "etc" / "hostname").write_text("box\n")
    return d


def test_output_naming_an_input_is_refused_and_the_input_kept(tmp_path, src):
    tarf = tmp_path / "in.tar"
    subprocess.run(["tar", "-C", str(src), "-cf", str(tarf), "."], check=True)
    before = tarf.read_bytes()
    p = run_fstool("create", "-t", "ext4", tarf, "-o", tarf)
    assert_one_line_error(p, 1, str(tarf), "also an input")
    assert tarf.read_bytes() == before


@pytest.mark.parametrize("cmd", ["create", "build"])
def test_output_inside_the_source_directory_is_refused(tmp_path, src, cmd):
    out = src / "rootfs.img"
    if cmd == "create":
        p = run_fstool("create", "-t", "ext4", src, "-o", out)
    else:
        spec = tmp_path / "s.toml"
        spec.write_text(f'[filesystem]\ntype = "squashfs"\nsource = "{src}"\n')
        p = run_fstool("build", spec, "-o", out)
    assert_one_line_error(p, 1, "inside the source directory")
    assert not out.exists()


def test_symlink_device_and_directory_outputs_are_refused(tmp_path, src):
    target = tmp_path / "precious"
    target.write_text("keep me")
    link = tmp_path / "link.img"
    link.symlink_to(target)
    p = run_fstool("create", "-t", "squashfs", src, "-o", link)
    assert_one_line_error(p, 1, "is a symlink")
    assert link.is_symlink() and target.read_text() == "keep me"

    dev = tmp_path / "null"
    os.mknod(dev, 0o666 | 0o020000, os.makedev(1, 3))  # a character device like /dev/null
    p = run_fstool("create", "-t", "squashfs", src, "-o", dev)
    assert_one_line_error(p, 1, "character device")
    assert os.path.exists(dev) and not os.path.isfile(dev)

    p = run_fstool("create", "-t", "squashfs", src, "-o", tmp_path)
    assert_one_line_error(p, 1, "is a directory")


def _slow_build(tmp_path):
    """A build that takes many seconds on any machine: 64 MiB of random data through xz-9
    on one thread (xz gains nothing on random data and runs at a few MB/s)."""
    big = tmp_path / "big"
    big.mkdir()
    with open(big / "random", "wb") as f:
        for _ in range(64):
            f.write(os.urandom(1 << 20))
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    env = dict(os.environ, PYTHONPATH=REPO, FSTOOL_THREADS="1")
    proc = subprocess.Popen([sys.executable, "-m", "fstool", "create", "-t", "squashfs", str(big),
                             "-o", str(out_dir / "img.sqfs"), "-O", "compression=xz,compression_level=9"],
                            env=env, stderr=subprocess.PIPE, text=True)
    time.sleep(1.5)
    assert proc.poll() is None, "the build finished before it could be interrupted"
    return proc, out_dir


@pytest.mark.slow
def test_sigkill_leaves_nothing_behind(tmp_path):
    proc, out_dir = _slow_build(tmp_path)
    proc.kill()
    proc.wait()
    assert os.listdir(out_dir) == []  # the partial image never had a name


@pytest.mark.slow
@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGHUP])
def test_sigterm_and_sighup_exit_128_plus_n_and_clean_up(tmp_path, sig):
    proc, out_dir = _slow_build(tmp_path)
    proc.send_signal(sig)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 128 + sig, err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1
    assert os.listdir(out_dir) == []


@pytest.mark.slow
def test_full_disk_names_the_output(tmp_path, src):
    mnt = tmp_path / "small"
    mnt.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=512k", "tmpfs", str(mnt)], check=True)
    try:
        with open(src / "data", "wb") as f:
            f.write(os.urandom(2 << 20))
        out = mnt / "img.ext4"
        p = run_fstool("create", "-t", "ext4", src, "-o", out)
        assert_one_line_error(p, 1, str(out), "No space left on device")
        assert os.listdir(mnt) == []
    finally:
        subprocess.run(["umount", str(mnt)], check=True)
