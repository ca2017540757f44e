"""EROFS: fstool against mkfs.erofs on the benchmark corpus, uncompressed and lz4hc with the
same physical-cluster size.

mkfs.erofs (1.5) is single-threaded; fstool gets `FSTOOL_THREADS=2`. Prints the best of
three wall-clock runs, the image size, and ratios against mkfs.erofs.
Usage: bench_erofs.py [MiB [entries]] (default: the shared 250 MiB, 15000-entry corpus).
"""
from __future__ import annotations

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import FSTOOL, OUT, gone, table, timed  # noqa: E402
from corpus import cached_corpus, corpus_stats  # noqa: E402


def main() -> None:
    mib = int(sys.argv[1]) if len(sys.argv) > 1 else 250
    entries = int(sys.argv[2]) if len(sys.argv) > 2 else 15000
    src = cached_corpus(mib << 20, entries)
    n, total = corpus_stats(src)
    print(f"corpus: {src}: {n} entries, {total / 2**20:.0f} MiB, {os.cpu_count()} cores")
    rows = []
    cases = [("none", [], []), ("lz4hc", ["-zlz4hc", "-C4096"], ["-O", "compression=lz4hc,pcluster_size=4096"]),
             ("lz4hc -C65536", ["-zlz4hc", "-C65536"], ["-O", "compression=lz4hc,pcluster_size=65536"])]
    for name, ref_args, our_args in cases:
        tag = name.replace(" ", "")
        ref, ours = os.path.join(OUT, f"ref-{tag}.erofs"), os.path.join(OUT, f"ours-{tag}.erofs")
        t_ref = timed(["mkfs.erofs", "--quiet", *ref_args, ref, src],
                      before=gone(ref))
        t_ours = timed(FSTOOL + ["create", "-t", "erofs", src, "-o", ours, *our_args],
                       env={"FSTOOL_THREADS": "2"}, before=gone(ours))
        rows.append((f"erofs {name}", "mkfs.erofs", t_ref, os.path.getsize(ref)))
        rows.append((f"erofs {name}", "fstool", t_ours, os.path.getsize(ours)))
    table("EROFS (best of 3, wall clock)", rows)


if __name__ == "__main__":
    main()
