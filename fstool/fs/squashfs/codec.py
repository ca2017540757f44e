"""SquashFS compressors: gzip (zlib streams), xz, lz4 (raw blocks), zstd.

Each codec's `compress` may be called from many threads at once (zlib, lzma,
lz4 and zstandard release the GIL), so per-thread state such as a zstd context
lives in a threading.local. Output depends only on the input and the level.
"""
from __future__ import annotations

import lzma
import threading
import zlib

from ...errors import ImageError, SpecError
from .format import (
    COMPRESSORS, GZIP_OPTIONS, GZIP_WINDOW_SIZE, LZ4_HC, LZ4_LEGACY, LZ4_OPTIONS, LZMA_ALONE_HEADER,
    ZSTD_OPTIONS,
)

ALIASES = {"zlib": "gzip", "deflate": "gzip", "zstandard": "zstd"}
DEFAULT_LEVELS = {"gzip": 9, "xz": 6, "lzma": 6, "lz4": 0, "zstd": 15}
LEVEL_RANGES = {"gzip": (1, 9), "xz": (0, 9), "lzma": (0, 9), "lz4": (0, 1), "zstd": (1, 22)}


class Codec:
    def __init__(self, name: str, level: int | None = None, block_size: int = 131072):
        if name not in DEFAULT_LEVELS:
            raise SpecError(f"unsupported compressor {name!r}; one of {', '.join(DEFAULT_LEVELS)}")
        self.name = name
        self.id = COMPRESSORS[name]
        self.level = DEFAULT_LEVELS[name] if level is None else level
        self.block_size = block_size
        self._local = threading.local()
        if name == "lz4":
            import lz4.block  # noqa: F401
        elif name == "zstd":
            import zstandard  # noqa: F401

    def options(self) -> bytes | None:
        """The compressor-options metadata block content, or None when defaults need none.
        LZ4 always carries its options (the kernel refuses an LZ4 image without them)."""
        if self.name == "lz4":
            return LZ4_OPTIONS.pack(version=LZ4_LEGACY, flags=LZ4_HC if self.level else 0)
        if self.name == "gzip" and self.level != 9:
            return GZIP_OPTIONS.pack(compression_level=self.level, window_size=GZIP_WINDOW_SIZE)
        if self.name == "zstd" and self.level != 15:
            return ZSTD_OPTIONS.pack(compression_level=self.level)
        return None

    def compress(self, data: bytes) -> bytes:
        n = self.name
        if n == "gzip":
            return zlib.compress(data, self.level)
        if n == "zstd":
            c = getattr(self._local, "zc", None)
            if c is None:
                import zstandard
                c = self._local.zc = zstandard.ZstdCompressor(level=self.level, write_content_size=True)
            return c.compress(data)
        if n == "xz":
            filters = [{"id": lzma.FILTER_LZMA2, "preset": self.level,
                        "dict_size": max(self.block_size, 8192)}]
            return lzma.compress(data, format=lzma.FORMAT_XZ, check=lzma.CHECK_CRC32, filters=filters)
        if n == "lzma":
            # squashfs-tools' legacy LZMA: the .lzma ("alone") header with the uncompressed size
            # filled in, which Python's encoder leaves as unknown (-1).
            filters = [{"id": lzma.FILTER_LZMA1, "preset": self.level, "dict_size": max(self.block_size, 8192)}]
            c = lzma.compress(data, format=lzma.FORMAT_ALONE, filters=filters)
            h = LZMA_ALONE_HEADER.unpack(c)._replace(uncompressed_size=len(data))
            return LZMA_ALONE_HEADER.pack(**h._asdict()) + c[LZMA_ALONE_HEADER.size:]
        import lz4.block
        if self.level:
            return lz4.block.compress(data, mode="high_compression", compression=9, store_size=False)
        return lz4.block.compress(data, store_size=False)

    def decompress(self, data: bytes, limit: int) -> bytes:
        try:
            n = self.name
            if n == "gzip":
                d = zlib.decompressobj()
                out = d.decompress(data, limit)
            elif n == "zstd":
                import zstandard
                out = zstandard.ZstdDecompressor().decompress(data, max_output_size=limit)
            elif n == "xz":
                out = lzma.LZMADecompressor().decompress(data, max_length=limit)
            elif n == "lzma":
                out = lzma.LZMADecompressor(format=lzma.FORMAT_ALONE).decompress(data, max_length=limit)
            else:
                import lz4.block
                out = lz4.block.decompress(data, uncompressed_size=limit)
        except Exception as e:  # every codec's own error type means the same: corrupt data
            raise ImageError(f"corrupt {self.name} block: {e}") from None
        return out


class LzoReader:
    """Reads mksquashfs's lzo images (pure-Python LZO1X decompression); fstool does not write lzo."""

    name = "lzo"

    def decompress(self, data: bytes, limit: int) -> bytes:
        from .lzo import LzoError, decompress
        try:
            return decompress(data, limit)
        except LzoError as e:
            raise ImageError(f"corrupt lzo block: {e}") from None


def codec_for_id(comp_id: int, block_size: int):
    from .format import COMPRESSOR_NAMES
    name = COMPRESSOR_NAMES.get(comp_id)
    if name == "lzo":
        return LzoReader()
    if name not in DEFAULT_LEVELS:
        raise ImageError(f"compressor {name or comp_id} is not supported")
    return Codec(name, None, block_size)
