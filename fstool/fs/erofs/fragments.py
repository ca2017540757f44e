"""EROFS fragments (`mkfs.erofs -E fragments`): file tails packed into one packed inode.

With fragments, the last extent of a compressed file (the remainder once it fits a
pcluster), or a whole file that small, is not given blocks of its own: its bytes are
appended to the *packed inode*, a regular file that no directory names (the superblock's
`packed_nid`, feature FRAGMENTS), compressed like any other file, so many small tails share
pclusters. The file's map header says where its bytes start in the packed inode:
- a tail: Z_ADVISE_FRAGMENT_PCLUSTER in h_advise, the offset in h_fragmentoff (32 bits,
  overlaying h_reserved1 and h_idata_size); the lcluster indexes still cover the whole file,
  the fragment's head index being an ordinary HEAD1 whose address the kernel ignores
  (Linux fs/erofs/zmap.c, z_erofs_map_blocks_fo: EROFS_MAP_FRAGMENT for the tail extent);
- a whole file: the 8 header bytes are one u64 with bit 63 set (Z_FRAGMENT_INODE_BIT of
  h_clusterbits) and the offset in the rest, full-index layout, no indexes at all
  (z_erofs_fill_inode).
The kernel reads a fragment's byte at file offset `pos` from the packed inode at
`fragmentoff + pos - extent start`.

In the writer a fragment is an extent tuple (length, raw, offset in the packed inode,
FRAGMENT): the last of its file's extents, taking no blocks. Tails are appended to a
temporary file in the order the data writer consumes extents (tree order, whatever the
threads do), so the packed inode's bytes never depend on timing; nothing is held in memory
beyond one tail at a time.
"""
from __future__ import annotations

import os
import tempfile

from ...errors import CapacityError
from .format import Z_FRAGMENT_INODE_BIT, Z_MAP_HEADER, Z_MAP_HEADER_FRAGMENT, Z_MAP_HEADER_WHOLE

FRAGMENT = -1  # the `blocks` of an extent tuple whose data is in the packed inode
U32 = 0xFFFFFFFF


def fragment_of(ino) -> tuple[int, bool] | None:
    """(offset in the packed inode, whole file?) of a file whose last extent is a fragment."""
    if not ino.extents:
        return None
    _length, _raw, offset, blocks = ino.extents[-1]
    if blocks != FRAGMENT:
        return None
    return offset, len(ino.extents) == 1


def is_whole_fragment(ino) -> bool:
    """A file stored entirely in the packed inode (its record holds no lcluster indexes)."""
    return bool(ino.extents) and ino.extents[0][3] == FRAGMENT


def map_header(advise: int, algorithmtype: int, idata_size: int, fragment: tuple[int, bool] | None) -> bytes:
    """The 8-byte z_erofs_map_header of a compressed file with lcluster indexes."""
    if fragment is None:
        return Z_MAP_HEADER.pack(idata_size=idata_size, advise=advise, algorithmtype=algorithmtype)
    return Z_MAP_HEADER_FRAGMENT.pack(fragmentoff=fragment[0], advise=advise, algorithmtype=algorithmtype)


def whole_header(offset: int) -> bytes:
    """The 16 bytes (header and the reserved 8) of a file stored whole in the packed inode."""
    return Z_MAP_HEADER_WHOLE.pack(fragment=offset | 1 << (56 + Z_FRAGMENT_INODE_BIT))


class Packer:
    """The packed inode's bytes, appended to a temporary file that lives until close()."""

    def __init__(self):
        fd, self.path = tempfile.mkstemp(prefix="fstool-packed-")
        self.fd = fd
        self.length = 0

    def add(self, data: bytes, whole: bool, where: str) -> int:
        """Append one fragment; return its offset in the packed inode."""
        off = self.length
        if not whole and off > U32:
            # a tail's offset has 32 bits (h_fragmentoff); whole files have 63
            raise CapacityError("the erofs packed inode (fragments) passed 4 GiB of file tails", where=where)
        done = 0
        view = memoryview(data)
        while done < len(data):
            done += os.pwrite(self.fd, view[done:], off + done)
        self.length += len(data)
        return off

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1
            try:
                os.unlink(self.path)
            except FileNotFoundError:
                pass
