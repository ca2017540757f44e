"""The `Format` object every filesystem package registers, and what it can store.

A format package `fstool/fs/<name>/` exposes exactly one `FORMAT = Format(...)`
in its `__init__.py` (which must import nothing heavy); `fstool.fs.FORMAT_PACKAGES`
lists the packages, one line each. The CLI, the spec parser, the disk assembler
and the Bazel rules only ask the registry (`fstool.fs.lookup`, `fstool.fs.formats`).

Invariant: a `Format` is pure data plus three entry points, and an optional fourth.
- `parse_options(params) -> typed options` runs when the spec is read (before any
  input is loaded or byte written), so every option error of every partition comes
  first; its result travels to the writer as `params.opts`.
- `writer` names a module with `write(tree, out: ImageFile, params: FsParams) -> int`
  (the image size in bytes; `params.size is None` means "the smallest that holds it").
- `reader` names a module with `probe(region) -> bool` and `open(region) -> Reader`.
- `head_start` (optional) names a module with `start(fs: FsSpec) -> handle or None`, called
  before the tree is loaded; the handle travels to the writer as `params.head_start` (work
  the writer may adopt, never depend on) and is closed by the caller once the writer ends.
`Capabilities` and `Limits` say what the format stores; `check_tree` refuses, with
the path and value named, anything outside them, so no writer ever wraps or clamps.
"""
from __future__ import annotations

import importlib
from dataclasses import dataclass, field
from typing import Any, Callable

from ..errors import CapacityError, SpecError
from ..sizes import format_size

U32 = (1 << 32) - 1


@dataclass(frozen=True)
class Capabilities:
    """What a format can store. A spec asking for something it cannot is an error."""

    label: int | None = None  # longest label in bytes; None: the format has no label
    uuid: bool = False  # a filesystem UUID (`uuid` key)
    volume_id: bool = False  # a 32-bit volume serial (`volume_id` key, FAT-style)
    journal: bool = False
    owners: bool = True  # uid/gid
    times: bool = True  # per-entry mtimes
    symlinks: bool = True
    hardlinks: bool = True
    devices: bool = True  # character and block devices
    fifos: bool = True
    sockets: bool = True
    xattrs: bool = True
    block_sizes: tuple[int, ...] | None = None  # None: `block_size` is not a key of this format
    fills_partition: bool = True  # built to a given size (False: always as small as its content)
    seeded: bool = True  # derives identifiers (UUIDs, serials) from the build's seed; False
    # spares the tree's fingerprint (a sorted walk) and hands the writer a seed that refuses use


@dataclass(frozen=True)
class Limits:
    """The value ranges a format stores exactly (checked on every tree before writing)."""

    max_id: int = U32  # uid and gid
    min_time: int = 0  # mtime range, seconds since the epoch
    max_time: int = U32
    max_major: int = (1 << 12) - 1
    max_minor: int = (1 << 20) - 1
    max_symlink: int = 4095  # bytes of a symlink target
    max_xattr_value: int = 65536
    max_file_size: int = (1 << 63) - 1
    max_name: int = 255


@dataclass(frozen=True)
class Format:
    """One registered filesystem (or archive) format."""

    name: str  # the family name ("ext", "squashfs", "fat")
    types: tuple[str, ...]  # canonical type names this format writes ("ext2", "ext3", "ext4")
    aliases: dict[str, str] = field(default_factory=dict)  # other accepted names -> canonical type
    caps: Capabilities = field(default_factory=Capabilities)
    limits: Limits = field(default_factory=Limits)
    parse_options: Callable[[Any], Any] | None = None  # (FsParams) -> typed options
    writer: str | None = None  # module path, imported lazily
    reader: str | None = None  # module path, imported lazily
    head_start: str | None = None  # module path with start(fs), imported lazily
    extensions: tuple[str, ...] = ()  # output file name endings that imply this format
    probe_order: int = 50  # lower probes first (formats with a strong magic first)
    partition_type: str = "linux"  # the partition type a disk gives it when the spec names none
    description: str = ""
    # how a given label is stored (FAT: upper-cased, cut); None: cut to caps.label bytes.
    # The spec warns once when the stored label differs from the one given.
    label_rule: Callable[[str], str] | None = None

    def writer_module(self, where: str = "type"):
        if self.writer is None:
            raise SpecError(f"writing {self.name} is not supported", where=where)
        return importlib.import_module(self.writer)

    def start_head(self, fs):
        """The format's head start for fs (see the module's docstring), or None."""
        if self.head_start is None:
            return None
        return importlib.import_module(self.head_start).start(fs)

    def reader_module(self):
        if self.reader is None:
            return None
        return importlib.import_module(self.reader)


def _misfit_check(fmt: Format):
    """A function (name, node) -> why the entry does not fit fmt, or None. The one statement of
    the checks: check_tree runs it over the nodes unsorted (no paths, no sorting: a tree of
    200,000 entries in a fraction of a sorted walk's time) and, only when something does not
    fit, again in tree order to name the first offender."""
    from ..tree import Kind, encode_name

    lim, caps, name_of = fmt.limits, fmt.caps, fmt.name
    max_id, min_t, max_t, max_link = lim.max_id, lim.min_time, lim.max_time, lim.max_symlink
    short = lim.max_name // 4  # a name of at most this many characters encodes within max_name
    devices = (Kind.CHR, Kind.BLK)

    def misfit(name: str, node) -> str | None:
        if caps.owners:
            for what, v in (("uid", node.uid), ("gid", node.gid)):
                if not 0 <= v <= max_id:
                    return f"{what} {v} does not fit in {name_of} (at most {max_id})"
        if caps.times and not min_t <= node.mtime <= max_t:
            return f"mtime {node.mtime} is outside what {name_of} stores ({min_t} to {max_t})"
        kind = node.kind
        if kind in devices and caps.devices:
            major, minor = node.rdev
            if not (0 <= major <= lim.max_major and 0 <= minor <= lim.max_minor):
                return (f"device {major},{minor} does not fit in {name_of} (major at most "
                        f"{lim.max_major}, minor at most {lim.max_minor})")
        elif kind is Kind.SYMLINK and caps.symlinks:
            t = node.target or ""
            if len(t) * 4 > max_link and len(encode_name(t)) > max_link:
                return f"symlink target is {len(encode_name(t))} bytes; {name_of} stores at most {max_link}"
        elif kind is Kind.FILE and node.source is not None and node.source.size > lim.max_file_size:
            size = node.source.size
            return (f"file is {format_size(size)} ({size} bytes); {name_of} stores files of at "
                    f"most {lim.max_file_size} bytes")
        if caps.xattrs and node.xattrs:
            for k, v in node.xattrs.items():
                if len(v) > lim.max_xattr_value:
                    return f"xattr {k} is {len(v)} bytes; {name_of} stores at most {lim.max_xattr_value}"
        if len(name) > short and len(encode_name(name)) > lim.max_name:
            return f"name is {len(encode_name(name))} bytes; {name_of} stores at most {lim.max_name}"
        return None

    return misfit


def check_tree(fmt: Format, tree, where: str) -> None:
    """Refuse values the format cannot store exactly, naming the path and the value.

    Kinds the format cannot store at all (FAT and devices, say) are the writer's
    business, since some formats drop them with a warning; this checks ranges.
    """
    from ..tree import Kind

    misfit = _misfit_check(fmt)
    bad = misfit("", tree.root) is not None
    stack = [tree.root]
    while stack and not bad:  # a hardlinked node is checked once per name: no set of a million ids
        for name, node in stack.pop().children.items():
            if misfit(name, node) is not None:
                bad = True
                break
            if node.kind is Kind.DIR:
                stack.append(node)
    if not bad:
        return
    for path, node in tree.walk():  # something does not fit: name the first in tree order
        why = misfit(path.rsplit("/", 1)[-1], node)
        if why is not None:
            raise CapacityError(why, where=f"{where}: {path}")

