"""Progress on stderr for long builds, only when stderr is a terminal (never in logs or CI).

One line, rewritten in place at most ten times a second: "fstool: writing squashfs 42%
(110 MiB of 262 MiB)". `-q` turns it off; it is cleared when the build ends.
"""
from __future__ import annotations

import sys
import time
from contextlib import contextmanager
from typing import Iterator

from .sizes import format_size


class Progress:
    def __init__(self, stream=None, interval: float = 0.1):
        self.stream = stream if stream is not None else sys.stderr
        self.interval = interval
        self.last = 0.0
        self.shown = False

    def __call__(self, what: str, done: int, total: int) -> None:
        now = time.monotonic()
        if now - self.last < self.interval and done < total:
            return
        self.last = now
        pct = 100 * done // total if total else 100
        self.stream.write(f"\rfstool: {what} {pct:3d}% ({format_size(done)} of {format_size(total)})\x1b[K")
        self.stream.flush()
        self.shown = True

    def clear(self) -> None:
        if self.shown:
            self.stream.write("\r\x1b[K")
            self.stream.flush()
            self.shown = False


def for_terminal(quiet: bool) -> Progress | None:
    """A Progress when stderr is an interactive terminal and -q was not given, else None."""
    if quiet or not sys.stderr.isatty():
        return None
    return Progress()


@contextmanager
def terminal_progress(quiet: bool) -> Iterator[Progress | None]:
    """for_terminal(quiet), with its line cleared when the block ends, however it ends."""
    progress = for_terminal(quiet)
    try:
        yield progress
    finally:
        if progress is not None:
            progress.clear()
