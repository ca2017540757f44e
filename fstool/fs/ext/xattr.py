"""Extended attributes of ext inodes: in the inode's spare bytes when they fit, else in one
shared xattr block per distinct set (refcounted, as the kernel shares them).

Invariants: entries are sorted (name index, name length, name) as e2fsprogs sorts them;
values are packed down from the end of their area, each padded to 4 bytes; an in-inode area
starts with the ibody magic; a block starts with XATTR_HEADER and, with metadata_csum, its
checksum covers the block number and the block with the checksum field zero.
"""
from __future__ import annotations

from dataclasses import dataclass, field

from ...errors import InputError
from ...tree import Node
from .format import (
    EXTRA_ISIZE, GOOD_OLD_INODE_SIZE, XATTR_END, XATTR_ENTRY, XATTR_HEADER, XATTR_IBODY_HEADER,
    XATTR_MAGIC, acl_to_disk, csum, split_xattr_name, xattr_block_hash, xattr_entry_hash,
)

XATTR_REFCOUNT_MAX = 1024  # as the kernel: a block shared by more inodes is duplicated
NAME_MAX = 255

Entry = tuple[int, bytes, bytes]  # (name index, name suffix, value as stored)


class XBlock:
    """One shared xattr block: its entries, how many inodes use it, where it was placed."""

    __slots__ = ("entries", "refcount", "block")

    def __init__(self, entries: list[Entry]):
        self.entries, self.refcount, self.block = entries, 0, 0


@dataclass
class XattrBlocks:
    """The distinct shared blocks, in the order inodes first asked for them."""

    blocks: list[XBlock] = field(default_factory=list)
    by_key: dict[tuple, XBlock] = field(default_factory=dict)

    def share(self, entries: list[Entry]) -> XBlock:
        key = tuple(entries)
        xb = self.by_key.get(key)
        if xb is None or xb.refcount >= XATTR_REFCOUNT_MAX:
            xb = XBlock(entries)
            self.by_key[key] = xb
            self.blocks.append(xb)
        xb.refcount += 1
        return xb


def entries_of(node: Node) -> list[Entry]:
    """A node's xattrs as ext stores them (ACLs in ext4's compact form), sorted."""
    out = []
    for name, value in node.xattrs.items():
        sp = split_xattr_name(name)
        if sp is None:
            raise InputError(f"xattr {name!r}: ext stores only user., trusted., security. and "
                             f"system. attributes", where=node.where())
        idx, suffix = sp
        if len(suffix) > NAME_MAX:
            raise InputError(f"xattr name {name!r} is too long", where=node.where())
        if idx in (2, 3):
            try:
                value = acl_to_disk(bytes(value))
            except ValueError as e:
                raise InputError(f"xattr {name}: {e}", where=node.where()) from None
        out.append((idx, suffix, bytes(value)))
    out.sort(key=lambda e: (e[0], len(e[1]), e[1]))
    return out


def _pad4(n: int) -> int:
    return (n + 3) & ~3


def space(entries: list[Entry]) -> tuple[int, int]:
    """(bytes of entry descriptors incl. the 4-byte end marker, bytes of padded values)."""
    return (sum(XATTR_ENTRY.size + _pad4(len(n)) for _, n, _ in entries) + XATTR_END,
            sum(_pad4(len(v)) for _, _, v in entries))


def block_bytes_needed(entries: list[Entry]) -> int:
    return XATTR_HEADER.size + sum(space(entries))


def body(entries: list[Entry], size: int, base: int, value_base: int) -> tuple[bytearray, list[int]]:
    """Entries at `base`, values packed down from `size`; value offsets are relative to
    `value_base`. Returns the area and the entry hashes."""
    area = bytearray(size)
    pos, vend = base, size
    hashes = []
    for idx, name, value in entries:
        if value:
            vend -= _pad4(len(value))
            area[vend:vend + len(value)] = value
            voff = vend - value_base
        else:
            voff = 0
        h = xattr_entry_hash(name, value)
        hashes.append(h)
        XATTR_ENTRY.pack_into(area, pos, name_len=len(name), name_index=idx, value_offs=voff,
                              value_size=len(value), hash=h)
        area[pos + XATTR_ENTRY.size:pos + XATTR_ENTRY.size + len(name)] = name
        pos += XATTR_ENTRY.size + _pad4(len(name))
    return area, hashes


def place(node: Node, inode_size: int, shared: XattrBlocks) -> tuple[bytes, XBlock | None]:
    """(in-inode xattr area, or b""; shared block, or None) for a node's xattrs."""
    entries = entries_of(node)
    if not entries:
        return b"", None
    ent, val = space(entries)
    room = 0
    if inode_size > GOOD_OLD_INODE_SIZE:
        room = inode_size - GOOD_OLD_INODE_SIZE - EXTRA_ISIZE - XATTR_IBODY_HEADER.size
    if ent + val <= room:
        area, _ = body(entries, room, 0, 0)
        return XATTR_IBODY_HEADER.pack(magic=XATTR_MAGIC) + bytes(area), None
    return b"", shared.share(entries)


def block(xb: XBlock, bs: int, csum_on: bool, fs_seed: int) -> bytes:
    """The bytes of a shared xattr block, placed at xb.block."""
    area, hashes = body(xb.entries, bs, XATTR_HEADER.size, 0)
    fields = dict(magic=XATTR_MAGIC, refcount=xb.refcount, blocks=1, hash=xattr_block_hash(hashes))
    XATTR_HEADER.pack_into(area, 0, **fields)
    if csum_on:
        c = csum(csum(fs_seed, xb.block.to_bytes(8, "little")), area)
        XATTR_HEADER.pack_into(area, 0, checksum=c, **fields)
    return bytes(area)
