"""Filesystem and archive images as sources: whatever a registered reader opens (ISO 9660, cpio,
squashfs, ext, FAT) becomes a tree, so `fstool create -t squashfs boot.iso` converts.

No file bytes are read here when the reader can tell where a file lies in the image
(`Reader.data_map(path)`: (file offset, length, region offset) runs, which the ISO 9660 and plain
cpio readers give): the tree's FileSources point into the image itself. Other readers' files
are copied once, through the reader, into an unlinked temporary file. Hardlinks come back from
the reader's inode numbers (regular files with nlink > 1). Readers stay open, like the tar
spools, for as long as the process runs, because their file sources may point into them.
"""
from __future__ import annotations

import os
import tempfile

from ..errors import ImageError
from ..tree import FileSource, Kind, Node, Tree

_keep: list = []  # open readers and spool files the trees' sources point into


def load_image(path: str) -> Tree | None:
    """The tree of the image at path, or None when no reader recognises it."""
    from ..fs import open_reader
    from ..image import Region

    region = Region(path)
    try:
        reader = open_reader(region)
    except ImageError:
        region.close()
        return None
    _keep.append((region, reader))
    data_map = getattr(reader, "data_map", None)
    spool = None
    tree = Tree()
    links: dict[int, Node] = {}
    for e in reader.walk("/"):
        attrs = dict(mode=e.mode, uid=e.uid, gid=e.gid, mtime=e.mtime, xattrs=dict(e.xattrs),
                     origin=f"{path}:{e.path}")
        if e.path == "/":
            tree.root.copy_attrs_from(Node(Kind.DIR, **attrs))
            continue
        if e.kind is Kind.FILE and e.nlink > 1 and e.inode and e.inode in links:
            tree.add(e.path, links[e.inode], where=f"{path}:{e.path}")
            continue
        if e.kind is Kind.FILE:
            runs = data_map(e.path) if data_map is not None else None
            if runs is not None:
                segs = tuple((f, n, region.offset + r) for f, n, r in runs)
                src = FileSource(region.path if e.size else None, e.size, segments=segs)
            else:
                if spool is None:
                    fd, tmp = tempfile.mkstemp(prefix="fstool-image-")
                    os.unlink(tmp)
                    spool = os.fdopen(fd, "wb+")
                    _keep.append(spool)
                start = spool.tell()
                for chunk in reader.read_file(e.path):
                    spool.write(chunk)
                spool.flush()
                src = FileSource(f"/proc/self/fd/{spool.fileno()}" if e.size else None, e.size, offset=start)
            node = Node(Kind.FILE, source=src, **attrs)
            if e.nlink > 1 and e.inode:
                links[e.inode] = node
        elif e.kind is Kind.DIR:
            node = Node(Kind.DIR, **attrs)
        elif e.kind is Kind.SYMLINK:
            node = Node(Kind.SYMLINK, target=e.target, **attrs)
        elif e.kind in (Kind.CHR, Kind.BLK):
            node = Node(e.kind, rdev=e.rdev, **attrs)
        else:
            node = Node(e.kind, **attrs)
        tree.add(e.path, node, where=f"{path}:{e.path}")
    tree.invalidate()
    return tree
