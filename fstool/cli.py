"""The command line: build, create, info, ls, cat (the Rust fstool's verbs and flags).

Invariant: every failure the user can cause ends as one line on stderr and exit
status 2 (usage and spec errors) or 1 (everything else); no traceback ever
reaches the user (set FSTOOL_DEBUG=1 to see one), and no partial output is left.
"""
from __future__ import annotations

import argparse
import json
import os
import stat
import sys
import time

from . import __version__
from .errors import FstoolError, ImageError, InputError, SpecError, UsageError
from .image import Region, atomic_output
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


def cmd_create(args) -> int:
    from .build import create_seed, load_tree, make_params, write_filesystem
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
    t0 = time.monotonic()
    tree = load_tree(fs)
    with terminal_progress(args.quiet) as progress:
        params = make_params(fs, create_seed(fs, tree), size=fs.size, verbose=args.verbose,
                             progress=progress)
        with atomic_output(args.output) as out:
            size = write_filesystem(fs, tree, out, params)
    if args.verbose:
        _log(args, f"fstool: wrote {args.output}: {fs.type}, {format_size(size)} "
                   f"in {time.monotonic() - t0:.2f}s")
    return 0


def cmd_build(args) -> int:
    from .spec import load_spec

    spec = load_spec(args.spec)
    try:
        return _build(args, spec)
    except FstoolError as e:
        if str(e).startswith(args.spec + ":"):
            raise
        # errors found while building name the spec they come from, as parse errors do
        raise type(e)(str(e), where=args.spec) from None


def _build(args, spec) -> int:
    t0 = time.monotonic()
    with terminal_progress(args.quiet) as progress:
        layout = _write_spec(args, spec, progress)
    if args.layout_json:
        if layout is None:
            raise UsageError("--layout-json needs a disk spec ([image] with [[partitions]])")
        from .disk import write_layout
        write_layout(args.layout_json, layout)
    if args.verbose:
        _log(args, f"fstool: wrote {args.output} in {time.monotonic() - t0:.2f}s")
    return 0


def _write_spec(args, spec, progress) -> dict | None:
    """Write the spec's filesystem or disk to args.output; the disk's layout, or None."""
    from .build import load_tree, make_params, write_filesystem

    with atomic_output(args.output) as out:
        if spec.fs is not None:
            tree = load_tree(spec.fs)
            params = make_params(spec.fs, spec.seed, size=spec.fs.size, verbose=args.verbose,
                                 progress=progress)
            write_filesystem(spec.fs, tree, out, params)
            return None
        from .disk import build_disk
        return build_disk(spec, out, verbose=args.verbose, progress=progress)


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
    path, num = _split_target(arg)
    if not os.path.exists(path):
        raise InputError("no such file", where=path)
    region = Region(path)
    if num is None:
        return region, None
    from .part import probe_table
    found = probe_table(region)
    if found is None:
        raise ImageError("has no partition table, so it has no partition "
                         f"{num} (drop the ':{num}')", where=path)
    kind, table = found
    parts = {p.number: p for p in table.partitions}
    if num not in parts:
        raise ImageError(f"has no partition {num} (it has {', '.join(map(str, sorted(parts))) or 'none'})",
                         where=path)
    p = parts[num]
    return region.sub(p.offset, p.size), (kind, p)


def _open_fs(arg: str):
    region, _ = _open_region(arg)
    from .fs import open_reader
    return open_reader(region)


def cmd_info(args) -> int:
    path, num = _split_target(args.image)
    out = sys.stdout
    if num is None:
        if not os.path.exists(path):
            raise InputError("no such file", where=path)
        region = Region(path)
        from .part import probe_table, render_table
        found = probe_table(region)
        if found is not None:
            kind, table = found
            print(f"{path}: {kind.upper()} disk, {format_size(region.length)}", file=out)
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
                    desc = f"unknown content ({e.args[0].split(': ')[-1]})"
                print(f"  partition {p.number}: {desc}", file=out)
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


def make_parser() -> argparse.ArgumentParser:
    p = _Parser(prog="fstool", description="Build reproducible filesystem and disk images.")
    p.add_argument("--version", action="version", version=f"fstool {__version__}")
    common = _Parser(add_help=False)
    common.add_argument("-q", "--quiet", action="store_true", help="print nothing but errors")
    common.add_argument("-v", "--verbose", action="store_true", help="explain the layout")
    sub = p.add_subparsers(dest="cmd", metavar="COMMAND", parser_class=_Parser)
    sub.required = True

    b = sub.add_parser("build", parents=[common], help="build an image from a spec (TOML or JSON)")
    b.add_argument("spec", metavar="SPEC")
    b.add_argument("-o", "--output", required=True, metavar="OUT")
    b.add_argument("--layout-json", metavar="FILE", help="write the partition layout as JSON")
    b.set_defaults(func=cmd_build)

    c = sub.add_parser("create", parents=[common], help="create one filesystem from sources")
    c.add_argument("source", nargs="?", metavar="SRC",
                   help="directory, tar or JSON manifest; layer several with '+' (bottom first)")
    c.add_argument("-t", "--type", required=True, metavar="TYPE",
                   help="ext2, ext3, ext4, squashfs, vfat, fat12, fat16, fat32")
    c.add_argument("-o", "--output", required=True, metavar="OUT")
    c.add_argument("--size", metavar="SIZE", help="image size (e.g. 64MiB) or 'auto' (default)")
    c.add_argument("--headroom", metavar="SIZE", help="free space to add to an auto size")
    c.add_argument("--label", "-L", metavar="LABEL")
    c.add_argument("--uuid", "-U", metavar="UUID")
    c.add_argument("-D", "--device-table", metavar="FILE", help="genext2fs-style device table")
    c.add_argument("-O", dest="option", action="append", metavar="K=V[,K=V]",
                   help="filesystem option (repeatable)")
    c.set_defaults(func=cmd_create)

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
    return p


def main(argv: list[str] | None = None) -> int:
    debug = bool(os.environ.get("FSTOOL_DEBUG"))
    try:
        args = make_parser().parse_args(argv)
        return args.func(args)
    except FstoolError as e:
        print(f"fstool: error: {e}", file=sys.stderr)
        if debug:
            raise
        return e.exit_code
    except KeyboardInterrupt:
        print("fstool: interrupted", file=sys.stderr)
        return 130
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
