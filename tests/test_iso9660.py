"""ISO 9660: Rock Ridge, Joliet, El Torito and isohybrid, checked by xorriso/osirrox, isoinfo and
sgdisk (this kernel has no iso9660 driver, so osirrox extraction is the tree compare)."""
from __future__ import annotations

import os
import stat
import struct
import subprocess

import pytest

from conftest import assert_one_line_error, run_fstool
from test_cpio import kernel, make_tree, same_tree  # noqa: F401  (kernel is a fixture)

pytestmark = pytest.mark.slow

T = 1_700_000_000
DEEP = [f"level{i:02d}" for i in range(12)]


@pytest.fixture(scope="module")
def src(tmp_path_factory):
    root = tmp_path_factory.mktemp("iso") / "src"
    make_tree(str(root))
    d = os.path.join(root, *DEEP)
    os.makedirs(d)
    with open(os.path.join(d, "bottom"), "w") as f:
        f.write("twelve levels down\n")
    os.symlink("../../..", os.path.join(root, *DEEP[:9], "up"))
    os.symlink("/" + "/".join(f"part{i}" + "p" * 200 for i in range(4)) + "/./../end",
               os.path.join(root, "multi-sl-link"))
    with open(os.path.join(root, "Ünïcödé name that is longer than sixty-four characters in Joliet.txt"), "w") as f:
        f.write("joliet\n")
    with open(os.path.join(root, "same.name.txt"), "w") as f:
        f.write("1")
    with open(os.path.join(root, "SAME.NAME.TXT"), "w") as f:
        f.write("2")
    boot = os.path.join(root, "boot")
    os.makedirs(boot)
    with open(os.path.join(boot, "isolinux.bin"), "wb") as f:
        f.write(bytes(range(256)) * 96)  # a stand-in loader of 24 KiB
    for dirpath, dirnames, filenames in os.walk(root):
        for n in dirnames + filenames:
            os.utime(os.path.join(dirpath, n), (T, T), follow_symlinks=False)
    os.utime(root, (T, T))
    return root


@pytest.fixture(scope="module")
def esp(tmp_path_factory):
    """An ESP image made by our own FAT writer."""
    d = tmp_path_factory.mktemp("esp")
    (d / "tree" / "EFI" / "BOOT").mkdir(parents=True)
    (d / "tree" / "EFI" / "BOOT" / "BOOTX64.EFI").write_bytes(b"MZ" + bytes(4000))
    img = d / "esp.img"
    run_fstool("create", "-t", "fat", d / "tree", "-o", img, "--size", "2MiB", check=True)
    return img


def build(src, out, *opts, **kw):
    args = ["create", "-t", "iso9660", src, "-o", out]
    for o in opts:
        args += ["-O", o]
    p = run_fstool(*args, **kw)
    assert p.returncode == 0, p.stderr
    return out


def osirrox(img, dest):
    p = subprocess.run(["xorriso", "-osirrox", "on:device_files", "-hardlinks", "on", "-indev", str(img),
                        "-extract", "/", str(dest)], capture_output=True, text=True)
    assert p.returncode == 0, p.stderr
    assert "SORRY" not in p.stderr and "FAILURE" not in p.stderr and "WARNING" not in p.stderr, p.stderr
    if not os.path.lexists(dest / "sock"):  # a stand-in for the socket osirrox skips (osirrox_view)
        os.mkfifo(dest / "sock")
    return dest


def xorriso_report(img, *what):
    p = subprocess.run(["xorriso", "-indev", str(img), *what], capture_output=True, text=True)
    assert p.returncode == 0, p.stderr
    return p.stdout


def osirrox_view(path, rec):
    """What osirrox cannot restore: a symlink's own time (it sets none) and sockets (it skips them)."""
    if rec["fmt"] == stat.S_IFLNK:
        rec.pop("mtime")
    if path == "/sock":
        rec.clear()


def test_rock_ridge_tree_extracts_equal(tmp_path, src):
    img = build(src, tmp_path / "a.iso")
    out = osirrox(img, tmp_path / "x")
    same_tree(src, out, osirrox_view)
    # libarchive is a third reader (it extracts a socket as an empty file, as it does from a cpio)
    y = tmp_path / "y"
    y.mkdir()
    subprocess.run(["bsdtar", "-xpf", str(img), "-C", str(y)], check=True)
    same_tree(src, y, lambda path, rec: rec.clear() if path == "/sock" else None)
    # our reader sees the socket and every symlink time
    ls = run_fstool("ls", "-R", img, check=True).stdout
    assert any(ln.startswith("srwxr-xr-x") and ln.endswith("/sock") for ln in ls.splitlines())
    assert all("2023-11-14 22:13:20" in ln for ln in ls.splitlines() if ln.startswith("l"))
    assert any(ln.startswith("b") and "\t259,300000\t" in ln and ln.endswith("/sda")
               for ln in ls.splitlines())


def test_isoinfo_sees_rock_ridge_joliet_and_relocation(tmp_path, src):
    img = build(src, tmp_path / "a.iso", "joliet=true")
    d = subprocess.run(["isoinfo", "-d", "-i", str(img)], capture_output=True, text=True, check=True).stdout
    assert "Joliet with UCS level 3 found" in d and "Rock Ridge signatures version 1 found" in d
    assert "Logical block size is: 2048" in d
    plain = subprocess.run(["isoinfo", "-l", "-i", str(img)], capture_output=True, text=True, check=True).stdout
    assert "Directory listing of /RR_MOVED/" in plain  # ECMA-119 depth 8: level08 and below moved
    rr = subprocess.run(["isoinfo", "-l", "-R", "-i", str(img)], capture_output=True, text=True, check=True).stdout
    assert "same.name.txt" in rr and "SAME.NAME.TXT" in rr
    j = subprocess.run(["isoinfo", "-f", "-J", "-i", str(img)], capture_output=True,
                       check=True).stdout.decode("latin-1")  # isoinfo prints Joliet names in ISO 8859-1
    names = [n.removesuffix(";1") for n in j.splitlines()]
    assert "/SAME.NAME.TXT" in names and "/same.name~1.txt" in names  # Joliet is case-blind: ~1
    assert "/boot/isolinux.bin" in names and "/" + "/".join(DEEP) + "/bottom" in names
    long = "Ünïcödé name that is longer than sixty-four characters in Joliet.txt"
    assert "/" + long[:64] in names  # 64 UCS-2 characters at most


def test_el_torito_bios_and_uefi_hybrid(tmp_path, src, esp):
    img = build(src, tmp_path / "boot.iso", "bios_boot=boot/isolinux.bin", "boot_info_table=true",
                f"efi_boot={esp}", "hybrid=true")
    rep = xorriso_report(img, "-report_el_torito", "plain", "-report_system_area", "plain")
    lines = [ln.split() for ln in rep.splitlines()]
    bios = [ln for ln in lines if ln[:4] == ["El", "Torito", "boot", "img"] and ln[6] == "BIOS"]
    uefi = [ln for ln in lines if ln[:4] == ["El", "Torito", "boot", "img"] and ln[6] == "UEFI"]
    assert len(bios) == 1 and len(uefi) == 1, rep
    # El Torito boot img : N Pltf B Emul Ld_seg Hdpt Ldsiz LBA
    assert bios[0][8] == "none" and bios[0][11] == "4"
    assert uefi[0][8] == "none" and uefi[0][11] == str(esp.stat().st_size // 512)
    assert "El Torito img path :   1  /boot/isolinux.bin" in rep and "boot-info-table" in rep
    assert "GPT" in rep and "protective-msdos-label" in rep
    v = subprocess.run(["sgdisk", "-v", str(img)], capture_output=True, text=True)
    assert v.returncode == 0 and "No problems found" in v.stdout, v.stdout
    # the ESP partition holds exactly the FAT image, which fsck accepts
    parts = {p.split("  ")[0].strip(): p for p in rep.splitlines() if p.startswith("GPT start and size")}
    start, size = [int(x) for x in rep.split("GPT start and size :   2")[1].split()[:2]]
    data = img.read_bytes()
    assert data[start * 512:(start + size) * 512] == esp.read_bytes()
    assert parts
    # the boot info table: PVD at 16, the file's own LBA and length, the sum of its words from 64
    lba = int(bios[0][-1])
    raw = (src / "boot" / "isolinux.bin").read_bytes()
    table = struct.unpack_from("<4I", data, lba * 2048 + 8)
    assert table[:3] == (16, lba, len(raw))
    assert table[3] == sum(struct.unpack(f"<{(len(raw) - 64) // 4}I", raw[64:])) & 0xFFFFFFFF
    assert data[lba * 2048 + 64:lba * 2048 + len(raw)] == raw[64:]
    info = run_fstool("ls", "-R", img, check=True).stdout
    assert "/boot/isolinux.bin" in info
    info = run_fstool("info", img, check=True).stdout  # the GPT, then the ISO as a whole
    assert "GPT disk" in info and "whole image: iso9660" in info
    assert "el torito: BIOS image at sector" in info and "system area: GPT (isohybrid)" in info


def test_uefi_only_from_a_file_in_the_tree(tmp_path, src, esp):
    tree = tmp_path / "t"
    subprocess.run(["cp", "-a", str(src), str(tree)], check=True)
    (tree / "boot" / "efi.img").write_bytes(esp.read_bytes())
    img = build(tree, tmp_path / "efi.iso", "efi_boot=boot/efi.img", "hybrid=true")
    rep = xorriso_report(img, "-report_el_torito", "plain")
    assert "UEFI" in rep and "BIOS" not in rep.split("El Torito images")[1]
    assert "/boot/efi.img" in rep
    v = subprocess.run(["sgdisk", "-v", str(img)], capture_output=True, text=True)
    assert "No problems found" in v.stdout, v.stdout
    # the partition lets the firmware (and our reader) see the FAT inside
    info = run_fstool("info", f"{img}:2", check=True).stdout
    assert "fat" in info


def test_reproducible_and_dates_from_the_spec(tmp_path, src):
    a = build(src, tmp_path / "a.iso", "hybrid=true", "bios_boot=boot/isolinux.bin",
              env={"SOURCE_DATE_EPOCH": str(T + 100)}).read_bytes()
    b = build(src, tmp_path / "b.iso", "hybrid=true", "bios_boot=boot/isolinux.bin",
              env={"SOURCE_DATE_EPOCH": str(T + 100)}).read_bytes()
    assert a == b
    pvd = a[16 * 2048:17 * 2048]
    assert pvd[813:829] == b"2023111422150000"  # creation date = SOURCE_DATE_EPOCH
    d = subprocess.run(["isoinfo", "-d", "-i", str(tmp_path / "a.iso")], capture_output=True, text=True).stdout
    assert "Volume id: ISO_" in d


def test_label_and_fixed_size(tmp_path, src):
    img = tmp_path / "l.iso"
    run_fstool("create", "-t", "iso", src, "-o", img, "--label", "MY_DISC", "--size", "8MiB", check=True)
    assert img.stat().st_size == 8 << 20
    assert "volume id: MY_DISC" in run_fstool("info", img, check=True).stdout
    p = run_fstool("create", "-t", "iso", src, "-o", tmp_path / "s.iso", "--size", "64KiB")
    assert_one_line_error(p, 1, "the image needs")


def test_our_reader_reads_xorriso_images(tmp_path, src):
    ref = tmp_path / "ref.iso"
    subprocess.run(["xorriso", "-as", "mkisofs", "-R", "-J", "-o", str(ref), str(src)], check=True,
                   capture_output=True)
    ours = build(src, tmp_path / "ours.iso")
    a = run_fstool("ls", "-R", ref, check=True).stdout.splitlines()
    b = run_fstool("ls", "-R", ours, check=True).stdout.splitlines()
    # xorriso keeps the deep tree in place and stores the same metadata: identical listings
    # (except directory times, which xorriso also takes from the source)
    assert [ln.split("\t")[:4] + ln.split("\t")[5:] for ln in a] == \
           [ln.split("\t")[:4] + ln.split("\t")[5:] for ln in b]
    got = run_fstool("cat", ref, "/bin/busybox", text_output=False, check=True).stdout
    assert got == (src / "bin" / "busybox").read_bytes()


def test_multi_extent_file_over_4gib(tmp_path):
    tree = tmp_path / "t"
    tree.mkdir()
    with open(tree / "huge", "wb") as f:
        f.write(b"start")
        f.seek((4 << 30) + 4096)
        f.write(b"end")
    img = build(tree, tmp_path / "h.iso")
    assert os.stat(img).st_blocks * 512 < 1 << 20  # holes stay holes
    ls = xorriso_report(img, "-lsl", "/huge")
    assert str((4 << 30) + 4099) in ls
    p = subprocess.run(["isoinfo", "-l", "-i", str(img)], capture_output=True, text=True, check=True).stdout
    assert p.count("HUGE.;1") == 2  # two extents, the first flagged multi-extent
    st = run_fstool("ls", img, "/huge", check=True).stdout
    assert f"\t{(4 << 30) + 4099}\t" in st
    # the bytes on both sides of the extent boundary, as libisofs joins the extents
    for off, want in ((0, b"start"), ((4 << 30) + 4096, b"end"), ((4 << 30) - 4096, bytes(4096))):
        dest = tmp_path / f"cut-{off}"
        p = subprocess.run(["xorriso", "-osirrox", "on", "-indev", str(img), "-extract_cut", "/huge", str(off),
                            str(len(want)), str(dest)], capture_output=True, text=True)
        assert p.returncode == 0, p.stderr
        assert dest.read_bytes() == want


def test_errors_are_one_line(tmp_path, src):
    p = run_fstool("create", "-t", "iso", src, "-o", tmp_path / "x", "-O", "bios_boot=nope.bin")
    assert_one_line_error(p, 1, "bios_boot", "not in the tree")
    p = run_fstool("create", "-t", "iso", src, "-o", tmp_path / "x", "-O", "bios_boot=bin")
    assert_one_line_error(p, 1, "not a regular file")
    p = run_fstool("create", "-t", "iso", src, "-o", tmp_path / "x", "-O", "hybrid=true")
    assert_one_line_error(p, 2, "hybrid")
    p = run_fstool("create", "-t", "iso", src, "-o", tmp_path / "x", "-O", "jolliet=false")
    assert_one_line_error(p, 2, "did you mean 'joliet'")
    p = run_fstool("create", "-t", "iso", src, "-o", tmp_path / "x", "--label", "x" * 33)
    assert p.returncode == 0 and "stores the label" in p.stderr  # cut to 32, with a warning (as every format)
    assert "volume id: " + "X" * 32 + "\n" in run_fstool("info", tmp_path / "x", check=True).stdout
    good = build(src, tmp_path / "g.iso").read_bytes()
    bad = bytearray(good)
    root_lba = struct.unpack_from("<I", good, 16 * 2048 + 158)[0]
    second = root_lba * 2048 + good[root_lba * 2048]  # the ".." record follows "."
    third = second + good[second]
    bad[third] = 5  # a record shorter than 33 bytes
    (tmp_path / "bad.iso").write_bytes(bad)
    assert_one_line_error(run_fstool("ls", "-R", tmp_path / "bad.iso"), 1, "malformed")
    (tmp_path / "short.iso").write_bytes(good[:20 * 2048])
    assert_one_line_error(run_fstool("ls", "-R", tmp_path / "short.iso"), 1)


def test_without_rock_ridge_reads_joliet_and_deep_dirs_in_place(tmp_path, src):
    img = build(src, tmp_path / "j.iso", "rock_ridge=false")
    d = subprocess.run(["isoinfo", "-d", "-i", str(img)], capture_output=True, text=True, check=True).stdout
    assert "NO Rock Ridge present" in d and "Joliet" in d
    ls = run_fstool("ls", "-R", img, check=True).stdout
    assert "/boot/isolinux.bin" in ls and "/same.name~1.txt" in ls and "/bin/ls" not in ls  # no symlinks in Joliet
    flat = build(src, tmp_path / "flat.iso", "relocate_deep_dirs=false")
    plain = subprocess.run(["isoinfo", "-l", "-i", str(flat)], capture_output=True, text=True, check=True).stdout
    assert "RR_MOVED" not in plain
    out = osirrox(flat, tmp_path / "x")
    same_tree(src, out, osirrox_view)


def test_images_as_sources_convert_both_ways(tmp_path, src):
    """An ISO (read in place) becomes a cpio, a compressed cpio becomes an ISO: same listings."""
    iso = build(src, tmp_path / "a.iso")
    cpio = tmp_path / "from-iso.cpio.gz"
    run_fstool("create", "-t", "cpio", iso, "-o", cpio, "-O", "compression=gzip", check=True)
    back = tmp_path / "from-cpio.iso"
    run_fstool("create", "-t", "iso9660", cpio, "-o", back, check=True)
    listings = [run_fstool("ls", "-R", img, check=True).stdout for img in (iso, cpio, back)]
    assert listings[0] == listings[1] == listings[2]
    out = osirrox(back, tmp_path / "x")
    same_tree(src, out, osirrox_view)  # hardlinks, devices and bytes survive both conversions


def _boots(args, log, marker, timeout=90):
    """Run qemu until the serial log shows marker (or time runs out); True if it did."""
    import time
    p = subprocess.Popen(["qemu-system-x86_64", "-m", "128", "-display", "none", "-serial", f"file:{log}",
                          "-no-reboot", *args], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        end = time.monotonic() + timeout
        while time.monotonic() < end and p.poll() is None:
            if os.path.exists(log) and marker in open(log, "rb").read():
                return True
            time.sleep(0.5)
        return os.path.exists(log) and marker in open(log, "rb").read()
    finally:
        p.kill()
        p.wait()


def test_isolinux_boots_from_cd_and_from_a_stick(tmp_path):
    """SeaBIOS boots the image as a CD (El Torito, boot info table) and as a hard disk (the
    isohybrid MBR code jumps to isolinux), and isolinux then reads its config and ldlinux.c32
    from our ISO 9660 directories."""
    tree = tmp_path / "t" / "isolinux"
    tree.mkdir(parents=True)
    for f in ("/usr/lib/ISOLINUX/isolinux.bin", "/usr/lib/syslinux/modules/bios/ldlinux.c32"):
        (tree / os.path.basename(f)).write_bytes(open(f, "rb").read())
    (tree / "isolinux.cfg").write_text("SERIAL 0 115200\nPROMPT 0\nDEFAULT none\nLABEL none\n"
                                       "  KERNEL /fstool-marker-kernel\n")
    img = build(tmp_path / "t", tmp_path / "b.iso", "bios_boot=isolinux/isolinux.bin", "boot_info_table=true",
                "hybrid=true", "mbr_code=/usr/lib/ISOLINUX/isohdpfx.bin")
    marker = b"Loading /fstool-marker-kernel"
    assert _boots(["-cdrom", str(img), "-boot", "d"], tmp_path / "cd.log", marker), \
        (tmp_path / "cd.log").read_bytes()[-500:]
    assert _boots(["-drive", f"file={img},format=raw,if=ide", "-boot", "c"], tmp_path / "hd.log", marker), \
        (tmp_path / "hd.log").read_bytes()[-500:]


def test_uefi_grub_boots_from_cd_and_from_a_stick(tmp_path):
    """OVMF starts GRUB from the El Torito UEFI entry (as a CD) and from the GPT's ESP partition
    (as a disk); the ESP is an image made by our FAT writer."""
    esp_tree = tmp_path / "esp" / "EFI" / "BOOT"
    esp_tree.mkdir(parents=True)
    (esp_tree / "BOOTX64.EFI").write_bytes(open("/usr/lib/grub/x86_64-efi/monolithic/grubx64.efi", "rb").read())
    esp = tmp_path / "esp.img"
    run_fstool("create", "-t", "fat", tmp_path / "esp", "-o", esp, "--size", "8MiB", check=True)
    (tmp_path / "t").mkdir()
    (tmp_path / "t" / "readme").write_text("uefi\n")
    img = build(tmp_path / "t", tmp_path / "e.iso", f"efi_boot={esp}", "hybrid=true")
    for name, drive in (("cd", ["-cdrom", str(img), "-boot", "d"]),
                        ("disk", ["-drive", f"file={img},format=raw,if=ide"])):
        vars_fd = tmp_path / f"vars-{name}.fd"
        vars_fd.write_bytes(open("/usr/share/OVMF/OVMF_VARS.fd", "rb").read())
        firmware = ["-m", "256", "-drive", "if=pflash,format=raw,readonly=on,file=/usr/share/OVMF/OVMF_CODE.fd",
                    "-drive", f"if=pflash,format=raw,file={vars_fd}"]
        log = tmp_path / f"{name}.log"
        assert _boots(firmware + drive, log, b"Welcome to GRUB!", timeout=120), log.read_bytes()[-800:]


MOUNT_INIT = r"""#!/bin/busybox sh
B=/bin/busybox
$B mount -t proc proc /proc
$B mount -t devtmpfs dev /dev
for m in virtio_ring virtio virtio_pci_legacy_dev virtio_pci_modern_dev virtio_pci virtio_blk cdrom isofs; do
  $B insmod /lib/$m.ko || echo "INSMOD-FAILED $m"
done
n=0; while [ ! -e /dev/vda ] && [ $n -lt 50 ]; do $B sleep 0.1; n=$((n+1)); done
$B mount -t iso9660 -o ro /dev/vda /mnt && echo MOUNTED
cd /mnt
$B find . | while IFS= read -r p; do
  if [ -L "$p" ]; then echo "E|$p|$($B stat -c '%f|%u|%g|%s|%Y|%h' "$p")|$($B readlink "$p")"
  elif [ -f "$p" ]; then echo "E|$p|$($B stat -c '%f|%u|%g|%s|%Y|%h' "$p")|$($B md5sum < "$p" | $B cut -c1-32)"
  elif [ -b "$p" ] || [ -c "$p" ]; then echo "E|$p|$($B stat -c '%f|%u|%g|%t,%T|%Y|%h' "$p")|"
  else echo "E|$p|$($B stat -c '%f|%u|%g|-|%Y|%h' "$p")|"; fi
done
echo LISTING-END
$B poweroff -f
"""


def _host_listing(root) -> dict:
    """The same listing as MOUNT_INIT prints, made from the source tree."""
    import hashlib
    out = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for n in [""] + dirnames + filenames:
            if n == "" and dirpath != str(root):
                continue
            p = os.path.join(dirpath, n) if n else dirpath
            rel = "." + ("/" + os.path.relpath(p, root) if p != str(root) else "")
            st = os.lstat(p)
            if stat.S_ISLNK(st.st_mode):
                size, extra = str(st.st_size), os.readlink(p)
            elif stat.S_ISREG(st.st_mode):
                size, extra = str(st.st_size), hashlib.md5(open(p, "rb").read()).hexdigest()
            elif stat.S_ISCHR(st.st_mode) or stat.S_ISBLK(st.st_mode):
                size, extra = f"{os.major(st.st_rdev):x},{os.minor(st.st_rdev):x}", ""
            else:
                size, extra = "-", ""
            out[rel] = f"{st.st_mode:x}|{st.st_uid}|{st.st_gid}|{size}|{int(st.st_mtime)}|{st.st_nlink}|{extra}"
    return out


def test_linux_mounts_it(tmp_path, src, kernel):
    """The Linux kernel's isofs (in a VM: this host kernel has none) mounts the image and sees the
    source tree through Rock Ridge: names, modes, owners, times, sizes, bytes, symlinks, devices,
    hardlink counts, and the directories relocated past depth 8 back in place."""
    img = build(src, tmp_path / "a.iso")
    ir = tmp_path / "ir"
    for d in ("bin", "lib", "dev", "proc", "mnt"):
        (ir / d).mkdir(parents=True)
    (ir / "bin" / "busybox").write_bytes(open("/bin/busybox", "rb").read())
    os.chmod(ir / "bin" / "busybox", 0o755)
    mods = os.path.join(os.path.dirname(kernel), "modules")
    for m in os.listdir(mods):
        (ir / "lib" / m).write_bytes(open(os.path.join(mods, m), "rb").read())
    (ir / "init").write_text(MOUNT_INIT)
    os.chmod(ir / "init", 0o755)
    initrd = tmp_path / "initrd.img"
    run_fstool("create", "-t", "cpio", ir, "-o", initrd, "-O", "compression=gzip", check=True)
    log = tmp_path / "serial.log"
    subprocess.run(["qemu-system-x86_64", "-m", "256", "-kernel", kernel, "-initrd", str(initrd),
                    "-append", "console=ttyS0 panic=-1 quiet", "-display", "none", "-serial", f"file:{log}",
                    "-no-reboot", "-drive", f"file={img},format=raw,if=virtio,readonly=on"],
                   timeout=300, check=True, capture_output=True)
    out = log.read_text(errors="replace")
    assert "MOUNTED" in out and "LISTING-END" in out and "INSMOD-FAILED" not in out, out[-3000:]
    seen = {}
    for ln in out.splitlines():
        if ln.startswith("E|"):
            _, path, rest = ln.split("|", 2)
            seen[path] = rest
    want = _host_listing(src)
    # Linux's isofs keeps at most 253 bytes of a Rock Ridge name (fs/isofs/rock.c): the 255-byte
    # name shows as its first NM piece, 250 bytes
    want["./" + "n" * 250] = want.pop("./" + "n" * 255)
    # block device 259,300000: Linux reads the PN halves as (major, minor) when the high half is
    # not 0, else as an old dev_t, so past minor 255 it misreads what xorriso, libarchive and we
    # write (a glibc dev_t: major 259 stays, the minor loses its high bits)
    assert seen.pop("./sda").split("|")[3] == "103,e0"
    want.pop("./sda")
    diffs = {p: (want.get(p), seen.get(p)) for p in set(want) | set(seen) if want.get(p) != seen.get(p)}
    assert not diffs, sorted(diffs.items())[:10]
