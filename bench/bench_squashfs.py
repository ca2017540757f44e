"""SquashFS: fstool against mksquashfs on the benchmark corpus, same block size and compressor.

Both use two cores (`mksquashfs -processors 2`, `FSTOOL_THREADS=2`). Prints the
best of three wall-clock runs, the image size, and ratios against mksquashfs.
"""
from __future__ import annotations

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import FSTOOL, OUT, gone, table, timed  # noqa: E402
from corpus import cached_corpus, corpus_stats  # noqa: E402


def main() -> None:
    src = cached_corpus()
    n, total = corpus_stats(src)
    print(f"corpus: {src}: {n} entries, {total / 2**20:.0f} MiB, {os.cpu_count()} cores")
    rows = []
    for comp in ("gzip", "zstd", "xz"):
        ref, ours = os.path.join(OUT, f"ref-{comp}.sqfs"), os.path.join(OUT, f"ours-{comp}.sqfs")
        ref_cmd = ["mksquashfs", src, ref, "-noappend", "-quiet", "-no-progress", "-comp", comp, "-processors", "2"]
        t_ref = timed(ref_cmd, before=gone(ref))
        t_ours = timed(FSTOOL + ["create", "-t", "squashfs", src, "-o", ours, "-O", f"compression={comp}"],
                       env={"FSTOOL_THREADS": "2"}, before=gone(ours))
        rows.append((f"squashfs {comp}", "mksquashfs", t_ref, os.path.getsize(ref)))
        rows.append((f"squashfs {comp}", "fstool", t_ours, os.path.getsize(ours)))
    table("SquashFS (best of 3, wall clock)", rows)


if __name__ == "__main__":
    main()
