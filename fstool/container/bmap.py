"""bmaptool block maps (`.bmap`, format 2.0) for a raw image.

The map lists the image's mapped blocks: every block holding data, found with
SEEK_DATA/SEEK_HOLE on the raw image. Writers write every metadata structure, zeroed
ones included, so metadata is always mapped; only holes are left out. Each range carries
the sha256 of its bytes (the image's last block may be partial), and the file carries
the sha256 of itself computed with its own checksum field set to 64 ASCII zeros, as
bmaptool (bmaptools/BmapCreate.py) writes and BmapCopy.py verifies.

Invariant: the image is read once, range by range, in 1 MiB pieces.
"""
from __future__ import annotations

import hashlib
import os

from . import block_ranges

BLOCK = 4096
READ = 1 << 20
VERSION = "2.0"


def _range_sha256(fd: int, start: int, end: int) -> str:
    h = hashlib.sha256()
    pos = start
    while pos < end:
        data = os.pread(fd, min(READ, end - pos), pos)
        if not data:
            raise OSError(f"short read at {pos}")
        h.update(data)
        pos += len(data)
    return h.hexdigest()


def render(fd: int, size: int) -> bytes:
    """The bmap XML for the raw image fd of size bytes."""
    blocks = (size + BLOCK - 1) // BLOCK
    ranges = []
    mapped = 0
    for first, end in block_ranges(fd, size, BLOCK):
        digest = _range_sha256(fd, first * BLOCK, min(end * BLOCK, size))
        last = end - 1
        span = f"{first}-{last}" if last != first else f"{first}"
        ranges.append(f'        <Range chksum="{digest}"> {span} </Range>\n')
        mapped += end - first
    placeholder = "0" * 64
    text = (
        '<?xml version="1.0" ?>\n'
        "<!-- Block map of a raw image, written by fstool: the blocks that hold data (partition\n"
        "     tables, filesystem metadata, files). Only these need to be copied to the target;\n"
        "     `bmaptool copy IMAGE DEVICE` does so and checks each range's sha256. -->\n"
        f'<bmap version="{VERSION}">\n'
        f"    <!-- Image size in bytes -->\n"
        f"    <ImageSize> {size} </ImageSize>\n\n"
        f"    <!-- Size of a block in bytes -->\n"
        f"    <BlockSize> {BLOCK} </BlockSize>\n\n"
        f"    <!-- Count of blocks in the image file -->\n"
        f"    <BlocksCount> {blocks} </BlocksCount>\n\n"
        f"    <!-- Count of mapped blocks -->\n"
        f"    <MappedBlocksCount> {mapped} </MappedBlocksCount>\n\n"
        f"    <!-- Type of checksum used in this file -->\n"
        f"    <ChecksumType> sha256 </ChecksumType>\n\n"
        f"    <!-- The checksum of this bmap file, computed with this field set to 64 zeros -->\n"
        f"    <BmapFileChecksum> {placeholder} </BmapFileChecksum>\n\n"
        f"    <!-- Mapped block ranges, each with the sha256 of its bytes -->\n"
        f"    <BlockMap>\n"
        + "".join(ranges) +
        "    </BlockMap>\n"
        "</bmap>\n")
    own = hashlib.sha256(text.encode()).hexdigest()
    return text.replace(placeholder, own, 1).encode()
