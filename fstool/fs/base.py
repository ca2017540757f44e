"""What every format shares: build parameters, option checking, and the reader's entry record.

A writer module exposes `write(tree, out, params) -> int` (the image size in
bytes); a reader module exposes `probe(region) -> bool` and `open(region) -> Reader`.
"""
from __future__ import annotations

import os
import posixpath
from dataclasses import dataclass, field
from typing import Any, Iterator

from ..errors import InputError, SpecError, did_you_mean
from ..sizes import parse_size
from ..tree import Kind, encode_name, split_path


@dataclass
class FsParams:
    """Everything a writer needs besides the tree.

    size None means "auto": the smallest image the content needs plus headroom.
    seed feeds `fstool.ids` so UUIDs, hash seeds and volume ids are derived,
    never random. timestamp is the filesystem's own time (mkfs time): the
    spec's mtime, else SOURCE_DATE_EPOCH, else 0.
    """

    fs_type: str
    size: int | None = None
    headroom: int = 0
    label: str | None = None
    uuid: str | None = None
    volume_id: str | None = None
    block_size: int | None = None
    journal_blocks: int | None = None
    sparse: bool = True
    timestamp: int = 0
    seed: bytes = b"fstool"
    options: dict[str, Any] = field(default_factory=dict)
    partition_offset: int = 0  # where the disk assembler places this filesystem (bytes)
    opts: Any = None  # the format's typed options (Format.parse_options), parsed when the spec is read
    verbose: bool = False
    where: str = "filesystem"  # the spec table or CLI flag these came from, for messages
    progress: Any = None  # fstool.progress.Progress (stderr is a terminal) or None
    block_cache: Any = None  # fstool.cache.BlockCache: compressed units reused, never other bytes
    head_start: Any = None  # what the format's head_start began before the tree was loaded

    def report(self, done: int, total: int) -> None:
        """Tell the user how far the data has got (a no-op unless stderr is a terminal)."""
        if self.progress is not None:
            self.progress(f"writing {self.fs_type}", done, total)

    def thread_count(self) -> int:
        """FSTOOL_THREADS, else the CPU count (the output never depends on it)."""
        env = os.environ.get("FSTOOL_THREADS")
        if env:
            try:
                return max(1, int(env))
            except ValueError:
                raise SpecError(f"FSTOOL_THREADS must be a number, got {env!r}") from None
        return os.cpu_count() or 1

    def log(self, msg: str) -> None:
        if self.verbose:
            import sys
            print(f"fstool: {msg}", file=sys.stderr)


_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off"}


class OptionReader:
    """Typed access to `[filesystem.options]` / `-O k=v` values.

    Values may come typed (TOML) or as strings (-O). Every key read is marked
    used; `finish()` raises SpecError for any key left, suggesting the nearest
    valid one, so an option a format does not know is always an error.
    """

    def __init__(self, options: dict[str, Any], where: str = "filesystem.options"):
        self.options = dict(options)
        self.where = where
        self.known: set[str] = set()

    def _raw(self, key: str) -> Any:
        self.known.add(key)
        return self.options.get(key)

    def has(self, key: str) -> bool:
        self.known.add(key)
        return key in self.options

    def get_str(self, key: str, default: str | None = None, choices: tuple[str, ...] | None = None):
        v = self._raw(key)
        if v is None:
            return default
        if not isinstance(v, str):
            raise SpecError(f"expected a string, got {v!r}", where=f"{self.where}.{key}")
        if choices is not None and v not in choices:
            raise SpecError(f"must be one of {', '.join(choices)}; got {v!r}",
                            where=f"{self.where}.{key}")
        return v

    def get_bool(self, key: str, default: bool | None = None):
        v = self._raw(key)
        if v is None:
            return default
        if isinstance(v, bool):
            return v
        if isinstance(v, str) and v.lower() in _TRUE | _FALSE:
            return v.lower() in _TRUE
        raise SpecError(f"expected true or false, got {v!r}", where=f"{self.where}.{key}")

    def get_int(self, key: str, default: int | None = None, lo: int | None = None,
                hi: int | None = None):
        v = self._raw(key)
        if v is None:
            return default
        if isinstance(v, str):
            try:
                v = int(v, 0)
            except ValueError:
                raise SpecError(f"expected a number, got {v!r}", where=f"{self.where}.{key}") from None
        if isinstance(v, bool) or not isinstance(v, int):
            raise SpecError(f"expected a number, got {v!r}", where=f"{self.where}.{key}")
        if (lo is not None and v < lo) or (hi is not None and v > hi):
            raise SpecError(f"must be between {lo} and {hi}; got {v}", where=f"{self.where}.{key}")
        return v

    def get_size(self, key: str, default: int | None = None):
        v = self._raw(key)
        if v is None:
            return default
        return parse_size(v, where=f"{self.where}.{key}")

    def finish(self) -> None:
        for key in self.options:
            if key not in self.known:
                hint = did_you_mean(key, sorted(self.known))
                valid = ", ".join(sorted(self.known)) or "none"
                raise SpecError(f"unknown option {key!r}{hint}; valid options: {valid}",
                                where=f"{self.where}.{key}")


@dataclass
class REntry:
    """One entry as a reader sees it (what `ls` prints and the tests compare)."""

    path: str
    kind: Kind
    mode: int  # permission bits (07777)
    uid: int = 0
    gid: int = 0
    size: int = 0
    mtime: int = 0
    nlink: int = 1
    inode: int = 0
    target: str | None = None
    rdev: tuple[int, int] = (0, 0)
    xattrs: dict[str, bytes] = field(default_factory=dict)

    @property
    def name(self) -> str:
        return self.path.rsplit("/", 1)[-1] or "/"


class Reader:
    """Base class for format readers. Paths are absolute image paths ('/a/b')."""

    fs_type = "?"

    def info(self) -> list[tuple[str, str]]:
        raise NotImplementedError

    def stat(self, path: str) -> REntry:
        raise NotImplementedError

    def listdir(self, path: str) -> list[REntry]:
        """Entries of a directory (without . and ..), sorted by name bytes."""
        raise NotImplementedError

    def read_file(self, path: str) -> Iterator[bytes]:
        """The file's bytes in bounded chunks."""
        raise NotImplementedError

    def data_map(self, path: str) -> list[tuple[int, int, int]] | None:
        """Where a file's bytes lie uncompressed in the region: (file offset, length, region
        offset) per data run, holes left out; None when they are not stored as plain runs
        (compressed, inline). Lets an image be a build's source without copying its files."""
        return None

    def walk(self, path: str = "/") -> Iterator[REntry]:
        """Pre-order walk below path (path itself first).

        A directory reached twice (no format has hardlinked directories) is a cycle in a
        damaged or hostile image: refused, so `ls -R` ends instead of running forever.
        """
        from ..errors import ImageError
        top = self.stat(path)
        stack = [top]
        seen_dirs: set[int] = set()
        while stack:
            e = stack.pop()
            yield e
            if e.kind is Kind.DIR:
                if e.inode in seen_dirs:
                    raise ImageError("directory cycle: this directory is also reached by "
                                     "another path", where=e.path)
                seen_dirs.add(e.inode)
                stack.extend(reversed(self.listdir(e.path)))


class ListedDirReader(Reader):
    """A reader whose directories are read whole as lists of entries (FAT, exFAT): path
    lookup, stat and listdir, over the format's `_root` (the root's entries), `_children(entry,
    what)` (a directory's entries), `_case_match(entries, name)` (the entry a name matches
    case-insensitively, the format's way) and `boot.root_cluster`. An entry has `name`,
    `is_dir`, `attr` (bit 0: read-only), `first` (its first cluster), `size` and `mtime`."""

    _root: list

    def _children(self, e, what: str) -> list:
        raise NotImplementedError

    def _case_match(self, entries: list, comp: str):
        return None

    def _lookup(self, path: str):
        """(normalised path, entry) for path; entry None for the root."""
        parts = split_path(path)
        entries = self._root
        found = None
        norm: list[str] = []
        for i, comp in enumerate(parts):
            if found is not None:
                if not found.is_dir:
                    raise InputError("not a directory", where="/" + "/".join(norm))
                entries = self._children(found, "/" + "/".join(norm))
            match = next((e for e in entries if e.name == comp), None)
            if match is None:
                match = self._case_match(entries, comp)
            if match is None:
                raise InputError("no such file or directory", where="/" + "/".join(parts[:i + 1]))
            found = match
            norm.append(match.name)
        return "/" + "/".join(norm), found

    def _rentry(self, path: str, e) -> REntry:
        if e is None:
            return REntry("/", Kind.DIR, 0o755, nlink=2, inode=self.boot.root_cluster)
        ro = e.attr & 0x01  # ATTR_READ_ONLY, the same bit in FAT and exFAT
        if e.is_dir:
            return REntry(path, Kind.DIR, 0o555 if ro else 0o755, mtime=e.mtime, nlink=2, inode=e.first)
        return REntry(path, Kind.FILE, 0o444 if ro else 0o644, size=e.size, mtime=e.mtime, nlink=1,
                      inode=e.first)

    def stat(self, path: str) -> REntry:
        norm, e = self._lookup(path)
        return self._rentry(norm, e)

    def listdir(self, path: str) -> list[REntry]:
        norm, e = self._lookup(path)
        if e is None:
            entries = self._root
        elif not e.is_dir:
            raise InputError("not a directory", where=norm)
        else:
            entries = self._children(e, norm)
        base = norm.rstrip("/")
        out = [self._rentry(f"{base}/{c.name}", c) for c in entries]
        out.sort(key=lambda r: encode_name(r.name))
        return out


def walk_plan(dirs: dict[str, Any], entries) -> Iterator[tuple[Any, Any]]:
    """The FAT-family plans' walk, in Tree.walk order (a directory's entries in name order),
    root first: (path, node) for a directory, (entry, node) for anything else. dirs maps a
    directory's path to its plan record, whose `node` is the directory; entries(record) lists
    its entries, each with a `name` and a `node`. No path is built for a file."""
    stack: list[tuple[Any, Any]] = [("/", dirs["/"].node)]
    while stack:
        key, node = stack.pop()
        yield key, node
        if node.kind is Kind.DIR:
            base = key.rstrip("/")
            for e in reversed(entries(dirs[key])):
                stack.append((f"{base}/{e.name}" if e.node.kind is Kind.DIR else e, e.node))


# For the formats that hold only files and directories (FAT, exFAT).
_KIND_WORDS = {Kind.SYMLINK: "symlinks", Kind.CHR: "character devices", Kind.BLK: "block devices",
               Kind.FIFO: "fifos", Kind.SOCK: "sockets"}


def _resolve_link(tree, path: str, target: str):
    """The node a symlink at path leads to inside the tree (through further links), or None."""
    cur = posixpath.normpath(posixpath.join(posixpath.dirname(path), target))
    for _ in range(40):
        node = tree.lookup(cur)
        if node is None or node.kind is not Kind.SYMLINK:
            return node
        cur = posixpath.normpath(posixpath.join(posixpath.dirname(cur), node.target or ""))
    return None


def follow_file_symlinks(tree) -> None:
    """Replace each symlink to a regular file by that file (stored as a copy); symlinks to
    directories or to nothing stay, for the writer to refuse or leave out
    (`follow_symlinks = true` of FAT and exFAT)."""
    for path, node in list(tree.walk()):
        if node.kind is not Kind.DIR:
            continue
        for name, child in list(node.children.items()):
            if child.kind is Kind.SYMLINK:
                target = _resolve_link(tree, f"{path.rstrip('/')}/{name}", child.target or "")
                if target is not None and target.kind is Kind.FILE:
                    node.children[name] = target
    tree.invalidate()


def unstorable(tree) -> tuple[list[tuple[str, Kind]], str, str]:
    """The entries that are neither files nor directories, in tree order: (list of (path,
    kind), "2 symlinks, 1 fifos"-style counts, the first five paths)."""
    bad = [(path, node.kind) for path, node in tree.walk() if node.kind not in (Kind.DIR, Kind.FILE)]
    kinds = sorted({k for _, k in bad}, key=lambda k: k.value)
    what = ", ".join(f"{sum(1 for _, b in bad if b is k)} {_KIND_WORDS[k]}" for k in kinds)
    shown = ", ".join(p for p, _ in bad[:5]) + (", ..." if len(bad) > 5 else "")
    return bad, what, shown


def refuse_unstorable(tree, fmt: str) -> None:
    """One InputError naming what a format holding only files and directories (FAT, exFAT)
    cannot store, with the hint that stores symlinked files instead."""
    bad, what, shown = unstorable(tree)
    if bad:
        hint = " (follow_symlinks = true stores the files that symlinks point to)" \
            if any(k is Kind.SYMLINK for _, k in bad) else ""
        raise InputError(f"{fmt} cannot store {what}: {shown}{hint}", where=bad[0][0])
