"""The command line: build, create, info, ls, cat (the Rust fstool's verbs and flags).

Invariant: every failure the user can cause ends as one line on stderr and exit
status 2 (usage and spec errors) or 1 (everything else); no traceback ever
reaches the user (set FSTOOL_DEBUG=1 to see one), and no partial output is left.
"""
from __future__ import annotations

import argparse
import contextlib
import json
import os
import stat
import struct
import sys
import time

from . import __version__
from .errors import FstoolError, ImageError, InputError, UsageError, set_quiet
from .image import Terminated, atomic_output
from .progress import terminal_progress
from .sizes import format_size, parse_size
from .tree import Kind


class _Parser(argparse.ArgumentParser):
    def error(self, message: str):  # argparse would exit(2) with usage; keep one line
        raise UsageError(message)


def _parse_O(values: list[str]) -> dict[str, str]:
    out: dict[str, str] = {}
    for group in values:
        for item in group.split(","):
            if not item.strip():
                continue
            if "=" not in item:
                # bare flags like -O no_fragments mean true, ^flag means false (mke2fs style)
                key, val = (item[1:], "false") if item.startswith("^") else (item, "true")
            else:
                key, val = item.split("=", 1)
            key = key.strip()
            if not key:
                raise UsageError(f"-O {group!r}: empty option name")
            out[key] = val.strip()
    return out


def _log(args, msg: str) -> None:
    if not args.quiet:
        print(msg, file=sys.stderr)


def _block_cache(args):
    """The block cache for this build: --cache-dir or FSTOOL_CACHE_DIR (none by default). The
    persistent worker has installed its own in-memory one already; a flag adds a directory."""
    from . import cache

    max_size = parse_size(args.cache_max_size, where="--cache-max-size") if args.cache_max_size else None
    c = cache.from_options(args.cache_dir, max_size)
    if c is None:
        return contextlib.nullcontext()
    return _reporting(cache.using(c), c, args)


@contextlib.contextmanager
def _reporting(ctx, c, args):
    with ctx:
        yield c
    if args.verbose:
        _log(args, f"fstool: block cache {c.directory}: {c.stats.line()}")


def _cluster_size(args) -> int | None:
    """The Rust fstool's --cluster-size: the qcow2 cluster size (a power of two, 512 B to
    2 MiB), for qcow2 output only."""
    if args.cluster_size is None:
        return None
    cs = parse_size(args.cluster_size, where="--cluster-size")
    if cs < 512 or cs > 2 << 20 or cs & (cs - 1):
        raise UsageError(f"--cluster-size must be a power of two from 512 to 2MiB; got {cs}")
    return cs


def cmd_create(args) -> int:
    cluster_size = _cluster_size(args)
    from .build import build_filesystem, check_output_against_inputs, parse_format_options
    from .spec import GENERIC_OPTION_KEYS, apply_generic
    from .spec import FsSpec
    from .fs import canonical_type

    fs = FsSpec(type=canonical_type(args.type, "-t"), where="-O")
    srcs = []
    if args.source:
        for s in args.source.split("+"):
            if not s:
                raise UsageError(f"empty source in {args.source!r}")
            srcs.append(os.path.abspath(s))
    fs.sources = srcs
    opts = _parse_O(args.option or [])
    generic = {k: v for k, v in opts.items() if k in GENERIC_OPTION_KEYS}
    fs.options = {k: v for k, v in opts.items() if k not in GENERIC_OPTION_KEYS}
    apply_generic(fs, generic, "-O", os.getcwd())
    flags = {}
    if args.size is not None:
        flags["size"] = args.size
    if args.headroom is not None:
        flags["headroom"] = args.headroom
    if args.label is not None:
        flags["label"] = args.label
    if args.uuid is not None:
        flags["uuid"] = args.uuid
    for k, v in flags.items():
        apply_generic(fs, {k: v}, f"--{k}", os.getcwd())
    if args.device_table:
        fs.device_table = os.path.abspath(args.device_table)
    parse_format_options(fs)
    check_output_against_inputs(args.output, fs.sources + ([fs.device_table] if fs.device_table else []),
                                "-o")
    t0 = time.monotonic()
    with _block_cache(args), terminal_progress(args.quiet) as progress:
        from .container import container_output, plan_output
        plan = plan_output(args.output, args.format)
        if cluster_size is not None:
            if plan.format != "qcow2":
                raise UsageError("--cluster-size is the qcow2 cluster size: it needs qcow2 output "
                                 "(-o IMG.qcow2 or --format qcow2)")
            plan.cluster_size = cluster_size
        with container_output(plan, force=args.force) as out:
            # on a block device an auto size is the device's (as the Rust fstool)
            want = fs.size if fs.size is not None or not out.device else out.limit
            size = build_filesystem(fs, out, None, size=want, verbose=args.verbose,
                                    progress=progress)
    if args.verbose:
        _log(args, f"fstool: wrote {args.output}: {fs.type}, {format_size(size)} "
                   f"in {time.monotonic() - t0:.2f}s")
    return 0


def cmd_formats(args) -> int:
    """List the registered formats: type names, what each stores, whether it reads and writes."""
    from .fs import formats

    for f in formats():
        names = ", ".join(list(f.types) + sorted(f.aliases))
        c = f.caps
        stores = [k for k in ("owners", "times", "symlinks", "hardlinks", "devices", "fifos",
                              "sockets", "xattrs", "uuid", "volume_id", "journal") if getattr(c, k)]
        if c.label is not None:
            stores.append(f"label ({c.label} bytes)")
        rw = "/".join(x for x, m in (("write", f.writer), ("read", f.reader)) if m)
        print(f"{f.name}: {f.description}\n  types: {names}\n  {rw}; stores: {', '.join(stores)}")
    return 0


def stamp_mtime(spec, status_file: str) -> None:
    """Set the mtime of the spec's filesystems from BUILD_TIMESTAMP in a Bazel workspace
    status file (`key value` lines), as pkg_tar's stamp does."""
    try:
        with open(status_file, encoding="utf-8") as f:
            lines = f.read().splitlines()
    except OSError as e:
        raise InputError(e.strerror or str(e), where=status_file) from None
    value = None
    for line in lines:
        key, _, rest = line.partition(" ")
        if key == "BUILD_TIMESTAMP":
            value = rest.strip()
    if value is None or not value.isdigit():
        raise InputError(f"no BUILD_TIMESTAMP with a number of seconds (got {value!r})",
                         where=status_file)
    filesystems = [spec.fs] if spec.fs is not None else [p.fs for p in spec.disk.partitions]
    for fs in filesystems:
        if fs is not None:
            fs.mtime = int(value)
    return 0


def cmd_build(args) -> int:
    from .build import build
    from .spec import load_spec

    if args.spec.endswith(".cfg"):
        return _build_genimage(args)
    if args.rootpath or args.inputpath or args.image:
        raise UsageError("--rootpath, --inputpath and --image are for genimage configs (*.cfg)")
    spec = load_spec(args.spec, args.relative_to)
    if args.mtime_from_status:
        stamp_mtime(spec, args.mtime_from_status)
    t0 = time.monotonic()
    with _block_cache(args), terminal_progress(args.quiet) as progress:
        build(spec, args.output, layout_json=args.layout_json, verbose=args.verbose,
              progress=progress, format=args.format, roothash=args.roothash, force=args.force)
    if spec.fs is not None:
        what = spec.fs.type
    else:
        n = len(spec.disk.partitions)
        what = f"{spec.disk.table.upper()} disk, {n} partition{'s' if n != 1 else ''}"
    try:
        with open(args.output, "rb") as f:
            what += f", {format_size(f.seek(0, os.SEEK_END))}"
    except OSError:
        pass
    took = f" in {time.monotonic() - t0:.2f}s" if args.verbose else ""
    # the Rust fstool says "built OUT from SPEC" too
    _log(args, f"fstool: built {args.output} from {args.spec} ({what}){took}")
    return 0


def cmd_repack(args) -> int:
    from .repack import repack

    if len(args.paths) < 2:
        raise UsageError("repack needs SRC... OUT: at least one source and the output")
    *sources, out = args.paths
    t0 = time.monotonic()
    with terminal_progress(args.quiet) as progress:
        fs_type, size = repack(sources, out, fs_type=args.fs_type, shrink=args.shrink,
                               options=_parse_O(args.option or []), force=args.force,
                               verbose=args.verbose, progress=progress)
    took = f" in {time.monotonic() - t0:.2f}s" if args.verbose else ""
    _log(args, f"fstool: repacked {' + '.join(sources)} into {out} ({fs_type}, "
               f"{format_size(size)}){took}")
    return 0


def cmd_analyze(args) -> int:
    from .repack import analyze

    types = None
    if args.fs_type:
        from .fs import canonical_type
        types = [canonical_type(t, "--fs-type") for t in args.fs_type.split(",")]
    report = analyze(args.source.split("+") if not os.path.exists(args.source) else [args.source],
                     types=types)
    if args.json:
        json.dump(report, sys.stdout, indent=2, sort_keys=True)
        sys.stdout.write("\n")
        return 0
    c = report["counts"]
    print(f"{args.source}: {c['entries']} entries: {c['files']} files, {c['dirs']} directories, "
          f"{c['symlinks']} symlinks, {c['devices']} devices, {c['fifos']} fifos, "
          f"{c['sockets']} sockets, {c['hardlinks']} extra hardlinks, {c['xattrs']} xattrs")
    print(f"  file bytes: {format_size(c['bytes'])} ({c['bytes']}), of which data "
          f"(not holes): {format_size(c['data_bytes'])} ({c['data_bytes']})")
    print("  smallest image (size = \"auto\"):")
    for t, v in report["smallest"].items():
        print(f"    {t}: {format_size(v) + f' ({v})' if isinstance(v, int) else v}")
    return 0


def _editor(arg: str):
    """An in-place editor for the filesystem at IMG[:N] (FAT or ext2/3/4)."""
    region, _ = _open_region(arg)
    from .fs import open_reader
    r = open_reader(region)
    from .fs.fat.reader import FatReader
    if isinstance(r, FatReader):
        from .fs.fat.edit import FatEditor
        return FatEditor(region)
    from .fs.ext.reader import ExtReader
    if isinstance(r, ExtReader):
        from .fs.ext.edit import ExtEditor
        return ExtEditor(region)
    raise UsageError(f"{arg}: editing {r.fs_type} in place is not supported yet (FAT and ext are); "
                     "rebuild it with `fstool repack SRC HOST_DIR OUT` instead")


def cmd_add(args) -> int:
    if not os.path.exists(args.host_src):
        raise InputError("no such file or directory", where=args.host_src)
    ed = _editor(args.image)
    try:
        ed.add(args.host_src, "/" + args.dest.strip("/"))
    finally:
        ed.close()
    _log(args, f"fstool: added {args.host_src} -> {args.image}:/{args.dest.strip('/')}")
    return 0


def cmd_rm(args) -> int:
    ed = _editor(args.image)
    try:
        ed.rm("/" + args.path.strip("/"))
    finally:
        ed.close()
    _log(args, f"fstool: removed {args.image}:/{args.path.strip('/')}")
    return 0


def _genimage(args, directory: str, relative: bool = False):
    """The genimage config translated; vfat `files` manifests written into directory. Paths
    are absolute, or (relative=True, for a spec written into directory) relative to it."""
    from .genimage import load, write_manifests

    def where(p: str) -> str:
        p = os.path.abspath(p)
        return os.path.relpath(p, os.path.abspath(directory)) if relative else p

    tr = load(args.spec if hasattr(args, "spec") else args.config,
              rootpath=where(args.rootpath) if args.rootpath else None,
              inputpath=where(args.inputpath or "input"), image=args.image)
    write_manifests(tr, directory)
    return tr


def _build_genimage(args) -> int:
    """`fstool build genimage.cfg`: the config's image as a spec (seeded by the config's bytes)."""
    import hashlib
    import tempfile
    from .build import build
    from .spec import spec_from_doc

    with open(args.spec, "rb") as f:
        seed = hashlib.sha256(f.read()).digest()
    with tempfile.TemporaryDirectory(prefix="fstool-genimage-") as tmp:
        try:
            tr = _genimage(args, tmp)
        except FstoolError as e:
            raise e.within(args.spec) from None
        # the manifests written for vfat `files` lie in tmp; every other path is absolute
        spec = spec_from_doc({**tr.doc, "relative_to": "spec"}, args.spec, seed, tmp)
        # the vfat `files` manifests name files in inputpath: this config's own inputs (the
        # --source-root directories main() allowed stay allowed)
        from .inputs.manifest import source_roots
        with terminal_progress(args.quiet) as progress, source_roots([args.inputpath or "input"]):
            build(spec, args.output, layout_json=args.layout_json, verbose=args.verbose,
                  progress=progress, format=args.format, roothash=args.roothash)
    return 0


def cmd_import_genimage(args) -> int:
    """`fstool import-genimage genimage.cfg [-o disk.toml]`: the equivalent spec."""
    from .genimage import to_toml
    directory = os.path.dirname(os.path.abspath(args.output)) if args.output else os.getcwd()
    try:
        tr = _genimage(args, directory, relative=True)
    except FstoolError as e:
        raise e.within(args.config) from None
    # its paths are written relative to the spec's directory: say so (TOML specs resolve
    # against the working directory unless told)
    text = to_toml({"relative_to": "spec", **tr.doc})
    if args.output:
        with atomic_output(args.output) as out:
            out.pwrite(text.encode(), 0)
    else:
        sys.stdout.write(text)
    return 0


def cmd_convert(args) -> int:
    from .build import check_output_against_inputs
    from .container import convert, plan_output
    if not os.path.exists(args.source):
        raise InputError("no such file", where=args.source)
    plan = plan_output(args.dest, args.format)
    for o in [plan.image] + ([plan.bmap] if plan.bmap else []):
        check_output_against_inputs(o, [args.source], "convert")
    plan = convert(args.source, args.dest, args.format)
    if args.verbose:
        _log(args, f"fstool: wrote {plan.image} ({plan.format})"
                   + (f" and {plan.bmap}" if plan.bmap else ""))
    return 0


def _split_target(arg: str) -> tuple[str, int | None]:
    """IMG or IMG:N (partition N, 1-based). A file whose name has a colon still works."""
    if os.path.exists(arg) or ":" not in arg:
        return arg, None
    path, _, num = arg.rpartition(":")
    if not num.isdigit() or int(num) < 1:
        raise UsageError(f"{arg!r}: expected IMG or IMG:N with N a partition number from 1")
    return path, int(num)


def _open_region(arg: str):
    """(Region of the filesystem, table info or None)."""
    from .inputs.image import open_partition
    return open_partition(*_split_target(arg))


def _open_fs(arg: str):
    region, _ = _open_region(arg)
    from .fs import open_reader
    return open_reader(region)


# what a reader's parsing raises on records it did not expect; on an untrusted image that is
# a malformed image, reported in one line naming it, never an internal error
_MALFORMED = (struct.error, IndexError, KeyError, ValueError, UnicodeDecodeError, OverflowError,
              RecursionError, ZeroDivisionError)


def _reading(fn):
    """Wrap a read verb so a malformed image is one clean line naming it."""
    def run(args) -> int:
        try:
            return fn(args)
        except ImageError as e:
            raise e.within(args.image) from None
        except _MALFORMED as e:
            detail = f"{type(e).__name__}: {e}" if str(e) else type(e).__name__
            raise ImageError(f"malformed image ({detail})", where=args.image) from None
    run.__name__ = fn.__name__
    return run


@_reading
def cmd_info(args) -> int:
    path, num = _split_target(args.image)
    out = sys.stdout
    if num is None:
        if not os.path.exists(path):
            raise InputError("no such file", where=path)
        from .container import detect, open_region
        region = open_region(path)
        container = detect(path)
        from .part import probe_table, render_table
        found = probe_table(region)
        if found is not None:
            kind, table = found
            shell = "" if container == "raw" else f" in {container}"
            print(f"{path}: {kind.upper()} disk{shell}, {format_size(region.length)}", file=out)
            for line in render_table(kind, table):
                print(line, file=out)
            from .fs import open_reader
            for p in table.partitions:
                try:
                    r = open_reader(region.sub(p.offset, p.size))
                    desc = r.fs_type
                    rows = dict(r.info())
                    if rows.get("label"):
                        desc += f" label={rows['label']}"
                except FstoolError as e:
                    from .verity import describe_superblock
                    desc = describe_superblock(region.sub(p.offset, p.size)) or \
                        f"unknown content ({e.message})"
                print(f"  partition {p.number}: {desc}", file=out)
            try:  # a hybrid image (an isohybrid ISO) is also a filesystem as a whole
                whole = open_reader(region)
            except FstoolError:
                whole = None
            if whole is not None:
                print(f"  whole image: {whole.fs_type}", file=out)
                for k, v in whole.info():
                    print(f"    {k}: {v}", file=out)
            return 0
        from .fs import open_reader
        r = open_reader(region)
    else:
        r = _open_fs(args.image)
    print(f"{args.image}: {r.fs_type}", file=out)
    for k, v in r.info():
        print(f"  {k}: {v}", file=out)
    return 0


def _fmt_entry(e) -> str:
    mode = stat.filemode(e.kind.s_ifmt | e.mode)
    size = f"{e.rdev[0]},{e.rdev[1]}" if e.kind in (Kind.CHR, Kind.BLK) else str(e.size)
    t = time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(e.mtime))
    name = e.path + (f" -> {e.target}" if e.kind is Kind.SYMLINK else "")
    return f"{mode}\t{e.uid}\t{e.gid}\t{size}\t{t}\t{name}"


@_reading
def cmd_ls(args) -> int:
    r = _open_fs(args.image)
    path = "/" + args.path.strip("/") if args.path else "/"
    top = r.stat(path)
    if args.recursive:
        entries = (e for e in r.walk(path) if e.path != top.path or top.kind is not Kind.DIR)
    elif top.kind is Kind.DIR:
        entries = iter(r.listdir(path))
    else:
        entries = iter([top])
    for e in entries:
        sys.stdout.write(_fmt_entry(e) + "\n")
    return 0


@_reading
def cmd_cat(args) -> int:
    r = _open_fs(args.image)
    path = "/" + args.path.strip("/")
    e = r.stat(path)
    if e.kind is not Kind.FILE:
        raise InputError(f"is a {e.kind.name.lower()}, not a regular file", where=f"{args.image}:{path}")
    out = sys.stdout.buffer
    for chunk in r.read_file(path):
        out.write(chunk)
    out.flush()
    return 0


def _cache_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument("--cache-dir", metavar="DIR",
                   help="reuse compressed blocks from DIR and store new ones there (default: "
                        "FSTOOL_CACHE_DIR, else no cache); the image bytes never depend on it")
    p.add_argument("--cache-max-size", metavar="SIZE",
                   help="evict least recently used entries beyond SIZE (default 2GiB)")


def make_parser() -> argparse.ArgumentParser:
    # @FILE: arguments from FILE, one a line (Bazel's param files, "multiline" format)
    p = _Parser(prog="fstool", description="Build reproducible filesystem and disk images.",
                fromfile_prefix_chars="@")
    p.add_argument("--version", action="version", version=f"fstool {__version__}")
    common = _Parser(add_help=False)
    common.add_argument("-q", "--quiet", action="store_true", help="print nothing but errors")
    common.add_argument("-v", "--verbose", action="store_true", help="explain the layout")
    sub = p.add_subparsers(dest="cmd", metavar="COMMAND", parser_class=_Parser)
    sub.required = True

    inputs = _Parser(add_help=False)
    inputs.add_argument("--source-root", action="append", metavar="DIR",
                        help="a directory JSON manifests' sources may also come from (repeatable; "
                             "by default a source must stay inside its manifest's directory)")
    b = sub.add_parser("build", parents=[common, inputs], help="build an image from a spec (TOML or JSON)")
    b.add_argument("spec", metavar="SPEC")
    b.add_argument("-o", "--output", required=True, metavar="OUT")
    b.add_argument("--layout-json", metavar="FILE", help="write the partition layout as JSON")
    b.add_argument("--relative-to", choices=("cwd", "spec"), default=None,
                   help="where a spec's relative paths start when it has no relative_to key "
                        "(default: cwd for TOML, as the Rust fstool; spec for JSON)")
    b.add_argument("--mtime-from-status", metavar="FILE",
                   help="take mtime from BUILD_TIMESTAMP in a Bazel workspace status file "
                        "(stamped builds)")
    b.add_argument("--format", metavar="F", help="output container: raw, qcow2, android-sparse "
                   "(simg), android-sparse-crc, bmap (default: by the output's extension)")
    b.add_argument("--roothash", metavar="FILE", help="write the dm-verity root hash (hex)")
    b.add_argument("--rootpath", metavar="DIR", help="genimage configs: the root filesystem tree")
    b.add_argument("--inputpath", metavar="DIR", help="genimage configs: where images and files are "
                   "(default: input, as genimage)")
    b.add_argument("--image", metavar="NAME", help="genimage configs: the image to build "
                   "(default: the one no other image uses)")
    b.add_argument("--force", action="store_true",
                   help="allow OUT to be a block device (refused when mounted)")
    _cache_flags(b)
    b.set_defaults(func=cmd_build)

    fm = sub.add_parser("formats", parents=[common], help="list the formats this fstool reads and writes")
    fm.set_defaults(func=cmd_formats)

    c = sub.add_parser("create", parents=[common, inputs], help="create one filesystem from sources")
    c.add_argument("source", nargs="?", metavar="SRC",
                   help="directory, tar or JSON manifest; layer several with '+' (bottom first)")
    c.add_argument("-t", "--type", required=True, metavar="TYPE",
                   help="filesystem type (`fstool formats` lists them)")
    c.add_argument("-o", "--output", required=True, metavar="OUT")
    c.add_argument("--format", metavar="F", help="output container (see build --format)")
    c.add_argument("--size", metavar="SIZE", help="image size (e.g. 64MiB) or 'auto' (default)")
    c.add_argument("--headroom", metavar="SIZE", help="free space to add to an auto size")
    c.add_argument("--label", "-L", metavar="LABEL")
    c.add_argument("--uuid", "-U", metavar="UUID")
    c.add_argument("-D", "--device-table", metavar="FILE", help="genext2fs-style device table")
    c.add_argument("-O", dest="option", action="append", metavar="K=V[,K=V]",
                   help="filesystem option (repeatable)")
    c.add_argument("--force", action="store_true",
                   help="allow OUT to be a block device (refused when mounted)")
    c.add_argument("--cluster-size", metavar="SIZE", default=None,
                   help="qcow2 cluster size, as the Rust fstool (only for .qcow2 output)")
    _cache_flags(c)
    c.set_defaults(func=cmd_create)

    rp = sub.add_parser("repack", parents=[common, inputs],
                        help="merge sources (images, IMG:N, tars, directories) into a new image")
    rp.add_argument("paths", nargs="+", metavar="SRC... OUT")
    rp.add_argument("--fs-type", "-t", metavar="TYPE",
                    help="output type (default: from OUT's name; .img keeps the source's)")
    rp.add_argument("--shrink", action="store_true",
                    help="make the image as small as its content (default: the source's size)")
    rp.add_argument("-O", dest="option", action="append", metavar="K=V[,K=V]",
                    help="filesystem option (repeatable)")
    rp.add_argument("--force", action="store_true",
                    help="allow OUT to be a block device (refused when mounted)")
    rp.set_defaults(func=cmd_repack)

    an = sub.add_parser("analyze", parents=[common],
                        help="count what a source holds and the smallest image of each type")
    an.add_argument("source", metavar="SOURCE", help="directory, tar, IMG or IMG:N; a+b layers")
    an.add_argument("--json", action="store_true", help="print JSON")
    an.add_argument("--fs-type", "-t", metavar="TYPE[,TYPE]", help="only these types")
    an.set_defaults(func=cmd_analyze)

    ad = sub.add_parser("add", parents=[common, inputs], help="copy a host file or tree into an image, in place")
    ad.add_argument("image", metavar="IMG[:N]")
    ad.add_argument("host_src", metavar="HOST_SRC")
    ad.add_argument("dest", metavar="DEST", help="its path in the image (into DEST if a directory)")
    ad.set_defaults(func=cmd_add)

    rm = sub.add_parser("rm", parents=[common],
                        help="remove a file or directory, in place (FAT: an empty one; ext: with "
                             "its contents)")
    rm.add_argument("image", metavar="IMG[:N]")
    rm.add_argument("path", metavar="PATH")
    rm.set_defaults(func=cmd_rm)

    i = sub.add_parser("info", parents=[common], help="describe an image or disk (IMG or IMG:N)")
    i.add_argument("image", metavar="IMG[:N]")
    i.set_defaults(func=cmd_info)

    ls = sub.add_parser("ls", parents=[common], help="list a directory of an image")
    ls.add_argument("-R", "--recursive", action="store_true")
    ls.add_argument("image", metavar="IMG[:N]")
    ls.add_argument("path", nargs="?", default="/", metavar="PATH")
    ls.set_defaults(func=cmd_ls)

    cat = sub.add_parser("cat", parents=[common], help="print a file of an image")
    cat.add_argument("image", metavar="IMG[:N]")
    cat.add_argument("path", metavar="PATH")
    cat.set_defaults(func=cmd_cat)
    cv = sub.add_parser("convert", parents=[common],
                        help="convert an image between raw, qcow2 and Android sparse (and bmap)")
    cv.add_argument("source", metavar="SRC")
    cv.add_argument("dest", metavar="DST")
    cv.add_argument("--format", metavar="F", help="output container (default: by DST's extension)")
    cv.set_defaults(func=cmd_convert)

    gi = sub.add_parser("import-genimage", parents=[common], help="a genimage.cfg as a TOML spec")
    gi.add_argument("config", metavar="CFG")
    gi.add_argument("-o", "--output", metavar="SPEC", help="write here (and vfat file manifests "
                    "beside it) instead of stdout")
    gi.add_argument("--rootpath", metavar="DIR", help="the root filesystem tree")
    gi.add_argument("--inputpath", metavar="DIR", help="where images and files are (default: input, as genimage)")
    gi.add_argument("--image", metavar="NAME", help="the image to translate")
    gi.set_defaults(func=cmd_import_genimage)

    w = sub.add_parser("worker", help="serve Bazel's JSON persistent worker protocol on stdin/stdout "
                                      "(with --persistent_worker)")
    w.add_argument("--persistent_worker", action="store_true", required=True)
    w.add_argument("--cache-memory", metavar="SIZE", help="in-memory block cache bound (default 512MiB)")
    return p


def run() -> None:
    """The command's entry point (`python -m fstool`, the `fstool` script, the Bazel
    binary): main(), then exit at once. An interpreter's orderly shutdown frees every object
    one by one: for a tree of 15,000 entries that is 30 ms after the image is finished (a
    tenth of a second or more at a million), and nothing needs it. By then the output is
    closed and renamed into place; exit handlers (atexit) still run and the standard
    streams are flushed first."""
    import atexit
    import gc
    gc.disable()  # for good: main's gc_paused then leaves it off, and nothing collects at exit
    fixed_malloc_thresholds()
    code = main() or 0
    atexit._run_exitfuncs()
    for stream in (sys.stdout, sys.stderr):
        try:
            if stream is not None:
                stream.flush()
        except (OSError, ValueError):  # a closed pipe: nothing more can be said
            code = code or 1
    os._exit(code)


M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3  # glibc's mallopt parameters (malloc.h)


def fixed_malloc_thresholds() -> None:
    """glibc's malloc with the thresholds it would reach at most on its own: buffers up to
    32 MiB come from the heap, and up to 64 MiB of freed memory stays there. glibc starts them
    low and moves them as buffers come and go; on the compressor threads, where Python's xz
    makes an encoder of a few MiB for every block, that could settle where each freed encoder
    was handed back and the next faulted in again (SquashFS xz of 250 MB with a cold cache:
    412,000 page faults instead of 12,000, 0.7 s of system time; 1 MiB blocks: 23.6 s against
    22.5). The cost: a build of 201,000 empty files peaks 9 MiB higher (123 MiB against 114).
    Not glibc (musl, another OS): nothing to tune."""
    try:
        import ctypes
        mallopt = ctypes.CDLL(None).mallopt
    except (ImportError, OSError, AttributeError):
        return
    mallopt(M_MMAP_THRESHOLD, 32 << 20)
    mallopt(M_TRIM_THRESHOLD, 64 << 20)


@contextlib.contextmanager
def gc_paused():
    """No cyclic garbage collection while a command runs (the worker turns it back on
    between requests). A build makes a node, a record or two per entry and frees almost
    nothing until the end, so each collection only walked the growing heap again: 200,000
    files, 0.8 s of CPU in the collector, all of it on the thread every other waits for.
    What a build drops is freed by reference counting as before."""
    import gc
    was = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was:
            gc.enable()


def main(argv: list[str] | None = None) -> int:
    debug = bool(os.environ.get("FSTOOL_DEBUG"))
    argv = sys.argv[1:] if argv is None else argv
    if "--persistent_worker" in argv:  # Bazel starts a worker with this flag last
        import gc
        gc.enable()  # run() turned it off for one command; a worker collects between requests
        from .worker import serve
        return serve(argv)
    try:
        args = make_parser().parse_args(argv)
        set_quiet(args.quiet)
        with gc_paused():
            if getattr(args, "source_root", None):
                from .inputs.manifest import source_roots
                with source_roots(args.source_root):
                    return args.func(args)
            return args.func(args)
    except FstoolError as e:
        print(f"fstool: error: {e}", file=sys.stderr)
        if debug:
            raise
        return e.exit_code
    except KeyboardInterrupt:
        print("fstool: interrupted", file=sys.stderr)
        return 130
    except Terminated as e:  # SIGTERM/SIGHUP (a CI timeout): the output was removed
        print(f"fstool: terminated by signal {e.signum}; nothing was written", file=sys.stderr)
        return 128 + e.signum
    except BrokenPipeError:
        try:
            sys.stdout = None  # type: ignore[assignment]
        finally:
            return 1
    except MemoryError:
        print("fstool: error: out of memory", file=sys.stderr)
        return 1
    except OSError as e:
        where = f"{e.filename}: " if e.filename else ""
        print(f"fstool: error: {where}{e.strerror or e}", file=sys.stderr)
        if debug:
            raise
        return 1
    except Exception as e:  # a bug: still one line, with a hint how to see more
        print(f"fstool: internal error: {type(e).__name__}: {e} (set FSTOOL_DEBUG=1 for a traceback)",
              file=sys.stderr)
        if debug:
            raise
        return 1
