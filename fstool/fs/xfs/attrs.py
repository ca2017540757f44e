"""Extended attributes: shortform (in the inode's attr fork), leaf blocks (one, or several
under a da-node root) and remote values.

Invariants: the namespace prefix becomes a flag (user: none, trusted: ROOT,
security: SECURE) and is not stored; leaf entries are sorted by xfs_da_hashname of
the bare name; POSIX ACLs become XFS's own trusted SGI_ACL_* xattrs; a value whose
local entry would reach 3/4 of a block lives in remote blocks (after the leaf and node
blocks) behind a CRC header.
"""
from __future__ import annotations

import struct

from ...errors import CapacityError
from .format import (ATTR3_LEAF_HDR_SIZE, ATTR3_LEAF_HDR_TAIL, ATTR3_LEAF_MAGIC, ATTR3_RMT_MAGIC,
                     ATTR_LEAF_ENT, ATTR_LOCAL, ATTR_NAMESPACES, ATTR_ROOT, ATTR_SF_ENT, ATTR_SF_HDR,
                     DA3_BLKINFO, DA3_CRC_OFF, DA3_NODE_HDR_TAIL, DA3_NODE_MAGIC, LEAF_ENT,
                     RMT_CRC_OFF, RMT_HDR, attr_local_size, attr_remote_size, da_hashname, set_crc)

Attr = tuple[int, bytes, bytes]  # flags (namespace), bare name, value


# POSIX ACLs: the VFS hands "system.posix_acl_*" values as version 2, little-endian
# (tag u16, perm u16, id u32) entries; XFS keeps them as trusted-namespace xattrs named
# SGI_ACL_FILE / SGI_ACL_DEFAULT in big-endian struct xfs_acl (count, then tag u32, id u32,
# perm u16, pad u16), with id -1 where the tag carries none (fs/xfs/xfs_acl.c).
ACL_NAMES = {"system.posix_acl_access": b"SGI_ACL_FILE", "system.posix_acl_default": b"SGI_ACL_DEFAULT"}
ACL_XATTRS = {v: k for k, v in ACL_NAMES.items()}
ACL_VFS_VERSION = 2
ACL_UNDEFINED_ID = 0xFFFFFFFF


def acl_to_disk(value: bytes, where: str) -> bytes:
    if len(value) < 4 or (len(value) - 4) % 8 or struct.unpack_from("<I", value)[0] != ACL_VFS_VERSION:
        raise CapacityError("not a POSIX ACL (version 2) value", where=where)
    ents = list(struct.iter_unpack("<HHI", value[4:]))
    out = bytearray(struct.pack(">I", len(ents)))
    for tag, perm, ident in ents:
        out += struct.pack(">IIHH", tag, ident if tag in (2, 8) else ACL_UNDEFINED_ID, perm, 0)
    return bytes(out)


def acl_from_disk(value: bytes) -> bytes | None:
    """struct xfs_acl -> the VFS form, or None when the value is not one."""
    if len(value) < 4:
        return None
    n = struct.unpack_from(">I", value)[0]
    if len(value) != 4 + 12 * n:
        return None
    out = bytearray(struct.pack("<I", ACL_VFS_VERSION))
    for tag, ident, perm, _ in struct.iter_unpack(">IIHH", value[4:]):
        out += struct.pack("<HHI", tag, perm, ident if tag in (2, 8) else ACL_UNDEFINED_ID)
    return bytes(out)


def split(xattrs: dict[str, bytes], where: str) -> list[Attr]:
    out = []
    for key in sorted(xattrs):
        if key in ACL_NAMES:
            out.append((ATTR_ROOT, ACL_NAMES[key], acl_to_disk(bytes(xattrs[key]), f"{where} {key}")))
            continue
        for prefix, flags in ATTR_NAMESPACES.items():
            if key.startswith(prefix) and len(key) > len(prefix):
                out.append((flags, key[len(prefix):].encode("utf-8", "surrogateescape"), xattrs[key]))
                break
        else:
            raise CapacityError(f"xattr {key!r}: xfs stores user., trusted., security. xattrs and "
                                "POSIX ACLs", where=where)
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
    """Attr leaf blocks plus remote value blocks after them. One leaf is attr fork block 0;
    more leaves sit at blocks 1.. under a da-node root at block 0 (the node form)."""

    def __init__(self, attrs: list[Attr], bs: int, where: str):
        self.bs = bs
        self.rmt_space = bs - RMT_HDR.size
        local_max = (bs >> 1) + (bs >> 2)
        items = []
        for flags, n, v in attrs:
            if attr_local_size(len(n), len(v)) < local_max:
                items.append([da_hashname(n), flags | ATTR_LOCAL, n, v, 0, attr_local_size(len(n), len(v))])
            else:
                items.append([da_hashname(n), flags, n, v, 0, attr_remote_size(len(n))])
        items.sort(key=lambda it: (it[0], it[2]))
        self.leaves: list[list] = [[]]
        used = ATTR3_LEAF_HDR_SIZE
        for it in items:
            need = ATTR_LEAF_ENT.size + it[5]
            if used + need > bs:
                self.leaves.append([])
                used = ATTR3_LEAF_HDR_SIZE
            self.leaves[-1].append(it)
            used += need
        per_node = (bs - 64) // 8
        if len(self.leaves) > per_node:
            raise CapacityError(f"{len(attrs)} xattrs need more than {per_node} attr leaf blocks "
                                "(a multi-level attr tree is not supported)", where=where)
        self.leaf_blks = [0] if len(self.leaves) == 1 else list(range(1, len(self.leaves) + 1))
        nblk = self.leaf_blks[-1] + 1
        for it in items:
            if not it[1] & ATTR_LOCAL:
                it[4] = nblk
                nblk += -(-len(it[3]) // self.rmt_space)
        self.nblocks = nblk

    def render(self, owner: int, uuid: bytes, daddr: dict[int, int]) -> dict[int, bytes]:
        bs = self.bs
        out: dict[int, bytes] = {}
        blks = self.leaf_blks
        for li, leaf in enumerate(self.leaves):
            buf = bytearray(bs)
            top = bs
            for i, (h, flags, n, v, vblk, size) in enumerate(leaf):
                top -= size
                if flags & ATTR_LOCAL:
                    struct.pack_into(">HB", buf, top, len(v), len(n))
                    buf[top + 3:top + 3 + len(n) + len(v)] = n + v
                else:
                    struct.pack_into(">IIB", buf, top, vblk, len(v), len(n))
                    buf[top + 9:top + 9 + len(n)] = n
                    out.update(self._remote(v, vblk, owner, uuid, daddr))
                ATTR_LEAF_ENT.pack_into(buf, ATTR3_LEAF_HDR_SIZE + i * ATTR_LEAF_ENT.size, h, top, flags, 0)
            base = ATTR3_LEAF_HDR_SIZE + ATTR_LEAF_ENT.size * len(leaf)
            buf[:DA3_BLKINFO.size] = DA3_BLKINFO.pack(
                forw=blks[li + 1] if li + 1 < len(blks) else 0, back=blks[li - 1] if li else 0,
                magic=ATTR3_LEAF_MAGIC, blkno=daddr[blks[li]], uuid=uuid, owner=owner)
            freemap = struct.pack(">HHHHHH", base, top - base, 0, 0, 0, 0)
            ATTR3_LEAF_HDR_TAIL.pack_into(buf, DA3_BLKINFO.size, len(leaf), bs - top, top, 0, 0,
                                          freemap, 0)
            out[blks[li]] = bytes(set_crc(buf, DA3_CRC_OFF))
        if len(self.leaves) > 1:
            buf = bytearray(bs)
            buf[:DA3_BLKINFO.size] = DA3_BLKINFO.pack(magic=DA3_NODE_MAGIC, blkno=daddr[0], uuid=uuid,
                                                      owner=owner)
            DA3_NODE_HDR_TAIL.pack_into(buf, DA3_BLKINFO.size, len(self.leaves), 1, 0)
            for i, leaf in enumerate(self.leaves):
                LEAF_ENT.pack_into(buf, 64 + 8 * i, leaf[-1][0], blks[i])
            out[0] = bytes(set_crc(buf, DA3_CRC_OFF))
        return out

    def _remote(self, v: bytes, vblk: int, owner: int, uuid: bytes,
                daddr: dict[int, int]) -> dict[int, bytes]:
        out = {}
        for k in range(-(-len(v) // self.rmt_space)):
            piece = v[k * self.rmt_space:(k + 1) * self.rmt_space]
            rb = bytearray(self.bs)
            rb[:RMT_HDR.size] = RMT_HDR.pack(magic=ATTR3_RMT_MAGIC, offset=k * self.rmt_space,
                                             bytes=len(piece), uuid=uuid, owner=owner,
                                             blkno=daddr[vblk + k])
            rb[RMT_HDR.size:RMT_HDR.size + len(piece)] = piece
            out[vblk + k] = bytes(set_crc(rb, RMT_CRC_OFF))
        return out
