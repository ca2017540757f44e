"""fstool.image.in_background: the data thread's error reaches the caller; a failing caller
stops the thread and waits for it."""
import threading

import pytest

from fstool.errors import InputError
from fstool.image import in_background


def test_the_threads_error_is_raised_at_the_end():
    def copy(stop):
        raise InputError("file shrank while reading", where="/src/f")

    with pytest.raises(InputError, match="file shrank"):
        with in_background(copy):
            pass


def test_a_failing_block_stops_and_joins_the_thread():
    seen = []
    started = threading.Event()

    def copy(stop):
        started.set()
        stop.wait(5)
        seen.append(stop.is_set())

    with pytest.raises(ValueError):
        with in_background(copy):
            started.wait(5)
            raise ValueError("metadata failed")
    assert seen == [True]  # the thread saw stop and had finished before the error went on


def test_both_run_and_the_block_returns_after_the_thread():
    done = []
    with in_background(lambda stop: done.append("data")):
        done.append("metadata")
    assert sorted(done) == ["data", "metadata"]
