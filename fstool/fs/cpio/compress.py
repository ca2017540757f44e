"""Whole-archive compressors and decompressors for initramfs images.

The kernel's initramfs unpacker (init/initramfs.c, lib/decompress_*.c) accepts gzip, xz (CRC32
or no check), zstd and LZ4 in the *legacy* framing of `lz4 -l` (magic 0x184C2102, then blocks of
at most 8 MiB, each as a little-endian u32 length and a raw LZ4 block): those are what we write.

Every compressor is a stream (`compress(data) -> bytes`, `flush() -> bytes`) whose output depends
only on its input and level: gzip carries no name and mtime 0 (as `gzip -n`), and compression is
single-threaded so no thread count changes the bytes. Decompressors find where their stream ends
(so a reader can go on to whatever is concatenated after it) and write into a file, never holding
the archive whole.
"""
from __future__ import annotations

import lzma
import struct
import zlib

from ...errors import ImageError, SpecError

ALIASES = {"zstandard": "zstd", "zlib": "gzip", "lz4-legacy": "lz4"}
LEVELS = {"gzip": (1, 9, 9), "xz": (0, 9, 6), "zstd": (1, 22, 15), "lz4": (0, 12, 9)}  # lo, hi, default

GZIP_MAGIC = b"\x1f\x8b"
XZ_MAGIC = b"\xfd7zXZ\x00"
ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"
LZ4_LEGACY_MAGIC = struct.pack("<I", 0x184C2102)
LZ4_BLOCK = 8 << 20  # uncompressed bytes per legacy block, fixed by the format
# gzip header (RFC 1952 section 2.3): ID1 ID2 CM FLG MTIME XFL OS; no name, mtime 0, OS 3 (Unix)
GZIP_HEADER = struct.Struct("<2sBBIBB")
GZIP_TRAILER = struct.Struct("<II")  # CRC32, ISIZE (size modulo 2^32)
U32 = struct.Struct("<I")

READ_CHUNK = 1 << 20


def check_codec(name: str) -> None:
    """Refuse a codec whose Python module is missing, when the spec is read."""
    try:
        if name == "zstd":
            import zstandard  # noqa: F401
        elif name == "lz4":
            import lz4.block  # noqa: F401
    except ImportError:
        raise SpecError(f"{name} compression needs the Python package "
                        f"{'zstandard' if name == 'zstd' else 'lz4'}, which is not installed") from None


class _Gzip:
    def __init__(self, level: int):
        self.z = zlib.compressobj(level, zlib.DEFLATED, -15, 9)
        self.crc = 0
        self.size = 0
        xfl = 2 if level == 9 else 4 if level == 1 else 0
        self.head = GZIP_HEADER.pack(GZIP_MAGIC, 8, 0, 0, xfl, 3)

    def compress(self, data) -> bytes:
        self.crc = zlib.crc32(data, self.crc)
        self.size += len(data)
        out = self.head + self.z.compress(data)
        self.head = b""
        return out

    def flush(self) -> bytes:
        return self.head + self.z.flush() + GZIP_TRAILER.pack(self.crc, self.size & 0xFFFFFFFF)


class _Xz:
    def __init__(self, level: int):
        # CRC32 because the kernel's xz decoder knows no other check; a 1 MiB dictionary as dracut
        # and the kernel's own scripts/xz_wrap.sh use, so small machines can unpack it
        filters = [{"id": lzma.FILTER_LZMA2, "preset": level, "dict_size": 1 << 20}]
        self.c = lzma.LZMACompressor(lzma.FORMAT_XZ, check=lzma.CHECK_CRC32, filters=filters)

    def compress(self, data) -> bytes:
        return self.c.compress(data)

    def flush(self) -> bytes:
        return self.c.flush()


class _Zstd:
    def __init__(self, level: int):
        import zstandard
        self.c = zstandard.ZstdCompressor(level=level, write_checksum=True).compressobj()

    def compress(self, data) -> bytes:
        return self.c.compress(bytes(data))

    def flush(self) -> bytes:
        return self.c.flush()


class _Lz4Legacy:
    def __init__(self, level: int):
        import lz4.block
        self.block = lz4.block
        self.level = level
        self.buf = bytearray()
        self.head = LZ4_LEGACY_MAGIC

    def _one(self, data: bytes) -> bytes:
        if self.level >= 3:
            c = self.block.compress(data, mode="high_compression", compression=self.level, store_size=False)
        else:
            c = self.block.compress(data, store_size=False)
        return U32.pack(len(c)) + c

    def compress(self, data) -> bytes:
        self.buf += data
        out = bytearray(self.head)
        self.head = b""
        while len(self.buf) >= LZ4_BLOCK:
            out += self._one(bytes(self.buf[:LZ4_BLOCK]))
            del self.buf[:LZ4_BLOCK]
        return bytes(out)

    def flush(self) -> bytes:
        out = self.head + (self._one(bytes(self.buf)) if self.buf else b"")
        self.buf = bytearray()
        return out


def compressor(name: str, level: int | None):
    lo, hi, default = LEVELS[name]
    level = default if level is None else level
    return {"gzip": _Gzip, "xz": _Xz, "zstd": _Zstd, "lz4": _Lz4Legacy}[name](level)


def sniff(head: bytes) -> str | None:
    """The compression a stream starting with head uses, or None."""
    if head.startswith(GZIP_MAGIC):
        return "gzip"
    if head.startswith(XZ_MAGIC):
        return "xz"
    if head.startswith(ZSTD_MAGIC):
        return "zstd"
    if head.startswith(LZ4_LEGACY_MAGIC):
        return "lz4"
    return None


def decompress_stream(region, offset: int, out, limit: int) -> int:
    """Decompress the stream at offset of region into the file out (appending); return the offset
    just past the stream. ImageError for corrupt data or output beyond limit bytes."""
    name = sniff(region.pread(min(8, region.length - offset), offset))
    where = f"{region.path}: {name} stream at {offset}"
    written = 0

    def emit(data: bytes) -> None:
        nonlocal written
        written += len(data)
        out.write(data)
        if written > limit:
            raise ImageError(f"decompresses to more than {limit} bytes; refusing", where=where)

    if name == "lz4":
        import lz4.block
        pos = offset + 4
        bound = LZ4_BLOCK + LZ4_BLOCK // 255 + 16
        while pos + 4 <= region.length:
            (n,) = U32.unpack(region.pread(4, pos))
            if n == 0x184C2102:  # another legacy frame follows: the kernel carries on
                pos += 4
                continue
            if n == 0 or n > bound or pos + 4 + n > region.length:
                break  # not a block: the stream ended (what follows is padding or another archive)
            try:
                emit(lz4.block.decompress(region.pread(n, pos + 4), uncompressed_size=LZ4_BLOCK))
            except lz4.block.LZ4BlockError as e:
                raise ImageError(f"corrupt lz4 block at {pos}: {e}", where=where) from None
            pos += 4 + n
        return pos
    if name == "gzip":
        d = zlib.decompressobj(31)
        errors: tuple = (zlib.error,)
    elif name == "xz":
        d = lzma.LZMADecompressor(lzma.FORMAT_XZ)
        errors = (lzma.LZMAError,)
    elif name == "zstd":
        import zstandard
        d = zstandard.ZstdDecompressor().decompressobj()
        errors = (zstandard.ZstdError,)
    else:
        raise ImageError("not a compressed stream this tool reads", where=where)
    pos = offset
    try:
        while not d.eof:
            if pos >= region.length:
                raise ImageError("compressed stream is truncated", where=where)
            chunk = region.pread(min(READ_CHUNK, region.length - pos), pos)
            pos += len(chunk)
            emit(d.decompress(chunk))
    except errors as e:
        raise ImageError(f"corrupt data: {e}", where=where) from None
    return pos - len(d.unused_data)
