"""Security metadata declared in specs, manifests and tables: checked against the tools that
write it on a live system (setcap, setfacl, matchpathcon) and through the kernel's view of
mounted images (getcap, getfattr, getfacl), plus debugfs and unsquashfs."""
from __future__ import annotations

import os
import subprocess
import textwrap

import pytest

from conftest import assert_one_line_error, loop_mount, run_fstool
from fstool.errors import SpecError
from fstool.inputs import security as sec
from fstool.tree import Kind

CAP_TEXTS = ["cap_net_raw+ep", "cap_net_raw,cap_net_admin+ep", "cap_net_bind_service=eip",
             "cap_chown,cap_sys_admin+p", "cap_setuid+i", "=ep", "cap_bpf,cap_perfmon+ep",
             "cap_kill+ep cap_kill-e", "all=p cap_sys_module-p"]


@pytest.mark.parametrize("text", CAP_TEXTS)
def test_capability_bytes_equal_what_setcap_writes(tmp_path, text):
    f = tmp_path / "bin"
    f.write_bytes(b"x")
    subprocess.run(["setcap", text, str(f)], check=True)
    assert sec.capability_xattr(text, "t") == os.getxattr(f, "security.capability")


def test_capability_errors_name_the_problem():
    with pytest.raises(SpecError, match="did you mean 'cap_net_raw'"):
        sec.capability_xattr("cap_net_rwa+ep", "t")
    with pytest.raises(SpecError, match="cannot read capability clause"):
        sec.capability_xattr("cap_net_raw+q", "t")


@pytest.mark.parametrize("spec", ["u:1000:r-x,g:2000:rw-", "u::rwx,g::---,o::r--", "u:0:rwx,m::r-x"])
def test_acl_bytes_equal_what_setfacl_writes(tmp_path, spec):
    f = tmp_path / "file"
    f.write_bytes(b"x")
    subprocess.run(["setfacl", "-m", spec, str(f)], check=True)
    text = subprocess.run(["getfacl", "-c", "-n", "-E", str(f)], capture_output=True, text=True,
                          check=True).stdout
    try:
        want = os.getxattr(f, "system.posix_acl_access")
    except OSError:  # a minimal ACL (owner/group/other only) is kept in the mode alone
        want = None
    got = sec.acl_from_text(text, "t")
    if want is not None:
        assert got == want
    else:
        assert len(got) == 4 + 3 * 8


def test_acl_names_without_ids_are_refused():
    with pytest.raises(Exception, match="without a numeric id"):
        sec.acl_from_text("user::rw-,user:alice:r--,group::r--,mask::r--,other::---", "t")


FILE_CONTEXTS = textwrap.dedent("""\
    # overlapping regexes, file-type fields and an exact path
    /.*                      system_u:object_r:default_t:s0
    /usr(/.*)?               system_u:object_r:usr_t:s0
    /usr/bin(/.*)?           system_u:object_r:bin_t:s0
    /usr/bin/ping     --     system_u:object_r:ping_exec_t:s0
    /usr/bin/.*\\.sh   --     system_u:object_r:script_t:s0
    /etc(/.*)?               system_u:object_r:etc_t:s0
    /etc              -d     system_u:object_r:etc_dir_t:s0
    /dev/null         -c     system_u:object_r:null_device_t:s0
    /dev/.*           -b     system_u:object_r:fixed_disk_device_t:s0
    /run/fifo         -p     system_u:object_r:fifo_t:s0
    /run/sock         -s     system_u:object_r:sock_t:s0
    /usr/lib/.*\\.so(\\.[0-9]+)*  -- system_u:object_r:lib_t:s0
    /usr/lib/link     -l     system_u:object_r:link_t:s0
    /tmp(/.*)?               <<none>>
    /etc/exact               system_u:object_r:exact_t:s0
    /etc/.*                  system_u:object_r:after_exact_t:s0
    """)
MATCHPATHCON_TYPES = {Kind.FILE: "file", Kind.DIR: "dir", Kind.SYMLINK: "lnk_file", Kind.CHR: "chr_file",
                      Kind.BLK: "blk_file", Kind.FIFO: "pipe", Kind.SOCK: "sock_file"}
PATHS = [("/", Kind.DIR), ("/usr", Kind.DIR), ("/usr/bin/ping", Kind.FILE), ("/usr/bin/ping", Kind.DIR),
         ("/usr/bin/run.sh", Kind.FILE), ("/usr/bin/run.sh", Kind.SYMLINK), ("/etc", Kind.DIR),
         ("/etc", Kind.FILE), ("/etc/passwd", Kind.FILE), ("/etc/exact", Kind.FILE),
         ("/dev/null", Kind.CHR), ("/dev/sda", Kind.BLK), ("/dev/null", Kind.BLK),
         ("/run/fifo", Kind.FIFO), ("/run/sock", Kind.SOCK), ("/usr/lib/libc.so.6", Kind.FILE),
         ("/usr/lib/link", Kind.SYMLINK), ("/tmp/x", Kind.FILE), ("/opt/a b", Kind.FILE)]


def test_file_contexts_agree_with_matchpathcon(tmp_path):
    fc = tmp_path / "file_contexts"
    fc.write_text(FILE_CONTEXTS)
    specs = sec.load_file_contexts(str(fc))
    for path, kind in PATHS:
        p = subprocess.run(["matchpathcon", "-n", "-f", str(fc), "-m", MATCHPATHCON_TYPES[kind], path],
                           capture_output=True, text=True)
        want = p.stdout.strip() if p.returncode == 0 else None
        if want == "<<none>>":
            want = None
        assert sec.selinux_context(specs, path, kind) == want, (path, kind, p.stdout, p.stderr)


def _tree(root):
    for d in ("usr/bin", "etc", "tmp", "data"):
        (root / d).mkdir(parents=True)
    (root / "usr/bin/ping").write_bytes(b"\x7fELF ping")
    (root / "usr/bin/run.sh").write_text("#!/bin/sh\n")
    (root / "etc/passwd").write_text("root:x:0:0::/root:/bin/sh\n")
    (root / "etc/exact").write_text("e\n")
    (root / "tmp/scratch").write_text("s\n")
    (root / "data/shared").write_text("d\n")


@pytest.fixture
def secspec(tmp_path):
    src = tmp_path / "root"
    _tree(src)
    (tmp_path / "file_contexts").write_text(FILE_CONTEXTS)
    (tmp_path / "fs_config").write_text(textwrap.dedent("""\
        # path uid gid mode [capabilities=MASK] (Android canned fs_config)
        usr/bin/run.sh 1000 2000 0750
        usr/bin/ping 0 3003 04755 capabilities=0x2000
        """))
    return src


def _spec(tmp_path, src, fs_type):
    acl = '' if fs_type == "squashfs" else textwrap.dedent('''
        [[filesystem.overrides]]
        path = "/data"
        acl = "user::rwx,user:1000:r-x,group::r-x,mask::r-x,other::---"
        default_acl = "user::rwx,group:2000:rwx,group::r-x,mask::rwx,other::---"
        [[filesystem.overrides]]
        path = "/data/shared"
        acl = "user::rw-,user:1001:rw-,group::r--,mask::rw-,other::r--"
        ''')
    spec = tmp_path / f"{fs_type}.toml"
    spec.write_text(textwrap.dedent(f'''\
        [filesystem]
        type = "{fs_type}"
        source = "{src}"
        selinux_file_contexts = "{tmp_path / 'file_contexts'}"
        fs_config = "{tmp_path / 'fs_config'}"
        mtime = 1700000000
        [[filesystem.overrides]]
        path = "/etc/passwd"
        xattrs = {{ "user.note" = "hello", "user.hex" = "0xdeadbeef", "trusted.b64" = "base64:AAEC" }}
        [[filesystem.overrides]]
        path = "/usr/bin/run.sh"
        capabilities = "cap_net_bind_service+ep"
        capabilities_rootid = 100000
        ''') + acl)
    return spec


def _getfattr(mnt, path):
    p = subprocess.run(["getfattr", "-h", "-d", "-m", "-", "-e", "hex", "--absolute-names",
                        os.path.join(mnt, path.lstrip("/"))], capture_output=True, text=True, check=True)
    return dict(ln.split("=", 1) for ln in p.stdout.splitlines() if "=" in ln)


@pytest.mark.slow
@pytest.mark.parametrize("fs_type", ["ext4", "squashfs"])
def test_declared_metadata_through_the_kernel(tmp_path, secspec, fs_type):
    img = tmp_path / f"img.{fs_type}"
    run_fstool("build", _spec(tmp_path, secspec, fs_type), "-o", img, check=True)
    with loop_mount(img, tmp_path) as mnt:
        def getcap(p):
            return subprocess.run(["getcap", "-n", os.path.join(mnt, p)], capture_output=True, text=True,
                                  check=True).stdout.split(None, 1)[1].strip()
        # fs_config came last: it replaced the spec's capability on ping; run.sh keeps the v3 one
        assert getcap("usr/bin/ping") == "cap_net_raw=ep"
        assert getcap("usr/bin/run.sh") == "cap_net_bind_service=ep [rootid=100000]"
        st = os.stat(os.path.join(mnt, "usr/bin/ping"))
        assert (st.st_uid, st.st_gid, st.st_mode & 0o7777) == (0, 3003, 0o4755)
        st = os.stat(os.path.join(mnt, "usr/bin/run.sh"))
        assert (st.st_uid, st.st_gid, st.st_mode & 0o7777) == (1000, 2000, 0o750)
        x = _getfattr(mnt, "/etc/passwd")
        assert x["user.note"] == "0x" + b"hello".hex() and x["user.hex"] == "0xdeadbeef"
        assert x["trusted.b64"] == "0x000102"
        # /etc/.* comes after /etc(/.*)? in the file: the last match wins, as setfiles labels it
        assert x["security.selinux"] == "0x" + b"system_u:object_r:after_exact_t:s0\0".hex()
        fc = sec.load_file_contexts(str(tmp_path / "file_contexts"))
        for rel, kind in (("", Kind.DIR), ("etc", Kind.DIR), ("etc/exact", Kind.FILE),
                          ("usr/bin/ping", Kind.FILE), ("usr/bin/run.sh", Kind.FILE), ("tmp/scratch", Kind.FILE)):
            want = sec.selinux_context(fc, "/" + rel, kind)
            got = _getfattr(mnt, "/" + rel).get("security.selinux")
            assert got == (None if want is None else "0x" + (want.encode() + b"\0").hex()), rel
        if fs_type != "squashfs":  # squashfs stores no system.* (ACL) xattrs
            acl = subprocess.run(["getfacl", "-c", "-n", "-E", os.path.join(mnt, "data")],
                                 capture_output=True, text=True, check=True).stdout.split()
            assert "user:1000:r-x" in acl and "default:group:2000:rwx" in acl
            acl = subprocess.run(["getfacl", "-c", "-n", "-E", os.path.join(mnt, "data/shared")],
                                 capture_output=True, text=True, check=True).stdout.split()
            assert "user:1001:rw-" in acl and "mask::rw-" in acl
    if fs_type == "ext4":
        out = subprocess.run(["debugfs", "-R", "ea_list /usr/bin/ping", str(img)], capture_output=True,
                             text=True, check=True).stdout
        assert "security.capability" in out and "security.selinux" in out
    else:
        out = subprocess.run(["unsquashfs", "-lls", "-xattrs", "-n", "-d", "x", str(img)],
                             capture_output=True, text=True, cwd=tmp_path)
        assert out.returncode == 0, out.stderr


def test_security_metadata_on_fat_is_refused(tmp_path, secspec):
    spec = tmp_path / "fat.toml"
    spec.write_text(f'[filesystem]\ntype = "vfat"\nsource = "{secspec}"\n'
                    f'selinux_file_contexts = "{tmp_path / "file_contexts"}"\n')
    p = run_fstool("build", spec, "-o", tmp_path / "x.img")
    assert_one_line_error(p, 2, "stores no xattrs")


def test_tar_acls_become_posix_acl_xattrs(tmp_path):
    import io
    import tarfile
    tarf = tmp_path / "acl.tar"
    with tarfile.open(tarf, "w", format=tarfile.PAX_FORMAT) as tf:
        ti = tarfile.TarInfo("f")
        ti.size = 1
        ti.pax_headers = {"SCHILY.acl.access": "user::rw-,user:alice:r--:1000,group::r--,mask::r--,other::---"}
        tf.addfile(ti, io.BytesIO(b"x"))
    from fstool.inputs import load_sources
    tree = load_sources([str(tarf)])
    want = sec.acl_from_text("user::rw-,user:1000:r--,group::r--,mask::r--,other::---", "t")
    assert tree.lookup("/f").xattrs["system.posix_acl_access"] == want


def test_manifest_entries_declare_capabilities_and_acls(tmp_path):
    import json
    (tmp_path / "ping").write_bytes(b"x")
    m = tmp_path / "m.json"
    m.write_text(json.dumps({"file_modes": "explicit", "entries": [
        {"kind": "dir", "path": "/bin", "mode": "0755",
         "default_acl": "user::rwx,group::r-x,other::r-x,group:10:rwx,mask::rwx"},
        {"kind": "file", "path": "/bin/ping", "source": "ping", "mode": "0755",
         "capabilities": "cap_net_raw+ep", "acl": "user::rwx,user:7:r-x,group::r-x,mask::r-x,other::r-x"}]}))
    from fstool.inputs import load_sources
    tree = load_sources([str(m)])
    x = tree.lookup("/bin/ping").xattrs
    assert x["security.capability"] == sec.capability_xattr("cap_net_raw+ep", "t")
    assert x["system.posix_acl_access"] == sec.acl_from_text("u::rwx,u:7:r-x,g::r-x,m::r-x,o::r-x", "t")
    assert "system.posix_acl_default" in tree.lookup("/bin").xattrs
    m.write_text(json.dumps([{"kind": "file", "path": "/p", "source": "ping", "capabilities": "cap_nope+ep"}]))
    p = run_fstool("create", "-t", "ext4", m, "-o", tmp_path / "x.img")
    assert_one_line_error(p, 1, "unknown capability")
