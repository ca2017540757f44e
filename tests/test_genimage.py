"""genimage.cfg files in the style of Buildroot's boards (written here), built by fstool and
checked with sfdisk -J, sgdisk -v, cmp of each blob, our readers and the container tools."""
from __future__ import annotations

import json
import random
import subprocess

import pytest

from conftest import assert_one_line_error, run_fstool
from fstool.errors import SpecError
from fstool.genimage import parse, to_toml, translate

KiB, MiB = 1 << 10, 1 << 20


def setup_dirs(tmp_path):
    root = tmp_path / "target"
    (root / "etc").mkdir(parents=True)
    (root / "etc" / "hostname").write_text("buildroot\n")
    images = tmp_path / "images"
    images.mkdir()
    for name, size, seed in (("u-boot-rockchip.bin", 700 * KiB, 1), ("bl1.bin", 48 * KiB, 2),
                             ("Image", 300 * KiB, 3), ("board.dtb", 20 * KiB, 4)):
        (images / name).write_bytes(random.Random(seed).randbytes(size))
    (images / "extlinux.conf").write_text("label linux\n  kernel /Image\n")
    return root, images


def sfdisk_json(img):
    out = subprocess.run(["sfdisk", "--json", str(img)], capture_output=True, text=True, check=True).stdout
    return json.loads(out)["partitiontable"]


def cmp_at(blob, img, offset, skip=()):
    data = open(blob, "rb").read()
    with open(img, "rb") as f:
        f.seek(offset)
        got = f.read(len(data))
    for a, b in skip:
        got = got[:a] + data[a:b] + got[b:]
    assert got == data


ROCKCHIP = """
image boot.vfat {
	vfat {
		files = { "Image", "board.dtb" }
		file extlinux/extlinux.conf { image = "extlinux.conf" }
		label = "BOOT"
	}
	size = 16M
}

image rootfs.ext4 {
	ext4 {
		label = "rootfs"
		use-mke2fs = true
	}
	size = 24M
}

image sdcard.img {
	hdimage {
		partition-table-type = "gpt"
	}

	partition u-boot {
		in-partition-table = "no"
		image = "u-boot-rockchip.bin"
		offset = 32K
	}

	partition boot {
		partition-type-uuid = "U"
		bootable = "true"
		image = "boot.vfat"
		offset = 16M
	}

	partition rootfs {
		partition-type-uuid = "L"
		image = "rootfs.ext4"
	}
}
"""


def build_cfg(tmp_path, text, out="sdcard.img", *extra):
    (tmp_path / "genimage.cfg").write_text(text)
    return run_fstool("build", "genimage.cfg", "-o", out, "--rootpath", "target", "--inputpath", "images",
                      *extra, cwd=tmp_path)


def test_rockchip_genimage(tmp_path):
    setup_dirs(tmp_path)
    p = build_cfg(tmp_path, ROCKCHIP)
    assert p.returncode == 0, p.stderr
    img = tmp_path / "sdcard.img"
    v = subprocess.run(["sgdisk", "-v", str(img)], capture_output=True, text=True)
    assert "No problems found" in v.stdout
    t = sfdisk_json(img)
    boot, root = t["partitions"]
    assert boot["start"] * 512 == 16 * MiB and boot["size"] * 512 == 16 * MiB
    assert boot["type"].upper() == "C12A7328-F81F-11D2-BA4B-00A0C93EC93B"
    assert root["start"] * 512 == 32 * MiB and root["type"].upper() == "0FC63DAF-8483-4772-8E79-3D69D8477DE4"
    assert boot["name"] == "boot" and root["name"] == "rootfs"
    cmp_at(tmp_path / "images" / "u-boot-rockchip.bin", img, 32 * KiB)
    cat = run_fstool("cat", f"{img}:1", "/extlinux/extlinux.conf", check=True).stdout
    assert cat.startswith("label linux")
    assert run_fstool("cat", f"{img}:2", "/etc/hostname", check=True).stdout == "buildroot\n"
    # import-genimage gives a spec that builds the same bytes
    p = run_fstool("import-genimage", "genimage.cfg", "-o", "disk.toml", "--rootpath", "target",
                   "--inputpath", "images", cwd=tmp_path, check=True)
    assert (tmp_path / "boot.vfat.manifest.json").exists()
    run_fstool("build", "disk.toml", "-o", "again.img", cwd=tmp_path, check=True)
    t2 = sfdisk_json(tmp_path / "again.img")
    assert [(q["start"], q["size"], q["type"]) for q in t2["partitions"]] == \
        [(q["start"], q["size"], q["type"]) for q in t["partitions"]]
    cmp_at(tmp_path / "images" / "u-boot-rockchip.bin", tmp_path / "again.img", 32 * KiB)


AMLOGIC_SPARSE = """
image sdcard.img {
	hdimage {
		disk-signature = 0x5452574F
		align = 1M
	}
	partition bl1 {
		in-partition-table = "no"
		image = "bl1.bin"
		offset = 0
		holes = { "(440; 512)" }
	}
	partition rootfs {
		partition-type = 0x83
		image = "rootfs.squashfs"
	}
}

image rootfs.squashfs {
	squashfs { compression = "xz" }
}

image sdcard.simg {
	android-sparse {
		image = "sdcard.img"
	}
}
"""


def test_amlogic_android_sparse_genimage(tmp_path):
    setup_dirs(tmp_path)
    p = build_cfg(tmp_path, AMLOGIC_SPARSE, "sdcard.simg")
    assert p.returncode == 0, p.stderr
    subprocess.run(["simg2img", str(tmp_path / "sdcard.simg"), str(tmp_path / "raw.img")], check=True)
    t = sfdisk_json(tmp_path / "raw.img")
    assert t["label"] == "dos" and t["id"] == "0x5452574f"
    assert t["partitions"][0]["start"] * 512 == MiB and t["partitions"][0]["type"] == "83"
    cmp_at(tmp_path / "images" / "bl1.bin", tmp_path / "raw.img", 0, skip=[(440, 512)])
    assert run_fstool("cat", f"{tmp_path / 'sdcard.simg'}:1", "/etc/hostname", check=True).stdout == "buildroot\n"


def test_qemu_image_type(tmp_path):
    setup_dirs(tmp_path)
    cfg = """
image disk.img {
	hdimage { partition-table-type = "hybrid" }
	size = 40M
	partition boot { partition-type = 0xC  partition-type-uuid = "F" bootable = true image = "boot.vfat" }
	partition root { partition-type-uuid = "L" image = "root.ext4" autoresize = true }
}
image boot.vfat { vfat { files = { "Image" } } size = 8M }
image root.ext4 { ext4 {} size = 8M mountpoint = "/etc" }
image disk.qcow2 { qemu { image = "disk.img" } }
"""
    p = build_cfg(tmp_path, cfg, "disk.qcow2")
    assert p.returncode == 0, p.stderr
    out = subprocess.run(["qemu-img", "check", str(tmp_path / "disk.qcow2")], capture_output=True, text=True)
    assert "No errors" in out.stdout
    assert run_fstool("cat", f"{tmp_path / 'disk.qcow2'}:2", "/hostname", check=True).stdout == "buildroot\n"
    # autoresize: the last partition runs to the end of the 40 MiB disk (less the backup GPT)
    out = subprocess.run(["qemu-img", "info", "--output=json", str(tmp_path / "disk.qcow2")],
                         capture_output=True, text=True, check=True).stdout
    assert json.loads(out)["virtual-size"] == 40 * MiB
    run_fstool("convert", "disk.qcow2", "disk.raw", "--format", "raw", cwd=tmp_path, check=True)
    root = sfdisk_json(tmp_path / "disk.raw")["partitions"][1]
    assert root["start"] + root["size"] == 40 * MiB // 512 - 33  # the backup array and header


@pytest.mark.parametrize("cfg, needles", [
    ('image a.img { hdimage { gpt-no-backup = true } partition p { image = "x" } }',
     ["genimage.cfg:1", "'gpt-no-backup'"]),
    ('image a.img {\n hdimage {}\n partition p {\n  image = "x"\n  imageoffset = 4K\n }\n}',
     ["genimage.cfg:5", "partition p", "'imageoffset'"]),
    ('image a.img { hdimage {} partition p { image = "b.vfat" } }\n'
     'image b.vfat { vfat { extraargs = "-F 32" } }', ["image b.vfat: vfat", "'extraargs'"]),
    ('image a.img { ubifs {} }', ["'ubifs' is not supported"]),
    ('image a.img { hdimage {} partition p { image = "x" ', ["never closed"]),
    ('include("other.cfg")', ["include(...) is not supported"]),
])
def test_unsupported_genimage_keys(tmp_path, cfg, needles):
    setup_dirs(tmp_path)
    p = build_cfg(tmp_path, cfg)
    assert_one_line_error(p, 2, *needles)
    assert not (tmp_path / "sdcard.img").exists()


def test_parser_values():
    root = parse('# c\nimage x { hdimage { align = 4K  /* inline */ } // end\n'
                 ' partition "p 1" { holes = { "(1; 2)", "(3; 4)" } offset = 0x100 size = 1M } }')
    img = root.children[0]
    assert (img.kind, img.title) == ("image", "x")
    assert img.children[0].opts == {"align": "4K"}
    assert img.children[1].title == "p 1"
    assert img.children[1].opts == {"holes": ["(1; 2)", "(3; 4)"], "offset": "0x100", "size": "1M"}
    tr = translate(root, "g.cfg", rootpath=None, inputpath="in")
    part = tr.doc["partitions"][0]
    assert part["offset"] == 0x100 and tr.doc["image"]["alignment"] == 4096
    import tomllib
    assert tomllib.loads(to_toml(tr.doc))["partitions"][0]["holes"] == ["(1; 2)", "(3; 4)"]
    with pytest.raises(SpecError, match="top-level images"):
        translate(parse("image a { hdimage {} partition p { size = 1M } }\n"
                        "image b { hdimage {} partition p { size = 1M } }"), "g.cfg",
                  rootpath=None, inputpath="in")


def test_import_to_stdout_and_flag_errors(tmp_path):
    setup_dirs(tmp_path)
    (tmp_path / "genimage.cfg").write_text(AMLOGIC_SPARSE)
    p = run_fstool("import-genimage", "genimage.cfg", "--rootpath", "target", "--inputpath", "images",
                   cwd=tmp_path, check=True)
    import tomllib
    doc = tomllib.loads(p.stdout)
    assert doc["image"]["format"] == "android-sparse" and doc["image"]["disk_signature"] == "0x5452574f"
    blob, root = doc["partitions"]
    # paths relative to the spec (here the current directory), never absolute
    assert blob == {"name": "bl1", "in_partition_table": False, "offset": 0,
                    "holes": ["(440; 512)"], "image": "images/bl1.bin"}
    assert root["filesystem"]["source"] == "target"
    assert root["type"] == "0x83" and root["filesystem"]["options"] == {"compression": "xz"}
    (tmp_path / "d.toml").write_text('[image]\n[[partitions]]\nsize = "1MiB"\n')
    p = run_fstool("build", "d.toml", "-o", "d.img", "--rootpath", "target", cwd=tmp_path)
    assert_one_line_error(p, 2, "--rootpath")
    (tmp_path / "fs.cfg").write_text('image r.ext4 { ext4 {} size = 4M }')
    p = run_fstool("build", "fs.cfg", "-o", "r.ext4", "--inputpath", "images", cwd=tmp_path)
    assert_one_line_error(p, 2, "fs.cfg", "--rootpath")
    run_fstool("build", "fs.cfg", "-o", "r.ext4", "--rootpath", "target", cwd=tmp_path, check=True)
    assert run_fstool("cat", tmp_path / "r.ext4", "/etc/hostname", check=True).stdout == "buildroot\n"


RPI = """
image boot.vfat {
	vfat {
		files = {
			"board.dtb",
			"Image"
		}
	}
	size = 32M
}

image sdcard.img {
	hdimage {
	}

	partition boot {
		partition-type = 0xC
		bootable = "true"
		image = "boot.vfat"
	}

	partition rootfs {
		partition-type = 0x83
		image = "rootfs.ext4"
	}
}
"""


def test_raspberry_pi_genimage_with_prebuilt_rootfs(tmp_path):
    setup_dirs(tmp_path)
    run_fstool("create", "-t", "ext4", "target", "-o", "images/rootfs.ext4", cwd=tmp_path, check=True)
    p = build_cfg(tmp_path, RPI)
    assert p.returncode == 0, p.stderr
    img = tmp_path / "sdcard.img"
    t = sfdisk_json(img)
    boot, root = t["partitions"]
    # genimage's defaults: MBR, 512-byte alignment, right after the MBR
    assert (boot["start"], boot["size"] * 512, boot["type"], boot.get("bootable")) == (1, 32 * MiB, "c", True)
    assert root["start"] == boot["start"] + boot["size"] and root["type"] == "83"
    cmp_at(tmp_path / "images" / "rootfs.ext4", img, root["start"] * 512)
    assert run_fstool("cat", f"{img}:1", "/Image", check=True, text_output=False).stdout == \
        (tmp_path / "images" / "Image").read_bytes()


def test_mutated_configs_give_clean_errors():
    """A seeded mutator over a config: a spec document or one SpecError, never another exception."""
    rnd = random.Random(5)
    alphabet = "{}=,()\"'#/*;\n xK0M8"
    for _ in range(800):
        s = list(ROCKCHIP)
        for _ in range(rnd.randint(1, 8)):
            pos = rnd.randrange(len(s))
            op = rnd.random()
            if op < 0.4:
                s[pos] = rnd.choice(alphabet)
            elif op < 0.7:
                del s[pos]
            else:
                s.insert(pos, rnd.choice(alphabet))
        try:
            translate(parse("".join(s), "g.cfg"), "g.cfg", rootpath="r", inputpath="i")
        except SpecError:
            pass
    with pytest.raises(SpecError, match="nested more than 16 deep"):
        parse("a {" * 5000)
