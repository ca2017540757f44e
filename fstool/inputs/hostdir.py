"""Host directory input: walk a directory into a Tree.

Walked in sorted order (never readdir order); hardlinks found by (st_dev,
st_ino) become one shared Node; xattrs are read from the host; file bytes are
not read here (a FileSource names the path, holes found later by SEEK_DATA).
Defaults mirror `mke2fs -d` and `mksquashfs`: mode, owner, mtime and xattrs kept.
"""
from __future__ import annotations

import os
import stat

from ..errors import InputError
from ..image import ChildResult, may_fork as _may_fork
from ..tree import (
    EMPTY_SOURCE, NO_XATTRS, FileSource, Kind, LazyOrigin, Node, Tree, check_name, encode_name,
)


def read_xattrs(path: str) -> dict[str, bytes]:
    try:
        names = os.listxattr(path, follow_symlinks=False)
    except OSError:
        return {}
    if not names:  # most entries
        return {}
    out = {}
    for name in sorted(names):
        try:
            out[name] = os.getxattr(path, name, follow_symlinks=False)
        except OSError:
            continue
    return out


def _keep(v: int, _same: int) -> int:
    return v


def node_from_stat(path: str, st: os.stat_result, *, xattrs: bool = True,
                   origin: LazyOrigin | None = None, ints: dict[int, int] | None = None) -> Node:
    """The node of one host entry. `origin` (shared by a whole walk) stands for `path` in
    error messages; `ints` makes equal modes, owners and times one int object each.
    It runs once per entry of every walk: the node's fields are given in order."""
    st_mode = st.st_mode
    kind = Kind.from_mode(st_mode)
    i = ints.setdefault if ints is not None else _keep
    sec, ns = divmod(st.st_mtime_ns, 1_000_000_000)
    mode, uid, gid = st_mode & 0o7777, st.st_uid, st.st_gid
    # Node's fields in order: kind, mode, uid, gid, mtime, mtime_ns, xattrs, source, target,
    # rdev, children, origin
    node = Node(kind, i(mode, mode), i(uid, uid), i(gid, gid), i(sec, sec), i(ns, ns), NO_XATTRS,
                None, None, (0, 0), {} if kind is Kind.DIR else None, path if origin is None else origin)
    if xattrs:
        node.update_xattrs(read_xattrs(path))  # none (most entries): the shared empty mapping stays
    if kind is Kind.FILE:
        node.source = FileSource(path, st.st_size) if st.st_size else EMPTY_SOURCE
    elif kind is Kind.SYMLINK:
        node.target = os.readlink(path)
    elif kind is Kind.CHR or kind is Kind.BLK:
        node.rdev = (os.major(st.st_rdev), os.minor(st.st_rdev))
    return node


def load_dir(root: str, tree: Tree | None = None, prefix: str = "/") -> Tree:
    """Add the contents of host directory `root` under `prefix` of tree."""
    tree = tree or Tree()
    try:
        st = os.stat(root)  # a symlink given as the root is followed; links inside are kept
    except OSError as e:
        raise InputError(e.strerror or str(e), where=root) from None
    if not stat.S_ISDIR(st.st_mode):
        raise InputError("not a directory", where=root)
    top = node_from_stat(root, st)
    tree.add(prefix, top)
    dest_root = tree.lookup(prefix)
    inodes: dict[tuple[int, int], Node] = {}
    # shared by every entry: the origin (the host path is rebuilt for an error message only)
    # and one int object per distinct mode, owner and time
    label = root.rstrip("/") or "/"
    origin = LazyOrigin(label, dest_root, sep="" if label.endswith("/") else "/")
    ints: dict[int, int] = {}

    # xattrs are read here until the walk has met FORK_AFTER entries; from then on a child
    # process (XattrScan) reads every entry's, beside the walk, where it may fork
    scanner: XattrScan | None = None
    inline = forkable = True
    count = 0
    # an explicit stack, not recursion: a host tree thousands of levels deep is just deep
    stack = [(root, dest_root)]
    try:
        while stack:
            if inline and forkable and count >= FORK_AFTER and _may_fork():
                try:
                    scanner, inline = XattrScan(root), False
                except OSError:  # no room for a child: the walk goes on reading them itself
                    forkable = False
            host, dnode = stack.pop()
            try:
                names = sorted(os.listdir(host))
                if not "".join(names).isascii():  # str order is byte order for ASCII names
                    names.sort(key=encode_name)
            except OSError as e:
                raise InputError(e.strerror or str(e), where=host) from None
            pre = host if host.endswith("/") else host + "/"
            for name in names:
                hpath = pre + name
                # the kernel never lists "", ".", ".." or a name with "/" or NUL; only the length
                # is left to check, and a name of up to 63 characters encodes to at most 252 bytes
                if len(name) > 63:
                    check_name(name, hpath)
                try:
                    st = os.lstat(hpath)
                except OSError as e:
                    raise InputError(e.strerror or str(e), where=hpath) from None
                if not stat.S_ISDIR(st.st_mode) and st.st_nlink > 1:
                    key = (st.st_dev, st.st_ino)
                    if key in inodes:
                        dnode.children[name] = inodes[key]
                        continue
                    node = node_from_stat(hpath, st, xattrs=inline, origin=origin, ints=ints)
                    inodes[key] = node
                else:
                    node = node_from_stat(hpath, st, xattrs=inline, origin=origin, ints=ints)
                dnode.children[name] = node
                if node.kind is Kind.DIR:
                    stack.append((hpath, node))
            count += len(names)
    except BaseException:
        if scanner is not None:
            scanner.close()
        raise
    if scanner is not None:
        scanner.apply(dest_root)
    tree.invalidate()
    return tree


FORK_AFTER = 2000  # entries walked before the xattrs go to a child (a fork costs a millisecond or two)


class XattrScan:
    """Every entry's xattrs under a host directory, read by a child process while the walk
    runs: listxattr is a third of the walk's time (200,000 entries: 0.37 s of 1.12), and a
    thread would have held the GIL between its calls. The child lists each directory and
    sends back the entries that have xattrs, with them (most have none); apply() puts them
    on the walked tree's nodes. If the child fails, apply() reads every entry's xattrs
    itself, as the walk did before, so the tree is the same either way."""

    def __init__(self, root: str):
        self.root = root
        self.child = ChildResult(lambda: _scan_xattrs(root))

    def apply(self, top: Node) -> None:
        found = self.child.result()
        if not isinstance(found, dict):  # read them here, entry by entry, as the walk would have
            stack = [(self.root.rstrip("/"), top)]
            while stack:
                host, d = stack.pop()
                for name, node in d.children.items():
                    hpath = f"{host}/{name}"
                    node.update_xattrs(read_xattrs(hpath))
                    if node.kind is Kind.DIR:
                        stack.append((hpath, node))
            return
        for rel, xattrs in found.items():
            node = top
            for part in rel.split("/"):
                children = node.children if node.kind is Kind.DIR else None
                node = children.get(part) if children is not None else None
                if node is None:  # gone from the walk's listing: nothing to put it on
                    break
            if node is not None:
                node.update_xattrs(xattrs)

    def close(self) -> None:
        """The walk failed before apply(): stop the child and reap it."""
        self.child.close()


def _scan_xattrs(root: str) -> dict[str, dict[str, bytes]]:
    """(path relative to root, "a/b") -> xattrs, for each entry under root that has some: the
    child's work, and only the child's, since it changes the working directory. Directories
    are listed without stat and entries never followed; it moves into each directory, so the
    kernel looks up each entry's name alone, not its whole path (200,000 entries: 0.23 s
    against 0.32 under a path of six components)."""
    out: dict[str, dict[str, bytes]] = {}
    top = os.open(root, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    stack = [""]
    while stack:
        rel = stack.pop()
        os.fchdir(top)
        if rel:
            os.chdir(rel)
        with os.scandir(".") as entries:
            for entry in entries:
                name = entry.name
                r = f"{rel}/{name}" if rel else name
                xattrs = read_xattrs(name)  # as the walk reads them: unreadable is none
                if xattrs:
                    out[r] = xattrs
                if entry.is_dir(follow_symlinks=False):
                    stack.append(r)
    return out
