"""genext2fs-style device tables (`device_table = "devs.txt"`, `-D FILE`).

Each non-comment line has genext2fs's ten columns:

    <path> <type> <mode> <uid> <gid> <major> <minor> <start> <inc> <count>

type is f (regular file), d (directory), c (char device), b (block device) or
p (fifo); mode is octal; '-' stands for 0. With count > 0 the line makes count
nodes named path+N for N = start .. start+count-1, minor numbers stepping by
inc, e.g. `/dev/hda b 640 0 0 3 1 1 1 4` makes hda1..hda4 (3,1)..(3,4). An
existing entry of the same kind keeps its content and takes the line's mode and
owner; a missing directory or file is created (a file empty). Errors name the
file and line.
"""
from __future__ import annotations

from ..errors import InputError
from ..tree import FileSource, Kind, Node, Tree

TYPES = {"f": Kind.FILE, "d": Kind.DIR, "c": Kind.CHR, "b": Kind.BLK, "p": Kind.FIFO}


def _num(v: str, where: str, what: str, base: int = 10) -> int:
    if v == "-":
        return 0
    try:
        n = int(v, base)
    except ValueError:
        raise InputError(f"{what} {v!r} is not a{'n octal' if base == 8 else ''} number", where=where) from None
    if n < 0:
        raise InputError(f"{what} must not be negative", where=where)
    return n


def parse_device_table(text: str, name: str) -> list[tuple[str, Kind, int, int, int, int, int]]:
    """(path, kind, mode, uid, gid, major, minor) for every node the table makes."""
    out = []
    for lineno, line in enumerate(text.splitlines(), 1):
        line = line.split("#", 1)[0].strip() if line.lstrip().startswith("#") else line.strip()
        if not line:
            continue
        where = f"{name}:{lineno}"
        cols = line.split()
        if len(cols) != 10:
            raise InputError(f"expected 10 columns (path type mode uid gid major minor start inc "
                             f"count), got {len(cols)}", where=where)
        path, t, mode, uid, gid, major, minor, start, inc, count = cols
        kind = TYPES.get(t)
        if kind is None:
            raise InputError(f"unknown type {t!r} (one of f d c b p)", where=where)
        m = _num(mode, where, "mode", 8)
        if m > 0o7777:
            raise InputError(f"mode {mode} has bits beyond 07777", where=where)
        u, g = _num(uid, where, "uid"), _num(gid, where, "gid")
        ma, mi = _num(major, where, "major"), _num(minor, where, "minor")
        s, step, n = _num(start, where, "start"), _num(inc, where, "inc"), _num(count, where, "count")
        if not path.startswith("/"):
            raise InputError(f"path {path!r} must be absolute", where=where)
        if n == 0:
            out.append((path, kind, m, u, g, ma, mi, where))
        else:
            if kind not in (Kind.CHR, Kind.BLK):
                raise InputError("a count is only allowed for c and b lines", where=where)
            for i in range(s, s + n):
                out.append((f"{path}{i}", kind, m, u, g, ma, mi + (i - s) * step, where))
    return out


def apply_device_table(tree: Tree, path: str) -> None:
    try:
        with open(path, encoding="utf-8") as f:
            text = f.read()
    except OSError as e:
        raise InputError(e.strerror or str(e), where=path) from None
    except UnicodeDecodeError:
        raise InputError("not a UTF-8 text file", where=path) from None
    for dest, kind, mode, uid, gid, major, minor, where in parse_device_table(text, path):
        old = tree.lookup(dest)
        if old is not None:
            if old.kind is not kind:
                raise InputError(f"{dest} is already a {old.kind.value}, the table makes it a "
                                 f"{kind.value}", where=where)
            old.mode, old.uid, old.gid = mode, uid, gid
            if kind in (Kind.CHR, Kind.BLK):
                old.rdev = (major, minor)
            continue
        node = Node(kind, mode=mode, uid=uid, gid=gid, rdev=(major, minor), origin=where)
        if kind is Kind.FILE:
            node.source = FileSource(None, 0)
        tree.add(dest, node, where=where)
    tree.invalidate()
