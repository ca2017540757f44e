"""The Bazel rules (rules/) driven by the real Bazel 4.2.3, offline (--config=offline).

Every Bazel world here is clean: the repository is copied to a temporary "checkout",
and each world gets an output base of its own under one shared --output_user_root (so
Bazel's install base is unpacked once). Caching goes through an HTTP remote cache
(tests/http_cache_server.py, one per module, on 127.0.0.1). Which spawns ran is read
from Bazel's --execution_log_json_file, where a cache hit is a spawn with remoteCacheHit.
Remote execution runs against BuildGrid (its own venv, `make buildgrid`) with the host
worker tests/rex_worker.py.

The examples' root filesystem is ext4: test_examples_disk needs the ext4 writer
(fstool/fs/ext/writer.py). The caching tests build vfat and SquashFS images only
(the package `cachetest`, written into the examples workspace below). The package
`boardtest`, in a world of its own, covers output containers (qemu-img, simg2img,
bmaptool), board layouts (sgdisk, sfdisk, cmp of blobs), dm-verity (veritysetup) and
security metadata (getcap, getfattr, getfacl on a kernel mount).
"""
from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys

import pytest

import http_cache_server
from conftest import REPO, run_fstool

pytestmark = pytest.mark.slow

BAZEL = shutil.which("bazel") or "bazel"
BUILDIFIER_VERSION = "8.2.1"


def _system_startup_options() -> list[str]:
    """The startup lines of the system bazelrc: Debian's says where Bazel is installed
    (--install_base); its build options (--sandbox_debug, ...) are left out."""
    out = []
    for rc in ("/etc/bazel/bazelrc", "/etc/bazel.bazelrc"):
        if os.path.exists(rc):
            with open(rc) as f:
                for line in f:
                    words = line.split("#")[0].split()
                    if words[:1] == ["startup"]:
                        out += words[1:]
    return out


SYSTEM_STARTUP = _system_startup_options()

# What a checkout needs: the ruleset, the engine, the offline stand-ins, the examples.
CHECKOUT_ITEMS = (".bazelrc", ".bazelignore", "BUILD.bazel", "MODULE.bazel", "WORKSPACE.bazel",
                  "requirements_lock.txt", "fstool", "rules", "tests/offline", "tests/analysis", "examples",
                  "scripts")

# A package of the examples workspace that needs no ext4: a vfat ESP, a SquashFS root
# (the examples' files, the tar, symlinks, modes, owners), a GPT and an MBR disk holding
# both, an image of generated files and a directory (tree artifact), and fstool_image
# specs (written from CACHETEST_FILES).
CACHETEST_BUILD = '''
load("@rules_fstool//rules:defs.bzl", "fs_image", "fstool_image", "fstool_toolchain", "gpt_disk", "mbr_disk", "partition", "squashfs_image")
load("@rules_pkg//pkg:mappings.bzl", "pkg_attributes", "pkg_filegroup", "pkg_files", "pkg_mkdirs", "pkg_mklink")
load("@rules_python//python:defs.bzl", "py_binary")
load(":tree.bzl", "make_fake_fstool", "make_text", "make_tool", "make_tree")

fs_image(
    name = "esp",
    srcs = ["//:esp_files"],
    fs_type = "fat",
    label = "ESP",
    strip_prefix = "/esp",
)

squashfs_image(
    name = "rootfs",
    srcs = ["//:rootfs_files"],
    empty_dirs = ["/tmp"],
    modes = {"/tmp": "1777", "/etc/hostname": "0600", "/usr/bin/hello": "0755"},
    owners = {"/etc/hostname": "5.6"},
    rootdevs = "minimal",
    strip_prefix = "/rootfs",
    symlinks = {"/bin": "usr/bin"},
    tars = ["//images:overlay.tar.gz"],
)

partition(name = "esp_part", image = ":esp", type = "esp", label = "esp")

partition(name = "root_part", image = ":rootfs", type = "linux-root-x86-64", label = "root")

gpt_disk(name = "disk", partitions = [":esp_part", ":root_part"])

mbr_disk(name = "mbr", partitions = [":esp", ":rootfs"])

# A directory made by another rule (a tree artifact), and a device table.
make_tree(name = "app")

make_tool(name = "tool")

make_text(name = "notes")

squashfs_image(
    name = "with_tree",
    srcs = [":app", ":notes", ":tool"],
    device_table = "devices.txt",
    modes = {"/opt/app/bin/app": "0755"},
    package_dir = "/opt",
)

# rules_pkg's mapping rules (the offline stand-in fills the same providers), an
# executable with runfiles, and a date past 2038.
pkg_files(
    name = "etc_files",
    srcs = ["devices.txt"],
    attributes = pkg_attributes(mode = "0600", uid = 10, gid = 20),
    prefix = "etc/app",
    renames = {"devices.txt": "devs.conf"},
)

pkg_files(
    name = "tree_files",
    srcs = [":app"],
    attributes = pkg_attributes(mode = "0640"),
    prefix = "srv",
)

pkg_mkdirs(
    name = "cache_dirs",
    attributes = pkg_attributes(mode = "0700", uid = 3, gid = 4),
    dirs = ["var/cache/app"],
)

pkg_mklink(
    name = "app_link",
    link_name = "usr/bin/app",
    target = "/opt/app/bin/app",
)

pkg_filegroup(
    name = "group",
    srcs = [":cache_dirs", ":etc_files", ":app_link"],
    prefix = "grp",
)

make_tool(name = "runner", data = ":notes")

py_binary(
    name = "hello_py",
    srcs = ["hello_py.py"],
    data = ["fs.toml"],
)

squashfs_image(
    name = "pkg",
    srcs = [":app_link", ":cache_dirs", ":etc_files", ":group", ":hello_py", ":runner", ":tree_files"],
    include_runfiles = True,
    mtime = 4102444800,
    package_dir = "/p",
)

# A toolchain of one's own (registered with --extra_toolchains by one test only).
make_fake_fstool(name = "fake_fstool")

fstool_toolchain(name = "fake_fstool_impl", tool = ":fake_fstool")

toolchain(
    name = "fake_toolchain",
    toolchain = ":fake_fstool_impl",
    toolchain_type = "@rules_fstool//fstool:toolchain_type",
)

# Specs written for the fstool command line, their inputs staged under the names they use.
fstool_image(
    name = "from_spec",
    srcs = {"//images:overlay.tar.gz": "layers/overlay.tar.gz"},
    fs_type = "squashfs",
    spec = "fs.toml",
)

fstool_image(
    name = "disk_from_spec",
    srcs = {":esp": "esp.img", ":from_spec": "data.img"},
    disk = True,
    spec = "disk.json",
)
'''

CACHETEST_FILES = {
    "tree.bzl": '''def _impl(ctx):
    d = ctx.actions.declare_directory(ctx.label.name)
    ctx.actions.run_shell(
        outputs = [d],
        command = "mkdir -p $1/bin $1/etc $1/empty && printf 'tree data\\\\n' > $1/etc/app.conf && " +
                  "printf '#!/bin/sh\\\\n' > $1/bin/app && chmod 755 $1/bin/app && " +
                  "ln -s app.conf $1/etc/link.conf",
        arguments = [d.path],
    )
    return [DefaultInfo(files = depset([d]))]

make_tree = rule(implementation = _impl)

def _tool_impl(ctx):
    out = ctx.actions.declare_file(ctx.label.name)
    ctx.actions.write(out, "#!/bin/sh\\n", is_executable = True)
    runfiles = ctx.runfiles(files = ctx.files.data)
    return [DefaultInfo(executable = out, runfiles = runfiles)]

make_tool = rule(
    implementation = _tool_impl,
    executable = True,
    attrs = {"data": attr.label(allow_files = True)},
)

def _fake_impl(ctx):
    out = ctx.actions.declare_file(ctx.label.name + ".sh")
    ctx.actions.write(
        out,
        "#!/bin/sh\\ncase \\"$1\\" in @*) set -- $(cat \\"${1#@}\\");; esac\\nwhile [ $# -gt 0 ]; do [ \\"$1\\" = -o ] && echo fake fstool > \\"$2\\"; shift; done\\n",
        is_executable = True,
    )
    return [DefaultInfo(executable = out)]

make_fake_fstool = rule(implementation = _fake_impl, executable = True)

def _text_impl(ctx):
    out = ctx.actions.declare_file(ctx.label.name + ".txt")
    ctx.actions.write(out, "generated\\n")
    return [DefaultInfo(files = depset([out]))]

make_text = rule(implementation = _text_impl)
''',
    "devices.txt": "/dev/mydev c 640 0 0 10 200 - - -\n",
    "hello_py.py": '''import os
import sys

# Found through the runfiles tree next to the launcher, as Bazel lays it out.
here = os.path.dirname(os.path.abspath(__file__))
with open(os.path.join(here, "fs.toml")) as f:
    sys.stdout.write("hello from runfiles: " + f.readline())
''',
    "fs.toml": '''[filesystem]
type = "squashfs"
source = "layers/overlay.tar.gz"
mtime = 0
''',
    "disk.json": json.dumps({
        "image": {"partition_table": "gpt"},
        "partitions": [{"name": "esp", "type": "esp", "image": "esp.img"},
                       {"name": "data", "type": "linux", "image": "data.img"}]}),
}

CACHETEST_OUTPUTS = ("cachetest/esp.img", "cachetest/rootfs.img", "cachetest/disk.img",
                     "cachetest/disk.layout.json", "cachetest/mbr.img", "cachetest/from_spec.img",
                     "cachetest/disk_from_spec.img", "cachetest/disk_from_spec.layout.json",
                     "cachetest/with_tree.img", "cachetest/pkg.img")

# One package per error: a bad attribute value fails the whole package at loading.
ERROR_PACKAGES = {
    "bad_type": '''
load("@rules_fstool//rules:defs.bzl", "fs_image")

fs_image(name = "bad_type", fs_type = "ext5", srcs = ["//:esp_files"])
''',
    "bad_option": '''
load("@rules_fstool//rules:defs.bzl", "squashfs_image")

squashfs_image(name = "bad_option", srcs = ["//:doc_files"], extra_options = {"bogus_opt": "1"})
''',
    "no_fit": '''
load("@rules_fstool//rules:defs.bzl", "fs_image", "gpt_disk", "partition")

fs_image(name = "esp", fs_type = "fat", srcs = ["//:esp_files"], size = "8MiB")

partition(name = "tiny_part", image = ":esp", size = "1MiB")

gpt_disk(name = "no_fit", partitions = [":tiny_part"])
''',
}


# -- worlds -------------------------------------------------------------------------------

def make_checkout(dest) -> str:
    """Copy what Bazel needs of the repository to dest (no outputs, no caches)."""
    dest = str(dest)

    def ignore(directory, names):
        # Bytecode, and the bazel-* convenience symlinks of a workspace built in place.
        return [n for n in names if n == "__pycache__" or n.endswith(".pyc") or
                (n.startswith("bazel-") and os.path.islink(os.path.join(directory, n)))]

    for item in CHECKOUT_ITEMS:
        src, dst = os.path.join(REPO, item), os.path.join(dest, item)
        if os.path.isdir(src):
            shutil.copytree(src, dst, symlinks=True, ignore=ignore)
        else:
            os.makedirs(os.path.dirname(dst), exist_ok=True)
            shutil.copy2(src, dst)
    return dest


def read_exec_log(path: str) -> list[dict]:
    """Bazel 4's JSON execution log: a stream of SpawnExec objects, not one document."""
    with open(path) as f:
        text = f.read()
    dec, pos, out = json.JSONDecoder(), 0, []
    while True:
        while pos < len(text) and text[pos].isspace():
            pos += 1
        if pos >= len(text):
            return out
        obj, pos = dec.raw_decode(text, pos)
        out.append(obj)


class Result:
    def __init__(self, proc: subprocess.CompletedProcess, spawns: list[dict]):
        self.returncode = proc.returncode
        self.output = proc.stdout + proc.stderr
        self.spawns = spawns

    @property
    def executed(self) -> list[dict]:
        """Spawns that really ran (not served by the disk cache)."""
        return [s for s in self.spawns if not s.get("remoteCacheHit")]


class Bazel:
    """One Bazel world: a workspace and an output base of its own."""

    def __init__(self, workspace: str, output_base: str, user_root: str):
        self.workspace, self.output_base, self.user_root = workspace, output_base, user_root
        self.runs = 0

    def startup(self) -> list[str]:
        return [BAZEL, "--nohome_rc", "--nosystem_rc", *SYSTEM_STARTUP,
                f"--output_user_root={self.user_root}", f"--output_base={self.output_base}",
                "--max_idle_secs=600"]

    def build(self, *args: str, cache: str | None = None, command: str = "build") -> Result:
        self.runs += 1
        log = os.path.join(self.output_base + "-logs", f"exec{self.runs}.json")
        os.makedirs(os.path.dirname(log), exist_ok=True)
        cmd = [*self.startup(), command, "--config=offline", f"--execution_log_json_file={log}",
               "--color=no", "--curses=no", *args]
        if cache:
            cmd.append(f"--remote_cache={cache}")
        proc = subprocess.run(cmd, cwd=self.workspace, capture_output=True, text=True, timeout=900)
        spawns = read_exec_log(log) if os.path.exists(log) else []
        return Result(proc, spawns)

    def ok(self, *args: str, cache: str | None = None, command: str = "build") -> Result:
        r = self.build(*args, cache=cache, command=command)
        assert r.returncode == 0, _tail(r.output)
        return r

    def out(self, path: str) -> str:
        """path below this world's bazel-out (not the workspace's bazel-out symlink, which
        points to whichever world built there last)."""
        execroot = os.path.join(self.output_base, "execroot")
        (name,) = [n for n in os.listdir(execroot) if n != "DO_NOT_BUILD_HERE"]
        return os.path.join(execroot, name, "bazel-out", path)

    def bin(self, path: str) -> str:
        import glob
        (config,) = glob.glob(self.out("*-fastbuild"))
        return os.path.join(config, "bin", path)

    def shutdown(self) -> None:
        if os.path.isdir(self.output_base):
            subprocess.run([*self.startup(), "shutdown"], cwd=self.workspace, capture_output=True,
                           timeout=120)


def _tail(text: str, n: int = 60) -> str:
    return "\n".join(text.splitlines()[-n:])


@pytest.fixture(scope="module")
def worlds(tmp_path_factory):
    """Make Bazel worlds; every server is shut down when the module is done."""
    root = tmp_path_factory.mktemp("bazel")
    made: list[Bazel] = []

    def make(name: str, workspace: str) -> Bazel:
        b = Bazel(workspace, str(root / "obase" / name), str(root / "user_root"))
        made.append(b)
        return b

    make.root = root
    yield make
    for b in made:
        b.shutdown()


def make_cachetest_checkout(dest) -> str:
    ws = make_checkout(dest)
    _write(os.path.join(ws, "examples", "cachetest", "BUILD.bazel"), CACHETEST_BUILD)
    for name, text in CACHETEST_FILES.items():
        _write(os.path.join(ws, "examples", "cachetest", name), text)
    return ws


@pytest.fixture(scope="module")
def checkout1(worlds):
    return make_cachetest_checkout(worlds.root / "checkout1")


@pytest.fixture(scope="module")
def cache_server(worlds):
    """An HTTP remote cache on 127.0.0.1, empty at the start of the module."""
    server = http_cache_server.start(str(worlds.root / "http_cache"))
    yield server
    server.shutdown()


# Every output group the rules write JSON into: the manifests and specs of filesystems,
# the specs and layouts of disks.
OUTPUT_GROUPS = "--output_groups=+manifest,+spec,+layout"


@pytest.fixture(scope="module")
def first_build(worlds, checkout1, cache_server):
    """//cachetest:all built once in checkout1, filling the (empty) HTTP remote cache."""
    bazel = worlds("first", os.path.join(checkout1, "examples"))
    r = bazel.ok("//cachetest:all", OUTPUT_GROUPS, cache=cache_server.url)
    outputs = {p: _read(bazel.bin(p)) for p in CACHETEST_OUTPUTS}
    return bazel, cache_server.url, r, outputs


def _write(path: str, text: str) -> None:
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w") as f:
        f.write(text)


def _read(path: str) -> bytes:
    with open(path, "rb") as f:
        return f.read()


def _tool(*args) -> str:
    """Run a reference tool; it must succeed. Returns its stdout."""
    p = subprocess.run(list(args), capture_output=True, text=True)
    assert p.returncode == 0, f"{' '.join(args)} failed ({p.returncode}):\n{p.stdout}\n{p.stderr}"
    return p.stdout


def _extract_partitions(disk: str, layout_json: str, dest) -> dict[str, str]:
    """Each partition of disk as a file of its own (by name), from the layout JSON."""
    with open(layout_json) as f:
        layout = json.load(f)
    out = {}
    with open(disk, "rb") as src:
        for p in layout["partitions"]:
            path = os.path.join(str(dest), f"part-{p['name']}.img")
            src.seek(p["offset"])
            with open(path, "wb") as f:
                f.write(src.read(p["size"]))
            out[p["name"]] = path
    return out


def _ls(image: str) -> dict[str, tuple[str, str, str]]:
    """fstool ls -R: path -> (mode string, uid, gid) (and the symlink target in the path)."""
    out = {}
    for line in run_fstool("ls", "-R", image, check=True).stdout.splitlines():
        mode, uid, gid, _size, _t, name = line.split("\t")
        out[name] = (mode, uid, gid)
    return out


def _debugfs(image: str, request: str) -> str:
    return _tool("debugfs", "-R", request, image)


def _ext_stat(image: str, path: str) -> tuple[str, str, str, str]:
    """(type, octal mode, uid, gid) of path in an ext image, as debugfs reports them."""
    out = _debugfs(image, f"stat {path}")
    m = re.search(r"Type: (.+?)\s+Mode:\s+(\d+)", out)
    u = re.search(r"User:\s+(\d+)\s+Group:\s+(\d+)", out)
    assert m and u, f"debugfs stat {path}: {out}"
    return m.group(1), m.group(2), u.group(1), u.group(2)


def _cat(image: str, path: str) -> bytes:
    return run_fstool("cat", image, path, check=True, text_output=False).stdout


EXAMPLES = os.path.join(REPO, "examples")
ROOTFS_FILES = ("etc/hostname", "etc/os-release", "usr/bin/hello", "usr/share/doc/demo/README")


# -- the examples (need the ext4 writer) --------------------------------------------------

EXAMPLE_IMAGES = ("images/disk.img", "images/rootfs.img", "images/esp.img", "images/data.img")


@pytest.fixture(scope="module")
def examples_build(worlds):
    """scripts/bazel-demo.sh (what `make demo` runs) in a fresh checkout, then the disk
    with its layout: (the world, {path: bytes} of the example images)."""
    ws = make_checkout(worlds.root / "examples-checkout")
    bazel = worlds("examples", os.path.join(ws, "examples"))
    env = dict(os.environ, BAZEL_STARTUP_OPTIONS=" ".join(bazel.startup()[1:]))
    p = subprocess.run(["bash", os.path.join(ws, "scripts", "bazel-demo.sh"), sys.executable], env=env,
                       capture_output=True, text=True, timeout=900)
    assert p.returncode == 0, _tail(p.stdout + p.stderr)
    assert "GPT disk" in p.stdout and "name=root" in p.stdout, p.stdout
    bazel.ok("//images:disk", "--output_groups=+layout")
    return bazel, {path: _read(bazel.bin(path)) for path in EXAMPLE_IMAGES}


def test_examples_disk(examples_build, tmp_path):
    """scripts/bazel-demo.sh builds //images:rootfs and //images:disk; every partition
    passes its fsck, and the files are those of the sources."""
    bazel, _images = examples_build

    disk = bazel.bin("images/disk.img")
    assert "No problems found" in _tool("sgdisk", "-v", disk)
    with open(bazel.bin("images/disk.layout.json")) as f:
        layout = json.load(f)
    assert [(q["name"], q["type"]) for q in layout["partitions"]] == [
        ("esp", "esp"), ("root", "linux-root-x86-64"), ("data", "linux")]
    parts = _extract_partitions(disk, bazel.bin("images/disk.layout.json"), tmp_path)
    # The disk places the filesystem images byte for byte.
    for name, target in (("esp", "esp"), ("root", "rootfs"), ("data", "data")):
        img = _read(bazel.bin(f"images/{target}.img"))
        assert _read(parts[name])[:len(img)] == img, name

    _tool("fsck.vfat", "-n", parts["esp"])
    _tool("e2fsck", "-fn", parts["root"])
    assert "zstd" in _tool("unsquashfs", "-s", parts["data"])
    listing = _tool("unsquashfs", "-l", "-d", "", parts["data"])
    assert "/share/doc/demo/README" in listing

    # ext4, read by the reference tool (debugfs).
    root = parts["root"]
    for rel in ROOTFS_FILES:
        assert _debugfs(root, f"cat /{rel}") == _read(os.path.join(EXAMPLES, "rootfs", rel)).decode(), rel
    assert _debugfs(root, "cat /etc/motd") == "Built by Bazel with rules_fstool.\n"  # from the tar
    assert _ext_stat(root, "/usr/bin/hello") == ("regular", "0755", "0", "0")
    assert _ext_stat(root, "/etc/hostname") == ("regular", "0644", "0", "0")
    assert _ext_stat(root, "/tmp") == ("directory", "01777", "0", "0")
    assert _ext_stat(root, "/home/demo/.profile") == ("regular", "0640", "1000", "1000")  # the tar's
    assert _ext_stat(root, "/bin")[0] == "symlink"
    assert 'link dest: "usr/bin"' in _debugfs(root, "stat /bin")
    assert _ext_stat(root, "/dev/console")[0] == "character special"  # rootdevs = "minimal"
    assert _tool("e2label", root).strip() == "root"

    esp = parts["esp"]
    for rel in ("EFI/BOOT/BOOTX64.EFI", "loader/loader.conf"):
        assert _cat(esp, "/" + rel) == _read(os.path.join(EXAMPLES, "esp", rel)), rel
    assert _tool("mtype", "-i", esp, "::/loader/loader.conf") == \
        _read(os.path.join(EXAMPLES, "esp/loader/loader.conf")).decode()
    assert _cat(parts["data"], "/share/doc/demo/README") == \
        _read(os.path.join(EXAMPLES, "rootfs/usr/share/doc/demo/README"))


# -- remote execution: BuildGrid and a host worker ----------------------------------------

BUILDGRID_VENV = os.path.join(REPO, ".venv-buildgrid")

BUILDGRID_CONFIG = """
server:
  - !channel
    address: "127.0.0.1:{port}"
    insecure-mode: true
authorization:
  method: none
connections:
  # An empty connection string: SQLite in a temporary file (BuildGrid 0.2.53).
  - !sql-connection &sql
    connection-string: ""
storages:
  - !disk-storage &cas
    path: {cas}
caches:
  - !lru-action-cache &ac
    storage: *cas
    max-cached-refs: 10000
    allow-updates: true
    cache-failed-actions: false
schedulers:
  - !sql-scheduler &scheduler
    sql: *sql
    storage: *cas
    action-cache: *ac
instances:
  - name: ""
    services:
      - !action-cache
        cache: *ac
      - !execution
        scheduler: *scheduler
      - !cas
        storage: *cas
      - !bytestream
        storage: *cas
      - !bots
        scheduler: *scheduler
"""


def _buildgrid_python() -> str:
    """BuildGrid's venv (`make buildgrid`, part of `make test`); made here if missing."""
    py = os.path.join(BUILDGRID_VENV, "bin", "python")
    if not os.path.exists(os.path.join(BUILDGRID_VENV, ".stamp")):
        p = subprocess.run(["make", "-C", REPO, "buildgrid"], capture_output=True, text=True, timeout=1800)
        assert p.returncode == 0, p.stdout + p.stderr
    return py


def _free_port() -> int:
    import socket
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait_for_port(port: int, proc: subprocess.Popen, log: str, seconds: float = 180) -> None:
    import socket
    import time
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        assert proc.poll() is None, f"BuildGrid exited:\n{_tail(_read(log).decode(errors='replace'))}"
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.5)
    raise AssertionError(f"BuildGrid did not listen on {port}:\n{_tail(_read(log).decode(errors='replace'))}")


@pytest.fixture(scope="module")
def buildgrid(worlds):
    """A BuildGrid server (CAS, ActionCache, ByteStream, Execution, Bots) on 127.0.0.1 and
    one host worker (tests/rex_worker.py): grpc://127.0.0.1:PORT."""
    py = _buildgrid_python()
    root = worlds.root / "buildgrid"
    os.makedirs(root / "cas")
    port = _free_port()
    config = root / "bgd.yml"
    config.write_text(BUILDGRID_CONFIG.format(port=port, cas=root / "cas"))
    procs = []
    try:
        log = str(root / "bgd.log")
        with open(log, "wb") as out:
            server = subprocess.Popen([os.path.join(BUILDGRID_VENV, "bin", "bgd"), "server", "start", str(config)],
                                      stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
        procs.append(server)
        _wait_for_port(port, server, log)
        with open(root / "worker.log", "wb") as out:
            procs.append(subprocess.Popen(
                [py, os.path.join(REPO, "tests", "rex_worker.py"), "--server", f"127.0.0.1:{port}",
                 "--workdir", str(root / "work")], stdout=out, stderr=subprocess.STDOUT, start_new_session=True))
        yield f"grpc://127.0.0.1:{port}", root
    finally:
        for proc in procs:
            proc.terminate()
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()


REMOTE_FLAGS = ("--spawn_strategy=remote", "--remote_local_fallback=false")


def _remote_build(world, url: str, root, *targets: str) -> Result:
    r = world.build(*targets, f"--remote_executor={url}", *REMOTE_FLAGS)
    assert r.returncode == 0, _tail(r.output) + "\n-- worker:\n" + _tail(_read(str(root / "worker.log")).decode())
    runners = {s.get("runner") for s in r.executed}
    assert runners == {"remote"}, runners
    return r


def test_remote_execution_is_byte_identical(worlds, examples_build, buildgrid):
    """The example disk built with every action on a remote executor (BuildGrid, and a
    worker that stages every input executable as a remote executor may) is
    byte-identical to the local build."""
    local, images = examples_build
    url, root = buildgrid
    remote = worlds("remote-execution", local.workspace)
    r = _remote_build(remote, url, root, "//images:disk")
    assert {"FsImage", "SquashfsImage", "DiskImage"} <= {s["mnemonic"] for s in r.executed}
    for path, data in images.items():
        assert _read(remote.bin(path)) == data, path


def test_remote_execution_of_directories_and_rules_pkg(worlds, first_build, buildgrid):
    """Directory outputs (with a relative symlink and an empty directory, which a remote
    executor receives differently from a sandbox) and rules_pkg targets: the images
    built remotely are those built locally."""
    first, _cache, _r, outputs = first_build
    url, root = buildgrid
    remote = worlds("remote-execution-cachetest", first.workspace)
    _remote_build(remote, url, root, "//cachetest:with_tree", "//cachetest:pkg")
    for path in ("cachetest/with_tree.img", "cachetest/pkg.img"):
        assert _read(remote.bin(path)) == outputs[path], path


# -- vfat and SquashFS: validity, caching, reproducibility, incrementality -----------------

def test_cachetest_images_are_valid(first_build, tmp_path):
    bazel, _cache, r, _outputs = first_build
    assert {s["mnemonic"] for s in r.executed} >= {"FsImage", "SquashfsImage", "DiskImage"}
    # Hermetic actions: no environment, no absolute path on the command line.
    for s in r.spawns:
        if s["mnemonic"] in ("FsImage", "SquashfsImage", "DiskImage"):
            assert s.get("environmentVariables", []) == [], s["environmentVariables"]
            assert not [a for a in s["commandArgs"] if a.startswith("/")], s["commandArgs"]
            assert "//cachetest:" in s["progressMessage"]
    disk = bazel.bin("cachetest/disk.img")
    assert "No problems found" in _tool("sgdisk", "-v", disk)
    parts = _extract_partitions(disk, bazel.bin("cachetest/disk.layout.json"), tmp_path)
    _tool("fsck.vfat", "-n", parts["esp"])
    _tool("unsquashfs", "-s", parts["root"])
    root = parts["root"]
    for rel in ROOTFS_FILES:
        assert _cat(root, "/" + rel) == _read(os.path.join(EXAMPLES, "rootfs", rel)), rel
    entries = _ls(root)
    assert entries["/usr/bin/hello"] == ("-rwxr-xr-x", "0", "0")
    assert entries["/etc/hostname"] == ("-rw-------", "5", "6")
    assert entries["/tmp"][0] == "drwxrwxrwt"
    assert entries["/home/demo/.profile"] == ("-rw-r-----", "1000", "1000")
    assert "/bin -> usr/bin" in entries and "/dev/console" in entries
    assert _cat(root, "/etc/motd") == b"Built by Bazel with rules_fstool.\n"
    for rel in ("EFI/BOOT/BOOTX64.EFI", "loader/loader.conf"):
        assert _cat(parts["esp"], "/" + rel) == _read(os.path.join(EXAMPLES, "esp", rel)), rel
    sfdisk = json.loads(_tool("sfdisk", "--json", bazel.bin("cachetest/mbr.img")))
    assert sfdisk["partitiontable"]["label"] == "dos"
    assert len(sfdisk["partitiontable"]["partitions"]) == 2

    # A tree artifact in srcs keeps its layout and modes; the device table adds a node.
    with_tree = bazel.bin("cachetest/with_tree.img")
    tree_entries = _ls(with_tree)
    assert _cat(with_tree, "/opt/app/etc/app.conf") == b"tree data\n"
    assert tree_entries["/opt/app/bin/app"] == ("-rwxr-xr-x", "0", "0")  # modes = {...}
    # Bazel leaves every file of a directory r-xr-xr-x: they get `mode` (0644), not that.
    assert tree_entries["/opt/app/etc/app.conf"] == ("-rw-r--r--", "0", "0")
    assert tree_entries["/opt/app"][0] == "drwxr-xr-x"
    # Bazel's view of a directory: its relative symlink is the file it points to (as a
    # remote executor would receive it), and its empty directory is not there.
    assert tree_entries["/opt/app/etc/link.conf"] == ("-rw-r--r--", "0", "0")
    assert _cat(with_tree, "/opt/app/etc/link.conf") == b"tree data\n"
    assert "/opt/app/empty" not in tree_entries
    # Generated files: a rule's program is 0755, other files 0644, whatever Bazel left.
    assert tree_entries["/opt/tool"] == ("-rwxr-xr-x", "0", "0")
    assert tree_entries["/opt/notes.txt"] == ("-rw-r--r--", "0", "0")
    assert tree_entries["/dev/mydev"][0] == "crw-r-----"

    # fstool_image: a filesystem spec and a disk spec with their staged inputs.
    from_spec = bazel.bin("cachetest/from_spec.img")
    _tool("unsquashfs", "-s", from_spec)
    assert _cat(from_spec, "/etc/motd") == b"Built by Bazel with rules_fstool.\n"
    disk2 = bazel.bin("cachetest/disk_from_spec.img")
    assert "No problems found" in _tool("sgdisk", "-v", disk2)
    parts2 = _extract_partitions(disk2, bazel.bin("cachetest/disk_from_spec.layout.json"), tmp_path)
    assert _read(parts2["data"])[:os.path.getsize(from_spec)] == _read(from_spec)


def test_rules_pkg_runfiles_and_late_mtime(first_build, tmp_path):
    """rules_pkg targets in srcs keep their destinations, modes, owners, directories and
    links; include_runfiles places an executable's runfiles; mtime past 2038."""
    bazel, _cache, _r, _outputs = first_build
    img = bazel.bin("cachetest/pkg.img")
    _tool("unsquashfs", "-s", img)
    e = _ls(img)
    # pkg_files: prefix, rename, mode and owner from pkg_attributes
    assert e["/p/etc/app/devs.conf"] == ("-rw-------", "10", "20")
    assert _cat(img, "/p/etc/app/devs.conf") == CACHETEST_FILES["devices.txt"].encode()
    # pkg_files of a directory output: its files get the attributes' mode
    assert e["/p/srv/app/etc/app.conf"] == ("-rw-r-----", "0", "0")
    # pkg_mkdirs and pkg_mklink
    assert e["/p/var/cache/app"] == ("drwx------", "3", "4")
    assert e["/p/usr/bin/app -> /opt/app/bin/app"][0] == "lrwxrwxrwx"
    # pkg_filegroup: its prefix over all three kinds
    assert e["/p/grp/etc/app/devs.conf"] == ("-rw-------", "10", "20")
    assert e["/p/grp/var/cache/app"] == ("drwx------", "3", "4")
    assert "/p/grp/usr/bin/app -> /opt/app/bin/app" in e
    # include_runfiles: the program, and its runfiles under <program>.runfiles/<workspace>/
    assert e["/p/runner"] == ("-rwxr-xr-x", "0", "0")
    assert e["/p/runner.runfiles/fstool_examples/cachetest/runner"] == ("-rwxr-xr-x", "0", "0")
    assert e["/p/runner.runfiles/fstool_examples/cachetest/notes.txt"] == ("-rw-r--r--", "0", "0")
    # A py_binary with include_runfiles: its launcher runs from the extracted image.
    assert e["/p/hello_py"][0] == "-rwxr-xr-x"
    assert "/p/hello_py.runfiles/fstool_examples/cachetest/hello_py.py" in e
    out = tmp_path / "extracted"
    _tool("unsquashfs", "-q", "-n", "-d", str(out), img)
    run = subprocess.run([str(out / "p" / "hello_py")], capture_output=True, text=True, env={})
    assert run.returncode == 0, run.stderr
    assert run.stdout == "hello from runfiles: [filesystem]\n"
    # mtime = 4102444800: 2100-01-01, past 2038
    listing = run_fstool("ls", img, "/p/etc/app", check=True).stdout
    assert "2100-01-01 00:00:00" in listing, listing


def test_user_toolchain_replaces_the_tool(first_build):
    """A toolchain registered by the user (--extra_toolchains) runs instead of fstool."""
    bazel, _cache, _r, _outputs = first_build
    r = bazel.ok("//cachetest:esp", "--extra_toolchains=//cachetest:fake_toolchain")
    assert _read(bazel.bin("cachetest/esp.img")) == b"fake fstool\n"
    assert [s["mnemonic"] for s in r.executed] == ["FsImage"], _spawn_names(r.executed)
    bazel.ok("//cachetest:esp")  # back to the default toolchain for the other tests
    assert _read(bazel.bin("cachetest/esp.img")) == _outputs["cachetest/esp.img"]


def _spawn_names(spawns) -> list[str]:
    return sorted(s.get("progressMessage") or s["mnemonic"] for s in spawns)


def test_remote_cache_serves_a_clean_output_base(worlds, first_build):
    """A second, clean output base sharing the HTTP cache executes nothing and gets
    byte-identical outputs."""
    first, cache, _r, outputs = first_build
    second = worlds("second", first.workspace)
    r = second.ok("//cachetest:all", OUTPUT_GROUPS, cache=cache)
    assert r.spawns, "the execution log is empty"
    assert r.executed == [], _spawn_names(r.executed)
    for path, data in outputs.items():
        assert _read(second.bin(path)) == data, path


# Executable bits flipped on sources in the second checkout: modes come from
# attributes only, so neither the action keys nor the images may change.
CHMODDED = (("rootfs/etc/hostname", 0o755), ("rootfs/etc/os-release", 0o700),
            ("rootfs/usr/bin/hello", 0o644), ("cachetest/devices.txt", 0o775))


@pytest.fixture(scope="module")
def elsewhere(worlds):
    """A second checkout at another (deeper) path, with flipped executable bits."""
    ws = make_cachetest_checkout(worlds.root / "elsewhere" / "deeper" / "checkout2")
    for rel, mode in CHMODDED:
        os.chmod(os.path.join(ws, "examples", rel), mode)
    return os.path.join(ws, "examples")


def test_checkouts_at_different_paths_give_identical_outputs(worlds, first_build, elsewhere):
    """Built from scratch (no cache) in another checkout whose sources have other
    executable bits: every output is byte-identical (`chmod +x` changes nothing)."""
    _first, _cache, _r, outputs = first_build
    other = worlds("elsewhere", elsewhere)
    r = other.ok("//cachetest:all", OUTPUT_GROUPS)  # no cache: everything runs again
    assert {s["mnemonic"] for s in r.executed} >= {"FsImage", "SquashfsImage", "DiskImage"}
    for path, data in outputs.items():
        assert _read(other.bin(path)) == data, path


def test_remote_cache_serves_another_checkout(worlds, first_build, elsewhere, cache_server):
    """A clean output base in the other checkout (another path, other executable bits)
    gets every action from the cache: the action keys depend on neither."""
    _first, cache, _r, outputs = first_build
    third = worlds("elsewhere-cached", elsewhere)
    r = third.ok("//cachetest:all", OUTPUT_GROUPS, cache=cache)
    assert r.spawns and r.executed == [], _spawn_names(r.executed)
    for path, data in outputs.items():
        assert _read(third.bin(path)) == data, path
    assert cache_server.counts["GET ac hit"] > 0


def test_cached_blobs_hold_no_host_path(worlds, first_build, cache_server):
    """Nothing stored in the remote cache names a checkout, an output base or the
    output user root."""
    first, _cache, _r, _outputs = first_build
    needles = {str(worlds.root).encode(), os.path.realpath(str(worlds.root)).encode(),
               first.output_base.encode(), first.user_root.encode()}
    blobs = list(cache_server.blobs())
    assert len([k for k, _ in blobs if k == "ac"]) >= len(CACHETEST_OUTPUTS) - 3
    for kind, path in blobs:
        data = _read(path)
        for n in needles:
            assert n not in data, (kind, path, n)


def _strings(value):
    if isinstance(value, str):
        yield value
    elif isinstance(value, dict):
        for k, v in value.items():
            yield from _strings(k)
            yield from _strings(v)
    elif isinstance(value, list):
        for v in value:
            yield from _strings(v)


def test_generated_json_has_no_absolute_path(worlds, first_build):
    """Every spec and manifest the rules write: host paths are relative (exec paths or
    relative to the spec), and nothing names the checkout or the output base."""
    first, _cache, _r, _outputs = first_build
    out = first.bin("cachetest")
    found = [n for n in os.listdir(out) if n.endswith(".json") and not n.endswith(".layout.json")]
    assert {"rootfs.spec.json", "rootfs.manifest.json", "disk.spec.json", "with_tree.dir0.manifest.json",
            "pkg.manifest.json"} <= set(found), found
    for name in found:
        text = _read(os.path.join(out, name)).decode()
        assert str(worlds.root) not in text and first.output_base not in text, name
        doc = json.loads(text)
        entries = doc.get("entries", [])
        for e in entries:  # image paths are absolute by design; host paths never
            assert not e.get("source", "").startswith("/"), (name, e)
        spec = doc.get("filesystem") or {}
        for key in ("source", "device_table"):
            for v in _strings(spec.get(key, [])):
                assert not v.startswith("/"), (name, key, v)
        for part in doc.get("partitions", []):
            assert not part.get("image", "").startswith("/"), (name, part)


def test_rebuilds_run_only_what_changed(first_build):
    """A no-op rebuild runs nothing, and so does `chmod +x` on a source; editing one
    rootfs input reruns the rootfs writer and the disks that hold it, nothing else."""
    bazel, _cache, _r, outputs = first_build
    r = bazel.ok("//cachetest:all")
    assert r.spawns == [], _spawn_names(r.spawns)
    hostname = os.path.join(bazel.workspace, "rootfs", "etc", "hostname")
    original = _read(hostname)
    try:
        os.chmod(hostname, 0o755)
        r = bazel.ok("//cachetest:all")
        assert r.executed == [], _spawn_names(r.executed)
        assert _read(bazel.bin("cachetest/rootfs.img")) == outputs["cachetest/rootfs.img"]
        with open(hostname, "ab") as f:
            f.write(b"edited\n")
        r = bazel.ok("//cachetest:all")
        ran = _spawn_names(r.executed)
        assert ran == ["Assembling GPT disk //cachetest:disk", "Assembling MBR disk //cachetest:mbr",
                       "Writing squashfs image //cachetest:rootfs"], ran
        assert _read(bazel.bin("cachetest/esp.img")) == outputs["cachetest/esp.img"]
        assert _cat(bazel.bin("cachetest/rootfs.img"), "/etc/hostname") == original + b"edited\n"
        assert _ls(bazel.bin("cachetest/rootfs.img"))["/etc/hostname"][0] == "-rw-------"
    finally:
        os.chmod(hostname, 0o644)
        with open(hostname, "wb") as f:
            f.write(original)


@pytest.mark.parametrize("target, needles", [
    ("bad_type", ["//bad_type:bad_type", "'fs_type' attribute", "ext5"]),
    ("bad_option", ["//bad_option:bad_option", "options.bogus_opt", "unknown option"]),
    ("no_fit", ["//no_fit:no_fit", "(tiny_part).size", "but the partition has 1 MiB"]),
])
def test_attribute_errors_name_target_and_attribute(first_build, target, needles):
    bazel, _cache, _r, _outputs = first_build
    _write(os.path.join(bazel.workspace, target, "BUILD.bazel"), ERROR_PACKAGES[target])
    r = bazel.build(f"//{target}:{target}")
    assert r.returncode != 0
    for n in needles:
        assert n in r.output, (n, _tail(r.output))
    assert "Traceback (most recent call last)" not in r.output


def test_analysis_tests_of_every_fail_branch(worlds, checkout1):
    """tests/analysis: one skylib analysistest per fail() of the rules (run in the
    repository's own workspace)."""
    bazel = worlds("analysis", checkout1)
    r = bazel.build("//tests/analysis:all", command="test")
    assert r.returncode == 0, _tail(r.output)
    with open(os.path.join(REPO, "tests", "analysis", "failure_tests.bzl")) as f:
        cases = len(re.findall(r'^\s+_case\("', f.read(), flags=re.M))
    assert cases >= 40
    passed = re.findall(r"^//tests/analysis:\S+\s+(?:\(cached\) )?PASSED", r.output, flags=re.M)
    assert len(passed) == cases, _tail(r.output)


STAMPED_BUILD = '''
load("@rules_fstool//rules:defs.bzl", "squashfs_image")

[squashfs_image(
    name = "s%s" % stamp,
    srcs = ["//:esp_files"],
    mtime = 5,
    stamp = stamp,
    strip_prefix = "/esp",
) for stamp in (-1, 0, 1)]
'''


def _mtimes(image: str) -> set[str]:
    return {line.split("\t")[4] for line in run_fstool("ls", "-R", image, check=True).stdout.splitlines()}


def test_stamp_takes_the_time_from_the_workspace_status(first_build):
    """stamp = 1: BUILD_TIMESTAMP; 0: mtime; -1: as --stamp says (pkg_tar's rules)."""
    import datetime
    bazel, _cache, _r, _outputs = first_build
    _write(os.path.join(bazel.workspace, "stamped", "BUILD.bazel"), STAMPED_BUILD)
    bazel.ok("//stamped:all", "--stamp")
    with open(bazel.out("volatile-status.txt")) as f:
        status = dict(line.rstrip("\n").split(" ", 1) for line in f if " " in line)
    when = datetime.datetime.fromtimestamp(int(status["BUILD_TIMESTAMP"]), datetime.timezone.utc)
    stamped = {when.strftime("%Y-%m-%d %H:%M:%S")}
    assert _mtimes(bazel.bin("stamped/s1.img")) == stamped
    assert _mtimes(bazel.bin("stamped/s-1.img")) == stamped
    assert _mtimes(bazel.bin("stamped/s0.img")) == {"1970-01-01 00:00:05"}
    bazel.ok("//stamped:all")
    assert _mtimes(bazel.bin("stamped/s-1.img")) == {"1970-01-01 00:00:05"}
    assert _mtimes(bazel.bin("stamped/s1.img")) == stamped


# -- lint ------------------------------------------------------------------------------------

def _buildifier() -> str:
    found = shutil.which("buildifier")
    if found and BUILDIFIER_VERSION in subprocess.run([found, "--version"], capture_output=True,
                                                      text=True).stdout:
        return found
    cache = os.path.join(os.environ.get("XDG_CACHE_HOME", os.path.expanduser("~/.cache")),
                         "fstool-tests", f"buildifier-{BUILDIFIER_VERSION}")
    exe = os.path.join(cache, "node_modules", ".bin", "buildifier")
    if not os.path.exists(exe):
        npm = shutil.which("npm")
        assert npm, "buildifier is needed: install npm (apt-get install npm) or buildifier itself"
        p = subprocess.run([npm, "install", "--no-audit", "--no-fund", "--prefix", cache,
                            f"@bazel/buildifier@{BUILDIFIER_VERSION}"], capture_output=True, text=True)
        assert p.returncode == 0, p.stderr
    return exe


def test_buildifier_reports_nothing():
    files = ["BUILD.bazel", "MODULE.bazel", "WORKSPACE.bazel", "WORKSPACE.bzlmod"]
    dirs = ["fstool", "rules", "tests", "examples"]
    p = subprocess.run([_buildifier(), "-mode=check", "-lint=warn", "-r", *files, *dirs],
                       cwd=REPO, capture_output=True, text=True)
    assert p.returncode == 0 and not p.stdout.strip() and not p.stderr.strip(), p.stdout + p.stderr


# -- the persistent worker (issue 19) ------------------------------------------------------
WORKERTEST_BUILD = '''
load("@rules_fstool//rules:defs.bzl", "gpt_disk", "squashfs_image")

squashfs_image(
    name = "img",
    srcs = ["big.txt", "conf.txt"],
    compression = "xz",
)

gpt_disk(name = "disk", partitions = [":img"])
'''


def _big_text(edit: bytes = b"") -> bytes:
    text = b"".join(b"line %d of the worker test's big file\n" % i for i in range(20000))
    return text[:300_000] + edit + text[300_000 + len(edit):] if edit else text


def test_worker_rebuild_after_an_edit_is_byte_identical(worlds):
    """--config=worker: the writer and the assembler run in fstool's persistent worker; after
    one file is edited the rebuild is byte-identical to a clean build without the worker, and
    the worker log shows the unchanged blocks reused from its memory."""
    ws = make_checkout(worlds.root / "worker-checkout")
    pkg = os.path.join(ws, "examples", "workertest")
    _write(os.path.join(pkg, "BUILD.bazel"), WORKERTEST_BUILD)
    with open(os.path.join(pkg, "big.txt"), "wb") as f:
        f.write(_big_text())
    _write(os.path.join(pkg, "conf.txt"), "setting = 1\n")
    wb = worlds("worker", os.path.join(ws, "examples"))
    targets = ("//workertest:img", "//workertest:disk")
    r = wb.ok(*targets, "--config=worker")
    runners = {s["mnemonic"]: s.get("runner") for s in r.executed}
    assert runners.get("SquashfsImage") == "worker" and runners.get("DiskImage") == "worker", runners
    with open(os.path.join(pkg, "big.txt"), "wb") as f:
        f.write(_big_text(b"EDITED BY THE TEST"))
    r = wb.ok(*targets, "--config=worker")
    assert sorted(s["mnemonic"] for s in r.executed) == ["DiskImage", "SquashfsImage"]
    logs = [os.path.join(wb.output_base, "bazel-workers", n)
            for n in os.listdir(os.path.join(wb.output_base, "bazel-workers")) if n.endswith(".log")]
    text = "".join(open(p).read() for p in logs if "SquashfsImage" in p)
    reused = [(int(a), int(b)) for a, b in re.findall(r"(\d+) blocks reused, (\d+) compressed", text)]
    assert len(reused) == 2 and reused[0][0] == 0, text
    assert reused[1][0] >= 3 and reused[1][1] <= 2, text  # the edited block (and the fragment)
    # a clean build of the edited tree, no worker: the same bytes
    clean = worlds("worker-clean", os.path.join(ws, "examples"))
    r = clean.ok(*targets)
    assert "worker" not in {s.get("runner") for s in r.executed}
    for path in ("workertest/img.img", "workertest/disk.img"):
        assert _read(wb.bin(path)) == _read(clean.bin(path)), path


# -- output containers, board layouts, dm-verity, security metadata --------------------------

# A package of its own, in its own world (so the cachetest expectations above stay as
# they are): the same disk in every container, a Rockchip-style board with a u-boot blob
# at 32 KiB, an Amlogic-style blob at 0 spanning the MBR, a hybrid MBR, dm-verity (hash
# partition and appended tree), and security metadata on ext4 and SquashFS.
BOARD_BUILD = '''
load("@rules_fstool//rules:defs.bzl", "fs_image", "gpt_disk", "iso_image", "mbr_disk", "partition", "raw_blob", "squashfs_image")

fs_image(
    name = "esp",
    srcs = ["//:esp_files"],
    fs_type = "fat",
    label = "BOOT",
    strip_prefix = "/esp",
)

squashfs_image(
    name = "root",
    srcs = ["//:rootfs_files"],
    strip_prefix = "/rootfs",
)

# Output containers: one disk spec, five containers; filesystems in containers too.
gpt_disk(name = "disk_raw", partitions = [":esp", ":root"])

gpt_disk(name = "disk_qcow2", format = "qcow2", partitions = [":esp", ":root"])

gpt_disk(name = "disk_simg", format = "android-sparse", partitions = [":esp", ":root"])

gpt_disk(name = "disk_simg_crc", format = "android-sparse-crc", partitions = [":esp", ":root"])

gpt_disk(name = "disk_bmap", format = "bmap", partitions = [":esp", ":root"])

squashfs_image(
    name = "root_simg",
    srcs = ["//:rootfs_files"],
    format = "android-sparse-crc",
    strip_prefix = "/rootfs",
)

fs_image(
    name = "esp_bmap",
    srcs = ["//:esp_files"],
    format = "bmap",
    fs_type = "fat",
    size = "8MiB",
    strip_prefix = "/esp",
)

# Rockchip: idbloader + u-boot at 32 KiB, the GPT entry array moved to 16 KiB, partitions
# at exact offsets.
raw_blob(name = "uboot", src = "u-boot-rockchip.bin", offset = "32KiB")

partition(name = "boot", image = ":esp", offset = "16MiB", type = "esp")

partition(name = "rootfs", image = ":root", offset = "32MiB", type = "linux-root-arm64")

gpt_disk(name = "rockchip", gpt_location = "16KiB", partitions = [":uboot", ":boot", ":rootfs"])

# Amlogic: bl1 at 0, the MBR's table bytes left to the table.
raw_blob(name = "bl1", src = "bl1.bin", holes = ["440..512"], offset = "0")

mbr_disk(name = "amlogic", disk_signature = "0xdeadbeef", partitions = [":bl1", ":esp"])

# A hybrid MBR mirroring the boot partition; fill writes the tail as zeros.
partition(name = "hboot", bootable = True, fill = True, image = ":esp", label = "boot", mbr_type = "0x0c")

partition(name = "hroot", align = "4MiB", image = ":root", label = "root")

gpt_disk(
    name = "hybrid",
    size = "24MiB",
    disk_signature = "0x12345678",
    fill = True,
    gpt_entries = 32,
    hybrid = True,
    partitions = [":hboot", ":hroot"],
)

# dm-verity: a data partition with its hash partition, and a tree appended in place.
partition(name = "vdata", image = ":root", type = "linux-root-x86-64", verity = "data")

partition(name = "vhash", verity = "hash", verity_data = ":vdata")

gpt_disk(name = "verity", partitions = [":esp", ":vdata", ":vhash"])

partition(name = "vappend", image = ":root", verity = "append")

gpt_disk(name = "verity_append", partitions = [":vappend"])

# Every other format of the registry as an fs_type.
[fs_image(
    name = "fs_" + fs_type,
    srcs = ["//:rootfs_files"],
    fs_type = fs_type,
    label = "" if fs_type == "tar" else "DATA",
    strip_prefix = "/rootfs",
) for fs_type in ("erofs", "exfat", "f2fs", "tar", "xfs")]

# Boot media (issue 16): a gzip initramfs, and an isohybrid ISO booting from El Torito
# BIOS (any file stands in for the boot loader here) and UEFI (the ESP above).
fs_image(
    name = "initramfs",
    srcs = ["//:rootfs_files"],
    extra_options = {"compression": "gzip"},
    fs_type = "cpio",
    strip_prefix = "/rootfs",
)

iso_image(
    name = "live",
    srcs = ["//:rootfs_files"],
    bios_boot = "/usr/bin/hello",
    efi_boot = ":esp",
    hybrid = True,
    label = "LIVE",
    strip_prefix = "/rootfs",
)

# Security metadata (issue 18).
[fs_image(
    name = name,
    srcs = ["//:rootfs_files"],
    acls = acls,
    capabilities = {"/usr/bin/hello": "cap_net_raw+ep"},
    default_acls = default_acls,
    file_contexts = "file_contexts",
    fs_config = "fs_config.txt",
    fs_type = fs_type,
    strip_prefix = "/rootfs",
    xattrs = {"/etc/hostname": ["user.origin=bazel", "user.hex=0xdeadbeef", "trusted.b64=base64:AAEC"]},
) for name, fs_type, acls, default_acls in (
    ("secure_ext4", "ext4", {"/etc/os-release": "user::rw-,user:1000:r--,group::r--,mask::r--,other::---"},
     {"/usr/share": "user::rwx,group:2000:rwx,group::r-x,mask::rwx,other::---"}),
    ("secure_sqfs", "squashfs", {}, {}),
    ("secure_erofs", "erofs", {}, {}),
)]
'''


def _blob(seed: bytes, n: int) -> bytes:
    import hashlib
    out = bytearray()
    while len(out) < n:
        out += hashlib.sha256(seed + len(out).to_bytes(8, "little")).digest()
    return bytes(out[:n])


BOARD_FILES = {
    "file_contexts": (
        "/.*                  system_u:object_r:default_t:s0\n"
        "/etc(/.*)?           system_u:object_r:etc_t:s0\n"
        "/usr/bin/hello   --  system_u:object_r:hello_exec_t:s0\n"
        "/usr/share(/.*)? -d  system_u:object_r:share_dir_t:s0\n"
    ),
    "fs_config.txt": "usr/share/doc/demo/README 1000 2000 0640\n",
}
BOARD_BLOBS = {"u-boot-rockchip.bin": _blob(b"u-boot", 200 * 1024 + 17), "bl1.bin": _blob(b"bl1", 48 * 1024)}
BOARD_GROUPS = "--output_groups=+layout,+manifest,+spec"


@pytest.fixture(scope="module")
def board_build(worlds, checkout1):
    """//boardtest:all in a world of its own (checkout1's examples workspace)."""
    pkg = os.path.join(checkout1, "examples", "boardtest")
    _write(os.path.join(pkg, "BUILD.bazel"), BOARD_BUILD)
    for name, text in BOARD_FILES.items():
        _write(os.path.join(pkg, name), text)
    for name, data in BOARD_BLOBS.items():
        with open(os.path.join(pkg, name), "wb") as f:
            f.write(data)
    bazel = worlds("board", os.path.join(checkout1, "examples"))
    bazel.ok("//boardtest:all", BOARD_GROUPS)
    return bazel


def _layout(bazel, name: str) -> dict:
    with open(bazel.bin(f"boardtest/{name}.layout.json")) as f:
        return json.load(f)


def test_containers_hold_the_raw_disk(board_build, tmp_path):
    """format = qcow2 passes qemu-img check and compares equal to the raw build; the
    Android sparse ones give the raw bytes back through simg2img; bmap writes the raw
    image and a block map that bmaptool copies back."""
    bazel = board_build
    b = lambda p: bazel.bin("boardtest/" + p)  # noqa: E731
    raw = b("disk_raw.img")
    assert "No problems found" in _tool("sgdisk", "-v", raw)
    qcow = b("disk_qcow2.qcow2")
    assert not os.path.exists(b("disk_qcow2.img"))
    _tool("qemu-img", "check", qcow)
    assert "Images are identical" in _tool("qemu-img", "compare", "-f", "raw", "-F", "qcow2", raw, qcow)
    for simg in ("disk_simg.simg", "disk_simg_crc.simg"):
        back = str(tmp_path / (simg + ".raw"))
        _tool("simg2img", b(simg), back)
        assert _read(back) == _read(raw), simg
    assert _read(b("disk_bmap.img")) == _read(raw)
    copied = str(tmp_path / "bmap-copy.img")
    _tool("bmaptool", "copy", "--bmap", b("disk_bmap.img.bmap"), b("disk_bmap.img"), copied)
    assert _read(copied) == _read(raw)
    # The layout JSON does not depend on the container.
    assert _layout(bazel, "disk_qcow2") == _layout(bazel, "disk_raw")
    # Filesystem images in containers.
    back = str(tmp_path / "root.raw")
    _tool("simg2img", b("root_simg.simg"), back)
    assert _read(back) == _read(b("root.img"))
    esp = b("esp_bmap.img")
    _tool("fsck.vfat", "-n", esp)
    copied = str(tmp_path / "esp-copy.img")
    _tool("bmaptool", "copy", "--bmap", b("esp_bmap.img.bmap"), esp, copied)
    assert _read(copied) == _read(esp)
    assert _cat(b("root_simg.simg"), "/etc/hostname") == _read(os.path.join(EXAMPLES, "rootfs/etc/hostname"))


def test_rockchip_board_layout(board_build, tmp_path):
    """u-boot at 32 KiB outside the table, the GPT entry array at 16 KiB, partitions at
    their exact offsets; sgdisk -v is clean and the blob is at its offset byte for byte."""
    bazel = board_build
    disk = bazel.bin("boardtest/rockchip.img")
    assert "No problems found" in _tool("sgdisk", "-v", disk)
    layout = _layout(bazel, "rockchip")
    assert [(p["name"], p["offset"]) for p in layout["partitions"]] == [("boot", 16 << 20), ("rootfs", 32 << 20)]
    assert [(x["name"], x["offset"]) for x in layout["blobs"]] == [("uboot", 32 * 1024)]
    assert layout["gpt"]["entries_offset"] == 16 * 1024
    blob = BOARD_BLOBS["u-boot-rockchip.bin"]
    _tool("cmp", "-n", str(len(blob)), "-i", f"{32 * 1024}:0", disk,
          os.path.join(bazel.workspace, "boardtest", "u-boot-rockchip.bin"))
    sfdisk = json.loads(_tool("sfdisk", "--json", disk))["partitiontable"]
    assert sfdisk["label"] == "gpt"
    assert [p["start"] for p in sfdisk["partitions"]] == [(16 << 20) // 512, (32 << 20) // 512]
    parts = _extract_partitions(disk, bazel.bin("boardtest/rockchip.layout.json"), tmp_path)
    _tool("fsck.vfat", "-n", parts["boot"])
    assert _read(parts["rootfs"])[:os.path.getsize(bazel.bin("boardtest/root.img"))] == \
        _read(bazel.bin("boardtest/root.img"))
    # The generated spec says it as fstool's spec does.
    with open(bazel.bin("boardtest/rockchip.spec.json")) as f:
        spec = json.load(f)
    assert spec["image"]["gpt_location"] == "16KiB"
    blob_entry = spec["partitions"][0]
    assert blob_entry["in_partition_table"] is False and blob_entry["offset"] == "32KiB"
    assert blob_entry["image"].endswith("boardtest/u-boot-rockchip.bin") and not blob_entry["image"].startswith("/")


def test_blob_over_the_mbr_and_hybrid_disks(board_build):
    """A blob at 0 with the hole 440..512 keeps the MBR table; a hybrid GPT mirrors the
    boot partition in its MBR (type, active flag, signature); fill leaves no tail hole."""
    import struct
    bazel = board_build
    disk = bazel.bin("boardtest/amlogic.img")
    data, blob = _read(disk), BOARD_BLOBS["bl1.bin"]
    assert data[:440] == blob[:440] and data[512:len(blob)] == blob[512:]
    table = json.loads(_tool("sfdisk", "--json", disk))["partitiontable"]
    assert table["label"] == "dos" and table["id"] == "0xdeadbeef" and len(table["partitions"]) == 1

    hybrid = bazel.bin("boardtest/hybrid.img")
    assert "No problems found" in _tool("sgdisk", "-v", hybrid)
    layout = _layout(bazel, "hybrid")
    boot, root = layout["partitions"]
    assert root["offset"] % (4 << 20) == 0
    assert layout["gpt"]["entries"] == 32
    data = _read(hybrid)
    assert struct.unpack_from("<I", data, 440)[0] == 0x12345678
    entries = [struct.unpack_from("<B3xB3xII", data, 446 + 16 * i) for i in range(4)]
    mirrored = [e for e in entries if e[1] == 0x0C]
    assert mirrored == [(0x80, 0x0C, boot["offset"] // 512, boot["size"] // 512)], entries
    assert 0xEE in [e[1] for e in entries]
    assert len(data) == 24 << 20
    with open(hybrid, "rb") as f:
        end = root["offset"] + root["size"]
        assert os.lseek(f.fileno(), end, os.SEEK_HOLE) == len(data)  # fill: no hole in the tail
    with open(bazel.bin("boardtest/hybrid.spec.json")) as f:
        spec = json.load(f)
    assert spec["image"]["partition_table"] == "hybrid"


def test_verity_partitions_and_roothash(board_build, tmp_path):
    """verity = data + hash: veritysetup verify accepts the partitions with the root hash
    of <name>.roothash (also in the layout JSON); verity = append likewise, at hash_offset."""
    bazel = board_build
    layout = _layout(bazel, "verity")
    roothash = _read(bazel.bin("boardtest/verity.roothash")).decode().strip()
    data = [p for p in layout["partitions"] if p["name"] == "vdata"][0]
    assert data["verity"]["root_hash"] == roothash and len(roothash) == 64
    parts = _extract_partitions(bazel.bin("boardtest/verity.img"), bazel.bin("boardtest/verity.layout.json"),
                                tmp_path)
    _tool("veritysetup", "verify", parts["vdata"], parts["vhash"], roothash)
    hash_part = [p for p in layout["partitions"] if p["name"] == "vhash"][0]
    assert hash_part["type"] == "linux-root-verity-x86-64"
    assert data["uuid"].replace("-", "") == roothash[:32]
    # A wrong root hash is refused: the check is real.
    bad = roothash[:-1] + ("0" if roothash[-1] != "0" else "1")
    assert subprocess.run(["veritysetup", "verify", parts["vdata"], parts["vhash"], bad],
                          capture_output=True).returncode != 0

    layout = _layout(bazel, "verity_append")
    roothash = _read(bazel.bin("boardtest/verity_append.roothash")).decode().strip()
    (part,) = layout["partitions"]
    parts = _extract_partitions(bazel.bin("boardtest/verity_append.img"),
                                bazel.bin("boardtest/verity_append.layout.json"), tmp_path)
    _tool("veritysetup", "verify", f"--hash-offset={part['verity']['hash_offset']}",
          parts["vappend"], parts["vappend"], roothash)
    # Without a verity partition there is no roothash output.
    assert not os.path.exists(bazel.bin("boardtest/rockchip.roothash"))


def _getfattr(mnt: str, path: str) -> dict[str, str]:
    out = _tool("getfattr", "-h", "-d", "-m", "-", "-e", "hex", "--absolute-names",
                os.path.join(mnt, path.lstrip("/")))
    return dict(ln.split("=", 1) for ln in out.splitlines() if "=" in ln)


def _hex(text: str) -> str:
    return "0x" + (text.encode() + b"\0").hex()


@pytest.mark.parametrize("name", ["secure_ext4", "secure_sqfs", "secure_erofs"])
def test_security_metadata_through_the_kernel(board_build, tmp_path, name):
    """capabilities, xattrs, ACLs, file_contexts labels and fs_config, read back by the
    kernel (getcap, getfattr, getfacl on a read-only loop mount)."""
    from conftest import loop_mount
    bazel = board_build
    img = bazel.bin(f"boardtest/{name}.img")
    with open(bazel.bin(f"boardtest/{name}.spec.json")) as f:
        fs = json.load(f)["filesystem"]
    assert not fs["selinux_file_contexts"].startswith("/") and fs["selinux_file_contexts"].endswith(
        "boardtest/file_contexts")
    overrides = {o["path"]: o for o in fs["overrides"]}
    assert overrides["/usr/bin/hello"]["capabilities"] == "cap_net_raw+ep"
    assert overrides["/etc/hostname"]["xattrs"]["user.hex"] == "0xdeadbeef"
    with loop_mount(img, tmp_path) as mnt:
        out = _tool("getcap", "-n", os.path.join(mnt, "usr/bin/hello"))
        assert out.split(None, 1)[1].strip() == "cap_net_raw=ep"
        x = _getfattr(mnt, "/etc/hostname")
        assert x["user.origin"] == "0x" + b"bazel".hex()
        assert x["user.hex"] == "0xdeadbeef" and x["trusted.b64"] == "0x000102"
        # file_contexts: the last matching line wins; the file-type field counts.
        assert x["security.selinux"] == _hex("system_u:object_r:etc_t:s0")
        assert _getfattr(mnt, "/usr/bin/hello")["security.selinux"] == _hex("system_u:object_r:hello_exec_t:s0")
        assert _getfattr(mnt, "/usr/share")["security.selinux"] == _hex("system_u:object_r:share_dir_t:s0")
        readme = "/usr/share/doc/demo/README"
        assert _getfattr(mnt, readme)["security.selinux"] == _hex("system_u:object_r:default_t:s0")
        # fs_config, applied last
        st = os.stat(os.path.join(mnt, readme.lstrip("/")))
        assert (st.st_uid, st.st_gid, st.st_mode & 0o7777) == (1000, 2000, 0o640)
        if name == "secure_ext4":
            acl = _tool("getfacl", "-c", "-n", "-E", os.path.join(mnt, "etc/os-release")).split()
            assert "user:1000:r--" in acl and "mask::r--" in acl
            acl = _tool("getfacl", "-c", "-n", "-E", os.path.join(mnt, "usr/share")).split()
            assert "default:group:2000:rwx" in acl
    if name == "secure_ext4":
        _tool("e2fsck", "-fn", img)
        out = _debugfs(img, "ea_list /usr/bin/hello")
        assert "security.capability" in out and "security.selinux" in out


def test_other_formats_as_fs_type(board_build, tmp_path):
    """erofs, exfat, f2fs, tar and xfs, each checked by its own tool and read back."""
    bazel = board_build
    b = lambda p: bazel.bin("boardtest/" + p)  # noqa: E731
    out = tmp_path / "erofs"
    _tool("fsck.erofs", f"--extract={out}", b("fs_erofs.img"))
    _tool("fsck.exfat", "-n", b("fs_exfat.img"))
    _tool("xfs_repair", "-n", "-f", b("fs_xfs.img"))
    p = subprocess.run(["fsck.f2fs", b("fs_f2fs.img")], capture_output=True, text=True)
    assert p.returncode == 0 and "[Fail]" not in p.stdout, p.stdout + p.stderr
    tar_out = tmp_path / "tar"
    tar_out.mkdir()
    _tool("tar", "-xf", b("fs_tar.img"), "-C", str(tar_out))
    for rel in ROOTFS_FILES:
        want = _read(os.path.join(EXAMPLES, "rootfs", rel))
        assert _read(str(out / rel)) == want, rel
        assert _read(str(tar_out / rel)) == want, rel
        for fs_type in ("exfat", "f2fs", "xfs"):
            assert _cat(b(f"fs_{fs_type}.img"), "/" + rel) == want, (fs_type, rel)
    assert "DATA" in run_fstool("info", b("fs_erofs.img"), check=True).stdout


def test_cpio_and_iso_images(board_build, tmp_path):
    """fs_type = "cpio" gives an initramfs GNU cpio and bsdtar extract; iso_image gives an
    isohybrid ISO with BIOS and UEFI El Torito entries (xorriso), a clean hybrid GPT
    (sgdisk -v), the volume id asked for (isoinfo) and the tree (osirrox)."""
    import gzip
    bazel = board_build
    initramfs = bazel.bin("boardtest/initramfs.img")
    with open(initramfs, "rb") as f:
        archive = gzip.decompress(f.read())
    listing = subprocess.run(["cpio", "-t"], input=archive, capture_output=True, check=True).stdout.decode()
    assert "etc/hostname" in listing.split() and "usr/bin/hello" in listing.split()
    out = tmp_path / "cpio"
    out.mkdir()
    _tool("bsdtar", "-xf", initramfs, "-C", str(out))
    for rel in ROOTFS_FILES:
        assert _read(str(out / rel)) == _read(os.path.join(EXAMPLES, "rootfs", rel)), rel
    assert oct(os.stat(out / "usr/bin/hello").st_mode & 0o777) == "0o644"  # mode from attributes

    iso = bazel.bin("boardtest/live.img")
    report = _tool("xorriso", "-indev", iso, "-report_el_torito", "plain")
    assert re.search(r"El Torito boot img :\s+1\s+BIOS", report) and re.search(r"El Torito boot img :\s+2\s+UEFI", report), report
    assert "No problems found" in _tool("sgdisk", "-v", iso)
    assert "Volume id: LIVE" in _tool("isoinfo", "-d", "-i", iso)
    out = tmp_path / "iso"
    _tool("osirrox", "-indev", iso, "-extract", "/", str(out))
    for rel in ROOTFS_FILES:
        assert _read(str(out / rel)) == _read(os.path.join(EXAMPLES, "rootfs", rel)), rel
