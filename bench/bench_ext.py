"""ext4/ext2: fstool against mkfs.ext4 -d and genext2fs on the benchmark corpus.

All tools get the same image size and block size: fstool's own auto size for the corpus
(plus 10% room, since genext2fs and mke2fs need some slack), rounded to whole blocks.
mkfs.ext4 writes into a sparse file created beforehand, as a build script would.
Prints the best of three wall-clock runs, the space the image takes on the host, and
ratios against the C tool of each case.
"""
from __future__ import annotations

import os
import subprocess
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import FSTOOL, OUT, REPO, fresh, gone, table, timed, used  # noqa: E402
from corpus import cached_corpus, corpus_stats  # noqa: E402



def main() -> None:
    src = cached_corpus()
    n, total = corpus_stats(src)
    print(f"corpus: {src}: {n} entries, {total / 2**20:.0f} MiB, {os.cpu_count()} cores")
    probe = os.path.join(OUT, "ext-probe.img")
    subprocess.run(FSTOOL + ["create", "-q", "-t", "ext4", src, "-o", probe], check=True,
                   env=dict(os.environ, PYTHONPATH=REPO))
    with open(probe, "rb") as f:
        f.seek(1024 + 24)
        bs = 1024 << int.from_bytes(f.read(4), "little")
    size = os.path.getsize(probe) * 11 // 10 // bs * bs
    blocks = size // bs
    print(f"image: {size / 2**20:.0f} MiB, {bs}-byte blocks")
    rows = []
    for t in ("ext4", "ext2"):  # auto block size (1 KiB for this corpus's image size)
        ours = os.path.join(OUT, f"ours.{t}")
        ref = os.path.join(OUT, f"ref-mke2fs.{t}")
        t_ref = timed(["mke2fs", "-q", "-F", "-t", t, "-b", str(bs), "-d", src, ref, str(blocks)],
                      before=fresh(ref, size))
        rows.append((t, f"mkfs.{t} -d", t_ref, used(ref)))
        if t == "ext2":
            gen = os.path.join(OUT, "ref-genext2fs.ext2")
            t_gen = timed(["genext2fs", "-B", str(bs), "-b", str(blocks), "-d", src, gen],
                          before=gone(gen))
            rows.append((t, "genext2fs", t_gen, used(gen)))
        t_ours = timed(FSTOOL + ["create", "-t", t, src, "-o", ours, "--size", str(size),
                                 "-O", f"block_size={bs}"], before=gone(ours))
        rows.append((t, "fstool", t_ours, used(ours)))
    # the case: 4 KiB blocks in a 400 MiB image
    size4 = 400 << 20
    ref, ours = os.path.join(OUT, "ref-mke2fs-4k.ext4"), os.path.join(OUT, "ours-4k.ext4")
    t_ref = timed(["mke2fs", "-q", "-F", "-t", "ext4", "-b", "4096", "-d", src, ref, str(size4 // 4096)],
                  before=fresh(ref, size4))
    rows.append(("ext4 4k 400MiB", "mkfs.ext4 -d", t_ref, used(ref)))
    t_ours = timed(FSTOOL + ["create", "-t", "ext4", src, "-o", ours, "--size", str(size4),
                             "-O", "block_size=4096"], before=gone(ours))
    rows.append(("ext4 4k 400MiB", "fstool", t_ours, used(ours)))
    table("ext (best of 3, wall clock; size = space used on the host)", rows)


if __name__ == "__main__":
    main()
