"""Shared benchmark helpers: timing a command (best of N wall-clock runs) and printing a table."""
from __future__ import annotations

import os
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
OUT = os.path.join(HERE, "out")
FSTOOL = [sys.executable, "-m", "fstool"]


def _compiled() -> None:
    """fstool's modules byte-compiled once, as an installed package has them: a run with
    PYTHONDONTWRITEBYTECODE set in the caller's environment would otherwise compile every
    module on every run and time the compiler."""
    subprocess.run([sys.executable, "-m", "compileall", "-q", os.path.join(REPO, "fstool")],
                   check=True, stdout=subprocess.DEVNULL)


_compiled()


def timed(cmd: list[str], runs: int = 3, env: dict | None = None, before=None) -> float:
    """Best wall-clock time of `runs` runs of cmd (the page cache is warm after the first).
    Before each run, the previous run's dirty pages are written back (untimed), so no run
    pays for another's writeback."""
    best = float("inf")
    e = dict(os.environ, PYTHONPATH=REPO)
    e.pop("PYTHONDONTWRITEBYTECODE", None)
    e.update(env or {})
    for _ in range(runs):
        if before:
            before()
        os.sync()
        t0 = time.perf_counter()
        subprocess.run(cmd, check=True, env=e, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        best = min(best, time.perf_counter() - t0)
    return best


def used(path: str) -> int:
    """Bytes an image really takes on the host (its holes cost nothing)."""
    return os.stat(path).st_blocks * 512


def fresh(path: str, size: int):
    """A `before` hook: an empty sparse file of size at path (what mkfs tools write into)."""
    def make() -> None:
        if os.path.exists(path):
            os.unlink(path)
        with open(path, "wb") as f:
            f.truncate(size)
    return make


def gone(path: str):
    """A `before` hook: the last run's image removed (untimed, as for the C tools)."""
    def drop() -> None:
        if os.path.exists(path):
            os.unlink(path)
    return drop


def table(title: str, rows: list[tuple]) -> None:
    """rows: (case, tool, seconds, bytes); ratios are against the first row of each case."""
    print(f"\n{title}")
    print(f"{'case':<28}{'tool':<22}{'time s':>9}{'size MiB':>11}{'time ratio':>12}{'size ratio':>12}")
    base: dict[str, tuple[float, int]] = {}
    for case, tool, secs, size in rows:
        b = base.setdefault(case, (secs, size))
        print(f"{case:<28}{tool:<22}{secs:>9.2f}{size / 2**20:>11.1f}{secs / b[0]:>12.2f}{size / b[1]:>12.3f}")
    sys.stdout.flush()
