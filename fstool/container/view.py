"""A read-only Region over a container (qcow2, Android sparse): the filesystem readers'
`pread`/`sub`/`length`/`path` interface, backed by the container's block map instead of
plain file offsets.

Invariant: a read never returns short data: it is either exactly the bytes asked for
(holes read as zeros) or an ImageError naming the image, as `fstool.image.Region` does.
"""
from __future__ import annotations

import os
from typing import Iterator, Protocol

from ..errors import ImageError


class Backend(Protocol):
    """What a container reader provides: its virtual size, reads, and where data lies."""

    path: str
    size: int

    def read(self, off: int, n: int) -> bytes: ...

    def extents(self) -> Iterator[tuple[int, int]]: ...

    def close(self) -> None: ...


class FileBackend:
    """An open container file: the subclass's _parse() reads its tables (and the file is
    closed again when that fails, so a malformed container leaks no descriptor)."""

    def __init__(self, path: str):
        self.path = path
        try:
            self.fd = os.open(path, os.O_RDONLY)
        except OSError as e:
            raise ImageError(e.strerror or str(e), where=path) from None
        try:
            self._parse()
        except BaseException:
            os.close(self.fd)
            raise

    def _parse(self) -> None:
        raise NotImplementedError


class ContainerRegion:
    """A window [offset, offset+length) of a container's virtual disk."""

    def __init__(self, backend: Backend, offset: int = 0, length: int | None = None,
                 owner: bool = True):
        self.backend = backend
        self.path = backend.path
        self.offset = offset
        self.length = backend.size - offset if length is None else length
        self._own = owner
        if offset < 0 or self.length < 0 or offset + self.length > backend.size:
            raise ImageError(f"region {offset}+{self.length} lies outside the image "
                             f"({backend.size} bytes)", where=self.path)

    def pread(self, n: int, off: int) -> bytes:
        if n < 0 or off < 0 or off + n > self.length:
            raise ImageError(f"read of {n} bytes at {off} is past the end of the image "
                             f"({self.length} bytes): truncated or corrupt", where=self.path)
        return self.backend.read(self.offset + off, n)

    def sub(self, offset: int, length: int) -> "ContainerRegion":
        if offset < 0 or length < 0 or offset + length > self.length:
            raise ImageError(f"partition {offset}+{length} lies outside the image", where=self.path)
        return ContainerRegion(self.backend, self.offset + offset, length, owner=False)

    def close(self) -> None:
        if self._own:
            self.backend.close()

    def __enter__(self) -> "ContainerRegion":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
