"""The rebuild through Bazel (issue 19): the bench corpus as a squashfs_image (zstd-15), built with
the persistent worker (`--config=worker`, Bazel 4.2.3 offline as the tests run it), then one
1 MB file edited and rebuilt: the SquashfsImage action's wall time with the worker's in-memory
block cache, and, after a second edit, the same action as a plain sandboxed spawn.

Uses the tests' Bazel harness (tests/test_bazel.py: a fresh checkout and output base under
bench/out/). The corpus is copied into the checkout (names with a space left out: Bazel 4
labels cannot hold them). One run each.
"""
from __future__ import annotations

import os
import shutil
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.join(os.path.dirname(HERE), "tests"))
from common import OUT  # noqa: E402
from corpus import cached_corpus  # noqa: E402
from bench_rebuild import pick_file  # noqa: E402
import test_bazel as tb  # noqa: E402

BUILD = '''
load("@rules_fstool//rules:defs.bzl", "squashfs_image")

squashfs_image(
    name = "img",
    srcs = glob(["corpus/**"]),
    compression = "zstd",
    strip_prefix = "corpus",
)
'''


def spawn_time(result, mnemonic: str) -> str:
    for s in result.executed:
        if s["mnemonic"] == mnemonic:
            return f"{s.get('runner', '?')}, {s.get('walltime', '?')}"
    return "not run"


def main() -> None:
    src = cached_corpus()
    root = os.path.join(OUT, "bazel-rebuild")
    shutil.rmtree(root, ignore_errors=True)
    ws = tb.make_checkout(os.path.join(root, "checkout"))
    pkg = os.path.join(ws, "examples", "benchimg")
    shutil.copytree(src, os.path.join(pkg, "corpus"),
                    ignore=lambda d, names: [n for n in names if " " in n])
    with open(os.path.join(pkg, "BUILD.bazel"), "w") as f:
        f.write(BUILD)
    victim = pick_file(os.path.join(pkg, "corpus"))
    bazel = tb.Bazel(os.path.join(ws, "examples"), os.path.join(root, "obase"), os.path.join(root, "user_root"))
    try:
        def build(*flags):
            t0 = time.perf_counter()
            r = bazel.ok("//benchimg:img", *flags)
            return r, time.perf_counter() - t0

        r, t = build("--config=worker")
        print(f"first build, worker: bazel build {t:.1f} s; action: {spawn_time(r, 'SquashfsImage')}", flush=True)

        def edit(byte: bytes) -> None:
            with open(victim, "r+b") as f:
                f.seek(os.path.getsize(victim) // 2)
                f.write(byte * 64)

        edit(b"E")
        r, t = build("--config=worker")
        print(f"after an edit, worker: bazel build {t:.1f} s; action: {spawn_time(r, 'SquashfsImage')}", flush=True)
        edit(b"F")
        r, t = build("--strategy=SquashfsImage=sandboxed")
        print(f"after an edit, plain sandboxed action: bazel build {t:.1f} s; action: "
              f"{spawn_time(r, 'SquashfsImage')}", flush=True)
        logs = os.path.join(bazel.output_base, "bazel-workers")
        for n in sorted(os.listdir(logs)):
            if n.endswith(".log"):
                with open(os.path.join(logs, n)) as f:
                    print(f"{n}:\n{f.read()}")
    finally:
        bazel.shutdown()


if __name__ == "__main__":
    main()
