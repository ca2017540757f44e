"""Shared fixtures: run the CLI as a user would (a subprocess), and find the repository."""
from __future__ import annotations

import contextlib
import os
import subprocess
import sys

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def run_fstool(*args, cwd=None, env=None, check=False, input=None, text_output=True):
    """Run `python -m fstool ARGS`; return the CompletedProcess (text stdout/stderr)."""
    e = dict(os.environ)
    e["PYTHONPATH"] = REPO + os.pathsep + e.get("PYTHONPATH", "")
    e.pop("FSTOOL_DEBUG", None)
    if env:
        e.update(env)
    p = subprocess.run([sys.executable, "-m", "fstool", *map(str, args)], cwd=cwd, env=e,
                       capture_output=True, text=text_output, input=input)
    if check and p.returncode != 0:
        raise AssertionError(f"fstool {' '.join(map(str, args))} failed ({p.returncode}): {p.stderr}")
    return p


def assert_one_line_error(p, code, *needles):
    """The CLI failed with `code`, printed exactly one line on stderr, no traceback."""
    assert p.returncode == code, (p.returncode, p.stderr)
    lines = p.stderr.strip().splitlines()
    assert len(lines) == 1, p.stderr
    assert "Traceback" not in p.stderr
    for n in needles:
        assert n in lines[0], (n, lines[0])


@pytest.fixture
def fstool():
    return run_fstool


_mounts = 0


def mount(args, *, check=False):
    """`mount ARGS`, tried again a few times when it fails: concurrent `mount -o loop` calls
    (pytest-xdist workers) can race for the same free loop device, and the loser's mount
    then fails on a device holding another image. A real refusal fails every time."""
    import time
    for attempt in range(5):
        p = subprocess.run(["mount", *map(str, args)], capture_output=True, text=True)
        if p.returncode == 0:
            return p
        time.sleep(0.3 * (attempt + 1))
    if check:
        raise AssertionError(f"mount {' '.join(map(str, args))} failed: {p.stderr}")
    return p


@contextlib.contextmanager
def loop_mount(img, where):
    """Mount img read-only through a loop device (the kernel is the reference reader)."""
    global _mounts
    _mounts += 1
    mnt = os.path.join(str(where), f"mnt{_mounts}")
    os.makedirs(mnt, exist_ok=True)
    p = mount(["-o", "loop,ro", str(img), mnt])
    assert p.returncode == 0, f"the kernel refused to mount {img}: {p.stderr}"
    try:
        yield mnt
    finally:
        subprocess.run(["umount", mnt], check=True)
        os.rmdir(mnt)


@contextlib.contextmanager
def private_mount(cmd, mountpoint):
    """Run CMD MOUNTPOINT (`mount -o loop IMG`, `mount.exfat-fuse -o rw DEV`) in a mount
    namespace of its own and yield the mounted tree, reached through /proc/PID/root; on exit
    unmount it there and wait.

    For read-write mounts whose image is checked afterwards. A mount made in the shared
    namespace is copied into every namespace created while it exists (each Bazel
    linux-sandbox action another xdist worker runs); `umount` then only detaches our copy,
    the file system stays alive with its journal unwritten, and the checker reads an image
    that still "needs recovery". Nobody else can copy a mount made here."""
    import pathlib
    import time
    script = 'm=$1; shift; "$@" "$m" || exit 1; echo mounted; read _; exec umount "$m"'
    for attempt in range(5):
        holder = subprocess.Popen(["unshare", "--mount", "--propagation", "private", "sh", "-c", script,
                                   "sh", str(mountpoint), *map(str, cmd)],
                                  stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                  text=True)
        if holder.stdout.readline() == "mounted\n":
            break
        err = holder.communicate()[1]
        time.sleep(0.3 * (attempt + 1))  # a concurrent loop setup may have taken the device
    else:
        raise AssertionError(f"{' '.join(map(str, cmd))} {mountpoint} failed: {err}")
    try:
        yield pathlib.Path(f"/proc/{holder.pid}/root") / os.path.relpath(os.path.abspath(mountpoint), "/")
    finally:
        _, err = holder.communicate("\n", timeout=120)
        assert holder.returncode == 0, f"umount {mountpoint} failed: {err}"


def same_file(a, b) -> bool:
    with open(a, "rb") as fa, open(b, "rb") as fb:
        while True:
            x, y = fa.read(1 << 22), fb.read(1 << 22)
            if x != y:
                return False
            if not x:
                return True


def diff_r(src, dst) -> None:
    """`diff -r` must find no difference. GNU diff reports every special file (device, fifo,
    socket) as 'File A is a T while file B is a T' even when both are the same kind; those
    lines are accepted only when the kinds match (compare() checks their numbers)."""
    import re
    p = subprocess.run(["diff", "-r", "--no-dereference", str(src), str(dst)], capture_output=True, text=True)
    assert p.returncode in (0, 1) and not p.stderr, p.stderr
    bad = [ln for ln in p.stdout.splitlines()
           if not re.fullmatch(r"File .* is a (.+) while file .* is a \1", ln)]
    assert not bad, "\n".join(bad[:20])
