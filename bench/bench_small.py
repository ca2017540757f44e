"""Many small files: per-entry cost against the C tools.

A synthetic tree of N files (default 200,000) of 0-8 KiB of pseudo-text, in N/100 directories,
one of which holds a quarter of all files (50,000 at the default), as a package cache or a
mail spool does. SquashFS zstd against `mksquashfs -processors 2`, ext4 (4 KiB blocks) against
`mkfs.ext4 -d`, FAT32 against `mkfs.vfat` + `mcopy -s`: best of three wall-clock runs, ratios
against the C tool of each case (the C tools' ext4 and FAT runs, over a minute each, once).
Usage: bench_small.py [N] [formats...] (squashfs ext4 fat).
"""
from __future__ import annotations

import os
import random
import subprocess
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import FSTOOL, OUT, REPO, fresh, gone, table, timed, used  # noqa: E402
from corpus import MTIME, WORDS  # noqa: E402


def small_tree(files: int) -> str:
    """The tree under bench/out/, made once per size (deterministic: seeded, fixed times)."""
    dest = os.path.join(OUT, f"small-v2-{files}")
    stamp = dest + ".done"
    if os.path.exists(stamp):
        return dest
    subprocess.run(["rm", "-rf", dest], check=True)
    rng = random.Random(files)
    text = " ".join(rng.choice(WORDS) for _ in range(4000)).encode()
    dirs = max(1, files // 100)
    big = files // 4
    for i in range(files):
        d = os.path.join(dest, "spool") if i < big else os.path.join(dest, f"d{i % dirs:04d}")
        # the big directory's names are FAT short names (F000001): FAT holds 65,536 entries a
        # directory, and a lower-case name takes two (a long-name entry and its short alias)
        name = f"F{i:06d}" if i < big else f"f{i:06d}"
        if i < 2 or i == big or i - big < dirs:
            os.makedirs(d, exist_ok=True)
        size = rng.randrange(0, 8193)
        start = rng.randrange(0, len(text) - 8192)
        with open(os.path.join(d, name), "wb") as f:
            f.write(text[start:start + size])
    for dirpath, dirnames, filenames in os.walk(dest):
        for name in filenames + dirnames:
            os.utime(os.path.join(dirpath, name), (MTIME, MTIME))
            os.chmod(os.path.join(dirpath, name), 0o755 if name in dirnames else 0o644)
    os.utime(dest, (MTIME, MTIME))
    open(stamp, "w").close()
    return dest


def main() -> None:
    files = int(sys.argv[1]) if len(sys.argv) > 1 else 200_000
    formats = sys.argv[2:] or ["squashfs", "ext4", "fat"]
    src = small_tree(files)
    print(f"tree: {src}: {files} files, {os.cpu_count()} cores")
    env = dict(os.environ, PYTHONPATH=REPO)
    rows = []
    if "squashfs" in formats:
        ref, ours = os.path.join(OUT, "small-ref.sqfs"), os.path.join(OUT, "small-ours.sqfs")
        t_ref = timed(["mksquashfs", src, ref, "-noappend", "-quiet", "-no-progress", "-comp", "zstd",
                       "-processors", "2"], before=gone(ref))
        t_ours = timed(FSTOOL + ["create", "-q", "-t", "squashfs", src, "-o", ours, "-O", "compression=zstd"],
                       env={"FSTOOL_THREADS": "2"}, before=gone(ours))
        rows += [("squashfs zstd", "mksquashfs", t_ref, os.path.getsize(ref)),
                 ("squashfs zstd", "fstool", t_ours, os.path.getsize(ours))]
    if "ext4" in formats:
        probe = os.path.join(OUT, "small-probe.ext4")
        subprocess.run(FSTOOL + ["create", "-q", "-t", "ext4", src, "-o", probe, "-O", "block_size=4096"],
                       check=True, env=env)
        size = os.path.getsize(probe) * 11 // 10 // 4096 * 4096
        with open(probe, "rb") as f:  # mke2fs's default of one inode per 16 KiB is too few here:
            f.seek(1024)              # both get fstool's inode count (s_inodes_count)
            inodes = int.from_bytes(f.read(4), "little")
        ref, ours = os.path.join(OUT, "small-ref.ext4"), os.path.join(OUT, "small-ours.ext4")
        t_ref = timed(["mke2fs", "-q", "-F", "-t", "ext4", "-b", "4096", "-N", str(inodes), "-d", src, ref,
                       str(size // 4096)], runs=1, before=fresh(ref, size))  # a minute and more: once
        t_ours = timed(FSTOOL + ["create", "-q", "-t", "ext4", src, "-o", ours, "--size", str(size),
                                 "-O", "block_size=4096"], before=gone(ours))
        rows += [("ext4 4k", "mkfs.ext4 -d", t_ref, used(ref)), ("ext4 4k", "fstool", t_ours, used(ours))]
    if "fat" in formats:
        ref, ours = os.path.join(OUT, "small-ref.vfat"), os.path.join(OUT, "small-ours.vfat")
        mib = 2048
        script = (f"truncate -s {mib}M {ref} && mkfs.vfat -F 32 {ref} >/dev/null && "
                  f"MTOOLS_SKIP_CHECK=1 mcopy -s -i {ref} {src}/* ::/")
        t_ref = timed(["sh", "-c", script], runs=1, before=gone(ref))  # slow: once
        t_ours = timed(FSTOOL + ["create", "-q", "-t", "fat32", src, "-o", ours, "--size", f"{mib}MiB"],
                       before=gone(ours))
        rows += [("fat32", "mkfs.vfat + mcopy", t_ref, used(ref)), ("fat32", "fstool", t_ours, used(ours))]
    table(f"{files} small files (best of 3, wall clock)", rows)


if __name__ == "__main__":
    main()
