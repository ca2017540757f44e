"""GPT header and entry-array CRCs (UEFI 2.10 section 5.3.2) and the MBR sector layout,
checked on bytes written to a real file."""
from __future__ import annotations

import os
import uuid
import zlib

import pytest

from fstool.errors import ImageError
from fstool.image import ImageFile, Region
from fstool.part import gpt, mbr

DISK = uuid.UUID("0f0e0d0c-0b0a-0908-0706-050403020100")
LINUX = uuid.UUID("0fc63daf-8483-4772-8e79-3d69d8477de4")


@pytest.fixture
def disk(tmp_path):
    path = str(tmp_path / "d.img")
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    os.ftruncate(fd, 4 << 20)
    out = ImageFile(fd, path=path)
    parts = [gpt.GptPartition(2048, 4095, LINUX, uuid.UUID(int=7), name="root", attributes=1 << 60)]
    gpt.write_gpt(out, 4 << 20, 512, DISK, parts)
    os.close(fd)
    return path


def raw(path: str, off: int, n: int) -> bytes:
    with open(path, "rb") as f:
        f.seek(off)
        return f.read(n)


def test_header_crc_is_over_92_bytes_with_the_crc_field_zero(disk):
    hdr = raw(disk, 512, 92)
    stored = int.from_bytes(hdr[16:20], "little")
    assert zlib.crc32(hdr[:16] + bytes(4) + hdr[20:]) == stored
    assert gpt.header_crc_ok(gpt.HEADER.unpack(hdr))
    array = raw(disk, 1024, 128 * 128)
    assert zlib.crc32(array) == int.from_bytes(hdr[88:92], "little")
    backup = raw(disk, (4 << 20) - 512, 92)
    h = gpt.HEADER.unpack(backup)
    assert gpt.header_crc_ok(h) and (h.my_lba, h.alternate_lba) == (8191, 1)


def test_table_reads_back(disk):
    with Region(disk) as r:
        t = gpt.read_gpt(r)
    assert t.disk_guid == DISK and t.first_usable == 34 and t.last_usable == 8191 - 33
    (p,) = t.partitions
    assert (p.start_lba, p.end_lba, p.name, p.type_guid, p.attributes) == (2048, 4095, "root", LINUX, 1 << 60)


def test_corrupt_primary_header_falls_back_to_the_backup_and_both_are_refused(disk):
    with Region(disk) as r:
        want = gpt.read_gpt(r)
    with open(disk, "r+b") as f:
        f.seek(512 + 40)
        f.write(b"\x01")
    with Region(disk) as r:  # the backup at the last LBA still describes the same table
        got = gpt.read_gpt(r)
    assert got is not None and got.partitions == want.partitions and got.disk_guid == want.disk_guid
    size = os.path.getsize(disk)
    with open(disk, "r+b") as f:  # now the backup too
        f.seek(size - 512 + 40)
        f.write(b"\x01")
    with Region(disk) as r, pytest.raises(ImageError, match="header CRC"):
        gpt.read_gpt(r)


def test_protective_mbr(disk):
    sec = raw(disk, 0, 512)
    assert sec[510:] == b"\x55\xaa"
    e = mbr.ENTRY.unpack(sec, 446)
    assert (e.type, e.lba_start, e.sectors, e.chs_first, e.chs_last) == (0xEE, 1, 8191, b"\0\2\0", b"\xff" * 3)


def test_mbr_entry_chs_and_lba():
    e = mbr.ENTRY.unpack(mbr.entry(2048, 4096, 0x83, bootable=True))
    assert (e.status, e.type, e.lba_start, e.sectors) == (0x80, 0x83, 2048, 4096)
    assert e.chs_first == bytes([32, 33, 0])  # LBA 2048 = cylinder 0, head 32, sector 33
    assert mbr.chs(1024 * 255 * 63) == bytes([254, 0xFF, 0xFF])  # past cylinder 1023: "use LBA"
