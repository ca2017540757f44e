"""A deterministic benchmark corpus: real text and binaries from this machine, plus generated text.

`make_corpus(dest, total_bytes, entries)` fills dest with about `entries`
files and directories holding about `total_bytes`: first small text files (Python
sources, documentation) from sorted walks of /usr, then large binaries (shared
libraries, executables), then generated pseudo-text if the machine has too few.
Every file's mtime and mode are fixed, so every tool under test sees one tree.
"""
from __future__ import annotations

import os
import random
import shutil
import sys

TEXT_ROOTS = ("/usr/lib/python3.11", "/usr/share/doc", "/usr/share/perl", "/usr/include")
BIN_ROOTS = ("/usr/lib/x86_64-linux-gnu", "/usr/bin", "/usr/sbin", "/usr/libexec")
MTIME = 1_700_000_000
WORDS = ("the of and to in is that for it as was with be by on not he this are or his from at which but have "
         "an they you were their one all we can her has there been if more when will would who so no kernel "
         "inode block extent journal superblock directory fragment table partition sector cluster").split()


def _walk(roots, max_size):
    for root in roots:
        for dirpath, dirnames, filenames in os.walk(root):
            dirnames.sort()
            for name in sorted(filenames):
                p = os.path.join(dirpath, name)
                try:
                    st = os.lstat(p)
                except OSError:
                    continue
                if os.path.isfile(p) and not os.path.islink(p) and 0 < st.st_size <= max_size \
                        and os.access(p, os.R_OK):
                    yield root, p, st.st_size


def _place(src_root, path, dest, tag):
    rel = os.path.relpath(path, src_root)
    out = os.path.join(dest, tag, rel)
    os.makedirs(os.path.dirname(out), exist_ok=True)
    shutil.copyfile(path, out)
    return out


def make_corpus(dest_dir: str, total_bytes: int = 250 << 20, entries: int = 15000) -> None:
    os.makedirs(dest_dir, exist_ok=True)
    count = 0
    used = 0
    small_budget = int(entries * 0.85)
    for root, p, size in _walk(TEXT_ROOTS, 256 << 10):
        if count >= small_budget or used + size > total_bytes // 3:
            break
        _place(root, p, dest_dir, "text" + root.replace("/", "_"))
        count += 1
        used += size
    for root, p, size in _walk(BIN_ROOTS, 32 << 20):
        if count >= entries or used >= total_bytes:
            break
        if used + size > total_bytes:
            continue
        _place(root, p, dest_dir, "bin" + root.replace("/", "_"))
        count += 1
        used += size
    rng = random.Random(1234)
    n = 0
    while used < total_bytes or count < entries * 0.9:
        size = min(rng.choice((2_000, 9_000, 40_000, 700_000)), max(1, total_bytes - used))
        d = os.path.join(dest_dir, "gen", f"d{n // 200:03d}")
        os.makedirs(d, exist_ok=True)
        words = []
        length = 0
        while length < size:
            w = rng.choice(WORDS)
            words.append(w)
            length += len(w) + 1
        with open(os.path.join(d, f"f{n:05d}.txt"), "w") as f:
            f.write(" ".join(words)[:size])
        used += size
        count += 1
        n += 1
    for dirpath, dirnames, filenames in os.walk(dest_dir):
        for name in filenames + dirnames:
            p = os.path.join(dirpath, name)
            os.chmod(p, 0o755 if os.path.isdir(p) or os.access(p, os.X_OK) else 0o644)
            os.utime(p, (MTIME, MTIME), follow_symlinks=False)
    os.utime(dest_dir, (MTIME, MTIME))


def corpus_stats(path: str) -> tuple[int, int]:
    n = total = 0
    for dirpath, dirnames, filenames in os.walk(path):
        n += len(dirnames) + len(filenames)
        for f in filenames:
            total += os.lstat(os.path.join(dirpath, f)).st_size
    return n, total


if __name__ == "__main__":
    dest = sys.argv[1] if len(sys.argv) > 1 else "bench/out/corpus"
    make_corpus(dest)
    n, total = corpus_stats(dest)
    print(f"{dest}: {n} entries, {total / 1e6:.1f} MB")


def cached_corpus(total_bytes: int = 250 << 20, entries: int = 15000) -> str:
    """The corpus under bench/out/, built once per (size, entries) and reused afterwards."""
    here = os.path.dirname(os.path.abspath(__file__))
    dest = os.path.join(here, "out", f"corpus-{total_bytes >> 20}M-{entries}")
    stamp = dest + ".done"
    if not os.path.exists(stamp):
        shutil.rmtree(dest, ignore_errors=True)
        make_corpus(dest, total_bytes, entries)
        open(stamp, "w").close()
    return dest
