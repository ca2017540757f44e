"""An image (or one partition of a disk) as a source: `source = "rootfs.img"`, `"disk.img:2"`.

Any format a registered reader can open becomes a Tree with its modes, owners,
times, xattrs, devices, symlinks and hardlinks (entries sharing an inode number
with a link count above one become one shared Node). File bytes are not read
here when the reader can say where they lie (`Reader.data_map`): the FileSource
then points at those runs of the image itself. Otherwise (compressed formats)
each file is streamed, chunk by chunk, into an unlinked spool file kept open for
the life of the process; all-zero chunks stay holes. Nothing is held whole.
"""
from __future__ import annotations

import os
import sys
import tempfile

from ..errors import ImageError, InputError
from ..image import Region
from ..tree import NO_XATTRS, FileSource, Kind, Node, Tree

_spools: list[int] = []  # fds of spool files, alive until the process ends


def open_partition(path: str, num: int | None):
    """(Region of the filesystem in path, or of its partition num; the table entry or None)."""
    if not os.path.exists(path):
        raise InputError("no such file", where=path)
    from ..container import open_region
    region = open_region(path)  # a raw file, or a qcow2 / Android sparse view of one
    if num is None:
        return region, None
    from ..part import probe_table
    found = probe_table(region)
    if found is None:
        raise ImageError("has no partition table, so it has no partition "
                         f"{num} (drop the ':{num}')", where=path)
    kind, table = found
    parts = {p.number: p for p in table.partitions}
    if num not in parts:
        raise ImageError(f"has no partition {num} (it has "
                         f"{', '.join(map(str, sorted(parts))) or 'none'})", where=path)
    p = parts[num]
    return region.sub(p.offset, p.size), (kind, p)


def is_image(path: str) -> bool:
    """Whether some registered reader recognises path (or it is a partitioned disk)."""
    from ..fs import formats
    from ..part import probe_table
    try:
        region = Region(path)
    except InputError:
        return False
    try:
        if probe_table(region) is not None:
            return True
        for fmt in formats():
            mod = fmt.reader_module()
            if mod is not None and mod.probe(region):
                return True
    except (ImageError, InputError):
        return False
    finally:
        region.close()
    return False


class _Spool:
    """One unlinked temporary file that file payloads are appended to."""

    def __init__(self) -> None:
        fd, tmp = tempfile.mkstemp(prefix="fstool-image-spool-")
        os.unlink(tmp)
        _spools.append(fd)
        self.fd, self.pos = fd, 0
        self.path = f"/proc/self/fd/{fd}"

    def add(self, chunks) -> tuple[int, tuple[tuple[int, int, int], ...]]:
        """Append a file's chunks; return (size, segments) with all-zero chunks as holes."""
        segs: list[tuple[int, int, int]] = []
        size = 0
        for data in chunks:
            if data.count(0) != len(data):
                if segs and segs[-1][0] + segs[-1][1] == size and segs[-1][2] + segs[-1][1] == self.pos:
                    f, n, s = segs[-1]
                    segs[-1] = (f, n + len(data), s)
                else:
                    segs.append((size, len(data), self.pos))
                view = memoryview(data)
                done = 0
                while done < len(view):
                    done += os.pwrite(self.fd, view[done:], self.pos + done)
                self.pos += len(data)
            size += len(data)
        return size, tuple(segs)


def load_image(arg: str, part: int | None = None) -> Tree:
    """The tree of the filesystem in image arg (partition part, 1-based, when given)."""
    from ..fs import open_reader
    region, _ = open_partition(arg, part)
    name = f"{arg}:{part}" if part else arg
    try:
        reader = open_reader(region)
    except ImageError:
        from ..part import probe_table
        found = probe_table(region) if part is None else None
        if found is None:
            raise
        nums = ", ".join(str(p.number) for p in found[1].partitions) or "none"
        raise ImageError(f"is a {found[0].upper()} disk: name a partition as {arg}:N "
                         f"(it has {nums})", where=arg) from None
    # file data is referenced in place only in a plain file: a qcow2 or Android sparse view
    # has no host offsets to point at, so its files are spooled
    in_place = type(region) is Region
    mod = sys.modules.get(type(reader).__module__)
    if in_place and hasattr(mod, "load_tree"):  # a format that builds its own input tree
        return mod.load_tree(region)
    tree = Tree()
    inodes: dict[int, Node] = {}
    spool: _Spool | None = None
    for e in reader.walk("/"):
        where = f"{name}:{e.path}"
        if e.kind is not Kind.DIR and e.nlink > 1 and e.inode and e.inode in inodes:
            tree.add(e.path, inodes[e.inode], where=where)
            continue
        node = Node(e.kind, mode=e.mode & 0o7777, uid=e.uid, gid=e.gid, mtime=e.mtime,
                    xattrs=dict(e.xattrs) if e.xattrs else NO_XATTRS, origin=where)
        if e.kind is Kind.FILE and e.size:
            runs = reader.data_map(e.path) if in_place else None
            if runs is not None:
                base = region.offset
                node.source = FileSource(region.path, e.size,
                                         segments=tuple((f, n, base + o) for f, n, o in runs))
            else:
                spool = spool or _Spool()
                size, segs = spool.add(reader.read_file(e.path))
                if size != e.size:
                    raise ImageError(f"file reads as {size} bytes but its inode says {e.size}",
                                     where=where)
                node.source = FileSource(spool.path, size, segments=segs)
        elif e.kind is Kind.FILE:
            node.source = FileSource(None, 0)
        elif e.kind is Kind.SYMLINK:
            node.target = e.target
        elif e.kind in (Kind.CHR, Kind.BLK):
            node.rdev = e.rdev
        if e.path == "/":
            tree.root.copy_attrs_from(node)
            continue
        tree.add(e.path, node, where=where)
        if e.kind is not Kind.DIR and e.nlink > 1 and e.inode:
            inodes[e.inode] = node
    tree.invalidate()
    return tree
