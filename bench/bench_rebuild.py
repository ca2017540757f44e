"""Rebuild after a small edit (issue 19): the block cache and the persistent worker against
mksquashfs building the same tree from scratch.

For zstd-15 and xz-6 (128 KiB blocks, 2 cores): one run each of
- fstool without a cache, and with an empty cache directory (cold: the cost of storing);
- then one file of about 1 MB in the corpus is edited (a few bytes in its middle) and the image
  rebuilt with the now warm cache directory, and by a persistent worker that built the
  original tree before (in-memory cache, the time the worker logs for the request);
- `mksquashfs -processors 2` on the edited tree, from scratch.
The edit is undone at the end, so the corpus stays as bench/corpus.py made it. The warm image
is checked against the edited file's bytes. One run each: the machine is shared.
"""
from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import FSTOOL, OUT, REPO, table  # noqa: E402
from corpus import cached_corpus, corpus_stats  # noqa: E402


def once(cmd: list[str], env: dict | None = None) -> float:
    e = dict(os.environ, PYTHONPATH=REPO, FSTOOL_THREADS="2")
    e.pop("FSTOOL_CACHE_DIR", None)
    e.update(env or {})
    t0 = time.perf_counter()
    subprocess.run(cmd, check=True, env=e, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return time.perf_counter() - t0


def pick_file(src: str) -> str:
    """The first file (sorted walk) of 0.9-1.5 MB: the one the bench edits."""
    for dirpath, dirnames, filenames in os.walk(src):
        dirnames.sort()
        for name in sorted(filenames):
            p = os.path.join(dirpath, name)
            if not os.path.islink(p) and 900_000 <= os.path.getsize(p) <= 1_500_000:
                return p
    raise SystemExit("no file of about 1 MB in the corpus")


class Worker:
    """A persistent worker fed requests by hand, as Bazel does."""

    def __init__(self) -> None:
        e = dict(os.environ, PYTHONPATH=REPO, FSTOOL_THREADS="2")
        e.pop("FSTOOL_CACHE_DIR", None)
        self.log = open(os.path.join(OUT, "worker.log"), "w")
        self.p = subprocess.Popen(FSTOOL + ["--persistent_worker", "--cache-memory=1GiB"], env=e,
                                  stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self.log, text=True)

    def run(self, args: list[str]) -> float:
        self.p.stdin.write(json.dumps({"arguments": args}) + "\n")
        self.p.stdin.flush()
        resp = json.loads(self.p.stdout.readline())
        assert resp["exitCode"] == 0, resp
        self.log.flush()
        with open(self.log.name) as f:
            return float(re.findall(r"exit 0 in ([\d.]+)s", f.read())[-1])

    def close(self) -> None:
        self.p.stdin.close()
        self.p.wait()
        self.log.close()


def main() -> None:
    src = cached_corpus()
    n, total = corpus_stats(src)
    victim = pick_file(src)
    print(f"corpus: {src}: {n} entries, {total / 2**20:.0f} MiB, {os.cpu_count()} cores; "
          f"edited: {os.path.relpath(victim, src)} ({os.path.getsize(victim)} bytes)")
    with open(victim, "rb") as f:
        original = f.read()
    st = os.stat(victim)
    rows = []
    worker = Worker()
    try:
        for comp in ("zstd", "xz"):
            img = lambda tag: os.path.join(OUT, f"rebuild-{comp}-{tag}.sqfs")  # noqa: E731
            cache = os.path.join(OUT, f"cache-{comp}")
            shutil.rmtree(cache, ignore_errors=True)
            create = lambda out: FSTOOL + ["create", "-t", "squashfs", src, "-o", out,  # noqa: E731
                                           "-O", f"compression={comp}"]
            t_none = once(create(img("none")))
            t_cold = once(create(img("cold")) + ["--cache-dir", cache])
            worker.run(create(img("worker0"))[len(FSTOOL):])
            # the edit: 64 bytes in the middle of the file, same size, same mtime
            edited = bytearray(original)
            mid = len(edited) // 2
            edited[mid:mid + 64] = b"E" * 64
            with open(victim, "wb") as f:
                f.write(edited)
            os.utime(victim, ns=(st.st_atime_ns, st.st_mtime_ns))
            try:
                t_warm = once(create(img("warm")) + ["--cache-dir", cache])
                t_worker = worker.run(create(img("worker1"))[len(FSTOOL):])
                ref = img("mksquashfs")
                if os.path.exists(ref):
                    os.unlink(ref)
                t_ref = once(["mksquashfs", src, ref, "-noappend", "-quiet", "-no-progress", "-comp", comp,
                              "-processors", "2"])
                got = subprocess.run(FSTOOL + ["cat", img("warm"), "/" + os.path.relpath(victim, src)],
                                     env=dict(os.environ, PYTHONPATH=REPO), capture_output=True, check=True).stdout
                assert got == bytes(edited), "the warm image does not hold the edited file"
                same = open(img("warm"), "rb").read() == open(img("worker1"), "rb").read()
                assert same, "worker and cache-directory rebuilds differ"
            finally:
                with open(victim, "wb") as f:
                    f.write(original)
                os.utime(victim, ns=(st.st_atime_ns, st.st_mtime_ns))
            case = f"squashfs {comp}"
            rows += [(case, "mksquashfs (scratch)", t_ref, os.path.getsize(ref)),
                     (case, "fstool no cache", t_none, os.path.getsize(img("none"))),
                     (case, "fstool cold cache", t_cold, os.path.getsize(img("cold"))),
                     (case, "fstool warm cache", t_warm, os.path.getsize(img("warm"))),
                     (case, "fstool worker (warm)", t_worker, os.path.getsize(img("worker1")))]
            print(f"{comp}: cold/none {t_cold / t_none:.3f}, warm/mksquashfs {t_warm / t_ref:.3f}, "
                  f"worker/mksquashfs {t_worker / t_ref:.3f}", flush=True)
    finally:
        worker.close()
    table("Rebuild after editing one 1 MB file (one run each, wall clock; ratios against mksquashfs)", rows)


if __name__ == "__main__":
    main()
