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

from .cache import current as current_cache
from .errors import FstoolError, OutputError, SpecError, warn
from .fs import check_tree, format_for
from .fs.base import FsParams
from .image import ImageFile
from .paths import within
from .spec import FsSpec, Spec
from .tree import Tree, encode_name


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

    from .paths import check_exists

    if fs.sources:
        tree = load_sources(fs.sources, base_dir=fs.base_dir or os.getcwd(),
                            where=f"{fs.where}.source", spec_dir=fs.spec_dir)
    else:
        tree = Tree()
    if fs.rootdevs != "none":
        add_rootdevs(tree, fs.rootdevs)
    if fs.device_table:
        check_exists(fs.device_table, base_dir=fs.base_dir, spec_dir=fs.spec_dir,
                     where=f"{fs.where}.device_table")
        apply_device_table(tree, fs.device_table)
    apply_policy(tree, all_root=fs.all_root, mtime=fs.mtime, clamp=source_date_epoch(),
                 overrides=fs.overrides, file_contexts=fs.selinux_file_contexts,
                 fs_config=fs.fs_config)
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


def make_params(fs: FsSpec, seed: bytes, *, size: int | None, headroom: int = 0,
                partition_offset: int = 0, verbose: bool = False, progress=None) -> FsParams:
    """The writer's parameters for fs. `headroom` is added to the filesystem's own (a
    partition's headroom); the spec itself is never changed."""
    if fs.seed is not None:
        seed = hashlib.sha256(b"user-seed/" + fs.seed.encode()).digest()
    return FsParams(fs_type=fs.type, size=size, headroom=fs.headroom + headroom, label=fs.label,
                    uuid=fs.uuid, volume_id=fs.volume_id, block_size=fs.block_size,
                    journal_blocks=fs.journal_blocks, sparse=fs.sparse,
                    timestamp=fs_timestamp(fs), seed=seed, options=dict(fs.options),
                    opts=fs.opts, partition_offset=partition_offset, verbose=verbose,
                    where=fs.where, progress=progress, block_cache=current_cache())


def stored_label(fmt, label: str) -> str:
    """The label fmt stores for label: its own rule, else cut to caps.label bytes (whole
    characters), as the Rust fstool cuts ext labels to 16 bytes."""
    if fmt.label_rule is not None:
        return fmt.label_rule(label)
    raw = label.encode("utf-8", "surrogateescape")
    if len(raw) <= fmt.caps.label:
        return label
    return raw[:fmt.caps.label].decode("utf-8", "ignore")


def check_capabilities(fs: FsSpec) -> None:
    """Refuse spec keys asking for what the format cannot store (one place for every format);
    keys the Rust fstool accepts and ignores for a format are ignored here too, with a warning."""
    fmt = format_for(fs.type, f"{fs.where}.type")
    caps = fmt.caps
    if fs.label is not None and caps.label is None:
        raise SpecError(f"{fs.type} has no volume label", where=f"{fs.where}.label")
    if fs.label:
        stored = stored_label(fmt, fs.label)
        if stored != fs.label:
            warn(f"{fs.type} stores the label {fs.label!r} as {stored!r}", where=f"{fs.where}.label")
            fs.label = stored
    if fs.rootdevs != "none" and not caps.devices:
        warn(f"ignored: {fs.type} cannot store device nodes", where=f"{fs.where}.rootdevs")
        fs.rootdevs = "none"
    if fs.journal_blocks is not None and not caps.journal:
        warn(f"ignored: {fs.type} has no journal", where=f"{fs.where}.journal_blocks")
        fs.journal_blocks = None
    if fs.mtime is not None and not caps.times:
        warn(f"ignored: {fs.type} stores no times", where=f"{fs.where}.mtime")
        fs.mtime = None
    if fs.uuid is not None and not caps.uuid:
        hint = "; its serial number is volume_id (e.g. \"1234-ABCD\")" if caps.volume_id else ""
        raise SpecError(f"{fs.type} has no UUID{hint}", where=f"{fs.where}.uuid")
    if fs.volume_id is not None and not caps.volume_id:
        # the Rust fstool takes volume_id in every [filesystem] and uses it for FAT only
        hint = " (its identifier is uuid)" if caps.uuid else ""
        warn(f"ignored: {fs.type} has no volume serial{hint}", where=f"{fs.where}.volume_id")
    declared = [k for k in ("selinux_file_contexts",) if getattr(fs, k)]
    declared += [f"overrides ({o['path']})" for o in fs.overrides if o.get("xattrs")]
    if declared and not caps.xattrs:
        raise SpecError(f"{fs.type} stores no xattrs, so it cannot hold the security metadata "
                        f"declared in {', '.join(declared)}", where=fs.where)
    if fs.block_size is not None and caps.block_sizes is None:
        raise SpecError(f"{fs.type} has no block size to choose", where=f"{fs.where}.block_size")


def parse_format_options(fs: FsSpec) -> None:
    """Check fs against its format and parse its format options, before any input is read.

    The typed result rides on fs.opts to the writer, so an option error in the last
    partition of a disk is reported before the first byte of the first one is written.
    """
    fmt = format_for(fs.type, f"{fs.where}.type")
    check_capabilities(fs)
    if fmt.parse_options is not None:
        try:
            fs.opts = fmt.parse_options(make_params(fs, NO_SEED, size=fs.size))
        except SpecError as e:
            # a type of a journalling family built without one (ext2): the Rust fstool
            # ignores journal_blocks there, so do we
            if fs.journal_blocks is None or e.where[-1:] != [f"{fs.where}.journal_blocks"] \
                    or "no journal" not in e.message:
                raise
            warn(f"ignored: {fs.type} has no journal", where=f"{fs.where}.journal_blocks")
            fs.journal_blocks = None
            fs.opts = fmt.parse_options(make_params(fs, NO_SEED, size=fs.size))


def build_filesystem(fs: FsSpec, out: ImageFile, seed: bytes, *, size: int | None,
                     headroom: int = 0, partition_offset: int = 0, verbose: bool = False,
                     progress=None, tree: Tree | None = None) -> int:
    """The one way to build a filesystem: load its tree, check it fits the format, write it.

    Returns the image size in bytes. `seed` seeds derived identifiers (see fstool.ids);
    `seed=None` (fstool create) derives it from what was asked for plus the tree.
    """
    fmt = format_for(fs.type, f"{fs.where}.type")
    if fs.opts is None:
        parse_format_options(fs)
    # work the writer may adopt, begun while the tree loads (squashfs: its first blocks)
    head = fmt.start_head(fs) if tree is None else None
    try:
        if tree is None:
            tree = load_tree(fs)
        check_tree(fmt, tree, fs.where)
        # identifiers come from what was asked for and what went in: the spec's (or the CLI's)
        # seed plus the tree's fingerprint, so two trees under one spec get two UUIDs; a `seed`
        # key in the spec replaces both (make_params) for identifiers that never change
        if not fmt.caps.seeded:
            seed = NO_SEED
        elif seed is None:
            seed = create_seed(fs, tree)
        else:
            seed = hashlib.sha256(b"fstool-tree/" + seed + tree_fingerprint(tree)).digest()
        params = make_params(fs, seed, size=size,
                             headroom=headroom, partition_offset=partition_offset, verbose=verbose,
                             progress=progress)
        params.head_start = head
        if params.verbose:  # stats() walks the whole tree: only when someone reads it
            params.log(f"writing {fs.type}: {tree.stats()}")
        return fmt.writer_module(f"{fs.where}.type").write(tree, out, params)
    finally:
        if head is not None:
            head.close()


class _NoSeed(bytes):
    """The seed of a format that declares it derives no identifiers (`seeded=False`): any
    use is a bug in that declaration, caught here rather than as equal UUIDs everywhere."""

    def _refuse(self, *_a):
        raise AssertionError("a writer used the seed although its format declares seeded=False")

    hex = __add__ = __radd__ = __bytes__ = __iter__ = __getitem__ = _refuse


NO_SEED = _NoSeed()


def create_seed(fs: FsSpec, tree: Tree) -> bytes:
    """The seed for `fstool create`: what was asked for plus the tree's fingerprint."""
    desc = json.dumps({"type": fs.type, "label": fs.label, "size": fs.size,
                       "options": {k: str(v) for k, v in sorted(fs.options.items())}},
                      sort_keys=True)
    return hashlib.sha256(desc.encode() + tree_fingerprint(tree)).digest()


def check_output_against_inputs(output: str, inputs: list[str], where: str) -> None:
    """Refuse an output that is one of the inputs or lies inside a source directory: the
    build would replace its input, or image its own previous output."""
    out = os.path.realpath(output)
    for src in inputs:
        real = os.path.realpath(src)
        if out == real:
            raise OutputError(f"the output is also an input ({src}); nothing was written",
                              where=output)
        if os.path.isdir(real) and within(out, real):
            raise OutputError(f"the output is inside the source directory {src}, so a rebuild "
                              "would image it; write it elsewhere", where=output)


def spec_inputs(spec: Spec) -> list[str]:
    """Every host path a spec reads: sources, device tables, prebuilt partition images."""
    fss = [spec.fs] if spec.fs is not None else [p.fs for p in spec.disk.partitions if p.fs]
    paths = [spec.path]
    for fs in fss:
        paths += fs.sources
        paths += [p for p in (fs.device_table, fs.selinux_file_contexts, fs.fs_config) if p]
    if spec.disk is not None:
        paths += [p.image for p in spec.disk.partitions if p.image]
        paths += [b.image for b in spec.disk.blobs]
    return paths


def build(spec: "str | Spec", output: str, *, layout_json: str | None = None,
          verbose: bool = False, progress=None, format: str | None = None,
          roothash: str | None = None, force: bool = False) -> dict | None:
    """Build what a spec describes (a filesystem or a disk) into output, atomically.

    The library's entry point: `fstool.build("disk.toml", "disk.img")`. Returns the disk's
    layout (as --layout-json writes it), or None for a filesystem spec. Errors name the spec.
    The output container (raw, qcow2, Android sparse, bmap) is `format`, else the disk's
    `[image] format`, else the output's extension (fstool.container); `roothash` receives the
    dm-verity root hash of the disk's verity partition. A block device as output needs
    force=True (a mounted one is refused).
    """
    from .container import container_output, plan_output
    from .spec import load_spec

    if isinstance(spec, str):
        spec = load_spec(spec)
    try:
        if layout_json and spec.disk is None:
            raise SpecError("--layout-json needs a disk spec ([image] with [[partitions]])")
        if roothash and spec.disk is None:
            raise SpecError("--roothash needs a disk spec with a verity partition")
        explicit = format or (spec.disk.format if spec.disk is not None else None)
        plan = plan_output(output, explicit, "--format" if format else "image.format")
        outputs = [plan.image] + ([plan.bmap] if plan.bmap else [])
        for o in outputs:
            check_output_against_inputs(o, spec_inputs(spec), spec.path)
        with container_output(plan, force=force) as out:
            if spec.fs is not None:
                size = spec.fs.size if spec.fs.size is not None or not out.device else out.limit
                build_filesystem(spec.fs, out, spec.seed, size=size, verbose=verbose,
                                 progress=progress)
                return None
            from .disk import build_disk, write_layout
            layout = build_disk(spec, out, verbose=verbose, progress=progress)
            hashes = sorted({p["verity"]["root_hash"] for p in layout["partitions"] if "verity" in p})
            if roothash and len(hashes) != 1:
                raise SpecError(f"--roothash needs exactly one verity partition set, the disk has "
                                f"{len(hashes)}")
        if layout_json:
            write_layout(layout_json, layout)
        if roothash:
            from .image import atomic_output
            with atomic_output(roothash) as f:
                f.pwrite(hashes[0].encode() + b"\n", 0)
        return layout
    except FstoolError as e:
        raise e.within(spec.path) from None
