"""LZO1X decompression, to read SquashFS images that mksquashfs wrote with `-comp lzo`.

Follows the LZO1X stream format as the kernel's lzo1x_decompress_safe reads it:
literal runs and matches of four kinds (M1..M4), told apart by the first byte
and by the state the previous instruction left (how many literals it copied),
ending at an M4 match of distance 0 (the bytes 0x11 0x00 0x00). Every read and
every back-reference is bounds-checked; output stops at `limit` bytes. Copies
use slices (an overlapping match repeats its period), so no per-byte loop runs.
"""
from __future__ import annotations

M2_MAX_OFFSET = 0x0800


class LzoError(ValueError):
    pass


def decompress(src: bytes, limit: int) -> bytes:
    out = bytearray()
    n = len(src)
    ip = 0

    def byte() -> int:
        nonlocal ip
        if ip >= n:
            raise LzoError("input ends inside an instruction")
        b = src[ip]
        ip += 1
        return b

    def long_length(base: int) -> int:
        """A length continued in zero bytes (255 each) and a final non-zero byte."""
        nonlocal ip
        zeros = 0
        while ip < n and src[ip] == 0:
            zeros += 1
            ip += 1
        return base + zeros * 255 + byte()

    def literals(count: int) -> None:
        nonlocal ip
        if ip + count > n:
            raise LzoError("literal run past the end of the input")
        if len(out) + count > limit:
            raise LzoError("output larger than the block")
        out.extend(src[ip:ip + count])
        ip += count

    def match(pos: int, count: int) -> None:
        if pos < 0:
            raise LzoError("match reaches before the start of the output")
        if len(out) + count > limit:
            raise LzoError("output larger than the block")
        dist = len(out) - pos
        if dist >= count:
            out.extend(out[pos:pos + count])
        else:  # overlapping: the last `dist` bytes repeat
            period = bytes(out[pos:])
            out.extend((period * (count // dist + 1))[:count])

    state = 0
    t = byte()
    if t > 17:
        t -= 17
        if t < 4:
            literals(t)
            state = t
        else:
            literals(t)
            state = 4
        t = byte()
    while True:
        if t < 16:
            if state == 0:
                if t == 0:
                    t = long_length(15)
                literals(t + 3)
                state = 4
                t = byte()
                continue
            if state != 4:  # M1 after 1-3 literals: 2 bytes from near
                nxt = t & 3
                pos = len(out) - 1 - (t >> 2) - (byte() << 2)
                match(pos, 2)
            else:  # M1 after a literal run: 3 bytes from up to 3 KiB back
                nxt = t & 3
                pos = len(out) - (1 + M2_MAX_OFFSET) - (t >> 2) - (byte() << 2)
                match(pos, 3)
        elif t >= 64:  # M2
            nxt = t & 3
            pos = len(out) - 1 - ((t >> 2) & 7) - (byte() << 3)
            match(pos, (t >> 5) + 1)
        elif t >= 32:  # M3
            length = t & 31
            if length == 0:
                length = long_length(31)
            lo, hi = byte(), byte()
            word = lo | (hi << 8)
            nxt = word & 3
            match(len(out) - 1 - (word >> 2), length + 2)
        else:  # M4 (16..31), or the end marker
            length = t & 7
            if length == 0:
                length = long_length(7)
            lo, hi = byte(), byte()
            word = lo | (hi << 8)
            pos = len(out) - ((t & 8) << 11) - (word >> 2)
            if pos == len(out):
                if ip != n:
                    raise LzoError("data after the end marker")
                return bytes(out)
            nxt = word & 3
            match(pos - 0x4000, length + 2)
        state = nxt
        if nxt:
            literals(nxt)
        t = byte()
