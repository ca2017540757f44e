"""The persistent worker (`fstool --persistent_worker`, Bazel's JSON protocol): same bytes as the
plain command, multiplexed or not, with the in-memory block cache reused across requests."""
from __future__ import annotations

import hashlib
import json
import os
import re
import subprocess
import sys

import pytest

from conftest import REPO, run_fstool
from test_cache import make_tree

pytestmark = pytest.mark.slow


def digest(path) -> str:
    return hashlib.sha256(open(path, "rb").read()).hexdigest()


def serve(requests, cwd, *flags, sep="\n"):
    """Run a worker over the requests, written one a line or (sep="") back to back as Bazel 4.x
    does; (responses, worker log)."""
    # a cache directory in the environment is ignored: the worker reads only what requests name
    env = dict(os.environ, PYTHONPATH=REPO, FSTOOL_CACHE_DIR=str(cwd / "must-not-exist"))
    stdin = "".join(json.dumps(r) + sep for r in requests)
    p = subprocess.run([sys.executable, "-m", "fstool", *flags, "--persistent_worker"], input=stdin,
                       capture_output=True, text=True, cwd=cwd, env=env, timeout=300)
    assert p.returncode == 0, p.stderr
    responses = [json.loads(line) for line in p.stdout.splitlines()]  # nothing else on stdout
    return responses, p.stderr


def reuse(log: str) -> list[tuple[int, int]]:
    return [(int(a), int(b)) for a, b in re.findall(r"(\d+) blocks reused, (\d+) compressed", log)]


@pytest.mark.parametrize("multiplex", [False, True])  # multiplexed requests come back to back
def test_worker_matches_plain_builds_and_reuses_blocks(tmp_path, multiplex):
    src = tmp_path / "src"
    make_tree(src, dup=False)
    (tmp_path / "a.params").write_text("\n".join(["create", "src", "-t", "squashfs", "-o", "w1.img",
                                                  "-O", "compression=xz"]) + "\n")
    reqs = [{"arguments": ["@a.params"], "inputs": [{"path": "a.params", "digest": "x"}]},
            {"arguments": ["create", "src", "-t", "squashfs", "-o", "w2.img", "-O", "compression=xz"]},
            {"arguments": ["create", "src", "-t", "squashfs", "-o", "w3.img", "-O", "compression=zstd"]},
            {"arguments": ["create", "nowhere", "-t", "squashfs", "-o", "w4.img"]},
            {"arguments": ["--version"]}]
    if multiplex:
        for i, r in enumerate(reqs):
            r["requestId"] = 10 + i
        reqs.insert(2, {"requestId": 10, "cancel": True})  # for a request already answered
    responses, log = serve(reqs, tmp_path, sep="" if multiplex else "\n")
    ids = [r.get("requestId", 0) for r in reqs if not r.get("cancel")]
    assert [r["requestId"] for r in responses] == ids
    assert [r["exitCode"] for r in responses] == [0, 0, 0, 1, 0]
    assert "nowhere" in responses[3]["output"] and "fstool" in responses[4]["output"]
    run_fstool("create", src, "-t", "squashfs", "-o", tmp_path / "xz.img", "-O", "compression=xz", check=True)
    run_fstool("create", src, "-t", "squashfs", "-o", tmp_path / "zstd.img", check=True)
    assert digest(tmp_path / "w1.img") == digest(tmp_path / "w2.img") == digest(tmp_path / "xz.img")
    assert digest(tmp_path / "w3.img") == digest(tmp_path / "zstd.img")
    assert not (tmp_path / "must-not-exist").exists()
    r = reuse(log)
    assert r[0][0] == 0 and r[0][1] > 5          # first build compresses everything
    assert r[1] == (r[0][1], 0)                  # the same build again compresses nothing
    assert r[2][0] == 0                          # another codec reuses nothing


def test_worker_memory_bound(tmp_path):
    src = tmp_path / "src"
    make_tree(src, dup=False)
    reqs = [{"arguments": ["create", "src", "-t", "squashfs", "-o", f"w{i}.img"]} for i in range(2)]
    _, log = serve(reqs, tmp_path, "--cache-memory", "64KiB")
    held = re.findall(r"holding (\d+) blocks, ([\d.]+) (\w+)", log)
    assert held
    for n, size, unit in held:
        assert {"B": 1, "KiB": 1024}[unit] * float(size) <= 64 * 1024
    assert digest(tmp_path / "w0.img") == digest(tmp_path / "w1.img")


def test_stray_output_stays_out_of_the_protocol(tmp_path):
    """A request printing to stdout (`formats`, `ls`) answers in its output field."""
    responses, _ = serve([{"arguments": ["formats"]}, {"arguments": ["formats"], "requestId": 3}], tmp_path)
    assert len(responses) == 2 and "squashfs" in responses[0]["output"]
    assert responses[1]["requestId"] == 3


def test_request_stream_framing():
    """Objects are cut by brace depth outside strings, whatever the separators."""
    import io
    from fstool.worker import json_objects

    class Pipe(io.BytesIO):
        def fileno(self):
            r, w = os.pipe()
            os.write(w, self.getvalue())
            os.close(w)
            return r

    text = b'{"arguments":["a}b","{\\"q"],"inputs":[{"path":"x"}]}{"requestId":2}\n\n  {"cancel":true}'
    got = [json.loads(o) for o in json_objects(Pipe(text))]
    assert got == [{"arguments": ["a}b", '{"q'], "inputs": [{"path": "x"}]}, {"requestId": 2},
                   {"cancel": True}]


def test_worker_reuses_file_scans_by_input_digest(tmp_path):
    """With the digests Bazel sends, a file scanned before (its zero blocks) is not read again;
    an edited file (new digest) is. Same bytes as plain builds either way."""
    src = tmp_path / "src"
    src.mkdir()
    for i in range(6):
        (src / f"f{i}").write_bytes(os.urandom(20000) + bytes(8192) + os.urandom(100))
    files = sorted(src.iterdir())

    def request(out):
        return {"arguments": ["create", "-q", "src", "-t", "ext4", "-o", out, "--size", "4MiB"],
                "inputs": [{"path": f"src/{f.name}", "digest": digest(f)} for f in files]}

    edited = request("w0.img")  # the digest Bazel would send after an edit of f3
    edited["inputs"][3]["digest"] = "0" * 64
    first, log1 = serve([request("w1.img"), request("w2.img"), edited], tmp_path)
    run_fstool("create", "-q", src, "-t", "ext4", "-o", tmp_path / "p1.img", "--size", "4MiB", check=True)
    (src / "f3").write_bytes(os.urandom(30000))  # an edit: a new digest
    second, log2 = serve([request("w3.img")], tmp_path)
    run_fstool("create", "-q", src, "-t", "ext4", "-o", tmp_path / "p3.img", "--size", "4MiB", check=True)
    assert [r["exitCode"] for r in first + second] == [0, 0, 0, 0]
    scans = [(int(a), int(b)) for a, b in re.findall(r"file scans: (\d+) reused, (\d+) read", log1)]
    assert scans == [(0, 6), (6, 0), (5, 1)]
    assert digest(tmp_path / "w1.img") == digest(tmp_path / "w2.img") == digest(tmp_path / "p1.img")
    assert digest(tmp_path / "w3.img") == digest(tmp_path / "p3.img")
