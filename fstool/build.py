"""From an FsSpec to image bytes: load the inputs, apply the metadata rules, run the writer.

The order is fixed and the same for every format: sources (bottom to top) ->
rootdevs -> device table -> all_root / mtime / SOURCE_DATE_EPOCH clamp ->
per-path overrides -> writer. Identifiers are seeded from the caller's seed
(spec content) or, for `fstool create`, from the options plus a fingerprint of
the tree's metadata, so they never depend on host paths or the clock.
"""
from __future__ import annotations

import hashlib
import json
import os

from .errors import SpecError
from .fs import writer_for
from .fs.base import FsParams
from .image import ImageFile
from .spec import FsSpec
from .tree import Kind, Tree, encode_name


def source_date_epoch() -> int | None:
    v = os.environ.get("SOURCE_DATE_EPOCH")
    if v is None or v == "":
        return None
    try:
        n = int(v)
    except ValueError:
        raise SpecError(f"must be a number of seconds, got {v!r}", where="SOURCE_DATE_EPOCH") from None
    if n < 0:
        raise SpecError("must not be negative", where="SOURCE_DATE_EPOCH")
    return n


def load_tree(fs: FsSpec) -> Tree:
    """The tree fs describes, with every metadata rule applied."""
    from .inputs import load_sources
    from .inputs.devtable import apply_device_table
    from .inputs.policy import apply_policy
    from .inputs.rootdevs import add_rootdevs

    if fs.sources:
        tree = load_sources(fs.sources, base_dir=os.getcwd(), where=f"{fs.where}.source")
    else:
        tree = Tree()
    if fs.rootdevs != "none":
        add_rootdevs(tree, fs.rootdevs)
    if fs.device_table:
        apply_device_table(tree, fs.device_table)
    apply_policy(tree, all_root=fs.all_root, mtime=fs.mtime, clamp=source_date_epoch(),
                 overrides=fs.overrides)
    tree.invalidate()
    return tree


def tree_fingerprint(tree: Tree) -> bytes:
    """A hash of the tree's names and metadata (not file contents): cheap and path-independent."""
    h = hashlib.sha256()
    for path, node in tree.walk():
        h.update(encode_name(path) + b"\0")
        h.update(f"{node.kind.name} {node.mode} {node.uid} {node.gid} {node.mtime} "
                 f"{node.size} {node.rdev} {node.target!r} {sorted(node.xattrs.items())!r}\n".encode())
    return h.digest()


def fs_timestamp(fs: FsSpec) -> int:
    if fs.mtime is not None:
        return fs.mtime
    return source_date_epoch() or 0


def make_params(fs: FsSpec, seed: bytes, *, size: int | None, verbose: bool = False,
                extra_options: dict | None = None, progress=None) -> FsParams:
    if fs.seed is not None:
        seed = hashlib.sha256(b"user-seed/" + fs.seed.encode()).digest()
    opts = dict(fs.options)
    opts.update(extra_options or {})
    return FsParams(fs_type=fs.type, size=size, headroom=fs.headroom, label=fs.label,
                    uuid=fs.uuid, volume_id=fs.volume_id, block_size=fs.block_size,
                    journal_blocks=fs.journal_blocks, sparse=fs.sparse,
                    timestamp=fs_timestamp(fs), seed=seed, options=opts, verbose=verbose,
                    where=fs.where, progress=progress)


def create_seed(fs: FsSpec, tree: Tree) -> bytes:
    """The seed for `fstool create`: what was asked for plus the tree's fingerprint."""
    desc = json.dumps({"type": fs.type, "label": fs.label, "size": fs.size,
                       "options": {k: str(v) for k, v in sorted(fs.options.items())}},
                      sort_keys=True)
    return hashlib.sha256(desc.encode() + tree_fingerprint(tree)).digest()


def write_filesystem(fs: FsSpec, tree: Tree, out: ImageFile, params: FsParams) -> int:
    writer = writer_for(fs.type, where=f"{fs.where}.type")
    if params.verbose:  # stats() walks the whole tree: only when someone reads it
        params.log(f"writing {fs.type}: {tree.stats()}")
    return writer.write(tree, out, params)


def count_kinds(tree: Tree) -> dict[Kind, int]:
    out: dict[Kind, int] = {}
    for _, n in tree.walk():
        out[n.kind] = out.get(n.kind, 0) + 1
    return out
