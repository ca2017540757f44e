"""Extended attributes: shortform (in the inode's attr fork) and one leaf block with
remote values.

Invariants: the namespace prefix becomes a flag (user: none, trusted: ROOT,
security: SECURE) and is not stored; leaf entries are sorted by xfs_da_hashname of
the bare name; a value whose local entry would reach 3/4 of a block lives in remote
blocks (attr fork blocks 1..) behind a CRC header.
"""
from __future__ import annotations

import struct

from ...errors import CapacityError
from .format import (ATTR3_LEAF_HDR_SIZE, ATTR3_LEAF_HDR_TAIL, ATTR3_LEAF_MAGIC, ATTR3_RMT_MAGIC,
                     ATTR_LEAF_ENT, ATTR_LOCAL, ATTR_NAMESPACES, ATTR_SF_ENT, ATTR_SF_HDR,
                     DA3_BLKINFO, DA3_CRC_OFF, RMT_CRC_OFF, RMT_HDR, attr_local_size,
                     attr_remote_size, da_hashname, set_crc)

Attr = tuple[int, bytes, bytes]  # flags (namespace), bare name, value


def split(xattrs: dict[str, bytes], where: str) -> list[Attr]:
    out = []
    for key in sorted(xattrs):
        for prefix, flags in ATTR_NAMESPACES.items():
            if key.startswith(prefix) and len(key) > len(prefix):
                out.append((flags, key[len(prefix):].encode("utf-8", "surrogateescape"), xattrs[key]))
                break
        else:
            raise CapacityError(f"xattr {key!r}: only user., trusted. and security. xattrs are "
                                "supported (POSIX ACLs not yet)", where=where)
    return out


def sf_size(attrs: list[Attr]) -> int | None:
    """Bytes of the shortform attr fork, or None when an entry is too big for it."""
    if any(len(n) >= 255 or len(v) >= 255 for _, n, v in attrs):
        return None
    return ATTR_SF_HDR.size + sum(ATTR_SF_ENT.size + len(n) + len(v) for _, n, v in attrs)


def shortform(attrs: list[Attr]) -> bytes:
    out = bytearray(ATTR_SF_HDR.pack(sf_size(attrs), len(attrs), 0))
    for flags, n, v in attrs:
        out += ATTR_SF_ENT.pack(len(n), len(v), flags) + n + v
    return bytes(out)


class LeafPlan:
    """One attr leaf block (attr fork block 0) plus remote value blocks after it."""

    def __init__(self, attrs: list[Attr], bs: int, where: str):
        self.bs = bs
        self.rmt_space = bs - RMT_HDR.size
        local_max = (bs >> 1) + (bs >> 2)
        self.items = []
        nblk = 1
        used = 0
        for flags, n, v in attrs:
            if attr_local_size(len(n), len(v)) < local_max:
                self.items.append((da_hashname(n), flags | ATTR_LOCAL, n, v, 0))
                used += attr_local_size(len(n), len(v))
            else:
                self.items.append((da_hashname(n), flags, n, v, nblk))
                nblk += -(-len(v) // self.rmt_space)
                used += attr_remote_size(len(n))
        self.items.sort(key=lambda it: (it[0], it[2]))
        if ATTR3_LEAF_HDR_SIZE + ATTR_LEAF_ENT.size * len(self.items) + used > bs:
            raise CapacityError(f"{len(attrs)} xattrs need more than one attr leaf block "
                                "(attr node form not supported yet)", where=where)
        self.nblocks = nblk

    def render(self, owner: int, uuid: bytes, daddr: dict[int, int]) -> dict[int, bytes]:
        bs = self.bs
        out: dict[int, bytes] = {}
        buf = bytearray(bs)
        top = bs
        for i, (h, flags, n, v, vblk) in enumerate(self.items):
            if flags & ATTR_LOCAL:
                size = attr_local_size(len(n), len(v))
                top -= size
                struct.pack_into(">HB", buf, top, len(v), len(n))
                buf[top + 3:top + 3 + len(n) + len(v)] = n + v
            else:
                size = attr_remote_size(len(n))
                top -= size
                struct.pack_into(">IIB", buf, top, vblk, len(v), len(n))
                buf[top + 9:top + 9 + len(n)] = n
                for k in range(-(-len(v) // self.rmt_space)):
                    piece = v[k * self.rmt_space:(k + 1) * self.rmt_space]
                    rb = bytearray(bs)
                    rb[:RMT_HDR.size] = RMT_HDR.pack(magic=ATTR3_RMT_MAGIC, offset=k * self.rmt_space,
                                                     bytes=len(piece), uuid=uuid, owner=owner,
                                                     blkno=daddr[vblk + k])
                    rb[RMT_HDR.size:RMT_HDR.size + len(piece)] = piece
                    out[vblk + k] = bytes(set_crc(rb, RMT_CRC_OFF))
            ATTR_LEAF_ENT.pack_into(buf, ATTR3_LEAF_HDR_SIZE + i * ATTR_LEAF_ENT.size, h, top, flags, 0)
        base = ATTR3_LEAF_HDR_SIZE + ATTR_LEAF_ENT.size * len(self.items)
        buf[:DA3_BLKINFO.size] = DA3_BLKINFO.pack(magic=ATTR3_LEAF_MAGIC, blkno=daddr[0], uuid=uuid,
                                                  owner=owner)
        freemap = struct.pack(">HHHHHH", base, top - base, 0, 0, 0, 0)
        ATTR3_LEAF_HDR_TAIL.pack_into(buf, DA3_BLKINFO.size, len(self.items), bs - top, top, 0, 0,
                                      freemap, 0)
        out[0] = bytes(set_crc(buf, DA3_CRC_OFF))
        return out
