"""Android sparse images (`.simg`): write from a sparse raw image, read as a Region.

The format is libsparse's (AOSP system/core/libsparse/sparse_format.h): a 28-byte file
header, then chunks, each a 12-byte header and its payload:
- RAW (0xCAC1): chunk_sz blocks of data follow;
- FILL (0xCAC2): one 4-byte word, repeated over chunk_sz blocks;
- DONT_CARE (0xCAC3): chunk_sz blocks nobody needs to write (our holes);
- CRC32 (0xCAC4): the CRC-32 of every block so far (holes count as zeros).
All little-endian. `simg2img` expands the file back to our raw bytes.

Invariants: the writer reads the raw image once, through its data extents (holes are
never read), and holds at most one RAW chunk (MAX_RAW bytes) in memory; the reader
indexes the chunk headers once (bounded by the file's size) and reads by bisection.
"""
from __future__ import annotations

import bisect
import os
import struct
import zlib
from typing import Iterator

from ..errors import ImageError, SpecError
from ..image import ImageFile
from . import block_ranges
from .view import FileBackend

HEADER = struct.Struct("<IHHHHIIII")  # magic, major, minor, file_hdr_sz, chunk_hdr_sz,
#                                        blk_sz, total_blks, total_chunks, image_checksum
CHUNK = struct.Struct("<HHII")  # chunk_type, reserved, chunk_sz (blocks), total_sz (bytes)
MAGIC = 0xED26FF3A
RAW, FILL, DONT_CARE, CRC32 = 0xCAC1, 0xCAC2, 0xCAC3, 0xCAC4
BLOCK = 4096
MAX_RAW = 4 << 20  # bytes per RAW chunk (its total_sz is a u32; fastboot likes small ones)
READ = 1 << 20


def block_size_for(size: int) -> int:
    """libsparse needs the image to be whole blocks; 4096 when possible, else 512."""
    for bs in (BLOCK, 512):
        if size % bs == 0:
            return bs
    raise SpecError(f"an Android sparse image holds whole blocks; {size} bytes is not a "
                    f"multiple of 512", where="format")


# --- CRC-32 over runs of zeros without reading them (zlib's crc32_combine idea): appending
# a zero bit to the raw CRC register is a linear map; square it to skip 2^k bits at once.
_POLY = 0xEDB88320


def _mat_times(mat: list[int], vec: int) -> int:
    out, i = 0, 0
    while vec:
        if vec & 1:
            out ^= mat[i]
        vec >>= 1
        i += 1
    return out


def _mat_square(mat: list[int]) -> list[int]:
    return [_mat_times(mat, mat[i]) for i in range(32)]


def crc32_zeros(crc: int, n: int) -> int:
    """zlib.crc32(bytes(n), crc), in O(log n)."""
    if n <= 0:
        return crc
    op = [_POLY] + [1 << i for i in range(31)]  # one zero bit
    reg = crc ^ 0xFFFFFFFF
    op = _mat_square(_mat_square(_mat_square(op)))  # one zero byte
    while n:
        if n & 1:
            reg = _mat_times(op, reg)
        n >>= 1
        if n:
            op = _mat_square(op)
    return reg ^ 0xFFFFFFFF


class _Emitter:
    """Appends chunks to the output, merging runs of the same kind."""

    def __init__(self, out: ImageFile, bs: int, crc: bool):
        self.out, self.bs, self.use_crc = out, bs, crc
        self.pos = HEADER.size
        self.chunks = 0
        self.crc = 0
        self.kind: int | None = None
        self.fill = b""
        self.blocks = 0
        self.raw: list[bytes] = []
        self.raw_len = 0

    def _put(self, data: bytes) -> None:
        self.out.pwrite(data, self.pos)
        self.pos += len(data)

    def flush(self) -> None:
        if self.kind is None or not self.blocks:
            self.kind = None
            return
        if self.kind == RAW:
            payload = b"".join(self.raw)
            self._put(CHUNK.pack(RAW, 0, self.blocks, CHUNK.size + len(payload)) + payload)
            if self.use_crc:
                self.crc = zlib.crc32(payload, self.crc)
            self.raw, self.raw_len = [], 0
        elif self.kind == FILL:
            self._put(CHUNK.pack(FILL, 0, self.blocks, CHUNK.size + 4) + self.fill)
            if self.use_crc:
                if self.fill == b"\0\0\0\0":
                    self.crc = crc32_zeros(self.crc, self.blocks * self.bs)
                else:
                    block = self.fill * (self.bs // 4)
                    for _ in range(self.blocks):
                        self.crc = zlib.crc32(block, self.crc)
        else:
            self._put(CHUNK.pack(DONT_CARE, 0, self.blocks, CHUNK.size))
            if self.use_crc:
                self.crc = crc32_zeros(self.crc, self.blocks * self.bs)
        self.chunks += 1
        self.kind, self.blocks = None, 0

    def add(self, kind: int, blocks: int, data: bytes = b"") -> None:
        if kind != self.kind or (kind == FILL and data != self.fill) or \
                (kind == RAW and self.raw_len + len(data) > MAX_RAW) or self.blocks + blocks >= 1 << 31:
            self.flush()
            self.kind = kind
            if kind == FILL:
                self.fill = data
        self.blocks += blocks
        if kind == RAW:
            self.raw.append(data)
            self.raw_len += len(data)


def write(src_fd: int, size: int, out: ImageFile, *, crc: bool = False) -> int:
    """Write the raw image src_fd (size bytes, holes skipped) as Android sparse; its size."""
    bs = block_size_for(size)
    total = size // bs
    em = _Emitter(out, bs, crc)
    cur = 0  # next block not yet emitted
    for first, end in block_ranges(src_fd, size, bs):
        if first > cur:
            em.add(DONT_CARE, first - cur)
        blk = first
        while blk < end:
            n = min(end - blk, READ // bs)
            buf = os.pread(src_fd, n * bs, blk * bs)
            if len(buf) != n * bs:
                raise ImageError(f"short read at {blk * bs}", where="raw image")
            # one comparison for a uniform buffer (zeros, erased flash), else block by block
            if buf == buf[:4] * (len(buf) // 4):
                em.add(FILL, n, buf[:4])
            else:
                view = memoryview(buf)
                run = 0  # first block of the pending run of RAW blocks in buf
                for i in range(n):
                    b = view[i * bs:(i + 1) * bs]
                    # cheap test first: a fill block repeats its first word everywhere
                    if b[:4] != b[4:8] or b[:4] != b[bs - 4:]:
                        continue
                    word = bytes(b[:4])
                    if b != word * (bs // 4):
                        continue
                    if i > run:
                        em.add(RAW, i - run, buf[run * bs:i * bs])
                    em.add(FILL, 1, word)
                    run = i + 1
                if run < n:
                    em.add(RAW, n - run, buf[run * bs:])
            blk += n
        cur = end
    if cur < total:
        em.add(DONT_CARE, total - cur)
    em.flush()
    if crc:
        em._put(CHUNK.pack(CRC32, 0, 0, CHUNK.size + 4) + struct.pack("<I", em.crc))
        em.chunks += 1
    out.pwrite(HEADER.pack(MAGIC, 1, 0, HEADER.size, CHUNK.size, bs, total, em.chunks,
                           em.crc if crc else 0), 0)
    out.truncate(em.pos)
    return em.pos


def probe(head: bytes) -> bool:
    return len(head) >= 4 and struct.unpack_from("<I", head)[0] == MAGIC


class SparseImage(FileBackend):
    """A Backend (see view.py) over an Android sparse file."""

    def _parse(self) -> None:
        self._index()

    def _bad(self, msg: str) -> ImageError:
        return ImageError(f"Android sparse image: {msg}", where=self.path)

    def _index(self) -> None:
        flen = os.fstat(self.fd).st_size
        raw = os.pread(self.fd, HEADER.size, 0)
        if len(raw) < HEADER.size:
            raise self._bad("truncated header")
        (magic, major, _minor, fhs, chs, bs, total, nchunks, _ck) = HEADER.unpack(raw)
        if magic != MAGIC:
            raise self._bad("bad magic")
        if major != 1:
            raise self._bad(f"major version {major} (only 1 is defined)")
        if fhs < HEADER.size or chs < CHUNK.size or bs == 0 or bs % 4:
            raise self._bad(f"bad header sizes (file {fhs}, chunk {chs}, block {bs})")
        if nchunks > flen // CHUNK.size:
            raise self._bad(f"{nchunks} chunks cannot fit in {flen} bytes")
        self.bs, self.size = bs, total * bs
        # per chunk: first block, block count, kind, file offset of payload or fill word
        self.starts: list[int] = []
        self.counts: list[int] = []
        self.kinds: list[int] = []
        self.payload: list[object] = []
        pos, blk = fhs, 0
        for i in range(nchunks):
            hdr = os.pread(self.fd, chs, pos)
            if len(hdr) < chs:
                raise self._bad(f"chunk {i} header past the end of the file")
            kind, _, cnt, tsz = CHUNK.unpack_from(hdr)
            body = pos + chs
            if tsz < chs or pos + tsz > flen:
                raise self._bad(f"chunk {i} size {tsz} is outside the file")
            if kind == RAW:
                if tsz - chs != cnt * bs:
                    raise self._bad(f"RAW chunk {i} holds {tsz - chs} bytes for {cnt} blocks")
                pay: object = body
            elif kind == FILL:
                if tsz - chs != 4:
                    raise self._bad(f"FILL chunk {i} has a {tsz - chs}-byte payload")
                pay = os.pread(self.fd, 4, body)
            elif kind == DONT_CARE:
                pay = None
            elif kind == CRC32:
                pos += tsz
                continue  # a checksum, not blocks
            else:
                raise self._bad(f"chunk {i} has unknown type 0x{kind:04x}")
            if cnt:
                self.starts.append(blk)
                self.counts.append(cnt)
                self.kinds.append(kind)
                self.payload.append(pay)
            blk += cnt
            pos += tsz
        if blk != total:
            raise self._bad(f"chunks cover {blk} blocks, the header says {total}")

    def read(self, off: int, n: int) -> bytes:
        out = bytearray()
        end = off + n
        while off < end:
            blk = off // self.bs
            i = bisect.bisect_right(self.starts, blk) - 1
            cstart = self.starts[i] * self.bs
            cend = cstart + self.counts[i] * self.bs
            take = min(end, cend) - off
            kind = self.kinds[i]
            if kind == RAW:
                data = os.pread(self.fd, take, self.payload[i] + off - cstart)  # type: ignore[operator]
                if len(data) != take:
                    raise self._bad(f"short read at {off}")
                out += data
            elif kind == FILL:
                word = self.payload[i]
                rot = (off - cstart) % 4
                w = word[rot:] + word[:rot]  # type: ignore[index]
                out += (w * (take // 4 + 2))[:take]
            else:
                out += bytes(take)
            off += take
        return bytes(out)

    def extents(self) -> Iterator[tuple[int, int]]:
        """Byte ranges that hold data (RAW, and FILL of a non-zero word)."""
        for s, c, k, p in zip(self.starts, self.counts, self.kinds, self.payload):
            if k == RAW or (k == FILL and p != b"\0\0\0\0"):
                yield s * self.bs, c * self.bs

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1
