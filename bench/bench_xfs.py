"""XFS: fstool against `mkfs.xfs -p protofile` on the benchmark corpus.

mkfs.xfs 6.1 cannot read a directory, only a prototype file, which is generated from the
corpus first (not timed; entries a protofile cannot name, such as names with spaces, are left
out of it, so mkfs.xfs gets slightly less to do). Both tools get the same device size:
fstool's auto size plus 10%, and the same geometry flags (reflink off, as fstool writes).
mkfs.xfs writes into a sparse file created beforehand, as a build script would. Prints the best
of three wall-clock runs, the space the image takes on the host, and ratios against mkfs.xfs.
"""
from __future__ import annotations

import os
import subprocess
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "tests"))
from common import FSTOOL, OUT, REPO, fresh, gone, table, timed, used  # noqa: E402
from corpus import cached_corpus, corpus_stats  # noqa: E402
from xfsproto import write_protofile  # noqa: E402



def main() -> None:
    src = cached_corpus()
    n, total = corpus_stats(src)
    print(f"corpus: {src}: {n} entries, {total / 2**20:.0f} MiB, {os.cpu_count()} cores")
    probe = os.path.join(OUT, "xfs-probe.img")
    subprocess.run(FSTOOL + ["create", "-q", "-t", "xfs", src, "-o", probe], check=True,
                   env=dict(os.environ, PYTHONPATH=REPO))
    size = os.path.getsize(probe) * 11 // 10 // 4096 * 4096
    os.unlink(probe)
    proto = os.path.join(OUT, "corpus.proto")
    skipped = write_protofile(src, proto)
    print(f"image: {size / 2**20:.0f} MiB; protofile leaves out {len(skipped)} entries")
    ref = os.path.join(OUT, "ref-mkfs.xfs")
    ours = os.path.join(OUT, "ours.xfs")
    env = {"TEST_DIR": "1", "TEST_DEV": "1", "QA_CHECK_FS": "1"}  # let mkfs.xfs make < 300 MB
    t_ref = timed(["mkfs.xfs", "-q", "-f", "-m", "reflink=0", "-p", proto, ref], env=env,
                  before=fresh(ref, size))
    t_ours = timed(FSTOOL + ["create", "-t", "xfs", src, "-o", ours, "--size", str(size)], before=gone(ours))
    table("xfs (best of 3, wall clock; size = space used on the host)",
          [("xfs", "mkfs.xfs -p", t_ref, used(ref)), ("xfs", "fstool", t_ours, used(ours))])


if __name__ == "__main__":
    main()
