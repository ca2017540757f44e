"""FAT: fstool against mkfs.vfat + mcopy -s on an ESP-like tree of about 300 MB.

Same image size and FAT type for both (FAT32, 512 MiB). Prints the best of three wall-clock
runs and ratios against the mtools pipeline.
"""
from __future__ import annotations

import os
import subprocess
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import FSTOOL, OUT, gone, table, timed, used  # noqa: E402
from corpus import cached_corpus, corpus_stats  # noqa: E402

SIZE_MIB = 512


def main() -> None:
    src = cached_corpus(300 << 20, 3000)
    n, total = corpus_stats(src)
    print(f"corpus: {src}: {n} entries, {total / 2**20:.0f} MiB")
    ref, ours = os.path.join(OUT, "ref.vfat"), os.path.join(OUT, "ours.vfat")
    # the last run's image is removed untimed for both tools (freeing 300 MB is the host's work)
    script = (f"truncate -s {SIZE_MIB}M {ref} && mkfs.vfat -F 32 -n ESP {ref} >/dev/null && "
              f"MTOOLS_SKIP_CHECK=1 mcopy -s -i {ref} {src}/* ::/")
    t_ref = timed(["sh", "-c", script], before=gone(ref))
    t_ours = timed(FSTOOL + ["create", "-t", "fat32", src, "-o", ours, "--size", f"{SIZE_MIB}MiB",
                             "--label", "ESP"], before=gone(ours))
    for img in (ref, ours):
        subprocess.run(["fsck.vfat", "-n", img], check=True, stdout=subprocess.DEVNULL)
    table("FAT32 (best of 3, wall clock)", [
        ("fat32 512MiB", "mkfs.vfat + mcopy", t_ref, used(ref)),
        ("fat32 512MiB", "fstool", t_ours, used(ours)),
    ])


if __name__ == "__main__":
    main()
