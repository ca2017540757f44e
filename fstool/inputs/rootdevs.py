"""`rootdevs`: the /dev nodes the Rust fstool adds, so an image boots without devtmpfs.

minimal: console, null, zero, ptmx, tty, fuse, random, urandom.
standard: minimal plus tty0-15, ttyS0-3, kmsg, mem, port, and hda-hdd / sda-sdd
with partitions 1-4. Entries already in the tree are kept as they are (the
input wins); the nodes are root-owned with mtime 0 until the metadata rules run.
"""
from __future__ import annotations

from ..tree import Kind, Node, Tree

MINIMAL = [
    ("console", Kind.CHR, 0o600, 5, 1), ("null", Kind.CHR, 0o666, 1, 3), ("zero", Kind.CHR, 0o666, 1, 5),
    ("ptmx", Kind.CHR, 0o666, 5, 2), ("tty", Kind.CHR, 0o666, 5, 0), ("fuse", Kind.CHR, 0o666, 10, 229),
    ("random", Kind.CHR, 0o666, 1, 8), ("urandom", Kind.CHR, 0o666, 1, 9),
]


def _standard() -> list[tuple[str, Kind, int, int, int]]:
    out = list(MINIMAL)
    out += [(f"tty{i}", Kind.CHR, 0o620, 4, i) for i in range(16)]
    out += [(f"ttyS{i}", Kind.CHR, 0o660, 4, 64 + i) for i in range(4)]
    out += [("kmsg", Kind.CHR, 0o644, 1, 11), ("mem", Kind.CHR, 0o640, 1, 1), ("port", Kind.CHR, 0o640, 1, 4)]
    # IDE: hda/hdb on major 3, hdc/hdd on 22, 64 minors per disk; SCSI: 16 minors per disk on 8.
    for letter, major, base in (("a", 3, 0), ("b", 3, 64), ("c", 22, 0), ("d", 22, 64)):
        out += [(f"hd{letter}{p or ''}", Kind.BLK, 0o660, major, base + p) for p in range(5)]
    for i, letter in enumerate("abcd"):
        out += [(f"sd{letter}{p or ''}", Kind.BLK, 0o660, 8, 16 * i + p) for p in range(5)]
    return out


def device_list(level: str) -> list[tuple[str, Kind, int, int, int]]:
    return {"none": [], "minimal": MINIMAL, "standard": _standard()}[level]


def add_rootdevs(tree: Tree, level: str) -> None:
    devs = device_list(level)
    if not devs:
        return
    if tree.lookup("/dev") is None:
        tree.add("/dev", Node(Kind.DIR, mode=0o755, origin=f"rootdevs={level}"))
    for name, kind, mode, major, minor in devs:
        path = f"/dev/{name}"
        if tree.lookup(path) is None:
            tree.add(path, Node(kind, mode=mode, rdev=(major, minor), origin=f"rootdevs={level}"),
                     where=path)
    tree.invalidate()
