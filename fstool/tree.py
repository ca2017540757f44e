"""The input-tree model that every writer consumes.

A `Tree` is a rooted hierarchy of `Node`s. A node is an *inode*: kind, mode,
owner, mtime, xattrs and, for a regular file, a `FileSource` to stream its bytes
from (a host file, or a region of a tar), never the bytes themselves. A hardlink
is the same `Node` object reachable under several names, so writers share the
inode and `Tree.nlink(node)` gives its link count.

Invariants kept here:
- names are `str` decoded with `os.fsdecode` (surrogateescape): `encode_name`
  turns them back into the exact host bytes; no name is empty, `.`/`..`, holds
  `/` or NUL, or is over 255 bytes;
- `Tree.walk()` visits entries in a deterministic order (children sorted by
  their encoded bytes), never in host `readdir` order;
- file payloads are read through `FileSource.iter_chunks` or
  `FileSource.data_segments` in bounded pieces; holes are never read;
- a node costs little more than its name (a million entries in a few hundred MB): nodes
  without xattrs share the read-only NO_XATTRS (change xattrs with Node.set_xattr and
  friends), empty files share EMPTY_SOURCE, nodes of one source share a LazyOrigin.
"""
from __future__ import annotations

import enum
import errno
import os
import stat as _stat
import sys
from dataclasses import dataclass
from typing import Iterator, Mapping

from .errors import InputError

CHUNK = 1 << 20  # file payloads stream through at most 1 MiB at a time
SEEK_DATA = getattr(os, "SEEK_DATA", 3)
SEEK_HOLE = getattr(os, "SEEK_HOLE", 4)


class Kind(enum.Enum):
    DIR = "dir"
    FILE = "file"
    SYMLINK = "symlink"
    CHR = "chr"
    BLK = "blk"
    FIFO = "fifo"
    SOCK = "sock"

    @property
    def s_ifmt(self) -> int:
        """The S_IF* type bits used by ext, squashfs and tar alike."""
        return _IFMT[self]

    @classmethod
    def from_mode(cls, st_mode: int) -> "Kind":
        kind = _KIND_OF_IFMT.get(_stat.S_IFMT(st_mode))
        if kind is None:
            raise ValueError(f"unknown file type in mode {st_mode:o}")
        return kind


_IFMT = {
    Kind.DIR: _stat.S_IFDIR, Kind.FILE: _stat.S_IFREG, Kind.SYMLINK: _stat.S_IFLNK,
    Kind.CHR: _stat.S_IFCHR, Kind.BLK: _stat.S_IFBLK, Kind.FIFO: _stat.S_IFIFO,
    Kind.SOCK: _stat.S_IFSOCK,
}
_KIND_OF_IFMT = {bits: kind for kind, bits in _IFMT.items()}


_FS_ENCODING = sys.getfilesystemencoding()
_FS_ERRORS = sys.getfilesystemencodeerrors()


def encode_name(name: str) -> bytes:
    """The on-disk bytes of a name (the host's bytes, whatever their encoding): os.fsencode,
    without its per-call lookups (it runs once per entry and writer pass)."""
    try:
        return name.encode(_FS_ENCODING, _FS_ERRORS)
    except AttributeError:
        return os.fsencode(name)


def check_name(name: str, where: str) -> None:
    raw = encode_name(name)
    if not raw or raw in (b".", b".."):
        raise InputError(f"invalid name {name!r}", where=where)
    if b"/" in raw or b"\0" in raw:
        raise InputError("name contains '/' or NUL", where=where)
    if len(raw) > 255:
        raise InputError(f"name is {len(raw)} bytes long, over the 255-byte limit", where=where)


def split_path(path: str, where: str | None = None) -> list[str]:
    """Normalise an image path ('/a//b/./c', 'a/b') into components; refuse '..'."""
    parts = []
    for comp in path.split("/"):
        if comp in ("", "."):
            continue
        if comp == "..":
            raise InputError("path climbs out with '..'", where=where or path)
        if "\0" in comp:
            raise InputError("path contains NUL", where=where or repr(path))
        parts.append(comp)
    return parts


def join_path(parts: list[str] | tuple[str, ...]) -> str:
    return "/" + "/".join(parts)


# The xattrs of every node that has none: one shared read-only mapping, not an empty dict
# per node (64 bytes each, a million times over). Change a node's xattrs with
# Node.set_xattr / drop_xattr / update_xattrs, or assign a new dict.
class _NoXattrs(dict):
    """An empty dict that refuses to change (hashable, so it can be a dataclass default)."""

    __slots__ = ()

    def __hash__(self) -> int:
        return 0

    def _read_only(self, *args, **kwargs):
        raise TypeError("NO_XATTRS is shared by many nodes: use Node.set_xattr/update_xattrs")

    __setitem__ = __delitem__ = __ior__ = pop = popitem = update = setdefault = clear = _read_only


NO_XATTRS: Mapping[str, bytes] = _NoXattrs()


@dataclass(frozen=True, slots=True)
class FileSource:
    """Where a regular file's bytes come from, without holding them.

    `path` is a host file; the file's byte `i` is at `offset + i` in it.
    `segments`, when given, lists the data extents as (file_offset, length,
    source_offset) triples; everything else is a hole. When None, holes are
    discovered in the host file with SEEK_DATA/SEEK_HOLE (only meaningful when
    offset == 0, i.e. a plain host file). `path` may be None only for size 0.
    """

    path: str | None
    size: int
    offset: int = 0
    segments: tuple[tuple[int, int, int], ...] | None = None

    def data_segments(self) -> list[tuple[int, int, int]]:
        """(file_offset, length, source_offset) of each data extent, in order."""
        if self.size == 0:
            return []
        if self.segments is None and self.offset == 0:
            fd = os.open(self.path, os.O_RDONLY)
            try:
                return self.segments_on(fd)
            finally:
                os.close(fd)
        return self.segments_on(-1)

    def segments_on(self, fd: int) -> list[tuple[int, int, int]]:
        """data_segments, a host file's holes found on fd, the file already open (one open per
        file for the callers that go on to read it)."""
        if self.segments is not None:
            return list(self.segments)
        if self.offset != 0:
            return [(0, self.size, self.offset)]
        return [(start, n, start) for start, n in data_extents(fd, self.size)]

    def iter_chunks(self, chunk: int = CHUNK) -> Iterator[tuple[int, bytes | None, int]]:
        """Yield (file_offset, data or None for a hole, length) covering [0, size).

        Data pieces are at most `chunk` bytes; holes come as one (off, None, len).
        """
        pos = 0
        if self.size == 0:
            return
        fd = os.open(self.path, os.O_RDONLY)
        try:
            for foff, length, soff in self.segments_on(fd):
                if foff > pos:
                    yield pos, None, foff - pos
                done = 0
                while done < length:
                    n = min(chunk, length - done)
                    yield foff + done, pread_exact(fd, n, soff + done, self.path), n
                    done += n
                pos = foff + length
            if pos < self.size:
                yield pos, None, self.size - pos
        finally:
            os.close(fd)

    def read(self, file_offset: int, length: int) -> bytes:
        """Bytes [file_offset, file_offset + length) clipped to the file, holes as zeros, with
        one open and no hole search (a host hole reads as zeros anyway). For small reads."""
        length = max(0, min(length, self.size - file_offset))
        if length == 0:
            return b""
        fd = os.open(self.path, os.O_RDONLY)
        try:
            if self.segments is None:  # a host file or a plain tar member
                return pread_exact(fd, length, self.offset + file_offset, self.path, shown=file_offset)
            out = bytearray(length)
            for foff, seglen, soff in self.segments:
                lo, hi = max(foff, file_offset), min(foff + seglen, file_offset + length)
                if lo < hi:
                    out[lo - file_offset:hi - file_offset] = os.pread(fd, hi - lo, soff + lo - foff)
            return bytes(out)
        finally:
            os.close(fd)


def pread_exact(fd: int, n: int, off: int, path: str | None, shown: int | None = None) -> bytes:
    """n bytes at off, or one InputError naming path when the file shrank while it was read
    (shown: the offset the message gives, when not off)."""
    data = os.pread(fd, n, off)
    if len(data) != n:
        raise InputError(f"file shrank while reading (wanted {n} bytes at "
                         f"{off if shown is None else shown})", where=path)
    return data


EMPTY_SOURCE = FileSource(None, 0)  # every empty file's source: one object, not one per file


def data_extents(fd: int, length: int, base: int = 0) -> Iterator[tuple[int, int]]:
    """(offset, length) of the data regions of an open file in [base, base + length), offsets
    relative to base, found with SEEK_DATA/SEEK_HOLE (a filesystem without them reports the
    whole range as data)."""
    pos = 0
    while pos < length:
        try:
            start = os.lseek(fd, base + pos, SEEK_DATA) - base
        except OSError as e:
            if e.errno != errno.ENXIO:  # SEEK_DATA unsupported (EINVAL): the rest is data
                yield pos, length - pos
            return  # ENXIO: no data after pos
        if start >= length:
            return
        try:
            end = min(os.lseek(fd, base + start, SEEK_HOLE) - base, length)
        except OSError:
            end = length
        yield start, end - start
        pos = end


@dataclass(eq=False, slots=True)
class Node:
    """One inode. Identity matters: the same Node under two names is a hardlink."""

    kind: Kind
    mode: int = 0o755  # permission bits and suid/sgid/sticky only (07777), never type bits
    uid: int = 0
    gid: int = 0
    mtime: int = 0  # seconds since the epoch
    mtime_ns: int = 0  # nanosecond part, kept where the format holds it
    xattrs: Mapping[str, bytes] = NO_XATTRS  # a dict, or the shared empty NO_XATTRS
    source: FileSource | None = None  # FILE only
    target: str | None = None  # SYMLINK only (decoded like names)
    rdev: tuple[int, int] = (0, 0)  # CHR/BLK: (major, minor)
    children: dict[str, "Node"] | None = None  # DIR only
    # where it came from, for error messages: a string, or a LazyOrigin shared by every node
    # of one source (read it with where())
    origin: "str | LazyOrigin" = ""

    def __post_init__(self) -> None:
        if self.kind is Kind.DIR and self.children is None:
            self.children = {}

    @property
    def size(self) -> int:
        if self.kind is Kind.FILE:
            return self.source.size if self.source else 0
        if self.kind is Kind.SYMLINK:
            return len(encode_name(self.target or ""))
        return 0

    @property
    def st_mode(self) -> int:
        return self.kind.s_ifmt | (self.mode & 0o7777)

    def sorted_children(self) -> list[tuple[str, "Node"]]:
        """Children sorted by their encoded bytes: the one order every writer uses."""
        children = self.children
        assert children is not None
        names = sorted(children)
        # str order is the encoded bytes' order for ASCII names (and any UTF-8 ones without
        # surrogate escapes); one C call checks the common all-ASCII case
        if not "".join(names).isascii():
            names.sort(key=encode_name)
        return [(n, children[n]) for n in names]

    def copy_attrs_from(self, other: "Node") -> None:
        self.mode, self.uid, self.gid = other.mode, other.uid, other.gid
        self.mtime, self.mtime_ns = other.mtime, other.mtime_ns
        self.xattrs = dict(other.xattrs) if other.xattrs else NO_XATTRS

    def where(self) -> str | None:
        """Where the node came from, for an error message (None when unknown)."""
        o = self.origin
        if isinstance(o, str):
            return o or None
        return o.describe(self)

    def _own_xattrs(self) -> dict[str, bytes]:
        x = self.xattrs
        if type(x) is not dict:
            x = self.xattrs = dict(x)
        return x

    def set_xattr(self, name: str, value: bytes) -> None:
        self._own_xattrs()[name] = value

    def drop_xattr(self, name: str) -> None:
        if name in self.xattrs:
            self._own_xattrs().pop(name)

    def update_xattrs(self, items: Mapping[str, bytes]) -> None:
        if items:
            self._own_xattrs().update(items)


class LazyOrigin:
    """The origin shared by every node loaded from one source (an archive, a host directory):
    the source's name, and the root it was loaded under. The node's own path in it is found
    only when an error message needs it, so no node holds a string of its own."""

    __slots__ = ("source", "root", "sep")

    def __init__(self, source: str, root: Node, sep: str = ": "):
        self.source, self.root, self.sep = source, root, sep

    def describe(self, node: Node) -> str:
        path = find_path(self.root, node)
        if not path:  # the root itself, or a node since moved out of this source's tree
            return self.source
        return f"{self.source}{self.sep}{path}"


def find_path(root: Node, node: Node) -> str | None:
    """The path of node below root ('a/b', '' for root itself), or None; a search of the
    whole tree, for error messages only."""
    if node is root:
        return ""
    stack: list[tuple[str, Node]] = [("", root)]
    while stack:
        base, d = stack.pop()
        for name, child in d.sorted_children():
            path = f"{base}/{name}" if base else name
            if child is node:
                return path
            if child.kind is Kind.DIR:
                stack.append((path, child))
    return None


class Tree:
    """A rooted directory tree of Nodes."""

    def __init__(self, root: Node | None = None):
        self.root = root or Node(Kind.DIR, mode=0o755)
        self._nlink: dict[Node, int] | None = None

    # -- lookups and edits -------------------------------------------------
    def lookup(self, path: str) -> Node | None:
        node = self.root
        for comp in split_path(path):
            if node.kind is not Kind.DIR or comp not in node.children:
                return None
            node = node.children[comp]
        return node

    def parent_of(self, path: str, *, create: bool = True, template: Node | None = None,
                  where: str | None = None) -> tuple[Node, str]:
        """Return (parent dir node, last name) for path, creating missing dirs."""
        parts = split_path(path, where)
        if not parts:
            raise InputError("the root cannot be replaced by a non-directory", where=where or path)
        node = self.root
        for i, comp in enumerate(parts[:-1]):
            child = node.children.get(comp)
            if child is None:
                if not create:
                    raise InputError("parent directory does not exist",
                                     where=where or join_path(parts[:i + 1]))
                check_name(comp, where or path)
                child = Node(Kind.DIR, mode=0o755)
                if template is not None:
                    child.copy_attrs_from(template)
                    child.mode = 0o755
                node.children[comp] = child
            elif child.kind is not Kind.DIR:
                raise InputError(f"{join_path(parts[:i + 1])} is a {child.kind.value}, not a directory",
                                 where=where or path)
            node = child
        check_name(parts[-1], where or path)
        return node, parts[-1]

    def add(self, path: str, node: Node, *, replace: bool = False, where: str | None = None) -> None:
        """Place node at path. An existing dir at a dir path keeps its children
        (attributes are updated); any other clash is an error unless replace."""
        self._nlink = None
        if not split_path(path, where):
            if node.kind is not Kind.DIR:
                raise InputError("the root must be a directory", where=where or path)
            self.root.copy_attrs_from(node)
            return
        parent, name = self.parent_of(path, where=where)
        old = parent.children.get(name)
        if old is not None and old is not node:
            if old.kind is Kind.DIR and node.kind is Kind.DIR:
                old.copy_attrs_from(node)
                return
            if not replace:
                raise InputError(
                    f"duplicate path: already a {old.kind.value}, now a {node.kind.value}",
                    where=where or path)
        parent.children[name] = node

    def remove(self, path: str) -> Node | None:
        self._nlink = None
        parts = split_path(path)
        if not parts:
            return None
        parent = self.lookup(join_path(parts[:-1]))
        if parent is None or parent.kind is not Kind.DIR:
            return None
        return parent.children.pop(parts[-1], None)

    # -- traversal ----------------------------------------------------------
    def walk(self) -> Iterator[tuple[str, Node]]:
        """Pre-order walk: ('/', root) first, then each entry in sorted order.
        A hardlinked node appears once per name."""
        stack: list[tuple[str, Node]] = [("/", self.root)]
        while stack:
            path, node = stack.pop()
            yield path, node
            if node.kind is Kind.DIR:
                base = path.rstrip("/")
                for name, child in reversed(node.sorted_children()):
                    stack.append((f"{base}/{name}", child))

    def nlink(self, node: Node) -> int:
        """Link count as filesystems store it: names for non-dirs (1 for a node reached
        once, or not in the tree), 2 + number of subdirectories for dirs."""
        if self._nlink is None:
            # a count needs no order: children as stored, no sort, no path strings. Only the
            # hardlinked nodes' counts are kept (every other node has one name); the set of
            # nodes seen, keyed by identity, is dropped once counted
            seen: set[Node] = set()
            multi: dict[Node, int] = {}
            stack = [self.root]
            while stack:
                for child in stack.pop().children.values():
                    if child in seen:
                        multi[child] = multi.get(child, 1) + 1
                    else:
                        seen.add(child)
                    if child.kind is Kind.DIR:
                        stack.append(child)
            self._nlink = multi
        if node.kind is Kind.DIR:
            return 2 + sum(1 for c in node.children.values() if c.kind is Kind.DIR)
        return self._nlink.get(node, 1)

    def invalidate(self) -> None:
        """Call after editing children directly."""
        self._nlink = None

    def stats(self) -> dict[str, int]:
        """Counts and sizes, used by writers to plan and by `-v`."""
        seen: set[int] = set()
        out = {"entries": 0, "inodes": 0, "dirs": 0, "files": 0, "bytes": 0}
        for _, n in self.walk():
            out["entries"] += 1
            if id(n) in seen:
                continue
            seen.add(id(n))
            out["inodes"] += 1
            if n.kind is Kind.DIR:
                out["dirs"] += 1
            elif n.kind is Kind.FILE:
                out["files"] += 1
                out["bytes"] += n.size
        return out
