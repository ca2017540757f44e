"""Shared fixtures: run the CLI as a user would (a subprocess), and find the repository."""
from __future__ import annotations

import os
import subprocess
import sys

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def run_fstool(*args, cwd=None, env=None, check=False, input=None):
    """Run `python -m fstool ARGS`; return the CompletedProcess (text stdout/stderr)."""
    e = dict(os.environ)
    e["PYTHONPATH"] = REPO + os.pathsep + e.get("PYTHONPATH", "")
    e.pop("FSTOOL_DEBUG", None)
    if env:
        e.update(env)
    p = subprocess.run([sys.executable, "-m", "fstool", *map(str, args)], cwd=cwd, env=e,
                       capture_output=True, text=True, input=input)
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
