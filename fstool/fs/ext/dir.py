"""ext directories: linear blocks of entries, or an HTree (htree.py) when a directory
outgrows one block and dir_index is on.

Invariants: entries are 4-byte aligned records, the last one of a block stretched to the end
of the usable space; with metadata_csum every leaf block ends in a 12-byte dirent tail whose
checksum covers the block before it (seeded by the directory's inode); "." and ".." open
block 0.
"""
from __future__ import annotations

from .format import (
    DIRENT, DIRENT_TAIL, DIRENT_TAIL_FT, FT_DIR, csum, dirent_rec_len, inode_csum_seed, pack_dirent,
)
from .htree import Entry, htree_blocks


class DirBuilder:
    """Builds the blocks of directories of one filesystem; `largedir` becomes True when one
    needed a 3-level HTree (the large_dir feature)."""

    def __init__(self, bs: int, csum_on: bool, fs_seed: int, dir_index: bool, hash_seed: bytes):
        self.bs, self.csum_on, self.fs_seed, self.dir_index = bs, csum_on, fs_seed, dir_index
        self.seed = tuple(int.from_bytes(hash_seed[i:i + 4], "little") for i in range(0, 16, 4))
        self.usable = bs - (DIRENT_TAIL.size if csum_on else 0)
        self.largedir = False

    def finish_leaf(self, buf: bytearray, last: int, iseed: int) -> bytes:
        """Stretch the last entry to the end of the usable space, add the tail."""
        buf += bytes(self.usable - len(buf))
        rl = self.usable - last
        off = last + DIRENT.offset("rec_len")
        size = DIRENT.field_size("rec_len")
        buf[off:off + size] = rl.to_bytes(size, "little")
        if self.csum_on:
            buf += DIRENT_TAIL.pack(rec_len=DIRENT_TAIL.size, reserved_ft=DIRENT_TAIL_FT,
                                    checksum=csum(iseed, buf[:self.usable]))
        return bytes(buf)

    def pack_linear(self, entries: list[Entry], iseed: int, first: bytes | None) -> list[bytes]:
        blocks: list[bytes] = []
        buf = bytearray(first or b"")
        last = dirent_rec_len(1) if first else -1  # first: "." then ".."; ".." is the last so far
        for name, ino, ft in entries:
            rl = dirent_rec_len(len(name))
            if len(buf) + rl > self.usable:
                blocks.append(self.finish_leaf(buf, last, iseed))
                buf = bytearray()
            last = len(buf)
            buf += pack_dirent(ino, rl, name, ft)
        if last < 0:  # an empty block: one unused entry spanning it
            buf = bytearray(DIRENT.pack(rec_len=self.usable))
            last = 0
        blocks.append(self.finish_leaf(buf, last, iseed))
        return blocks

    def empty_block(self, iseed: int) -> bytes:
        buf = bytearray(self.usable)
        DIRENT.pack_into(buf, 0, rec_len=self.usable)
        return self.finish_leaf(buf, 0, iseed)

    def iseed(self, ino: int) -> int:
        return inode_csum_seed(self.fs_seed, ino) if self.csum_on else 0

    def build(self, ino: int, parent: int, entries: list[Entry]) -> tuple[list[bytes], bool]:
        """(blocks, indexed) for a directory whose sorted entries are (name, inode, type)."""
        iseed = self.iseed(ino)
        dots = (pack_dirent(ino, dirent_rec_len(1), b".", FT_DIR)
                + pack_dirent(parent, dirent_rec_len(2), b"..", FT_DIR))
        linear = self.pack_linear(entries, iseed, dots)
        if len(linear) == 1 or not self.dir_index:
            return linear, False
        blocks, depth = htree_blocks(ino, parent, entries, self.bs, self.usable, self.csum_on, iseed,
                                     self.seed, lambda buf, last: self.finish_leaf(buf, last, iseed))
        if depth > 1:
            self.largedir = True
        return blocks, True
