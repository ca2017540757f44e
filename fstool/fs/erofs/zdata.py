"""Reading z_erofs compressed files: full and compact lcluster indexes, four decoders.

Every lcluster of the file has one index. A HEAD (or PLAIN, uncompressed) lcluster
starts an extent at its `clusterofs`; the extent runs to where the next one starts (or
to the end of the file) and decompresses from one pcluster: one block, or, with big
pclusters, the block count the first NONHEAD lcluster after the head records. Compact
indexes pack 2 (4-byte form) or 16 (2-byte form) lclusters per unit with the block
address of the unit stored once at its end; block addresses of heads are recounted as
the kernel does (`_compact_pblk`). Extents are decoded one at a time, so memory stays
bounded by the largest extent (at most 12 MiB by the format). With fragments, a file's
last extent (or the whole file) is a range of the packed inode (`ErofsReader._packed_read`).
"""
from __future__ import annotations

import lzma
import struct
import zlib
from bisect import bisect_right
from functools import cached_property
from typing import Iterator

from ...errors import ImageError
from .format import (
    INCOMPAT_BIG_PCLUSTER, INCOMPAT_LZ4_0PADDING, LAYOUT_COMPRESSED_COMPACT, Z_ADVISE_BIG_PCLUSTER_1,
    Z_ADVISE_BIG_PCLUSTER_2, Z_ADVISE_COMPACTED_2B, Z_ADVISE_FRAGMENT_PCLUSTER, Z_ADVISE_INLINE_PCLUSTER,
    Z_ALG_DEFLATE, Z_ALG_LZ4, Z_ALG_LZMA, Z_ALG_ZSTD, Z_FRAGMENT_INODE_BIT, Z_LCLUSTER_HEAD1, Z_LCLUSTER_HEAD2,
    Z_LCLUSTER_INDEX, Z_LCLUSTER_NONHEAD, Z_LCLUSTER_PLAIN, Z_LI_D0_CBLKCNT, Z_MAP_HEADER, Z_MAP_HEADER_FRAGMENT,
    compact_layout, compact_nblk,
)

Z_ADVISE_INTERLACED_PCLUSTER = 0x10
MAX_DSIZE = 12 << 20


def _lz4(src: bytes, n: int) -> bytes:
    import lz4.block
    return lz4.block.decompress(src, uncompressed_size=n)


def _microlzma(src: bytes, n: int) -> bytes:
    # MicroLZMA: the range coder's first byte (always 0) holds the inverted properties byte
    props = ~src[0] & 0xFF
    if props >= 225:
        raise ValueError("bad MicroLZMA properties")
    filt = {"id": lzma.FILTER_LZMA1, "dict_size": 1 << 24, "lc": props % 9, "lp": (props // 9) % 5,
            "pb": props // 45}
    d = lzma.LZMADecompressor(lzma.FORMAT_RAW, filters=[filt])
    return d.decompress(b"\0" + src[1:], max_length=n)


def _deflate(src: bytes, n: int) -> bytes:
    return zlib.decompressobj(-15).decompress(src, n)


def _zstd(src: bytes, n: int) -> bytes:
    import zstandard
    return zstandard.ZstdDecompressor().decompressobj().decompress(src)[:n]


DECODERS = {Z_ALG_LZ4: _lz4, Z_ALG_LZMA: _microlzma, Z_ALG_DEFLATE: _deflate, Z_ALG_ZSTD: _zstd}


def _decode_bits(data: bytes, pos: int, lclusterbits: int) -> tuple[int, int]:
    v = int.from_bytes(data[pos // 8:pos // 8 + 4].ljust(4, b"\0"), "little") >> (pos & 7)
    return v & ((1 << lclusterbits) - 1), (v >> lclusterbits) & 3


class _Indexes:
    """(type, clusterofs, pblk, cblks) for each lcluster of one compressed inode."""

    def __init__(self, reader, ino, advise: int, lclusterbits: int, big: bool):
        self.r, self.ino, self.advise, self.lcbits, self.big = reader, ino, advise, lclusterbits, big
        self.total = -(-ino.size // (1 << lclusterbits))
        end = reader._iloc(ino.nid) + ino.isize + ino.xattr_size
        self.hdr = -(-end // 8) * 8
        self.compact = ino.layout == LAYOUT_COMPRESSED_COMPACT
        if self.total > reader.r.length:  # more lclusters than the image has bytes
            raise ImageError(f"inode nid {ino.nid}: absurd compressed size {ino.size}", where=reader.where)
        if not self.compact:
            self.raw = reader.r.pread(Z_LCLUSTER_INDEX.size * self.total, self.hdr + Z_MAP_HEADER.size + 8)
        else:
            ebase = self.hdr + Z_MAP_HEADER.size
            self.ebase = ebase
            self.c4_initial, self.c2, _ = compact_layout(ebase, self.total)
            if self.c2 and not (advise & Z_ADVISE_COMPACTED_2B and lclusterbits == 12):
                self.c4_initial, self.c2 = ((32 - ebase % 32) // 4) & 7, 0
            size = self.c4_initial * 4 + self.c2 * 2 + (self.total - self.c4_initial - self.c2) * 4
            size = -(-size // 32) * 32 + 32
            avail = reader.r.length - ebase
            self.raw = reader.r.pread(min(size, avail), ebase)

    def end(self) -> int:
        """Where the indexes end: after the unit holding the last lcluster's index."""
        if not self.compact:
            return self.hdr + Z_MAP_HEADER.size + 8 + Z_LCLUSTER_INDEX.size * self.total
        base, vcnt, _i = self._unit(self.total - 1)
        return self.ebase + base + (vcnt << (1 if vcnt == 16 else 2))

    def _unit(self, lcn: int) -> tuple[int, int, int]:
        """(byte offset of its unit in self.raw, unit size, position inside the unit)."""
        pos = 0
        if lcn < self.c4_initial:
            shift = 2
        else:
            pos += self.c4_initial * 4
            lcn -= self.c4_initial
            if lcn < self.c2:
                shift = 1
            else:
                pos += self.c2 * 2
                lcn -= self.c2
                shift = 2
        pos += lcn << shift
        vcnt = 16 if shift == 1 else 2
        unit = vcnt << shift
        absolute = self.ebase + pos
        base = absolute - (absolute % unit)
        return base - self.ebase, vcnt, (absolute - base) >> shift

    def get(self, lcn: int) -> tuple[int, int, int]:
        """(type, clusterofs or delta0, block address for heads)."""
        if not self.compact:
            advise, clusterofs, u = Z_LCLUSTER_INDEX.unpack(self.raw, lcn * Z_LCLUSTER_INDEX.size)
            t = advise & 3
            return (t, u & 0xFFFF, 0) if t == Z_LCLUSTER_NONHEAD else (t, clusterofs, u)
        base, vcnt, i = self._unit(lcn)
        unit = self.raw[base:base + (vcnt << (1 if vcnt == 16 else 2))]
        if len(unit) < 4:
            raise ImageError(f"inode nid {self.ino.nid}: compact indexes run past the image", where=self.r.where)
        encodebits = ((len(unit) - 4) * 8) // vcnt
        lo, t = _decode_bits(unit, encodebits * i, self.lcbits)
        if t == Z_LCLUSTER_NONHEAD:
            return t, lo, 0
        return t, lo, self._compact_pblk(unit, vcnt, encodebits, i)

    def _compact_pblk(self, unit: bytes, vcnt: int, encodebits: int, i: int) -> int:
        vals = [_decode_bits(unit, encodebits * k, self.lcbits)[::-1] for k in range(i)]
        try:
            nblk = compact_nblk(vals, i, self.big)
        except ValueError as e:
            raise ImageError(f"inode nid {self.ino.nid}: {e}", where=self.r.where) from None
        return struct.unpack_from("<I", unit, len(unit) - 4)[0] + nblk


class ZMap:
    """One compressed inode's extents, found once from its map header and lcluster indexes:
    `spans` holds (logical start, end, how) per extent, `how` being ("block", type, pblk,
    cblks), ("inline", type) for a ztailpacking tail, or ("fragment", offset) for bytes in the
    packed inode. `extent(k)` decodes one (at most MAX_DSIZE bytes); `read(off, n)` streams a
    range, which the packed inode's readers need (many small reads at scattered offsets)."""

    def __init__(self, reader, ino):
        self.r, self.ino = reader, ino
        sb, bs = reader.sb, reader.bs
        hdr_pos = -(-(reader._iloc(ino.nid) + ino.isize + ino.xattr_size) // 8) * 8
        raw = reader.r.pread(Z_MAP_HEADER.size, hdr_pos)
        hdr = Z_MAP_HEADER.unpack(raw)
        self.spans: list[tuple[int, int, tuple]] = []
        self.idata = None
        if hdr.clusterbits >> Z_FRAGMENT_INODE_BIT:
            # the whole file is in the packed inode (z_erofs_fill_inode: bit 63 of the header)
            offset = struct.unpack("<Q", raw)[0] ^ (1 << 63)
            if ino.size:
                self.spans.append((0, ino.size, ("fragment", offset)))
            return
        big_sb = bool(sb.feature_incompat & INCOMPAT_BIG_PCLUSTER)
        if not big_sb and ino.layout != LAYOUT_COMPRESSED_COMPACT and not sb.feature_incompat & 0x30:
            advise, algs, lcbits = 0, (Z_ALG_LZ4, Z_ALG_LZ4), sb.blkszbits  # the kernel ignores the header then
        else:
            advise = hdr.advise
            algs = (hdr.algorithmtype & 15, hdr.algorithmtype >> 4)
            lcbits = sb.blkszbits + (hdr.clusterbits & 7)
        self.algs = algs
        fragment = bool(advise & Z_ADVISE_FRAGMENT_PCLUSTER)
        if fragment:  # h_fragmentoff overlays h_reserved1 and h_idata_size
            fragoff = Z_MAP_HEADER_FRAGMENT.unpack(raw).fragmentoff
        lcs = 1 << lcbits
        big = bool(advise & (Z_ADVISE_BIG_PCLUSTER_1 | Z_ADVISE_BIG_PCLUSTER_2))
        idx = _Indexes(reader, ino, advise, lcbits, big)
        self.zeropad = bool(sb.feature_incompat & INCOMPAT_LZ4_0PADDING)
        self.interlaced = bool(advise & Z_ADVISE_INTERLACED_PCLUSTER)

        # the extents, from the heads: (logical start, type, block address, compressed blocks)
        heads = []
        for lcn in range(idx.total):
            t, ofs, pblk = idx.get(lcn)
            if t == Z_LCLUSTER_NONHEAD:
                if heads and heads[-1][4] == lcn - 1 and ofs & Z_LI_D0_CBLKCNT:
                    heads[-1][3] = ofs & ~Z_LI_D0_CBLKCNT
                continue
            if ofs >= lcs:
                raise ImageError(f"inode nid {ino.nid}: cluster offset {ofs} out of range", where=reader.where)
            la = lcn * lcs + ofs
            if la < ino.size:
                heads.append([la, t, pblk, 1, lcn])
        if not heads or heads[0][0] != 0:
            raise ImageError(f"inode nid {ino.nid}: compressed file does not start with an extent", where=reader.where)
        if fragment:
            # the last extent is in the packed inode; full indexes keep the offset's high 32 bits
            # in its head's address; a tail whose head is in lcluster 0 means the whole file
            # (z_erofs_map_blocks_fo: z_tailextent_headlcn 0)
            if ino.layout != LAYOUT_COMPRESSED_COMPACT:
                fragoff |= heads[-1][2] << 32
            if heads[-1][4] == 0:
                self.spans = [(0, ino.size, ("fragment", fragoff))]
                return
            self.spans = [(h[0], heads[k + 1][0] if k + 1 < len(heads) else ino.size,
                           ("fragment", fragoff) if k + 1 == len(heads) else ("block", h[1], h[2], h[3]))
                          for k, h in enumerate(heads)]
            return
        if advise & Z_ADVISE_INLINE_PCLUSTER:
            # ztailpacking: the last extent's pcluster follows the index unit of the last lcluster
            size = Z_MAP_HEADER.unpack(raw).idata_size
            pos = idx.end()
            if size == 0 or pos % bs + size > bs:
                raise ImageError(f"inode nid {ino.nid}: bad inline pcluster of {size} bytes", where=reader.where)
            self.idata = reader.r.pread(size, pos)
        for k, (la, t, pblk, cblks, _lcn) in enumerate(heads):
            end = heads[k + 1][0] if k + 1 < len(heads) else ino.size
            how = ("inline", t) if self.idata is not None and k + 1 == len(heads) else ("block", t, pblk, cblks)
            self.spans.append((la, end, how))

    def extent(self, k: int) -> bytes:
        r, ino, bs = self.r, self.ino, self.r.bs
        la, end, how = self.spans[k]  # never a fragment: chunks() and read() see to those
        n = end - la
        if n > MAX_DSIZE or n <= 0:
            raise ImageError(f"inode nid {ino.nid}: extent of {n} bytes", where=r.where)
        t = how[1]
        if how[0] == "inline":
            if t == Z_LCLUSTER_PLAIN:
                if len(self.idata) < n:
                    raise ImageError(f"inode nid {ino.nid}: inline tail too short", where=r.where)
                return self.idata[:n]
            alg = self.algs[0] if t == Z_LCLUSTER_HEAD1 else self.algs[1]
            return _decode(r, ino, alg, self.idata, n, "inline")
        _kind, t, pblk, cblks = how
        if pblk * bs + cblks * bs > r.r.length:
            raise ImageError(f"inode nid {ino.nid}: pcluster outside the image", where=r.where)
        if t == Z_LCLUSTER_PLAIN:
            block = r.r.pread(bs, pblk * bs)
            if n > bs:
                raise ImageError(f"inode nid {ino.nid}: plain extent of {n} bytes", where=r.where)
            if self.interlaced:
                s = la % bs
                block = block[s:] + block[:s]
            return block[:n]
        alg = self.algs[0] if t == Z_LCLUSTER_HEAD1 else self.algs[1]
        if t not in (Z_LCLUSTER_HEAD1, Z_LCLUSTER_HEAD2):
            raise ImageError(f"inode nid {ino.nid}: unknown lcluster type {t}", where=r.where)
        src = r.r.pread(cblks * bs, pblk * bs)
        if self.zeropad:
            src = src.lstrip(b"\0")
        return _decode(r, ino, alg, src, n, f"block {pblk}")

    @cached_property
    def starts(self) -> list[int]:
        """The first file offset of each extent (for read's search)."""
        return [s[0] for s in self.spans]

    def chunks(self) -> Iterator[bytes]:
        for k, (la, end, how) in enumerate(self.spans):
            if how[0] == "fragment":  # streamed: a whole-file fragment may be large
                yield from self.r._packed_read(how[1], end - la, self.ino.nid)
            else:
                yield self.extent(k)

    def read(self, off: int, n: int, cache: dict) -> Iterator[bytes]:
        """Bytes [off, off + n), extent by extent; `cache` keeps the last extent decoded (the
        next fragment is most often in the same one)."""
        if off < 0 or off + n > self.ino.size:
            raise ImageError(f"inode nid {self.ino.nid}: read of {n} bytes at {off} past its end",
                             where=self.r.where)
        k = bisect_right(self.starts, off) - 1
        while n > 0:
            la, end, how = self.spans[k]
            if how[0] == "fragment":
                raise ImageError(f"inode nid {self.ino.nid}: the packed inode refers to itself", where=self.r.where)
            if cache.get("k") != k:
                cache["k"], cache["data"] = k, self.extent(k)
            piece = cache["data"][off - la:min(end, off + n) - la]
            yield piece
            off += len(piece)
            n -= len(piece)
            k += 1


def read_compressed(reader, ino) -> Iterator[bytes]:
    yield from ZMap(reader, ino).chunks()


def _decode(reader, ino, alg: int, src: bytes, n: int, where: str) -> bytes:
    decoder = DECODERS.get(alg)
    if decoder is None:
        raise ImageError(f"inode nid {ino.nid}: unknown compression {alg}", where=reader.where)
    try:
        data = decoder(src, n)
    except Exception as e:  # each decoder raises its own error type on corrupt input
        raise ImageError(f"inode nid {ino.nid}: corrupt compressed data at {where} ({e})",
                         where=reader.where) from None
    if len(data) < n:
        raise ImageError(f"inode nid {ino.nid}: pcluster at {where} decodes short", where=reader.where)
    return data[:n]
