"""Tar input: every member type, PAX xattrs, GNU sparse files; member data never read here.

A plain tar is indexed where it lies: each regular member becomes a FileSource
pointing at its data's offset inside the archive. A compressed tar (gzip, xz,
zstd, bzip2, found by magic bytes, not by name) is first decompressed, streaming,
into an unlinked spool file in $TMPDIR, kept open for the life of the process
and named through /proc/self/fd, so nothing is left behind even if the build is
killed. All-zero 64 KiB blocks are left as holes in the spool (and so in the
image): a tar bomb of zeros costs neither disk nor image space. tarfile's list
of members is dropped as the archive is read, so memory grows with the tree only. Member names are normalised ('./a', '/a' -> '/a'); names with '..',
hardlinks that climb out or point at nothing earlier, and a path that changes
kind are input errors naming the member.
"""
from __future__ import annotations

import base64
import bz2
import gzip
import lzma
import os
import shutil
import tarfile
import tempfile
from typing import Mapping

from ..errors import InputError
from ..tree import EMPTY_SOURCE, NO_XATTRS, FileSource, Kind, LazyOrigin, Node, Tree, join_path, split_path

GZIP, BZIP2, XZ, ZSTD = b"\x1f\x8b", b"BZh", b"\xfd7zXZ\x00", b"\x28\xb5\x2f\xfd"
# The largest PAX extended header or GNU long name/link record read (tarfile reads each
# whole into memory): Go's archive/tar has the same 1 MiB limit (CVE-2022-2879), so the
# tars container tools write never come near it.
MAX_SPECIAL = 1 << 20
_spools: list[int] = []  # fds of open spool files, alive until the process ends


def _magic(path: str) -> bytes:
    with open(path, "rb") as f:
        return f.read(512)


def sniff_tar(path: str) -> bool:
    try:
        head = _magic(path)
    except OSError:
        return False
    if head.startswith((GZIP, BZIP2, XZ, ZSTD)):
        return True
    return len(head) == 512 and head[257:262] == b"ustar"


def _spool(path: str, head: bytes) -> str:
    """Decompress path into an unlinked temporary file; return a path that opens it."""
    if head.startswith(GZIP):
        opener = lambda: gzip.open(path, "rb")  # noqa: E731
    elif head.startswith(BZIP2):
        opener = lambda: bz2.open(path, "rb")  # noqa: E731
    elif head.startswith(XZ):
        opener = lambda: lzma.open(path, "rb")  # noqa: E731
    else:
        import zstandard

        def opener():
            return zstandard.ZstdDecompressor().stream_reader(open(path, "rb"), closefd=True)
    fd, tmp = tempfile.mkstemp(prefix="fstool-spool-")
    os.unlink(tmp)
    try:
        with opener() as src:
            _copy_sparse(src, fd)
    except (OSError, EOFError, lzma.LZMAError, ValueError) as e:
        os.close(fd)
        raise InputError(f"cannot decompress: {e}", where=path) from None
    except InputError:
        os.close(fd)
        raise
    except Exception as e:  # zstandard.ZstdError and friends
        os.close(fd)
        raise InputError(f"cannot decompress: {e}", where=path) from None
    _spools.append(fd)
    return f"/proc/self/fd/{fd}"


SPOOL_BLOCK = 64 << 10
_ZERO = bytes(SPOOL_BLOCK)


def _copy_sparse(src, fd: int) -> None:
    """Decompress src into fd, leaving every all-zero 64 KiB block a hole: a member full of
    zeros (a tar bomb, a disk image) costs no disk, and its holes stay holes in the image."""
    pos = 0
    while True:
        chunk = src.read(1 << 20)
        if not chunk:
            break
        view = memoryview(chunk)
        for i in range(0, len(chunk), SPOOL_BLOCK):
            piece = view[i:i + SPOOL_BLOCK]
            if piece != _ZERO[:len(piece)]:
                off = 0
                while off < len(piece):
                    try:
                        off += os.pwrite(fd, piece[off:], pos + i + off)
                    except OSError as e:
                        raise InputError(f"cannot spool the decompressed archive into $TMPDIR: "
                                         f"{e.strerror}", where=tempfile.gettempdir()) from None
        pos += len(chunk)
    os.ftruncate(fd, pos)


def _data_runs(path: str, offset: int, size: int) -> tuple[tuple[int, int, int], ...]:
    """(file_offset, length, source_offset) of the data in [offset, offset+size) of a spool."""
    fd = os.open(path, os.O_RDONLY)
    try:
        runs = []
        end = offset + size
        pos = offset
        while pos < end:
            try:
                start = os.lseek(fd, pos, os.SEEK_DATA)
            except OSError:  # ENXIO: nothing but hole up to the end
                break
            if start >= end:
                break
            stop = min(os.lseek(fd, start, os.SEEK_HOLE), end)
            runs.append((start - offset, stop - start, start))
            pos = stop
        return tuple(runs)
    finally:
        os.close(fd)


def _xattrs(member: tarfile.TarInfo) -> Mapping[str, bytes]:
    if not member.pax_headers:
        return NO_XATTRS
    out: dict[str, bytes] = {}
    for k, v in member.pax_headers.items():
        if k.startswith("SCHILY.xattr."):
            out[k[len("SCHILY.xattr."):]] = v.encode("utf-8", "surrogateescape")
        elif k in ("SCHILY.acl.access", "SCHILY.acl.default") and v.strip():
            from .security import acl_from_text
            name = "system.posix_acl_" + k.rsplit(".", 1)[1]
            out[name] = acl_from_text(v, f"{member.name}: {k}")
        elif k.startswith("LIBARCHIVE.xattr."):
            name = k[len("LIBARCHIVE.xattr."):]
            try:
                out[name] = base64.b64decode(v + "=" * (-len(v) % 4))
            except ValueError:
                raise InputError(f"bad base64 xattr value for {name}", where=member.name) from None
    return dict(sorted(out.items())) if out else NO_XATTRS


def _mtime(member: tarfile.TarInfo) -> tuple[int, int]:
    raw = member.pax_headers.get("mtime")
    if raw:
        whole, _, frac = raw.partition(".")
        try:
            return int(whole), int((frac + "000000000")[:9]) if frac else 0
        except ValueError:
            pass
    return int(member.mtime), 0


class _Member(tarfile.TarInfo):
    """A TarInfo that refuses an oversized PAX or GNU long-name record before reading it."""

    def _proc_pax(self, tarfile):  # noqa: ANN001 (tarfile's own hook)
        self._limit("PAX extended header")
        return super()._proc_pax(tarfile)

    def _proc_gnulong(self, tarfile):  # noqa: ANN001
        self._limit("GNU long name record")
        return super()._proc_gnulong(tarfile)

    def _limit(self, what: str) -> None:
        if self.size > MAX_SPECIAL:
            # tarfile turns SubsequentHeaderError into a ReadError: "corrupt tar archive: ..."
            raise tarfile.SubsequentHeaderError(
                f"a {what} of {self.size} bytes at offset {self.offset}, over the "
                f"{MAX_SPECIAL >> 20} MiB limit")


def load_tar(path: str) -> Tree:
    head = _magic(path)
    data_path = path
    spooled = head.startswith((GZIP, BZIP2, XZ, ZSTD))
    if spooled:
        data_path = _spool(path, head)
    tree = Tree()
    # one origin and one empty-file source shared by every member, and each distinct mode,
    # owner and time one int object: a million small members cost their names and nodes only
    shared = _Shared(LazyOrigin(path, tree.root))
    try:
        tf = tarfile.open(data_path, mode="r:", tarinfo=_Member)
    except (tarfile.TarError, OSError) as e:
        raise InputError(f"not a readable tar archive ({e})", where=path) from None
    with tf:
        try:
            while True:
                m = tf.next()
                if m is None:
                    break
                tf.members.clear()  # tarfile keeps every TarInfo; the tree is all we need
                _add_member(tree, m, data_path, path, spooled, shared)
        except tarfile.TarError as e:
            raise InputError(f"corrupt tar archive: {e}", where=path) from None
    tree.invalidate()
    return tree


class _Shared:
    """What members have in common, made once per archive."""

    __slots__ = ("origin", "ints")

    def __init__(self, origin: LazyOrigin):
        self.origin = origin
        self.ints: dict[int, int] = {}

    def int(self, v: int) -> int:
        return self.ints.setdefault(v, v)


def _add_member(tree: Tree, m: tarfile.TarInfo, data_path: str, archive: str,
                spooled: bool, shared: _Shared) -> None:
    where = f"{archive}: {m.name}"
    if m.size < 0 or m.offset_data < 0:
        raise InputError(f"member claims a negative size ({m.size})", where=where)
    for what, v in (("uid", m.uid), ("gid", m.gid), ("major", m.devmajor), ("minor", m.devminor)):
        if v < 0:
            raise InputError(f"member claims a negative {what} ({v})", where=where)
    parts = split_path(m.name, where)
    dest = join_path(parts)
    mtime, ns = _mtime(m)
    i = shared.int
    attrs = dict(mode=i(m.mode & 0o7777), uid=i(m.uid), gid=i(m.gid), mtime=i(mtime), mtime_ns=i(ns),
                 xattrs=_xattrs(m), origin=shared.origin)
    if m.islnk():
        tparts = split_path(m.linkname, f"{where} (hardlink to {m.linkname})")
        target = tree.lookup(join_path(tparts)) if tparts else None
        if target is None or target.kind is Kind.DIR:
            raise InputError(f"hardlink to {m.linkname!r}, which is not a non-directory earlier in "
                             f"the archive", where=where)
        _place(tree, dest, target, where)
        return
    if m.isreg():
        if m.sparse:
            segs, pos = [], m.offset_data
            for off, n in m.sparse:
                if n:
                    segs.append((off, n, pos))
                    pos += n
            src = FileSource(data_path, m.size, segments=tuple(segs))
        elif spooled and m.size:  # the spool's holes are the member's holes
            src = FileSource(data_path, m.size, segments=_data_runs(data_path, m.offset_data, m.size))
        elif m.size:
            src = FileSource(data_path, m.size, offset=m.offset_data)
        else:
            src = EMPTY_SOURCE
        node = Node(Kind.FILE, source=src, **attrs)
    elif m.isdir():
        node = Node(Kind.DIR, **attrs)
    elif m.issym():
        if not m.linkname:
            raise InputError("symlink with an empty target", where=where)
        node = Node(Kind.SYMLINK, target=m.linkname, **attrs)
    elif m.ischr() or m.isblk():
        node = Node(Kind.CHR if m.ischr() else Kind.BLK, rdev=(m.devmajor, m.devminor), **attrs)
    elif m.isfifo():
        node = Node(Kind.FIFO, **attrs)
    else:
        raise InputError(f"unsupported tar member type {m.type!r}", where=where)
    _place(tree, dest, node, where)


def _place(tree: Tree, dest: str, node: Node, where: str) -> None:
    old = tree.lookup(dest)
    # A later member of the same kind replaces an earlier one, as tar extraction does;
    # a member that changes a path's kind is refused (Tree.add raises).
    replace = old is not None and old.kind is node.kind and node.kind is not Kind.DIR
    tree.add(dest, node, replace=replace, where=where)
