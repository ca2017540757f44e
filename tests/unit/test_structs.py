"""Declared records: the helper itself, then a pack/unpack round trip of every record the
formats declare, and the offsets the format documents give for the fields code relies on."""
from __future__ import annotations

import struct

import pytest

from fstool.fs.ext import format as ext
from fstool.fs.squashfs import format as sq
from fstool.part import gpt, mbr
from fstool.structs import Record

MODULES = (ext, sq, gpt, mbr)


def all_records():
    seen = {}
    for m in MODULES:
        for name, v in vars(m).items():
            if isinstance(v, Record) and id(v) not in seen:
                seen[id(v)] = pytest.param(v, id=f"{m.__name__.rsplit('.', 2)[-2]}.{name}")
    return list(seen.values())


def test_record_offsets_padding_and_defaults():
    r = Record("t", [("a", "H"), (None, "2x"), ("b", "16s"), ("c", "I")])
    assert r.size == 24 and r.fields == ("a", "b", "c")
    assert (r.offset("a"), r.offset("b"), r.offset("c")) == (0, 4, 20)
    assert r.end("b") == 20 and r.field_size("c") == 4
    v = r.unpack(r.pack(a=7))
    assert (v.a, v.b, v.c) == (7, bytes(16), 0)
    assert r.pack(a=1, c=2) == struct.pack("<H2x16sI", 1, b"", 2)


def test_record_byte_order_and_errors():
    assert Record("be", [("x", "I")], byte_order=">").pack(x=1) == b"\0\0\0\1"
    r = Record("t", [("x", "I")])
    with pytest.raises(TypeError, match=r"t\.pack\(\) got an unexpected keyword argument 'y'"):
        r.pack(y=1)
    with pytest.raises(ValueError):
        Record("bad", [(None, "I")])
    with pytest.raises(ValueError):
        Record("dup", [("x", "I"), ("x", "H")])


def test_record_unpack_at_offset_and_iter():
    r = Record("pair", [("a", "H"), ("b", "H")])
    buf = b"xx" + r.pack(a=1, b=2) + r.pack(a=3, b=4)
    assert r.unpack(buf, 2) == (1, 2)
    assert [tuple(p) for p in r.iter_unpack(buf[2:])] == [(1, 2), (3, 4)]
    out = bytearray(6)
    r.pack_into(out, 2, b=9)
    assert r.unpack(out, 2).b == 9 and out[:2] == b"\0\0"


def _sample(code: str, i: int):
    """A distinct value for field number i that fits its code."""
    kind = code[-1]
    if kind == "s":
        n = int(code[:-1] or 1)
        return bytes((i * 7 + k) & 0xFF or 1 for k in range(n))
    size = struct.calcsize("<" + kind)
    v = (i * 0x9E3779B1 + 0x55) & ((1 << (8 * size - 1)) - 1)  # positive even for signed codes
    return v or 1


@pytest.mark.parametrize("rec", all_records())
def test_every_declared_record_round_trips(rec):
    codes = []
    fmt = rec.struct.format
    for part in _split(fmt[1:]):
        if not part.endswith("x"):
            codes.append(part)
    assert len(codes) == len(rec.fields)
    values = {f: _sample(c, i) for i, (f, c) in enumerate(zip(rec.fields, codes))}
    raw = rec.pack(**values)
    assert len(raw) == rec.size
    got = rec.unpack(raw)._asdict()
    assert got == values
    for f, c in zip(rec.fields, codes):  # each field really sits at its offset
        assert struct.unpack_from(fmt[0] + c, raw, rec.offset(f))[0] == values[f]


def _split(fmt: str) -> list[str]:
    out, num = [], ""
    for ch in fmt:
        if ch.isdigit():
            num += ch
        elif not ch.isspace():
            out.append(num + ch)
            num = ""
    return out


def test_ext_offsets_match_the_kernel_documentation():
    # Documentation/filesystems/ext4/{super,group_descr,inodes,directory}.rst, journal.rst
    assert ext.SUPERBLOCK.size == 1024
    assert ext.SUPERBLOCK.offset("magic") == 0x38
    assert ext.SUPERBLOCK.offset("uuid") == 0x68
    assert ext.SUPERBLOCK.offset("hash_seed") == 0xEC
    assert ext.SUPERBLOCK.offset("desc_size") == 0xFE
    assert ext.SUPERBLOCK.offset("log_groups_per_flex") == 0x174
    assert ext.SB_CHECKSUM_OFFSET == 0x3FC
    assert ext.GD_CHECKSUM_OFFSET == 0x1E and ext.GROUP_DESC.offset("itable_unused") == 0x1C
    assert ext.GROUP_DESC.size + ext.GROUP_DESC_HI.offset("inode_table_hi") == 0x28
    assert ext.INODE.offset("block") == 0x28 and ext.I_BLOCK_SIZE == 60
    assert ext.INODE.offset("generation") == 0x64
    assert ext.I_CHECKSUM_LO_OFFSET == 0x7C and ext.I_CHECKSUM_HI_OFFSET == 0x82
    assert ext.GOOD_OLD_INODE_SIZE + ext.INODE_EXTRA.offset("mtime_extra") == 0x88
    assert ext.GOOD_OLD_INODE_SIZE + ext.INODE_EXTRA.offset("projid") == 0x9C
    assert ext.DX_ROOT.offset("reserved_zero") == 0x18 and ext.DX_ROOT.offset("info_length") == 0x1D
    assert ext.DX_ROOT_COUNT_OFFSET == 0x20 and ext.DX_NODE_COUNT_OFFSET == 0x8
    assert ext.XATTR_HEADER.offset("checksum") == 0x10 and ext.XATTR_HEADER.size == 32
    assert ext.XATTR_ENTRY.size == 16
    assert ext.JBD2_CHECKSUM_OFFSET == 0xFC and ext.JBD2_SUPERBLOCK.offset("uuid") == 0x30
    assert ext.JBD2_SUPERBLOCK.offset("checksum_type") == 0x50 and ext.JBD2_SUPERBLOCK.offset("users") == 0x100
    assert ext.EXTENT_ROOT_MAX == 4 and ext.extents_per_block(4096) == 340
    assert ext.indirect_bounds(1024) == (256, 12 + 256, 12 + 256 + 256 ** 2, 12 + 256 + 256 ** 2 + 256 ** 3)


def test_squashfs_and_partition_offsets():
    # squashfs_fs.h; UEFI 2.10 table 5.3; the classic MBR
    assert sq.SUPERBLOCK.offset("root_inode") == 32 and sq.SUPERBLOCK.offset("export_table") == 88
    assert sq.INODE_HEADER.size == 16 and sq.LFILE_INODE.size == 40 and sq.LDIR_INODE.size == 24
    assert sq.INODE_STRUCT_MAP[sq.LSYMLINK] is sq.SYMLINK_INODE
    assert all(sq.INODE_STRUCT_MAP[t] for t in range(sq.DIR, sq.LSOCKET + 1))
    assert gpt.HEADER.offset("disk_guid") == 56 and gpt.HEADER.offset("partition_entry_array_crc32") == 88
    assert gpt.ENTRY.offset("name") == 56
    assert mbr.TABLE_OFF == 446 and mbr.SECTOR.offset("disk_signature") == 440
    assert mbr.SECTOR.offset("boot_signature") == 510
