"""Output containers: how an image's bytes and holes are stored in the output file.

Every writer (filesystem or disk) writes a raw, byte-addressed image with holes. The
container is a conversion of that raw file, chosen by `--format`, the spec's `format`
key or the output's extension:

    raw                  the image itself (default)
    qcow2                QEMU qcow2 v3 (`.qcow2`)
    android-sparse       libsparse's sparse image for fastboot/uuu (`.simg`)
    android-sparse-crc   the same with a CRC32 chunk and the image checksum
    bmap                 the raw image plus a bmaptool block map beside it (`IMG.bmap`)

Readers go the other way: `open_region(path)` recognises qcow2 and Android sparse by
their magic and returns a Region over the virtual disk, so `info`, `ls`, `cat` and
`IMG:N` read containers directly.

Invariants: a non-raw output is written from a temporary sparse raw file beside it and
renamed over the destination only on success (nothing is left behind on failure); the
raw image is read only through its data extents, never through its holes.
"""
from __future__ import annotations

import os
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Iterator

from ..errors import SpecError
from ..image import ImageFile, Region, atomic_output, data_extents, open_output

CONTAINERS = ("raw", "qcow2", "android-sparse", "android-sparse-crc", "bmap")
ALIASES = {"img": "raw", "qcow": "qcow2", "simg": "android-sparse", "sparse": "android-sparse",
           "android_sparse": "android-sparse", "simg-crc": "android-sparse-crc"}
EXTENSIONS = {".qcow2": "qcow2", ".simg": "android-sparse", ".bmap": "bmap"}
BMAP_SUFFIX = ".bmap"
READ = 1 << 20


def canonical(name: str, where: str = "format") -> str:
    n = str(name).strip().lower()
    n = ALIASES.get(n, n)
    if n not in CONTAINERS:
        raise SpecError(f"unknown output format {name!r}; known: {', '.join(CONTAINERS)} "
                        f"(aliases: {', '.join(sorted(ALIASES))})", where=where)
    return n


@dataclass
class OutputPlan:
    format: str
    image: str  # the file the container (or the raw image) is written to
    bmap: str | None = None  # for format bmap: the block map beside the raw image
    cluster_size: int | None = None  # qcow2 cluster size (default 64 KiB)


def plan_output(path: str, explicit: str | None = None, where: str = "--format") -> OutputPlan:
    """Which container to write for output path: explicit format, else the extension."""
    fmt = canonical(explicit, where) if explicit else None
    ext = os.path.splitext(path)[1].lower()
    if fmt is None:
        fmt = EXTENSIONS.get(ext, "raw")
    if fmt == "bmap":
        if ext == BMAP_SUFFIX:  # -o disk.img.bmap: the image is disk.img, its map disk.img.bmap
            return OutputPlan(fmt, path[:-len(BMAP_SUFFIX)], path)
        return OutputPlan(fmt, path, path + BMAP_SUFFIX)
    return OutputPlan(fmt, path)


def block_ranges(fd: int, size: int, bs: int) -> Iterator[tuple[int, int]]:
    """[first, end) block ranges (of bs bytes) holding data, merged, from SEEK_DATA/SEEK_HOLE."""
    cur: list[int] | None = None
    for start, n in data_extents(fd, size):
        first, end = start // bs, (start + n + bs - 1) // bs
        if cur is not None and first <= cur[1]:
            cur[1] = max(cur[1], end)
            continue
        if cur is not None:
            yield cur[0], cur[1]
        cur = [first, end]
    if cur is not None:
        yield cur[0], cur[1]


def _write_container(src_fd: int, size: int, fmt: str, out: ImageFile,
                     cluster_size: int | None = None) -> None:
    if fmt == "qcow2":
        from . import qcow2
        qcow2.write(src_fd, size, out, (cluster_size or 1 << qcow2.CLUSTER_BITS).bit_length() - 1)
    else:
        from . import simg
        simg.write(src_fd, size, out, crc=fmt.endswith("crc"))


def convert_raw(src_fd: int, size: int, plan: OutputPlan) -> None:
    """Write the raw image src_fd as plan's container (atomically)."""
    with atomic_output(plan.image) as out:
        if plan.format in ("qcow2", "android-sparse", "android-sparse-crc"):
            _write_container(src_fd, size, plan.format, out, plan.cluster_size)
            return
        for start, n in data_extents(src_fd, size):
            out.copy_from(src_fd, start, n, start)
        out.truncate(size)
        if plan.bmap:
            write_bmap(out.fd, size, plan.bmap)


def write_bmap(fd: int, size: int, dest: str) -> None:
    from . import bmap
    text = bmap.render(fd, size)
    with atomic_output(dest) as out:
        out.pwrite(text, 0)


@contextmanager
def container_output(plan: OutputPlan, *, force: bool = False) -> Iterator[ImageFile]:
    """An ImageFile to write the raw image into; the container appears at plan.image on
    success, and nothing (not even the temporary raw file) on failure or SIGTERM. With
    force, plan.image may be a block device (written in place)."""
    with open_output(plan.image, force=force) as final:
        if plan.format in ("raw", "bmap"):
            yield final
            if plan.bmap:
                write_bmap(final.fd, os.fstat(final.fd).st_size, plan.bmap)
            return
        import tempfile  # here: a raw image (most builds) needs none (3 ms to import)
        dest_dir = os.path.dirname(os.path.abspath(plan.image)) or "."
        fd, tmp = tempfile.mkstemp(prefix="." + os.path.basename(plan.image) + ".", suffix=".raw",
                                   dir=dest_dir)
        try:
            os.unlink(tmp)  # an anonymous file: nothing to clean up, whatever happens
            yield ImageFile(fd, path=plan.image)
            _write_container(fd, os.fstat(fd).st_size, plan.format, final, plan.cluster_size)
        finally:
            os.close(fd)


def detect(path: str) -> str:
    """'qcow2', 'android-sparse' or 'raw' by the file's magic."""
    from . import qcow2, simg
    try:
        with open(path, "rb") as f:
            head = f.read(8)
    except OSError:
        return "raw"
    if qcow2.probe(head):
        return "qcow2"
    if simg.probe(head):
        return "android-sparse"
    return "raw"


def open_region(path: str):
    """A Region over path's virtual disk: the file itself, or a qcow2/Android sparse view."""
    kind = detect(path)
    if kind == "raw":
        return Region(path)
    from .view import ContainerRegion
    if kind == "qcow2":
        from .qcow2 import Qcow2Image
        return ContainerRegion(Qcow2Image(path))
    from .simg import SparseImage
    return ContainerRegion(SparseImage(path))


def region_extents(region) -> Iterator[tuple[int, int]]:
    """Data extents of a whole-image region (raw: SEEK_DATA; containers: their map)."""
    backend = getattr(region, "backend", None)
    if backend is not None:
        return backend.extents()
    return data_extents(region.fd, region.length)


def _copy_extents(out: ImageFile, region, extents) -> None:
    for start, n in extents:
        pos, end = start, start + n
        while pos < end:
            k = min(READ, end - pos)
            out.pwrite(region.pread(k, pos), pos)  # written zeros stay data (bmap maps them)
            pos += k


def convert(src: str, dst: str, explicit: str | None = None) -> OutputPlan:
    """`fstool convert`: any container (raw, qcow2, Android sparse) to any other."""
    plan = plan_output(dst, explicit)
    region = open_region(src)
    try:
        if getattr(region, "backend", None) is None:
            convert_raw(region.fd, region.length, plan)
            return plan
        with container_output(plan) as out:
            _copy_extents(out, region, region_extents(region))
            out.truncate(region.length)
    finally:
        region.close()
    return plan
