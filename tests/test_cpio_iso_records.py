"""ISO 9660 and cpio building blocks, without the validators: names, Rock Ridge entries and their
placement, the newc header, the compressors' framing (fast property tests)."""
from __future__ import annotations

import io
import os

from hypothesis import given, settings, strategies as st

from fstool.fs.cpio.compress import compressor, decompress_stream
from fstool.fs.cpio.format import HEADER_SIZE, MAGIC_NEWC, Header
from fstool.fs.iso9660 import susp
from fstool.fs.iso9660.format import CE_LEN, SECTOR, SUSP_HEADER
from fstool.fs.iso9660.names import assign_iso, assign_joliet
from fstool.fs.iso9660.reader import IsoReader
from fstool.image import Region

names = st.text(st.characters(blacklist_characters="/\0", blacklist_categories=("Cs",)), min_size=1,
                max_size=80).filter(lambda s: s not in (".", "..") and len(os.fsencode(s)) <= 255)


@given(st.lists(st.tuples(names, st.booleans()), max_size=40, unique_by=lambda t: t[0]))
@settings(max_examples=200, deadline=None)
def test_iso_and_joliet_names_are_unique_and_within_limits(children):
    children = sorted(children, key=lambda t: os.fsencode(t[0]))
    iso = assign_iso(children)
    assert len(set(iso)) == len(iso)
    for ident, (_, is_dir) in zip(iso, children):
        assert set(ident) <= set(b"ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_.;")
        if is_dir:
            assert len(ident) <= 31 and b"." not in ident and b";" not in ident
        else:
            base, ext = ident[:-2].split(b".")
            assert ident.endswith(b";1") and len(base) + len(ext) <= 30
    jol = assign_joliet(children)
    assert len({j.lower() for j in jol}) == len(jol)
    for j, (_, is_dir) in zip(jol, children):
        text = j.decode("utf-16-be")
        assert len(text.removesuffix(";1")) <= 64 and not set(text.removesuffix(";1")) & set("*/:;?\\")


link_targets = st.lists(st.one_of(st.just("."), st.just(".."), st.text(
    st.characters(blacklist_characters="/\0", blacklist_categories=("Cs",)), min_size=1, max_size=600)),
    min_size=1, max_size=6)


@given(st.booleans(), link_targets)
@settings(max_examples=200, deadline=None)
def test_symlink_entries_round_trip(absolute, parts):
    target = ("/" if absolute else "") + "/".join(parts)
    comps = []
    for e in susp.sl(target):
        sig, ln, _ = SUSP_HEADER.unpack_from(e)
        assert sig == b"SL" and ln == len(e) <= 255
        p = 5
        while p < len(e):
            comps.append((e[p], e[p + 2:p + 2 + e[p + 1]]))
            p += 2 + e[p + 1]
    assert IsoReader._link(comps) == target


@given(st.lists(st.integers(4, 255), max_size=60), st.integers(CE_LEN, 221))  # a record has room for a CE
def test_placement_never_overflows(sizes, room):
    entries = [b"XX" + bytes((n, 1)) + bytes(n - 4) for n in sizes]
    p = susp.Placement(entries, room)
    assert p.inline_size() <= room
    assert all(s <= SECTOR for s in p.piece_sizes())
    area = susp.ContinuationArea(100)
    area.place(p)
    for (lba, off), size in zip(p.locations, p.piece_sizes()):
        assert off + size <= SECTOR and lba >= 100
    # every entry rendered once, in order: the inline ones, then each piece's (and a CE after
    # the inline ones and after every piece but the last)
    inline, pieces = p.render(entries)
    assert len(inline) == p.inline_size()
    k = p.n_inline
    assert inline[:p.inline_bytes] == b"".join(entries[:k])
    assert len(pieces) == len(p.cuts)
    for (_lba, _off, raw), c, size in zip(pieces, p.cuts, p.piece_sizes()):
        assert raw.startswith(b"".join(entries[k:k + c])) and len(raw) == size
        k += c
    assert k == len(entries)
    if p.cuts:
        assert inline[-CE_LEN:][:2] == b"CE"


@given(st.lists(st.integers(0, 0xFFFFFFFF), min_size=13, max_size=13))
def test_newc_header_round_trip(values):
    h = Header(MAGIC_NEWC, *values)
    raw = h.pack()
    assert len(raw) == HEADER_SIZE and Header.unpack(raw) == h


@given(st.sampled_from(["gzip", "xz", "zstd", "lz4"]), st.lists(st.binary(max_size=5000), max_size=8))
@settings(max_examples=40, deadline=None)
def test_compressed_streams_round_trip_and_find_their_end(tmp_path_factory, name, pieces):
    c = compressor(name, None)
    stream = b"".join(c.compress(p) for p in pieces) + c.flush()
    path = tmp_path_factory.mktemp("z") / "s"
    path.write_bytes(stream + b"\0" * 7 + b"070701")  # padding and another archive follow
    out = io.BytesIO()
    with Region(str(path)) as r:
        end = decompress_stream(r, 0, out, 1 << 30)
    assert out.getvalue() == b"".join(pieces)
    assert end == len(stream)
