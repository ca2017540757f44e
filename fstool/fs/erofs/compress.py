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
import hashlib
import struct
import threading
import zlib

from ...errors import SpecError
from ...structs import Record
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


def compress_segment(codec: Codec, seg: bytes, pcluster: int, bs: int, tail: bool = False,
                     fragment: bool = False) -> list[tuple[int, bool, bytes, bool]]:
    """Cut one segment into extents: (decompressed length, stored raw?, payload, inline?).

    Payloads are whole blocks, except for a tail extent offered for inlining (`tail`: the
    file's last segment, with ztailpacking): the remainder compressed into less than a block,
    or stored raw when shorter than a block, goes out as its exact bytes. With `fragment`
    (the file's last segment, with fragments) the remainder once it fits a pcluster goes out
    raw and inline, bound for the packed inode, as mkfs.erofs packs it (`may_packing`)."""
    out = []
    pos, n = 0, len(seg)
    # the deflate/zstd fill search starts from the ratio of the previous pcluster; start each
    # segment afresh, so its pclusters depend on the segment alone, never on which thread ran
    # which segments before it
    codec._tls.ratio = 2.0
    view = memoryview(seg)
    base = ctypes.cast(ctypes.c_char_p(seg), ctypes.c_void_p).value
    while pos < n:
        rem = n - pos
        if fragment and rem <= pcluster:
            out.append((rem, True, bytes(seg[pos:]), True))
            break
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


# -- the block cache (fstool.cache) ------------------------------------------------------
# Only codecs whose output is a function of the input alone: lz4, lz4hc and lzma fill a
# pcluster in one library call. deflate and zstd search for the fill starting from the ratio
# their thread saw last, so their extents depend on what that thread compressed before.
CACHEABLE = ("lz4", "lz4hc", "lzma")
# one cached extent (the block cache's value, not an on-disk EROFS structure); its payload follows
CACHED_EXTENT = Record("cached_extent", [
    ("length", "I"), ("raw", "?"), ("inline", "?"), ("payload_length", "I")])


def cache_namespace(codec: Codec, pcluster: int, bs: int) -> bytes | None:
    """What decides compress_segment's result besides the segment's bytes (codec, level,
    pcluster and block size, the extent and dictionary bounds, the library's version and a
    probe compression), or None for a codec whose result is not a function of its input."""
    if codec.name not in CACHEABLE:
        return None
    if codec.name == "lzma":
        version = f"liblzma={_liblzma().lzma_version_number()}"
    else:
        version = f"liblz4={_liblz4().LZ4_versionNumber()}"
    probe = b"".join(b"%d erofs segment cache probe %x\n" % (i, i * i) for i in range(3000))
    digest = hashlib.sha256(encode_extents(compress_segment(codec, probe, pcluster, bs, True))).hexdigest()
    desc = (f"erofs-segment/1;codec={codec.name};level={codec.level};pcluster={pcluster};bs={bs};"
            f"max_extent={MAX_EXTENT};lzma_dict={LZMA_DICT};{version};probe={digest}")
    return hashlib.sha256(desc.encode()).digest()


def encode_extents(extents: list[tuple[int, bool, bytes, bool]]) -> bytes:
    return b"".join(CACHED_EXTENT.pack(length=n, raw=raw, inline=inline, payload_length=len(payload)) + payload
                    for n, raw, payload, inline in extents)


def decode_extents(blob: bytes, seg_len: int) -> list[tuple[int, bool, bytes, bool]] | None:
    """The extents encode_extents wrote, or None when they do not cover seg_len bytes."""
    out, off, total = [], 0, 0
    try:
        while off < len(blob):
            n, raw, inline, plen = CACHED_EXTENT.unpack(blob, off)
            off += CACHED_EXTENT.size
            out.append((n, raw, bytes(blob[off:off + plen]), inline))
            off += plen
            total += n
    except struct.error:
        return None
    return out if total == seg_len and off == len(blob) else None


def cached_compress_segment(cache, namespace: bytes | None, codec: Codec, seg: bytes, pcluster: int,
                            bs: int, tail: bool = False,
                            fragment: bool = False) -> list[tuple[int, bool, bytes, bool]]:
    """compress_segment, served from the block cache when it holds the segment's result."""
    if cache is None or namespace is None:
        return compress_segment(codec, seg, pcluster, bs, tail, fragment)
    key = cache.key(namespace + (b"F" if fragment else b"T" if tail else b"N"), seg)
    blob = cache.get(key)
    if blob is not None:
        extents = decode_extents(blob, len(seg))
        if extents is not None:
            return extents
    extents = compress_segment(codec, seg, pcluster, bs, tail, fragment)
    cache.put(key, encode_extents(extents))
    return extents
