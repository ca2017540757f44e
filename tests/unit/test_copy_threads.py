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


def test_in_background_in_a_child(tmp_path, monkeypatch):
    """fork=True: fn runs in a forked child (both copy threads at once there); a failing child
    is followed by fn here, whose error is raised; a failing block kills the child."""
    import fstool.image as image
    monkeypatch.setattr(image, "may_fork", lambda: True)  # the test process runs threads
    path = tmp_path / "out"
    path.write_bytes(bytes(8))
    fd = os.open(path, os.O_RDWR)
    parent = os.getpid()
    try:
        def write(stop):
            assert stop.main_done.is_set()
            os.pwrite(fd, b"child" if os.getpid() != parent else b"here!", 0)

        with in_background(write, fork=True):
            pass
        assert path.read_bytes()[:5] == b"child"

        def fails_in_child(stop):
            if os.getpid() != parent:
                os._exit(3)
            raise ValueError("the copy's own error, raised here")

        with pytest.raises(ValueError, match="raised here"):
            with in_background(fails_in_child, fork=True):
                pass

        def forever(stop):
            time.sleep(60)

        start = time.monotonic()
        with pytest.raises(RuntimeError):
            with in_background(forever, fork=True):
                raise RuntimeError("the metadata failed")
        assert time.monotonic() - start < 10  # killed, not waited for
    finally:
        os.close(fd)


def test_an_ext4_copied_by_a_child_is_the_same_image(tmp_path, monkeypatch):
    """`fstool create` in a process of its own (which forks its copy) against the build in this
    one (which runs threads, so copies on a thread): the same bytes, and e2fsck finds it clean."""
    import shutil
    import subprocess
    import sys

    from conftest import REPO
    src = tmp_path / "src"
    for i in range(400):
        d = src / f"d{i % 7}"
        d.mkdir(parents=True, exist_ok=True)
        (d / f"f{i}").write_bytes(os.urandom(i * 131 % 90_000) + bytes(i % 4 * 4096))
    args = ["create", "-q", "-t", "ext4", str(src), "--size", "64MiB", "-O", "block_size=4096"]
    assert main(args + ["-o", str(tmp_path / "here.img")]) == 0
    subprocess.run([sys.executable, "-m", "fstool", *args, "-o", str(tmp_path / "child.img")], check=True,
                   env=dict(os.environ, PYTHONPATH=REPO))
    assert (tmp_path / "child.img").read_bytes() == (tmp_path / "here.img").read_bytes()
    subprocess.run([shutil.which("e2fsck") or "e2fsck", "-fn", str(tmp_path / "child.img")], check=True,
                   capture_output=True)


def test_no_room_for_a_child_means_threads(tmp_path, monkeypatch):
    """fork failing (a memory or process limit) costs the helpers' speed, never the build."""
    import fstool.image as image
    import fstool.inputs.hostdir as hostdir
    import fstool.zeros as zeros

    def no_fork():
        raise OSError(11, "Resource temporarily unavailable")

    src = tmp_path / "src"
    for i in range(300):
        d = src / f"d{i % 5}"
        d.mkdir(parents=True, exist_ok=True)
        (d / f"f{i}").write_bytes(os.urandom(i * 97 % 70_000))
    os.setxattr(src / "d1" / "f1", "user.kept", b"yes")
    args = ["create", "-q", "-t", "ext4", str(src), "--size", "64MiB", "-O", "block_size=4096"]
    assert main(args + ["-o", str(tmp_path / "ref.img")]) == 0
    for mod in (image, hostdir, zeros):
        monkeypatch.setattr(mod, "may_fork" if mod is image else "_may_fork",
                            (lambda *a: True))
    monkeypatch.setattr(hostdir, "FORK_AFTER", 0)
    monkeypatch.setattr(os, "fork", no_fork)
    assert main(args + ["-o", str(tmp_path / "out.img")]) == 0
    assert (tmp_path / "out.img").read_bytes() == (tmp_path / "ref.img").read_bytes()
    assert hostdir.load_dir(str(src)).lookup("/d1/f1").xattrs == {"user.kept": b"yes"}


def test_child_result():
    from fstool.image import ChildResult
    assert ChildResult(lambda: {"a": [1, (2, b"x")]}).result() == {"a": [1, (2, b"x")]}
    assert ChildResult(lambda: 1 / 0).result() is None  # a failing child: the caller does it
    assert ChildResult(lambda: object()).result() is None  # nothing marshal can send
    import signal
    before = signal.pthread_sigmask(signal.SIG_BLOCK, [])
    in_child = ChildResult(lambda: [int(x) for x in signal.pthread_sigmask(signal.SIG_BLOCK, [])]).result()
    assert {signal.SIGINT, signal.SIGTERM, signal.SIGHUP} <= set(in_child)  # never seen there
    assert signal.pthread_sigmask(signal.SIG_BLOCK, []) == before  # and here as before
    slow = ChildResult(lambda: time.sleep(60))
    pid = slow.pid
    start = time.monotonic()
    slow.close()
    assert time.monotonic() - start < 10 and slow.pid == 0 and slow.rfd == -1
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)
