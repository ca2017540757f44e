"""fs_image and squashfs_image: one filesystem image from files, tars and directories.

Analysis turns the content attributes into generated files and one action:

- `<name>.manifest.json`, a fstool JSON manifest (`relative_to = "cwd"`: sources are
  exec paths) listing `srcs`, `empty_dirs` and `symlinks`, with one more manifest per
  directory in `srcs` (`<name>.dirN.manifest.json`, its files listed at execution);
- `<name>.spec.json`, a fstool spec whose `source` layers the `tars` (bottom, in order)
  under the manifest, and which carries size, label, uuid, mtime, options and the
  per-path `modes`/`owners` as overrides (applied last, so they reach into tars too);
- one `fstool build` action (mnemonic FsImage, or SquashfsImage) writing `<name>.img`.
"""

load("//rules:providers.bzl", "FsImageInfo")
load(
    ":common.bzl",
    "TOOL_ATTRS",
    "attr_error",
    "declare_spec",
    "normalize_image_path",
    "repo_relative_path",
    "run_fstool",
    "spec_path",
    "write_json",
)

FS_TYPES = ["ext2", "ext3", "ext4", "vfat", "fat12", "fat16", "fat32", "squashfs"]

SQUASHFS_COMPRESSIONS = ["gzip", "xz", "lzma", "lz4", "zstd"]

TAR_EXTENSIONS = [".tar", ".tar.gz", ".tgz", ".tar.xz", ".txz", ".tar.zst", ".tzst", ".tar.bz2", ".tbz2"]

# Generic fstool keys that have an attribute of their own: setting them again through
# extra_options would be ambiguous.
_OWN_ATTRIBUTE = {
    "block_size": "block_size",
    "device_table": "device_table",
    "headroom": "headroom",
    "label": "label",
    "mtime": "mtime",
    "rootdevs": "rootdevs",
    "size": "size",
    "uuid": "uuid",
    "volume_label": "label",
}

# Attributes every filesystem rule has (the rules_pkg pkg_tar vocabulary where it fits).
CONTENT_ATTRS = {
    "srcs": attr.label_list(
        allow_files = True,
        doc = "Files and directories (tree artifacts) placed under `package_dir`.",
    ),
    "package_dir": attr.string(
        default = "/",
        doc = "The image directory `srcs` go into.",
    ),
    "strip_prefix": attr.string(
        default = "",
        doc = "Which part of a src's path to drop: `\"\"` keeps only the file name, " +
              "`\".\"` keeps the path below this package, `\"/dir\"` the path below " +
              "`dir` of the repository, `\"dir\"` the path below this package's `dir`.",
    ),
    "tars": attr.label_list(
        allow_files = TAR_EXTENSIONS,
        doc = "Tars unpacked at `/`, layered in order below `srcs` (later ones win; OCI " +
              "`.wh.` whiteouts in the second and later ones delete what is below).",
    ),
    "symlinks": attr.string_dict(
        doc = "Symbolic links to create: `{\"/image/path\": \"target\"}`.",
    ),
    "empty_dirs": attr.string_list(
        doc = "Directories to create (mode 0755 unless `modes` says otherwise).",
    ),
    "modes": attr.string_dict(
        doc = "Octal modes by image path, e.g. `{\"/etc/shadow\": \"0600\"}`; applied " +
              "last, to any path (also ones from tars and directories).",
    ),
    "owners": attr.string_dict(
        doc = "Owners by image path as `\"uid.gid\"` (or `\"uid:gid\"`); applied last.",
    ),
    "device_table": attr.label(
        allow_single_file = True,
        doc = "A genext2fs device table adding or changing nodes.",
    ),
    "rootdevs": attr.string(
        default = "none",
        values = ["none", "minimal", "standard"],
        doc = "Add the `/dev` nodes the Rust fstool adds (`minimal`, `standard`).",
    ),
    "mtime": attr.int(
        default = 0,
        doc = "Every timestamp in the image, and the filesystem's own times (seconds).",
    ),
    # `size` in the public macros (a rule attribute named `size` crashes Bazel 4.2.3,
    # which reserves it for tests).
    "image_size": attr.string(
        default = "auto",
        doc = "Image size such as `\"64MiB\"`, or `\"auto\"`: the smallest that holds " +
              "the content plus `headroom`.",
    ),
    "headroom": attr.string(
        default = "",
        doc = "Free space added to an `auto` size, such as `\"16MiB\"`.",
    ),
    "block_size": attr.string(
        default = "",
        doc = "Filesystem block size (ext: 1024/2048/4096; squashfs: 4KiB to 1MiB).",
    ),
    "extra_options": attr.string_dict(
        doc = "Any other `fstool create -O` key, e.g. `{\"journal_blocks\": \"1024\"}`.",
    ),
}

def _dest_path(ctx, f):
    """Where src `f` goes in the image (rules_pkg strip_prefix semantics)."""
    path = repo_relative_path(f)
    strip = ctx.attr.strip_prefix
    rel = f.basename
    if strip:
        if strip.startswith("/"):
            prefix = strip
        else:
            prefix = ctx.label.package + "/" + strip
        prefix = normalize_image_path(prefix)[1:]
        if prefix == "":
            rel = path
        elif path.startswith(prefix + "/"):
            rel = path[len(prefix) + 1:]
        else:
            attr_error(ctx, "strip_prefix", "%s is not below %s/ (\"/dir\" starts at the " % (path, prefix) +
                                            "repository root, \"dir\" at this package)")
    return normalize_image_path(ctx.attr.package_dir + "/" + rel)

def _tree_file_entry(f):
    # map_each of a directory's expansion: one manifest entry per file it holds. Bazel
    # makes every output file r-xr-xr-x (or whatever a remote cache restores), so the
    # mode is set here rather than read: 0755, keeping what an executable needs.
    return json.encode({"kind": "file", "path": f.tree_relative_path, "source": f.path, "mode": "0755"})

def _tree_manifest(ctx, directory, index):
    """A manifest listing the files of a directory (tree artifact), written when it exists.

    fstool could read the directory itself, but the linux-sandbox stages a directory's
    files as symlinks into the execroot, which fstool would copy as symlinks. Listed file
    by file, the files are read through those symlinks. (Empty subdirectories are not
    listed; the root entry comes first so that every file entry can start with a comma.)
    """
    out = ctx.actions.declare_file("%s.dir%d.manifest.json" % (ctx.label.name, index))
    args = ctx.actions.args()
    args.set_param_file_format("multiline")
    args.add('{"relative_to": "cwd", "file_modes": "exec_bit", "entries": [{"kind": "dir", "path": "/"}')
    args.add_all([directory], map_each = _tree_file_entry, format_each = ",%s", expand_directories = True)
    args.add("]}")
    ctx.actions.write(out, args)
    return out

def _manifest_entries(ctx):
    """The main manifest's entries, and the manifests of directories in srcs."""
    entries = []
    tree_manifests = []
    seen = {}
    for d in ctx.attr.empty_dirs:
        entries.append({"kind": "dir", "path": normalize_image_path(d)})
    for target in ctx.attr.srcs:
        # A source file keeps its executable bit (0755 or 0644: file_modes = exec_bit). A
        # generated file's mode says nothing (Bazel leaves every output r-xr-xr-x), so,
        # as rules_pkg does, the program of an executable rule is 0755 and others 0644.
        executable = target[DefaultInfo].files_to_run.executable
        for f in target.files.to_list():
            dest = _dest_path(ctx, f)
            if dest in seen:
                attr_error(ctx, "srcs", "%s and %s both go to %s (use strip_prefix or package_dir)" %
                                        (seen[dest], f.short_path, dest))
            seen[dest] = f.short_path
            if f.is_directory:
                listing = _tree_manifest(ctx, f, len(tree_manifests))
                tree_manifests.append(listing)
                entries.append({"kind": "tree", "path": dest, "source": listing.path})
            else:
                entry = {"kind": "file", "path": dest, "source": f.path}
                if not f.is_source:
                    entry["mode"] = "0755" if f == executable else "0644"
                entries.append(entry)
    for path, target in sorted(ctx.attr.symlinks.items()):
        if not target:
            attr_error(ctx, "symlinks", "%s has an empty target" % path)
        entries.append({"kind": "symlink", "path": normalize_image_path(path), "target": target})
    return entries, tree_manifests

def _parse_owner(ctx, path, owner):
    sep = "." if "." in owner else ":"
    parts = owner.split(sep)
    if len(parts) != 2 or not parts[0].isdigit() or not parts[1].isdigit():
        attr_error(ctx, "owners", "%s: expected \"uid.gid\" with numbers, got %r" % (path, owner))
    return int(parts[0]), int(parts[1])

def _overrides(ctx):
    by_path = {}
    for path, mode in ctx.attr.modes.items():
        digits = mode[2:] if mode.startswith("0o") else mode
        if not digits or len(digits) > 5 or [c for c in digits.elems() if c not in "01234567"]:
            attr_error(ctx, "modes", "%s: expected an octal mode like \"0644\", got %r" % (path, mode))
        by_path.setdefault(normalize_image_path(path), {})["mode"] = mode
    for path, owner in ctx.attr.owners.items():
        uid, gid = _parse_owner(ctx, path, owner)
        o = by_path.setdefault(normalize_image_path(path), {})
        o["uid"] = uid
        o["gid"] = gid
    out = []
    for path in sorted(by_path):
        o = {"path": path}
        o.update(by_path[path])
        out.append(o)
    return out

def _options(ctx, own_options):
    """The spec's options table: extra_options plus the options the rule's attributes set."""
    options = dict(own_options)
    for key, value in ctx.attr.extra_options.items():
        attribute = key if key in own_options else _OWN_ATTRIBUTE.get(key)
        if attribute:
            attr_error(ctx, "extra_options", "%r has an attribute of its own: set %s = ... instead" %
                                             (key, attribute))
        options[key] = value
    return options

def build_filesystem(ctx, *, fs_type, mnemonic, label = "", uuid = "", format_options = {}):
    """Declares the manifest, the spec and the writer action of a filesystem rule.

    Args:
      ctx: the rule context (with CONTENT_ATTRS and the tool).
      fs_type: the canonical filesystem type.
      mnemonic: the writer action's mnemonic.
      label: the volume label, or "".
      uuid: the filesystem UUID, or "".
      format_options: format options set by the rule's own attributes.

    Returns:
      The rule's providers: DefaultInfo, FsImageInfo and OutputGroupInfo.
    """
    image = ctx.actions.declare_file(ctx.label.name + ".img")
    manifest = ctx.actions.declare_file(ctx.label.name + ".manifest.json")
    entries, tree_manifests = _manifest_entries(ctx)
    write_json(ctx, manifest, {
        "version": 1,
        "relative_to": "cwd",
        # 0755/0644 by the executable bit: the checkout's umask must not change the image
        "file_modes": "exec_bit",
        "entries": entries,
    })
    spec = declare_spec(ctx)
    layers = ctx.files.tars + [manifest]
    fs = {
        "type": fs_type,
        "source": [spec_path(spec, f) for f in layers],
        "size": ctx.attr.image_size,
        "mtime": ctx.attr.mtime,
        "rootdevs": ctx.attr.rootdevs,
    }
    if ctx.attr.headroom:
        fs["headroom"] = ctx.attr.headroom
    if ctx.attr.block_size:
        fs["block_size"] = ctx.attr.block_size
    if label:
        fs["volume_label"] = label
    if uuid:
        fs["uuid"] = uuid
    inputs = ctx.files.srcs + tree_manifests + layers
    if ctx.file.device_table:
        fs["device_table"] = spec_path(spec, ctx.file.device_table)
        inputs.append(ctx.file.device_table)
    options = _options(ctx, format_options)
    if options:
        fs["options"] = options
    overrides = _overrides(ctx)
    if overrides:
        fs["overrides"] = overrides
    write_json(ctx, spec, {"filesystem": fs})
    inputs.append(spec)

    args = ctx.actions.args()
    args.add("build")
    args.add(spec)
    args.add("-o", image)
    run_fstool(
        ctx,
        mnemonic = mnemonic,
        progress_message = "Writing %s image %s" % (fs_type, ctx.label),
        arguments = [args],
        inputs = inputs,
        outputs = [image],
    )
    return [
        DefaultInfo(files = depset([image])),
        FsImageInfo(
            image = image,
            fs_type = fs_type,
            size = ctx.attr.image_size,
            label = label,
            uuid = uuid,
        ),
        OutputGroupInfo(
            manifest = depset([manifest, spec] + tree_manifests),
        ),
    ]

def _fs_image_impl(ctx):
    fs_type = ctx.attr.fs_type
    if fs_type == "squashfs" and ctx.attr.label:
        attr_error(ctx, "label", "squashfs has no volume label")
    if fs_type == "squashfs" and ctx.attr.uuid:
        attr_error(ctx, "uuid", "squashfs has no UUID")
    if fs_type in ("vfat", "fat12", "fat16", "fat32") and ctx.attr.uuid:
        attr_error(ctx, "uuid", "FAT has no UUID; set its volume id with " +
                                "extra_options = {\"volume_id\": \"1234-ABCD\"}")
    return build_filesystem(
        ctx,
        fs_type = fs_type,
        mnemonic = "SquashfsImage" if fs_type == "squashfs" else "FsImage",
        label = ctx.attr.label,
        uuid = ctx.attr.uuid,
    )

fs_image = rule(
    implementation = _fs_image_impl,
    attrs = dict(
        CONTENT_ATTRS,
        fs_type = attr.string(
            default = "ext4",
            values = FS_TYPES,
            doc = "The filesystem: ext2, ext3, ext4, vfat (FAT type by size), fat12, " +
                  "fat16, fat32 or squashfs.",
        ),
        label = attr.string(doc = "Volume label."),
        uuid = attr.string(doc = "Filesystem UUID (default: derived from the inputs)."),
        **TOOL_ATTRS
    ),
    provides = [FsImageInfo],
    doc = "A filesystem image `<name>.img` (ext2/3/4, FAT or SquashFS).",
)

def _squashfs_image_impl(ctx):
    options = {"compression": ctx.attr.compression}
    if ctx.attr.compression_level >= 0:
        options["compression_level"] = str(ctx.attr.compression_level)
    return build_filesystem(
        ctx,
        fs_type = "squashfs",
        mnemonic = "SquashfsImage",
        format_options = options,
    )

squashfs_image = rule(
    implementation = _squashfs_image_impl,
    attrs = dict(
        CONTENT_ATTRS,
        compression = attr.string(
            default = "zstd",
            values = SQUASHFS_COMPRESSIONS,
            doc = "The compressor.",
        ),
        compression_level = attr.int(
            default = -1,
            doc = "The compressor's level (gzip 1-9, xz 0-9, lz4 0-1, zstd 1-22); -1 " +
                  "for its default.",
        ),
        **TOOL_ATTRS
    ),
    provides = [FsImageInfo],
    doc = "A SquashFS image `<name>.img`.",
)
