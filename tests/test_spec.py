"""The spec parser: the Rust fstool's schema, our extensions, and one clear error per mistake."""
from __future__ import annotations

import json
import os
import textwrap

import pytest

from fstool.errors import SpecError, InputError
from fstool.spec import load_spec, parse_attributes, parse_mode, parse_volume_id


def write(tmp_path, text, name="spec.toml"):
    p = tmp_path / name
    p.write_text(textwrap.dedent(text))
    return str(p)


def test_bare_filesystem_all_rust_keys(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # relative paths resolve against the working directory
    spec = load_spec(write(tmp_path, """
        [filesystem]
        type = "ext4"
        source = "rootfs"
        block_size = 4096
        journal_blocks = 1024
        rootdevs = "minimal"
        volume_label = "root"
        mtime = 1700000000
        sparse = false
        size = "64MiB"
        volume_id = "1234-ABCD"
        [filesystem.options]
        inode_size = 256
    """))
    fs = spec.fs
    assert spec.disk is None
    assert fs.type == "ext4"
    assert fs.sources == [str(tmp_path / "rootfs")]
    assert (fs.block_size, fs.journal_blocks, fs.rootdevs, fs.label) == (4096, 1024, "minimal", "root")
    assert (fs.mtime, fs.sparse, fs.size, fs.volume_id) == (1700000000, False, 64 << 20, "1234abcd")
    assert fs.options == {"inode_size": 256}


def test_extensions_layers_overrides_and_generic_options(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    spec = load_spec(write(tmp_path, """
        [filesystem]
        type = "squashfs"
        source = ["base.tar", "overlay/"]
        size = "auto"
        headroom = "1MiB"
        all_root = true
        device_table = "devs.txt"
        seed = "my-image"
        [filesystem.options]
        compression = "xz"
        rootdevs = "standard"
        [[filesystem.overrides]]
        path = "/etc/shadow"
        mode = "0600"
        uid = 0
        gid = 42
    """))
    fs = spec.fs
    assert fs.sources == [str(tmp_path / "base.tar"), str(tmp_path / "overlay")]
    assert fs.size is None and fs.headroom == 1 << 20
    assert fs.all_root and fs.device_table == str(tmp_path / "devs.txt")
    assert fs.rootdevs == "standard"  # lifted out of [filesystem.options]
    assert fs.options == {"compression": "xz"}
    assert fs.overrides[0]["mode"] == 0o600 and fs.overrides[0]["gid"] == 42
    assert fs.seed == "my-image"


def test_disk_spec_gpt(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    spec = load_spec(write(tmp_path, """
        [image]
        size = "1GiB"
        partition_table = "gpt"
        uuid = "11111111-2222-3333-4444-555555555555"
        alignment = "2MiB"
        sector_size = 4096

        [[partitions]]
        name = "esp"
        type = "esp"
        size = "64MiB"
        attributes = ["required", "legacy-bios-bootable", 60]
        uuid = "aaaaaaaa-2222-3333-4444-555555555555"
        [partitions.filesystem]
        type = "fat32"
        source = "esp"

        [[partitions]]
        name = "blob"
        image = "prebuilt.img"
        size = "auto"
        headroom = "1MiB"

        [[partitions]]
        name = "root"
        type = "linux-root-x86-64"
        size = "remaining"
        [partitions.filesystem]
        type = "ext4"
    """))
    d = spec.disk
    assert (d.table, d.size, d.alignment, d.sector_size) == ("gpt", 1 << 30, 2 << 20, 4096)
    assert d.uuid == "11111111-2222-3333-4444-555555555555"
    esp, blob, root = d.partitions
    assert esp.attributes == (1 << 0) | (1 << 2) | (1 << 60)
    assert esp.fs.type == "fat32" and esp.fs.sources == [str(tmp_path / "esp")]
    assert blob.image == str(tmp_path / "prebuilt.img") and blob.size is None and blob.headroom == 1 << 20
    assert root.size == "remaining" and root.type == "linux-root-x86-64"


def test_disk_spec_mbr_and_json(tmp_path):
    doc = {"image": {"size": "64MiB", "partition_table": "mbr", "disk_signature": "0xdeadbeef"},
           "partitions": [{"name": "boot", "type": "fat", "size": "16MiB", "bootable": True,
                           "filesystem": {"type": "vfat"}},
                          {"name": "rest", "type": "0x83", "size": "remaining"}]}
    p = tmp_path / "disk.json"
    p.write_text(json.dumps(doc))
    d = load_spec(str(p)).disk
    assert d.table == "mbr" and d.disk_signature == 0xDEADBEEF
    assert d.partitions[0].bootable and d.partitions[1].type == "0x83"


def test_seed_depends_on_content_not_path(tmp_path):
    text = '[filesystem]\ntype = "ext4"\n'
    a = load_spec(write(tmp_path, text, "a.toml"))
    os.mkdir(tmp_path / "elsewhere")
    b = load_spec(write(tmp_path / "elsewhere", text, "b.toml"))
    c = load_spec(write(tmp_path, text + 'volume_label = "x"\n', "c.toml"))
    assert a.seed == b.seed != c.seed


@pytest.mark.parametrize("body, where, message", [
    ('[filesystem]\ntype = "ext4"\nsorce = "x"\n', "filesystem.sorce", "did you mean 'source'"),
    ('[filesystem]\nsource = "x"\n', "filesystem", "missing key 'type'"),
    ('[filesystem]\ntype = "btrfs"\n', "filesystem.type", "unknown filesystem type 'btrfs'"),
    ('[filesystem]\ntype = "ext4"\nsize = "12 parsecs"\n', "filesystem.size", ""),
    ('[filesystem]\ntype = "ext4"\nrootdevs = "all"\n', "filesystem.rootdevs", "must be one of"),
    ('[filesystem]\ntype = "ext4"\nmtime = -5\n', "filesystem.mtime", "between"),
    ('[filesystem]\ntype = "ext4"\nsparse = "maybe"\n', "filesystem.sparse", "true or false"),
    ('[filesystem]\ntype = "ext4"\nuuid = "not-a-uuid"\n', "filesystem.uuid", "invalid UUID"),
    ('[filesystem]\ntype = "ext4"\nsource = 5\n', "filesystem.source", "list of paths"),
    ('[filesystem]\ntype = "ext4"\nmtime = 1\n[filesystem.options]\nmtime = 2\n',
     "filesystem.options.mtime", "both"),
    ('[filesystem]\ntype = "ext4"\n[[filesystem.overrides]]\nmode = "0644"\n',
     "filesystem.overrides[0]", "missing key 'path'"),
    ('[filesystem]\ntype = "ext4"\n[[filesystem.overrides]]\npath = "/a"\nmode = "0999"\n',
     "filesystem.overrides[0].mode", "octal"),
    ('[filesystem]\ntype = "ext4"\n[image]\nsize = "1G"\n', "spec", "not both"),
    ('[partitions]\nname = "x"\n', "spec", "needs an [image]"),
    ('[fs]\ntype = "ext4"\n', "spec.fs", "unknown key"),
    ('[image]\nsize = "1GiB"\n', "partitions", "at least one"),
    ('[image]\nsize = "1GiB"\npartition_table = "apm"\n[[partitions]]\nsize = "1M"\n',
     "image.partition_table", "gpt"),
    ('[image]\nsize = "1GiB"\nsector_size = 1024\n[[partitions]]\nsize = "1M"\n', "image.sector_size", "512 or 4096"),
    ('[image]\nsize = "1GiB"\n[[partitions]]\nname = "a"\nsize = "remaining"\n[[partitions]]\nsize = "1M"\n',
     "partitions[0] (a).size", "only the last"),
    ('[image]\n[[partitions]]\nsize = "remaining"\nimage = "x"\n', "partitions[0].size", "fixed [image] size"),
    ('[image]\nsize = "1GiB"\n[[partitions]]\nname = "e"\n', "partitions[0] (e).size", "empty partition"),
    ('[image]\nsize = "1GiB"\n[[partitions]]\nsize = "1M"\nattributes = ["fast"]\n',
     "partitions[0].attributes[0]", "unknown attribute"),
    ('[image]\nsize = "1GiB"\n[[partitions]]\nsize = "1M"\nattributes = [7]\n',
     "partitions[0].attributes[0]", "reserved"),
    ('[image]\nsize = "1GiB"\n[[partitions]]\nsize = "1M"\nbootable = true\n',
     "partitions[0].bootable", "MBR flag"),
    ('[image]\nsize = "1GiB"\npartition_table = "mbr"\n[[partitions]]\nsize = "1M"\nuuid = "12345678-1234-5678-1234-567812345678"\n',
     "partitions[0].uuid", "gpt"),
    ('[image]\nsize = "1GiB"\n[[partitions]]\nsize = "1000"\n', "partitions[0].size", "sector size"),
    ('[image]\nsize = "1GiB"\n[[partitions]]\nsize = "1M"\nimage = "a"\n[partitions.filesystem]\ntype="ext4"\n',
     "partitions[0]", "not both"),
    ('[image]\nsize = "1GiB"\n[[partitions]]\nsize = "1M"\ncolour = "red"\n', "partitions[0].colour", "unknown key"),
    ('[filesystem\n', "", "not valid TOML"),
])
def test_spec_errors_name_the_key(tmp_path, body, where, message):
    path = write(tmp_path, body)
    with pytest.raises(SpecError) as e:
        load_spec(path)
    text = str(e.value)
    assert text.startswith(path + ": " + where), text
    assert message in text
    assert "\n" not in text


def test_missing_spec_file(tmp_path):
    with pytest.raises(InputError, match="nope.toml"):
        load_spec(str(tmp_path / "nope.toml"))


def test_small_parsers():
    assert parse_mode("0755", "m") == 0o755 and parse_mode(420, "m") == 0o644 and parse_mode("4755", "m") == 0o4755
    assert parse_volume_id(0x1234ABCD, "v") == "1234abcd" and parse_volume_id("1234-abcd", "v") == "1234abcd"
    assert parse_attributes(["required", "no-block-io", 48], "a") == 0b11 | (1 << 48)
    with pytest.raises(SpecError):
        parse_volume_id("zz", "v")


def test_format_capabilities_are_checked_when_the_spec_is_read(tmp_path):
    # squashfs stores no UUID: refused at load time, before any input is read
    with pytest.raises(SpecError, match=r"filesystem\.uuid: squashfs has no UUID"):
        load_spec(write(tmp_path, """
            [filesystem]
            type = "squashfs"
            source = "missing-dir"
            uuid = "12345678-1234-5678-1234-567812345678"
        """))


def test_option_error_in_last_partition_comes_first(tmp_path):
    # the typo in partition 2 is found while reading the spec: partition 1's source
    # (which does not exist) is never touched
    with pytest.raises(SpecError, match=r"partitions\[1\].*options\.compresion.*did you mean 'compression'"):
        load_spec(write(tmp_path, """
            [image]
            [[partitions]]
            name = "a"
            [partitions.filesystem]
            type = "ext4"
            source = "does-not-exist"
            [[partitions]]
            name = "b"
            [partitions.filesystem]
            type = "squashfs"
            [partitions.filesystem.options]
            compresion = "xz"
        """))
