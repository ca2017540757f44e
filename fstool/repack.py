"""`fstool repack` and `fstool analyze`: sources (images with :N, tars, directories) to a fresh image.

repack loads each source into a Tree (`fstool.inputs`: images through their
registered reader, files left where they are or spooled), merges them bottom to
top with OCI whiteouts, and writes the result with any registered writer. The
type comes from --fs-type, else from OUT's name (the registry's `extensions`),
where `.img` keeps the type of the source image. analyze reports what a source
holds and the smallest image each writer makes of it (the size `size = "auto"`
would give), by running each writer into a sparse temporary file.
"""
from __future__ import annotations

import os
import tempfile

from .errors import FstoolError, UsageError
from .fs import formats, lookup
from .spec import FsSpec


def type_from_name(out: str) -> str | None:
    """The canonical type OUT's name implies (longest matching extension), or None."""
    low = out.lower()
    best: tuple[int, str] | None = None
    for fmt in formats():
        for ext in fmt.extensions:
            if low.endswith(ext) and (best is None or len(ext) > best[0]):
                best = (len(ext), fmt.types[0] if fmt.name != "fat" else "fat")
    return best[1] if best else None


def source_image(src: str):
    """(reader's fs_type, label, filesystem size) of src when it is an image, else None."""
    from .fs import open_reader
    from .inputs.image import is_image, open_partition
    from .paths import split_partition
    path, part = split_partition(src)
    if not os.path.isfile(path) and not (os.path.exists(path) and part is not None):
        return None
    if part is None and not is_image(path):
        return None
    try:
        region, _ = open_partition(path, part)
        r = open_reader(region)
    except FstoolError:
        return None
    info = dict(r.info())
    return r.fs_type, info.get("label") or None, region.length


def _fs_spec(fs_type: str, sources: list[str], options: dict, where: str) -> FsSpec:
    from .spec import GENERIC_OPTION_KEYS, apply_generic
    fs = FsSpec(type=lookup(fs_type, "--fs-type")[1], where=where, base_dir=os.getcwd())
    fs.sources = [os.path.abspath(s) for s in sources]
    generic = {k: v for k, v in options.items() if k in GENERIC_OPTION_KEYS}
    fs.options = {k: v for k, v in options.items() if k not in GENERIC_OPTION_KEYS}
    apply_generic(fs, generic, where, os.getcwd())
    return fs


def repack(sources: list[str], out: str, *, fs_type: str | None = None, shrink: bool = False,
           options: dict | None = None, force: bool = False, verbose: bool = False,
           progress=None) -> tuple[str, int]:
    """Merge sources bottom to top and write them to out; return (type, bytes written)."""
    from .build import build_filesystem, parse_format_options
    from .image import open_output

    if not sources:
        raise UsageError("repack needs at least one source and an output")
    images = [source_image(s) for s in sources]
    first_image = next((i for i in images if i is not None), None)
    if fs_type is None:
        fs_type = type_from_name(out)
        if fs_type is None and out.lower().endswith(".img"):
            if first_image is None:
                raise UsageError(f"{out}: .img keeps the source image's type, but no source is an "
                                 "image; give --fs-type")
            fs_type = first_image[0]
        if fs_type is None:
            raise UsageError(f"{out}: cannot tell the output type from its name; give --fs-type "
                             "(`fstool formats` lists them)")
    fs = _fs_spec(fs_type, sources, dict(options or {}), "repack")
    fmt = lookup(fs.type)[0]
    # keep the source's label where the new image is of the same family and stores one
    if first_image is not None and fs.label is None and fmt.caps.label is not None:
        try:
            same = lookup(first_image[0])[0] is fmt
        except FstoolError:
            same = False
        if same and first_image[1] and first_image[1] != "NO NAME":
            fs.label = first_image[1]
    parse_format_options(fs)
    from .build import check_output_against_inputs
    from .paths import split_partition
    check_output_against_inputs(out, [split_partition(os.path.abspath(s))[0] for s in sources],
                                "repack")
    size = fs.size
    if size is None and not shrink and first_image is not None and len(sources) == 1 \
            and fmt.caps.fills_partition and lookup(first_image[0])[0] is fmt:
        size = first_image[2]  # same format, same size, unless --shrink
    from .errors import CapacityError, warn
    try:
        with open_output(out, force=force) as img:
            if size is None and img.device:
                size = img.limit
            written = build_filesystem(fs, img, None, size=size, verbose=verbose, progress=progress)
    except CapacityError as e:
        if size is None or fs.size is not None or (first_image and size != first_image[2]):
            raise
        # the writer lays the same content out differently at a fixed size (ext: more inodes)
        warn(f"the source's size does not hold it here ({e.message}); made it as small as "
             "it can be", where=out)
        with open_output(out, force=force) as img:
            written = build_filesystem(fs, img, None, size=None, verbose=verbose, progress=progress)
    return fs.type, written


def clone_tree(tree):
    """A copy of tree a writer may change (FAT drops entries): new Nodes, hardlinks still
    shared, FileSources (immutable) shared, so the sources are read once."""
    import copy
    from .tree import NO_XATTRS, Kind, Tree
    seen: dict[int, object] = {}

    def dup(node):
        if id(node) in seen:
            return seen[id(node)]
        new = copy.copy(node)
        new.xattrs = dict(node.xattrs) if node.xattrs else NO_XATTRS
        seen[id(node)] = new
        if node.kind is Kind.DIR:
            new.children = {n: dup(c) for n, c in node.children.items()}
        return new
    return Tree(dup(tree.root))


def analyze(sources: list[str], *, types: list[str] | None = None) -> dict:
    """Counts and bytes of the merged sources, and the smallest image of each writable type."""
    from .build import build_filesystem, load_tree, parse_format_options
    from .errors import set_quiet
    from .image import ImageFile
    from .tree import Kind

    base = _fs_spec("squashfs", sources, {}, "analyze")
    tree = load_tree(base)
    counts = {"entries": 0, "dirs": 0, "files": 0, "symlinks": 0, "devices": 0, "fifos": 0,
              "sockets": 0, "hardlinks": 0, "bytes": 0, "data_bytes": 0, "xattrs": 0}
    seen: set[int] = set()
    for path, node in tree.walk():
        counts["entries"] += 1
        if id(node) in seen:
            counts["hardlinks"] += 1
            continue
        seen.add(id(node))
        counts["xattrs"] += len(node.xattrs)
        k = node.kind
        if k is Kind.DIR:
            counts["dirs"] += 1
        elif k is Kind.FILE:
            counts["files"] += 1
            counts["bytes"] += node.size
            if node.source is not None and node.size:
                counts["data_bytes"] += sum(n for _, n, _ in node.source.data_segments())
        elif k is Kind.SYMLINK:
            counts["symlinks"] += 1
        elif k in (Kind.CHR, Kind.BLK):
            counts["devices"] += 1
        elif k is Kind.FIFO:
            counts["fifos"] += 1
        else:
            counts["sockets"] += 1
    sizes: dict[str, int | str] = {}
    wanted = types or [t for f in formats() if f.writer for t in f.types]
    from . import errors as errors_mod
    quiet = errors_mod._quiet
    for t in wanted:
        fs = _fs_spec(t, sources, {}, "analyze")
        try:
            set_quiet(True)  # a writer's warnings (FAT leaving out devices) are not the point here
            parse_format_options(fs)
            with tempfile.TemporaryFile(prefix="fstool-analyze-") as f:
                sizes[t] = build_filesystem(fs, ImageFile(f.fileno(), path=f"<{t}>"), b"analyze",
                                            size=None, tree=clone_tree(tree))
        except FstoolError as e:
            sizes[t] = f"cannot: {e.message}"
        finally:
            set_quiet(quiet)
    return {"sources": sources, "counts": counts, "smallest": sizes}
