"""Progress lines: shown only on a terminal, throttled, cleared at the end."""
from __future__ import annotations

import io
import os
import pty
import subprocess
import sys

from conftest import REPO
from fstool.progress import Progress, for_terminal


def test_progress_line_and_clear():
    buf = io.StringIO()
    p = Progress(buf, interval=0)
    p("writing squashfs", 50 << 20, 200 << 20)
    p("writing squashfs", 200 << 20, 200 << 20)
    p.clear()
    out = buf.getvalue()
    assert "\rfstool: writing squashfs  25% (50 MiB of 200 MiB)" in out
    assert " 100% " in out and out.endswith("\r\x1b[K")


def test_not_on_a_pipe_or_with_quiet():
    assert for_terminal(quiet=True) is None
    # under pytest stderr is captured, not a terminal
    assert for_terminal(quiet=False) is None or sys.stderr.isatty()


def test_cli_shows_progress_on_a_terminal_only(tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    (src / "f").write_bytes(os.urandom(1 << 20))
    cmd = [sys.executable, "-m", "fstool", "create", "-t", "squashfs", str(src), "-o", str(tmp_path / "a.img")]
    env = dict(os.environ, PYTHONPATH=REPO)
    piped = subprocess.run(cmd, capture_output=True, text=True, env=env)
    assert piped.returncode == 0 and piped.stderr == ""
    master, slave = pty.openpty()
    p = subprocess.run(cmd[:-1] + [str(tmp_path / "b.img")], stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                       stderr=slave, env=env)
    os.close(slave)
    seen = b""
    try:
        while chunk := os.read(master, 4096):
            seen += chunk
    except OSError:
        pass
    os.close(master)
    assert p.returncode == 0
    assert b"fstool: writing squashfs 100%" in seen and seen.endswith(b"\r\x1b[K")
