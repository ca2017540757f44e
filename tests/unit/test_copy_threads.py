"""image.for_each_in_order: two threads over a list (the file-data copies of ext and FAT), with
one thread's error semantics; and the images do not depend on the thread count."""
import os
import threading
import time

import pytest

from fstool.cli import main
from fstool.image import for_each_in_order, in_background


def test_the_first_failing_item_in_list_order_is_raised():
    done = set()

    def fn(i):
        if i == 30:
            time.sleep(0.2)  # fails last, but comes first in the list
            raise ValueError("item 30")
        if i == 31:
            raise ValueError("item 31")
        time.sleep(0.001)
        done.add(i)

    with pytest.raises(ValueError, match="item 30"):
        for_each_in_order(list(range(100)), fn, threads=2)
    assert set(range(30)) <= done  # everything before it was done
    assert max(done) < 40  # and nothing long after it was started


def test_one_thread_and_an_empty_list():
    seen = []
    for_each_in_order([1, 2, 3], seen.append, threads=1)
    for_each_in_order([], seen.append, threads=2)
    assert seen == [1, 2, 3]


def test_under_in_background_the_second_thread_waits_for_the_block():
    """While the main thread's block runs, one thread copies; the second joins afterwards."""
    threads_during, threads_after = set(), set()
    block_done = threading.Event()

    def fn(i):
        (threads_after if block_done.is_set() else threads_during).add(threading.get_ident())
        time.sleep(0.002)

    with in_background(lambda stop: for_each_in_order(list(range(200)), fn, stop, threads=2)):
        time.sleep(0.1)
        block_done.set()
    assert len(threads_during) == 1 and len(threads_after) == 2


def test_a_failing_block_stops_both_threads():
    started = []

    def fn(i):
        started.append(i)
        time.sleep(0.002)

    with pytest.raises(RuntimeError):
        with in_background(lambda stop: for_each_in_order(list(range(10_000)), fn, stop, threads=2)):
            time.sleep(0.05)
            raise RuntimeError("the metadata failed")
    n = len(started)
    time.sleep(0.05)
    assert len(started) == n < 10_000


@pytest.mark.parametrize("fs_type,opts", [("fat32", []), ("ext4", ["-O", "block_size=4096"])])
def test_the_image_does_not_depend_on_the_copy_threads(tmp_path, monkeypatch, fs_type, opts):
    src = tmp_path / "src"
    for i in range(300):
        d = src / f"d{i % 5}"
        d.mkdir(parents=True, exist_ok=True)
        (d / f"f{i}").write_bytes(os.urandom(i * 97 % 70_000) + bytes(i % 3 * 8192))
    images = []
    for n in ("1", "2"):
        monkeypatch.setenv("FSTOOL_THREADS", n)
        out = tmp_path / f"{n}.img"
        assert main(["create", "-q", "-t", fs_type, str(src), "-o", str(out), "--size", "64MiB", *opts]) == 0
        images.append(out.read_bytes())
    assert images[0] == images[1]
