"""dm-verity hash trees (format 1, sha256, 4 KiB blocks), as `veritysetup format` writes them.

The hash device holds a 512-byte superblock in its first 4 KiB block, then the tree's
levels, the top (smallest) level first and the level hashing the data blocks last
(cryptsetup lib/verity/verity_hash.c). Each digest is sha256(salt || block) (format 1
puts the salt first); a hash block holds 128 digests, zero-padded. The root hash is the
digest of the top level's single block, or of the only data block when there is one.

Identifiers follow systemd-repart and the Discoverable Partitions Specification: the
salt is derived from the data (the same content always gives the same salt, tree and
root hash), the data partition's UUID is the root hash's first 128 bits and the hash
partition's UUID (also the superblock's UUID) its last 128 bits.

Invariant: the data is read twice, in 1 MiB pieces (once for the salt, once for the
tree); memory holds the digests of one level at a time (1/128 of the data's size).
"""
from __future__ import annotations

import hashlib
import os
import struct
import uuid
from dataclasses import dataclass

from .errors import CapacityError
from .image import ImageFile

SUPERBLOCK = struct.Struct("<8sII16s32sIIQH6s256s168s")
# signature "verity\0\0", version 1, hash_type 1 (normal), uuid, algorithm, data_block_size,
# hash_block_size, data_blocks, salt_size, pad, salt, pad  (512 bytes)
SIGNATURE = b"verity\0\0"
BLOCK = 4096
DIGEST = 32
PER_BLOCK = BLOCK // DIGEST  # 128 digests per hash block
READ = 1 << 20
SALT_PURPOSE = b"fstool/dm-verity/salt\0"


@dataclass
class VerityInfo:
    root_hash: bytes
    salt: bytes
    data_blocks: int
    hash_size: int  # bytes of the hash area: superblock block + tree

    @property
    def data_uuid(self) -> uuid.UUID:
        return uuid.UUID(bytes=self.root_hash[:16])

    @property
    def hash_uuid(self) -> uuid.UUID:
        return uuid.UUID(bytes=self.root_hash[-16:])

    def layout(self) -> dict:
        return {"root_hash": self.root_hash.hex(), "salt": self.salt.hex(), "format": 1,
                "hash_algorithm": "sha256", "data_block_size": BLOCK, "hash_block_size": BLOCK,
                "data_blocks": self.data_blocks, "hash_size": self.hash_size}


def level_sizes(data_blocks: int) -> list[int]:
    """Hash blocks in each level, level 0 (hashing the data) first."""
    levels = 0
    while levels * 7 < 64 and (data_blocks - 1) >> (7 * levels):
        levels += 1
    return [-(-data_blocks // PER_BLOCK ** (i + 1)) for i in range(levels)]


def hash_size(data_size: int) -> int:
    """Bytes the hash area needs for data_size bytes of data (superblock included)."""
    return BLOCK * (1 + sum(level_sizes(data_size // BLOCK)))


def _read_blocks(fd: int, off: int, size: int):
    pos = 0
    while pos < size:
        n = min(READ, size - pos)
        data = os.pread(fd, n, off + pos)
        if len(data) < n:  # past the end of a sparse file: zeros
            data += bytes(n - len(data))
        yield data
        pos += n


def derive_salt(fd: int, off: int, size: int) -> bytes:
    h = hashlib.sha256(SALT_PURPOSE)
    for data in _read_blocks(fd, off, size):
        h.update(data)
    return h.digest()


def build(fd: int, off: int, size: int, out: ImageFile, hash_off: int, *,
          where: str = "verity") -> VerityInfo:
    """Hash size bytes at off of fd; write the superblock and tree at hash_off of out."""
    if size % BLOCK or size == 0:
        raise CapacityError(f"dm-verity data must be a positive multiple of {BLOCK} bytes, "
                            f"got {size}", where=where)
    data_blocks = size // BLOCK
    salt = derive_salt(fd, off, size)
    base = hashlib.sha256(salt)
    zero = bytes(BLOCK)
    zh = base.copy()
    zh.update(zero)
    zero_digest = zh.digest()
    # level 0: the data blocks' digests
    digests = bytearray()
    for data in _read_blocks(fd, off, size):
        view = memoryview(data)
        for i in range(0, len(data), BLOCK):
            blk = view[i:i + BLOCK]
            if blk == zero:
                digests += zero_digest
            else:
                h = base.copy()
                h.update(blk)
                digests += h.digest()
    sizes = level_sizes(data_blocks)
    # positions: the top level right after the superblock, level 0 last
    pos = hash_off + BLOCK
    starts = [0] * len(sizes)
    for i in range(len(sizes) - 1, -1, -1):
        starts[i] = pos
        pos += sizes[i] * BLOCK
    if not sizes:
        root = bytes(digests)
    for i, nblocks in enumerate(sizes):
        level = bytearray(nblocks * BLOCK)
        per = PER_BLOCK * DIGEST
        for b in range(nblocks):
            chunk = digests[b * per:(b + 1) * per]
            level[b * BLOCK:b * BLOCK + len(chunk)] = chunk
        out.pwrite(level, starts[i])
        nxt = bytearray()
        for b in range(nblocks):
            h = base.copy()
            h.update(memoryview(level)[b * BLOCK:(b + 1) * BLOCK])
            nxt += h.digest()
        digests = nxt
        if i == len(sizes) - 1:
            root = bytes(digests)
    info = VerityInfo(root_hash=root, salt=salt, data_blocks=data_blocks, hash_size=pos - hash_off)
    sb = SUPERBLOCK.pack(SIGNATURE, 1, 1, info.hash_uuid.bytes, b"sha256", BLOCK, BLOCK,
                         data_blocks, len(salt), bytes(6), salt, bytes(168))
    out.pwrite(sb + bytes(BLOCK - len(sb)), hash_off)
    return info


def describe_superblock(region) -> str | None:
    """A one-line description of a verity hash device's superblock (for `fstool info`), or
    None when region does not start with one."""
    if region.length < SUPERBLOCK.size:
        return None
    raw = region.pread(SUPERBLOCK.size, 0)
    if raw[:8] != SIGNATURE:
        return None
    (_, version, htype, uid, alg, dbs, hbs, blocks, salt_size, _, salt, _) = SUPERBLOCK.unpack(raw)
    name = alg.split(b"\0", 1)[0].decode("ascii", "replace")
    return (f"dm-verity hash tree (format {htype}, {name}, {blocks} data blocks of {dbs} bytes, "
            f"uuid {uuid.UUID(bytes=uid)})")
