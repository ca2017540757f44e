"""Inputs: host directories, tar archives, JSON manifests and images, layered into one Tree.

`load_sources` reads each source into a tree of its own and merges it over the
ones below, bottom to top, as container layers stack: a directory over a
directory keeps both's children (the upper one's attributes win), anything else
replaces what was there. In every layer above the bottom one, OCI whiteouts are
honoured: `.wh.NAME` deletes NAME from the layers below and `.wh..wh..opq`
makes its directory opaque (hides everything below it); so do OverlayFS's own
markers (a character device 0/0 deletes its path, a directory with the xattr
`trusted.overlay.opaque = "y"` is opaque), as the Rust fstool detects both.
Whiteout entries never reach the image. No file bytes are read here.
"""
from __future__ import annotations

import os
import stat

from ..errors import InputError
from ..tree import Kind, Node, Tree

WHITEOUT = ".wh."
OPAQUE = ".wh..wh..opq"
OVERLAY_OPAQUE = "trusted.overlay.opaque"
TAR_SUFFIXES = (".tar", ".tar.gz", ".tgz", ".tar.xz", ".txz", ".tar.zst", ".tzst", ".tar.bz2", ".tbz2")


def load_one(path: str, where: str | None = None, *, base_dir: str | None = None,
             spec_dir: str | None = None) -> Tree:
    """One source: a host directory, a tar (any supported compression), a .json manifest,
    or an image any registered reader opens (`IMG` or `IMG:N` for partition N).
    A symlink given as the source is followed (only there: symlinks inside stay links)."""
    from ..paths import missing, split_partition
    bare, part = split_partition(path)
    try:
        st = os.stat(bare)
    except FileNotFoundError:
        raise missing(bare, base_dir=base_dir, spec_dir=spec_dir, where=where) from None
    except OSError as e:
        raise InputError(e.strerror or str(e), where=bare) from None
    if part is not None:
        from .image import load_image
        return load_image(bare, part)
    if stat.S_ISDIR(st.st_mode):
        from .hostdir import load_dir
        return load_dir(path)
    if not stat.S_ISREG(st.st_mode):  # a fifo would block forever, a device read without end
        raise InputError("not a directory, a tar archive or a .json manifest (not a regular file)",
                         where=path)
    if path.endswith(".json"):
        from .manifest import load_manifest
        return load_manifest(path)
    from .tarball import load_tar, sniff_tar
    from .image import is_image, load_image
    if path.lower().endswith(TAR_SUFFIXES):
        return load_tar(path)
    if sniff_tar(path):
        try:
            return load_tar(path)
        except InputError:
            # sniff_tar takes any gzip/xz/zstd stream for a tar: a compressed cpio is one too
            if not is_image(path):
                raise
    if is_image(path):
        return load_image(path)
    raise InputError("not a directory, a tar archive, a .json manifest or an image this tool "
                     "reads (`fstool formats` lists them)", where=path)


def merge(lower: Tree, upper: Tree, *, whiteouts: bool) -> None:
    """Lay upper over lower (in place, lower becomes the result)."""
    lower.root.copy_attrs_from(upper.root)
    _merge_dir(lower.root, upper.root, whiteouts)
    lower.invalidate()


def _overlay_whiteout(node: Node) -> bool:
    return node.kind is Kind.CHR and node.rdev == (0, 0)


def _overlay_opaque(node: Node) -> bool:
    return node.kind is Kind.DIR and node.xattrs.get(OVERLAY_OPAQUE) == b"y"


def _merge_dir(low: Node, up: Node, whiteouts: bool) -> None:
    assert low.children is not None and up.children is not None
    names = sorted(up.children)
    if whiteouts and (OPAQUE in up.children or _overlay_opaque(up)):
        low.children.clear()
    for name in names:
        node = up.children[name]
        if whiteouts and name.startswith(WHITEOUT):
            if name != OPAQUE:
                low.children.pop(name[len(WHITEOUT):], None)
            continue
        if whiteouts and _overlay_whiteout(node):
            low.children.pop(name, None)
            continue
        old = low.children.get(name)
        if old is not None and old.kind is Kind.DIR and node.kind is Kind.DIR:
            old.copy_attrs_from(node)
            _merge_dir(old, node, whiteouts)
            if whiteouts:
                old.drop_xattr(OVERLAY_OPAQUE)
        else:
            if whiteouts and node.kind is Kind.DIR:
                _strip_whiteouts(node)
            low.children[name] = node


def graft(tree: Tree, dest: str, sub: Node, where: str) -> None:
    """Put directory node sub at dest: merged into a directory already there, else added."""
    old = tree.lookup(dest)
    if old is not None and old.kind is Kind.DIR:
        old.copy_attrs_from(sub)
        _merge_dir(old, sub, False)
    else:
        tree.add(dest, sub, where=where)
    tree.invalidate()


def _strip_whiteouts(d: Node) -> None:
    assert d.children is not None
    d.drop_xattr(OVERLAY_OPAQUE)
    for name in list(d.children):
        if name.startswith(WHITEOUT) or _overlay_whiteout(d.children[name]):
            del d.children[name]
        elif d.children[name].kind is Kind.DIR:
            _strip_whiteouts(d.children[name])


def load_sources(sources: list[str], *, base_dir: str | None = None, where: str | None = None,
                 spec_dir: str | None = None) -> Tree:
    """Load sources bottom to top and merge them into one Tree (relative ones against base_dir,
    by default the working directory; spec_dir only feeds the hint when one is missing)."""
    if not sources:
        return Tree()
    base_dir = base_dir or os.getcwd()
    trees = [load_one(os.path.join(base_dir, s), where, base_dir=base_dir, spec_dir=spec_dir)
             for s in sources]
    result = trees[0]
    for t in trees[1:]:
        merge(result, t, whiteouts=True)
    return result
