"""cli.main runs a command with the cyclic collector off and gives it back as it was."""
import gc

import fstool.build as build
from fstool.cli import main


def test_a_command_runs_without_the_collector_and_leaves_it_as_it_was(tmp_path, monkeypatch):
    (tmp_path / "src").mkdir()
    (tmp_path / "src" / "f").write_bytes(b"x")
    seen = []
    real = build.load_tree
    monkeypatch.setattr(build, "load_tree", lambda fs: seen.append(gc.isenabled()) or real(fs))
    assert gc.isenabled()
    assert main(["create", "-q", "-t", "squashfs", str(tmp_path / "src"), "-o", str(tmp_path / "a")]) == 0
    assert seen == [False] and gc.isenabled()
    gc.disable()
    try:  # off before (cli.run): still off after, so no collection runs before the exit
        assert main(["create", "-q", "-t", "squashfs", str(tmp_path / "src"), "-o", str(tmp_path / "b")]) == 0
        assert not gc.isenabled()
    finally:
        gc.enable()
    assert main(["create", "-q", "-t", "nosuchfs", str(tmp_path / "src"), "-o", str(tmp_path / "c")]) == 2
    assert gc.isenabled()  # an error too


def test_a_worker_collects_between_requests(monkeypatch):
    """cli.run turns the collector off for good; a persistent worker turns it back on (each
    request then runs with it paused)."""
    import fstool.worker as worker
    seen = []
    monkeypatch.setattr(worker, "serve", lambda argv: seen.append(gc.isenabled()) or 0)
    gc.disable()
    try:
        assert main(["worker", "--persistent_worker"]) == 0
        assert seen == [True] and gc.isenabled()
    finally:
        gc.enable()
