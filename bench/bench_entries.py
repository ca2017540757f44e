"""Many small entries: wall time and peak RSS per format for a tar of N empty files.

The tar holds N/1000 directories of 1000 empty files each (names, owners and times
fixed, so the archive is the same bytes on every machine). Each format is built once
with `fstool create -q` under `/usr/bin/time`; the table gives seconds, peak RSS and
the bytes per entry above a 1,000-entry baseline, ((RSS(N) - RSS(1000)) / N), which is
what the issue's budget (<= 1 KiB per entry) is about.

    python bench/bench_entries.py                       # 200,000 entries, every writer
    python bench/bench_entries.py -n 1000000 squashfs ext4
    python bench/bench_entries.py --tree-only           # the loaded Tree alone
"""
from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tarfile
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import FSTOOL, OUT, REPO  # noqa: E402

FORMATS = ["squashfs", "ext4", "erofs", "f2fs", "xfs", "exfat", "fat32", "cpio", "tar", "iso9660"]
PER_DIR = 1000
MTIME = 1_700_000_000


def make_tar(path: str, entries: int) -> None:
    """entries // PER_DIR directories d000000.. of PER_DIR empty files f0000.. each."""
    dirs = max(1, entries // PER_DIR)
    tmp = path + ".part"
    with open(tmp, "wb") as f:
        for d in range(dirs):
            info = tarfile.TarInfo(f"d{d:06d}")
            info.type, info.mode, info.mtime = tarfile.DIRTYPE, 0o755, MTIME
            chunks = [info.tobuf(tarfile.USTAR_FORMAT)]
            for i in range(PER_DIR):
                info = tarfile.TarInfo(f"d{d:06d}/f{i:04d}")
                info.mode, info.mtime = 0o644, MTIME
                chunks.append(info.tobuf(tarfile.USTAR_FORMAT))
            f.write(b"".join(chunks))
        f.write(bytes(1024))
    os.replace(tmp, path)


def cached_tar(entries: int) -> str:
    os.makedirs(OUT, exist_ok=True)
    path = os.path.join(OUT, f"entries-{entries}.tar")
    if not os.path.exists(path):
        make_tar(path, entries)
    return path


TREE_ONLY = ("import sys, fstool.inputs.tarball as t; tree = t.load_tar(sys.argv[1])")


def measure(cmd: list[str]) -> tuple[float, int]:
    """(seconds, peak RSS in bytes) of one run of cmd."""
    with tempfile.NamedTemporaryFile("r") as rep:
        subprocess.run(["/usr/bin/time", "-o", rep.name, "-f", "%e %M"] + cmd, check=True,
                       env=dict(os.environ, PYTHONPATH=REPO), stdout=subprocess.DEVNULL)
        secs, kb = rep.read().split()[-2:]
    return float(secs), int(kb) * 1024


def run(fmt: str, tar: str) -> tuple[float, int]:
    if fmt == "tree":
        return measure([sys.executable, "-c", TREE_ONLY, tar])
    out = os.path.join(OUT, f"entries.{fmt}.img")
    try:
        return measure(FSTOOL + ["create", "-q", "-t", fmt, tar, "-o", out])
    finally:
        if os.path.exists(out):
            os.unlink(out)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("-n", "--entries", type=int, default=200_000)
    ap.add_argument("--tree-only", action="store_true", help="measure loading the tar only")
    ap.add_argument("formats", nargs="*", help=f"default: {' '.join(FORMATS)}")
    args = ap.parse_args()
    formats = ["tree"] if args.tree_only else (args.formats or FORMATS)
    small, big = cached_tar(PER_DIR), cached_tar(args.entries)
    n = (args.entries // PER_DIR) * (PER_DIR + 1)
    print(f"{n} entries ({big}), {os.cpu_count()} cores")
    print(f"{'format':<10}{'time s':>9}{'RSS MiB':>10}{'B/entry':>10}")
    for fmt in formats:
        _, base = run(fmt, small)
        secs, rss = run(fmt, big)
        print(f"{fmt:<10}{secs:>9.2f}{rss / 2**20:>10.0f}{(rss - base) / n:>10.0f}")
        sys.stdout.flush()


if __name__ == "__main__":
    main()
