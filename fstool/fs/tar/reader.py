"""tar reader: `fstool info/ls/cat` and image sources on a tar (plain, or gzip/xz/zstd/bzip2).

The archive is indexed by `fstool.inputs.tarball` (member data stays where it is in
the archive, or in a decompressed spool), and the Reader API is answered from that
Tree. Only whole files are read: a tar inside a partition is not supported.
"""
from __future__ import annotations

from typing import Iterator

from ...errors import ImageError, InputError
from ...tree import Kind, Node, Tree, split_path
from ..base import REntry, Reader
from .format import BLOCK, USTAR_MAGIC

COMPRESSED = (b"\x1f\x8b", b"BZh", b"\xfd7zXZ\x00", b"\x28\xb5\x2f\xfd")


def probe(region) -> bool:
    head = region.pread(min(BLOCK, region.length), 0)
    if len(head) == BLOCK and head[257:263] in (USTAR_MAGIC, b"ustar "):
        return True
    if head.startswith(COMPRESSED):
        from ...inputs import TAR_SUFFIXES
        return region.path.lower().endswith(TAR_SUFFIXES)
    return False


def open(region) -> "TarReader":  # noqa: A001 - the registry's name
    return TarReader(region)


class TarReader(Reader):
    fs_type = "tar"

    def __init__(self, region):
        import os
        if region.offset != 0 or region.length != os.fstat(region.fd).st_size:
            raise ImageError("a tar inside a partition is not supported; extract it first",
                             where=region.path)
        from ...inputs.tarball import load_tar
        self.path = region.path
        self.tree: Tree = load_tar(region.path)
        self._ino: dict[int, int] = {}

    def _node(self, path: str) -> tuple[str, Node]:
        norm = "/" + "/".join(split_path(path))
        node = self.tree.lookup(norm)
        if node is None:
            raise InputError("no such file or directory", where=f"{self.path}:{norm}")
        return norm, node

    def _entry(self, path: str, node: Node) -> REntry:
        ino = self._ino.setdefault(id(node), len(self._ino) + 1)
        return REntry(path=path, kind=node.kind, mode=node.mode, uid=node.uid, gid=node.gid,
                      size=node.size if node.kind is not Kind.DIR else 0, mtime=node.mtime,
                      nlink=self.tree.nlink(node), inode=ino, target=node.target, rdev=node.rdev,
                      xattrs=dict(node.xattrs))

    def info(self) -> list[tuple[str, str]]:
        s = self.tree.stats()
        return [("entries", str(s["entries"])), ("files", str(s["files"])),
                ("directories", str(s["dirs"])), ("bytes", str(s["bytes"]))]

    def stat(self, path: str) -> REntry:
        return self._entry(*self._node(path))

    def listdir(self, path: str) -> list[REntry]:
        norm, node = self._node(path)
        if node.kind is not Kind.DIR:
            raise InputError("not a directory", where=f"{self.path}:{norm}")
        base = norm.rstrip("/")
        return [self._entry(f"{base}/{n}", c) for n, c in node.sorted_children()]

    def read_file(self, path: str) -> Iterator[bytes]:
        norm, node = self._node(path)
        if node.kind is not Kind.FILE:
            raise InputError("not a regular file", where=f"{self.path}:{norm}")
        for _off, data, n in (node.source.iter_chunks() if node.source else ()):
            yield data if data is not None else bytes(n)

    def data_map(self, path: str):
        norm, node = self._node(path)
        if node.source is None or node.source.path != self.path:
            return None  # compressed: the bytes live in a spool, not in the archive
        return node.source.data_segments()
