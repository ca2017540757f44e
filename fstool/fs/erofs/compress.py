"""z_erofs compression: fixed-output physical clusters, cut the way mkfs.erofs cuts them.

EROFS compresses *into* a physical cluster (pcluster): each pcluster holds as much input
as compresses into `pcluster_size` bytes, and decompresses to one extent of the file.
That needs a "destination size" compressor:
- lz4 / lz4hc: the system liblz4's LZ4_compress_destSize / LZ4_compress_HC_destSize
  (python-lz4 has no such entry point), called through ctypes, which releases the GIL;
- lzma: liblzma's MicroLZMA encoder (lzma_microlzma_encoder), the very format the
  kernel's xz_dec_microlzma reads, also through ctypes;
- deflate (zlib) and zstd (zstandard) have no such API: the input length is found by a
  short secant search over ordinary compress calls (it lands within ~1% of a full pcluster).

A pcluster is kept compressed only when it saves a block (mkfs.erofs's rule: the input
must be larger than the compressed size rounded up to blocks); otherwise one block of
input is stored as a PLAIN (uncompressed) pcluster. Compressed data sits at the *end*
of its blocks (LZ4_0PADDING: the kernel finds its start by skipping the leading zeros).

`compress_segment` turns one bounded piece of a file into extents; segments are
independent, so a thread pool compresses them and the writer consumes the results in
submission order: the image never depends on thread timing.
"""
from __future__ import annotations

import ctypes
import ctypes.util
import threading
import zlib

from ...errors import SpecError
from .format import Z_ALG_DEFLATE, Z_ALG_LZ4, Z_ALG_LZMA, Z_ALG_ZSTD

MAX_EXTENT = 1 << 20  # decompressed bytes of one pcluster at most
SEGMENT = 4 << 20  # input bytes per compression task (a multiple of the block size)
LZMA_DICT = MAX_EXTENT

ALG_ID = {"lz4": Z_ALG_LZ4, "lz4hc": Z_ALG_LZ4, "lzma": Z_ALG_LZMA, "deflate": Z_ALG_DEFLATE,
          "zstd": Z_ALG_ZSTD}
DEFAULT_LEVEL = {"lz4": 0, "lz4hc": 9, "lzma": 6, "deflate": 6, "zstd": 3}
LEVEL_RANGE = {"lz4": (0, 0), "lz4hc": (1, 12), "lzma": (0, 9), "deflate": (0, 9), "zstd": (1, 22)}


def _load(name: str, soname: str):
    path = ctypes.util.find_library(name) or soname
    try:
        return ctypes.CDLL(path)
    except OSError:
        return None


_lz4 = None
_lzma = None


def _liblz4():
    global _lz4
    if _lz4 is None:
        lib = _load("lz4", "liblz4.so.1")
        if lib is None or not hasattr(lib, "LZ4_compress_HC_destSize"):
            raise SpecError("erofs lz4 compression needs the system liblz4 (Debian: liblz4-1)")
        lib.LZ4_compress_destSize.argtypes = [ctypes.c_void_p, ctypes.c_char_p, ctypes.POINTER(ctypes.c_int),
                                              ctypes.c_int]
        lib.LZ4_compress_HC_destSize.argtypes = [ctypes.c_void_p, ctypes.c_void_p, ctypes.c_char_p,
                                                 ctypes.POINTER(ctypes.c_int), ctypes.c_int, ctypes.c_int]
        lib.LZ4_sizeofStateHC.restype = ctypes.c_int
        _lz4 = lib
    return _lz4


class _LzmaStream(ctypes.Structure):
    _fields_ = [("next_in", ctypes.c_void_p), ("avail_in", ctypes.c_size_t), ("total_in", ctypes.c_uint64),
                ("next_out", ctypes.c_void_p), ("avail_out", ctypes.c_size_t), ("total_out", ctypes.c_uint64),
                ("allocator", ctypes.c_void_p), ("internal", ctypes.c_void_p),
                ("reserved_ptr", ctypes.c_void_p * 4), ("seek_pos", ctypes.c_uint64),
                ("reserved_int2", ctypes.c_uint64), ("reserved_int3", ctypes.c_size_t),
                ("reserved_int4", ctypes.c_size_t), ("reserved_enum", ctypes.c_int * 2)]


def _liblzma():
    global _lzma
    if _lzma is None:
        lib = _load("lzma", "liblzma.so.5")
        if lib is None or not hasattr(lib, "lzma_microlzma_encoder"):
            raise SpecError("erofs lzma compression needs liblzma 5.4 or later (its MicroLZMA encoder)")
        lib.lzma_lzma_preset.argtypes = [ctypes.c_void_p, ctypes.c_uint32]
        lib.lzma_microlzma_encoder.argtypes = [ctypes.POINTER(_LzmaStream), ctypes.c_void_p]
        lib.lzma_code.argtypes = [ctypes.POINTER(_LzmaStream), ctypes.c_int]
        lib.lzma_end.argtypes = [ctypes.POINTER(_LzmaStream)]
        _lzma = lib
    return _lzma


def check_available(name: str) -> None:
    """Raise SpecError now (when the spec is read) if the codec's library is missing."""
    if name in ("lz4", "lz4hc"):
        _liblz4()
    elif name == "lzma":
        _liblzma()
    elif name == "zstd":
        try:
            import zstandard  # noqa: F401
        except ImportError:
            raise SpecError("erofs zstd compression needs the zstandard package") from None


class Codec:
    """fill(view, addr, dst) -> (bytes of input consumed, compressed bytes of at most dst).

    `view` is a memoryview of the input (no copy is made), `addr` its address for the C
    libraries."""

    def __init__(self, name: str, level: int | None):
        self.name = name
        self.alg = ALG_ID[name]
        self.level = DEFAULT_LEVEL[name] if level is None else level
        self._tls = threading.local()
        if name in ("lz4", "lz4hc"):
            _liblz4()
        elif name == "lzma":
            _liblzma()

    # -- destination-size compressors ----------------------------------------------
    def fill(self, data: memoryview, addr: int, dst: int) -> tuple[int, bytes]:
        return getattr(self, "_fill_" + self.name)(data, addr, dst)

    def _fill_lz4(self, data: memoryview, addr: int, dst: int) -> tuple[int, bytes]:
        out = ctypes.create_string_buffer(dst)
        n = ctypes.c_int(len(data))
        size = _lz4.LZ4_compress_destSize(addr, out, ctypes.byref(n), dst)
        return (n.value, out.raw[:size]) if size > 0 else (0, b"")

    def _fill_lz4hc(self, data: memoryview, addr: int, dst: int) -> tuple[int, bytes]:
        state = getattr(self._tls, "hc", None)
        if state is None:
            state = self._tls.hc = ctypes.create_string_buffer(_lz4.LZ4_sizeofStateHC() + 16)
        out = ctypes.create_string_buffer(dst)
        n = ctypes.c_int(len(data))
        size = _lz4.LZ4_compress_HC_destSize(state, addr, out, ctypes.byref(n), dst, self.level)
        return (n.value, out.raw[:size]) if size > 0 else (0, b"")

    def _fill_lzma(self, data: memoryview, addr: int, dst: int) -> tuple[int, bytes]:
        opts = getattr(self._tls, "lzma_opts", None)
        if opts is None:
            opts = self._tls.lzma_opts = ctypes.create_string_buffer(256)
            if _lzma.lzma_lzma_preset(opts, self.level):
                raise SpecError(f"lzma preset {self.level} is not supported")
            ctypes.c_uint32.from_buffer(opts, 0).value = LZMA_DICT  # dict_size, the first field
        strm = _LzmaStream()
        if _lzma.lzma_microlzma_encoder(ctypes.byref(strm), opts) != 0:
            raise SpecError("liblzma refused the MicroLZMA encoder options")
        try:
            out = ctypes.create_string_buffer(dst)
            strm.next_in = addr
            strm.avail_in = len(data)
            strm.next_out = ctypes.cast(out, ctypes.c_void_p)
            strm.avail_out = dst
            ret = _lzma.lzma_code(ctypes.byref(strm), 3)  # LZMA_FINISH
            if ret not in (0, 1):  # LZMA_OK, LZMA_STREAM_END
                return 0, b""
            return strm.total_in, out.raw[:strm.total_out]
        finally:
            _lzma.lzma_end(ctypes.byref(strm))

    def _fill_deflate(self, data: memoryview, addr: int, dst: int) -> tuple[int, bytes]:
        def comp(n: int) -> bytes:
            c = zlib.compressobj(self.level, zlib.DEFLATED, -15, 9)
            return c.compress(data[:n]) + c.flush()
        return self._search(comp, len(data), dst)

    def _fill_zstd(self, data: memoryview, addr: int, dst: int) -> tuple[int, bytes]:
        cctx = getattr(self._tls, "zstd", None)
        if cctx is None:
            import zstandard
            cctx = self._tls.zstd = zstandard.ZstdCompressor(level=self.level, write_checksum=False,
                                                             write_content_size=True)
        return self._search(lambda n: cctx.compress(data[:n]), len(data), dst)

    def _search(self, comp, avail: int, dst: int) -> tuple[int, bytes]:
        """The longest prefix whose compressed form fits dst, to within ~1%: secant steps on the
        (nearly linear) compressed size, guessing from the ratio seen last time."""
        ratio = getattr(self._tls, "ratio", 2.0)
        lo, best, hi = 0, b"", avail + 1
        n = min(avail, max(1, int(dst * ratio * 0.97)))
        for _ in range(10):
            c = comp(n)
            if len(c) <= dst:
                lo, best = n, c
                if n == avail:
                    break
            else:
                hi = n
            if hi - lo <= max(64, lo // 128):
                break
            guess = int(n * (dst - 16) / max(len(c), 1))
            n = min(max(guess, lo + 1), hi - 1, avail)
            if n <= lo:
                break
        if lo:
            self._tls.ratio = lo / max(len(best), 1)
        return lo, best


def compress_segment(codec: Codec, seg: bytes, pcluster: int, bs: int,
                     tail: bool = False) -> list[tuple[int, bool, bytes, bool]]:
    """Cut one segment into extents: (decompressed length, stored raw?, payload, inline?).

    Payloads are whole blocks, except for a tail extent offered for inlining (`tail`: the
    file's last segment, with ztailpacking): the remainder compressed into less than a block,
    or stored raw when shorter than a block, goes out as its exact bytes."""
    out = []
    pos, n = 0, len(seg)
    view = memoryview(seg)
    base = ctypes.cast(ctypes.c_char_p(seg), ctypes.c_void_p).value
    while pos < n:
        rem = n - pos
        if tail and rem <= pcluster:
            consumed, comp = codec.fill(view[pos:], base + pos, pcluster)
            if consumed == rem and len(comp) < min(bs, rem) and comp and comp[0]:
                out.append((rem, False, comp, True))
                break
            if rem < bs:
                out.append((rem, True, bytes(seg[pos:]), True))
                break
        if rem <= bs:  # a last block compresses into a block at best: store it as it is
            out.append((rem, True, seg[pos:] + bytes(bs - rem), False))
            break
        take = min(rem, MAX_EXTENT)
        consumed, comp = codec.fill(view[pos:pos + take], base + pos, pcluster)
        blocks = -(-len(comp) // bs)
        if consumed <= blocks * bs or not comp or comp[0] == 0:
            # does not pay (or would start with a zero the 0padding scan would eat): one raw block
            out.append((bs, True, seg[pos:pos + bs], False))
            pos += bs
            continue
        out.append((consumed, False, bytes(blocks * bs - len(comp)) + comp, False))
        pos += consumed
    return out
