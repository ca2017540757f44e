"""fs_image and squashfs_image: one filesystem image from files, tars and directories.

Analysis turns the content attributes into generated files and one action:

- `<name>.manifest.json`, a fstool JSON manifest (`relative_to = "cwd"`: sources are
  exec paths) listing `srcs`, `empty_dirs` and `symlinks`, with one more manifest per
  directory in `srcs` (`<name>.dirN.manifest.json`, its files listed at execution);
- `<name>.spec.json`, a fstool spec whose `source` layers the `tars` (bottom, in order)
  under the manifest, and which carries size, label, uuid, mtime, options and the
  per-path `modes`/`owners` as overrides (applied last, so they reach into tars too);
- one `fstool build` action (mnemonic FsImage, or SquashfsImage) writing `<name>.img`
  (or the container `format` asks for: `<name>.qcow2`, `<name>.simg`, or `<name>.img`
  with `<name>.img.bmap`).
"""

load(
    "@rules_pkg//pkg:providers.bzl",
    "PackageDirsInfo",
    "PackageFilegroupInfo",
    "PackageFilesInfo",
    "PackageSymlinkInfo",
)
load("//rules:providers.bzl", "FsImageInfo")
load(
    ":common.bzl",
    "TOOLCHAINS",
    "attr_error",
    "declare_output",
    "declare_spec",
    "format_attr",
    "normalize_image_path",
    "repo_relative_path",
    "run_fstool",
    "spec_path",
    "write_json",
)
load(":fs_types.bzl", "FS_TYPES")

SQUASHFS_COMPRESSIONS = ["gzip", "xz", "lzma", "lz4", "zstd"]

TAR_EXTENSIONS = [".tar", ".tar.gz", ".tgz", ".tar.xz", ".txz", ".tar.zst", ".tzst", ".tar.bz2", ".tbz2"]

# Generic fstool keys that have an attribute of their own: setting them again through
# extra_options would be ambiguous.
_OWN_ATTRIBUTE = {
    "block_size": "block_size",
    "device_table": "device_table",
    "fs_config": "fs_config",
    "headroom": "headroom",
    "label": "label",
    "mtime": "mtime",
    "rootdevs": "rootdevs",
    "selinux_file_contexts": "file_contexts",
    "size": "size",
    "uuid": "uuid",
    "volume_label": "label",
}

# Attributes every filesystem rule has (the rules_pkg pkg_tar vocabulary where it fits).
CONTENT_ATTRS = {
    "srcs": attr.label_list(
        allow_files = True,
        doc = "Files, directories (tree artifacts) and rules_pkg targets (pkg_files, " +
              "pkg_mkdirs, pkg_mklink, pkg_filegroup) placed under `package_dir`.",
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
    "mode": attr.string(
        default = "0644",
        doc = "The mode of every file from `srcs` that says none itself; the programs of " +
              "executable targets are 0755, directories 0755. Never read from the checkout.",
    ),
    "include_runfiles": attr.bool(
        default = False,
        doc = "Also place the runfiles of executable `srcs` in `<dest>.runfiles/<repo>/...`.",
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
    # A string: attr.int is 32 bits, and dates past 2038 need more. The public macros
    # take an int too.
    "mtime": attr.string(
        default = "0",
        doc = "Every timestamp in the image, and the filesystem's own times (seconds).",
    ),
    "stamp": attr.int(
        default = 0,
        values = [-1, 0, 1],
        doc = "1: take the times from BUILD_TIMESTAMP of the workspace status; 0: `mtime`; " +
              "-1: 1 under `--stamp`, else 0 (as pkg_tar).",
    ),
    "private_stamp_detect": attr.bool(
        default = False,
        doc = "Set by the macros: whether `--stamp` is on (for `stamp = -1`).",
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
    "format": format_attr("image"),
    # Security metadata (issue 18): written as the xattr bytes the kernel's tools write,
    # without root. Applied in fstool's documented order: file_contexts labels, then the
    # per-path overrides (xattrs, capabilities, ACLs, modes, owners), then fs_config.
    "xattrs": attr.string_list_dict(
        doc = "Extended attributes by image path, each `\"name=value\"` (split at the " +
              "first `=`), the value as text, `0x` hex or `base64:...`: " +
              "`{\"/usr/bin/app\": [\"user.origin=bazel\", \"trusted.k=0x0102\"]}`.",
    ),
    "capabilities": attr.string_dict(
        doc = "File capabilities by image path, as `setcap` takes them: " +
              "`{\"/usr/bin/ping\": \"cap_net_raw+ep\"}` (stored as `security.capability` v2).",
    ),
    "acls": attr.string_dict(
        doc = "POSIX access ACLs by image path, in `setfacl` text form: " +
              "`{\"/srv\": \"user::rwx,user:1000:r-x,group::r-x,mask::r-x,other::---\"}` " +
              "(stored as `system.posix_acl_access`; ext only: SquashFS stores no ACLs).",
    ),
    "default_acls": attr.string_dict(
        doc = "POSIX default ACLs of directories by image path, same text form " +
              "(stored as `system.posix_acl_default`).",
    ),
    "file_contexts": attr.label(
        allow_single_file = True,
        doc = "A SELinux policy's `file_contexts`: every entry gets `security.selinux` " +
              "from its last matching line, as `setfiles` labels a tree.",
    ),
    "fs_config": attr.label(
        allow_single_file = True,
        doc = "An Android `fs_config` table (`path uid gid mode [capabilities=MASK]`, as " +
              "`e2fsdroid -C` reads it), applied after every other metadata rule.",
    ),
}

def _check_mode(ctx, attribute, what, mode):
    digits = mode[2:] if mode.startswith("0o") else mode
    if not digits or len(digits) > 5 or [c for c in digits.elems() if c not in "01234567"]:
        attr_error(ctx, attribute, "%s: expected an octal mode like \"0644\", got %r" % (what, mode))
    return mode

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
    # map_each of a directory's expansion: the start of one manifest entry per file (the
    # format string adds the mode and owner).
    return json.encode(f.tree_relative_path) + ", \"source\": " + json.encode(f.path)

def _tree_manifest(ctx, directory, index, mode, uid, gid):
    """A manifest listing the files of a directory (tree artifact), written when it exists.

    The image holds what Bazel says the directory is, so that it is the same wherever the
    action runs: the files Bazel lists (a sandbox stages each as a symlink, a remote
    executor as a file; both are read through, so a relative symlink inside the directory
    becomes the file it points to, as Bazel's own input tree has it), each with `mode`
    (Bazel leaves every file of a directory output r-xr-xr-x, and a remote executor
    stages inputs executable), and their parent directories at 0755. Empty directories
    are not part of Bazel's view (neither the sandbox nor remote execution stages them).
    """
    out = ctx.actions.declare_file("%s.dir%d.manifest.json" % (ctx.label.name, index))
    args = ctx.actions.args()
    args.set_param_file_format("multiline")
    args.add('{"relative_to": "cwd", "file_modes": "explicit", "entries": [')
    args.add(json.encode({"kind": "dir", "path": "/", "mode": "0755", "uid": uid, "gid": gid}))
    args.add_all(
        [directory],
        map_each = _tree_file_entry,
        format_each = ',{"kind": "file", "mode": "%s", "uid": %d, "gid": %d, "path": ' % (mode, uid, gid) +
                      "%s}",
        expand_directories = True,
    )
    args.add("]}")
    ctx.actions.write(out, args)
    return out

def _pkg_attributes(ctx, what, attributes, default_mode):
    """(mode, uid, gid) from a rules_pkg `attributes` dict."""
    attributes = attributes or {}
    mode = attributes.get("mode") or default_mode
    _check_mode(ctx, "srcs", what, mode)
    ids = []
    for key, name_key in (("uid", "user"), ("gid", "group")):
        value = attributes.get(key)
        if value == None and attributes.get(name_key):
            attr_error(ctx, "srcs", "%s: %s = %r has no numeric %s; images store numbers only" %
                                    (what, name_key, attributes[name_key], key))
        ids.append(int(value) if value != None else 0)
    return mode, ids[0], ids[1]

def _runfiles_path(ctx, f):
    """Where f lies in a runfiles tree: `<repo>/<path>`."""
    if f.short_path.startswith("../"):
        return f.short_path[3:]
    return ctx.workspace_name + "/" + f.short_path

def _new_content():
    return struct(entries = [], tree_manifests = [], inputs = [], seen = {})

def _claim(ctx, content, dest, what):
    if dest in content.seen:
        attr_error(ctx, "srcs", "%s and %s both go to %s (use strip_prefix, package_dir or " %
                                (content.seen[dest], what, dest) + "the rules_pkg destinations)")
    content.seen[dest] = what

def _add_file(ctx, content, dest, f, mode, uid = 0, gid = 0):
    """One file (or directory output) of srcs at image path dest."""
    _claim(ctx, content, dest, f.short_path)
    content.inputs.append(f)
    if f.is_directory:
        listing = _tree_manifest(ctx, f, len(content.tree_manifests), mode, uid, gid)
        content.tree_manifests.append(listing)
        content.entries.append({"kind": "tree", "path": dest, "source": listing.path})
    else:
        entry = {"kind": "file", "path": dest, "source": f.path, "mode": mode}
        if uid or gid:
            entry["uid"] = uid
            entry["gid"] = gid
        content.entries.append(entry)

def _under_package_dir(ctx, dest):
    return normalize_image_path(ctx.attr.package_dir + "/" + dest)

def _add_pkg_files(ctx, content, info, origin):
    for dest, f in sorted(info.dest_src_map.items()):
        what = "%s (%s)" % (dest, origin)
        mode, uid, gid = _pkg_attributes(ctx, what, info.attributes, ctx.attr.mode)
        _add_file(ctx, content, _under_package_dir(ctx, dest), f, mode, uid, gid)

def _add_pkg_dirs(ctx, content, info, origin):
    for d in info.dirs:
        mode, uid, gid = _pkg_attributes(ctx, "%s (%s)" % (d, origin), info.attributes, "0755")
        content.entries.append({
            "kind": "dir",
            "path": _under_package_dir(ctx, d),
            "mode": mode,
            "uid": uid,
            "gid": gid,
        })

def _add_pkg_symlink(ctx, content, info, origin):
    dest = _under_package_dir(ctx, info.destination)
    _claim(ctx, content, dest, str(origin))
    _, uid, gid = _pkg_attributes(ctx, "%s (%s)" % (info.destination, origin), info.attributes, "0777")
    content.entries.append({"kind": "symlink", "path": dest, "target": info.target, "uid": uid, "gid": gid})

def _add_target(ctx, content, target):
    """The content one `srcs` target gives: rules_pkg providers first, else its files."""
    if PackageFilegroupInfo in target:
        info = target[PackageFilegroupInfo]
        for files, origin in info.pkg_files:
            _add_pkg_files(ctx, content, files, origin)
        for dirs, origin in info.pkg_dirs:
            _add_pkg_dirs(ctx, content, dirs, origin)
        for link, origin in info.pkg_symlinks:
            _add_pkg_symlink(ctx, content, link, origin)
        return
    pkg = False
    if PackageFilesInfo in target:
        _add_pkg_files(ctx, content, target[PackageFilesInfo], target.label)
        pkg = True
    if PackageDirsInfo in target:
        _add_pkg_dirs(ctx, content, target[PackageDirsInfo], target.label)
        pkg = True
    if PackageSymlinkInfo in target:
        _add_pkg_symlink(ctx, content, target[PackageSymlinkInfo], target.label)
        pkg = True
    if pkg:
        return

    # Modes come from attributes only (as rules_pkg does): the program of an executable
    # target 0755, every other file `mode`. The checkout's executable bit is not part of
    # Bazel's action key, so reading it would let a cache serve a stale image.
    executable = target[DefaultInfo].files_to_run.executable
    for f in target[DefaultInfo].files.to_list():
        dest = _dest_path(ctx, f)
        _add_file(ctx, content, dest, f, "0755" if f == executable else ctx.attr.mode)
        if f == executable and ctx.attr.include_runfiles:
            base = dest + ".runfiles/"
            for r in target[DefaultInfo].default_runfiles.files.to_list():
                _add_file(
                    ctx,
                    content,
                    base + _runfiles_path(ctx, r),
                    r,
                    "0755" if r == executable else ctx.attr.mode,
                )

def _content(ctx):
    """The main manifest's entries, the directory listings, and the files read."""
    content = _new_content()
    for d in ctx.attr.empty_dirs:
        content.entries.append({"kind": "dir", "path": normalize_image_path(d), "mode": "0755"})
    _check_mode(ctx, "mode", "mode", ctx.attr.mode)
    for target in ctx.attr.srcs:
        _add_target(ctx, content, target)
    for path, target in sorted(ctx.attr.symlinks.items()):
        if not target:
            attr_error(ctx, "symlinks", "%s has an empty target" % path)
        content.entries.append({"kind": "symlink", "path": normalize_image_path(path), "target": target})
    return content

def _parse_owner(ctx, path, owner):
    sep = "." if "." in owner else ":"
    parts = owner.split(sep)
    if len(parts) != 2 or not parts[0].isdigit() or not parts[1].isdigit():
        attr_error(ctx, "owners", "%s: expected \"uid.gid\" with numbers, got %r" % (path, owner))
    return int(parts[0]), int(parts[1])

def _overrides(ctx):
    by_path = {}
    for path, mode in ctx.attr.modes.items():
        _check_mode(ctx, "modes", path, mode)
        by_path.setdefault(normalize_image_path(path), {})["mode"] = mode
    for path, owner in ctx.attr.owners.items():
        uid, gid = _parse_owner(ctx, path, owner)
        o = by_path.setdefault(normalize_image_path(path), {})
        o["uid"] = uid
        o["gid"] = gid
    for path, items in ctx.attr.xattrs.items():
        xattrs = {}
        for item in items:
            name, eq, value = item.partition("=")
            if not eq or not name:
                attr_error(ctx, "xattrs", "%s: expected \"name=value\" (e.g. \"user.x=text\"), got %r" %
                                          (path, item))
            if name in xattrs:
                attr_error(ctx, "xattrs", "%s: xattr %s is given twice" % (path, name))
            xattrs[name] = value
        by_path.setdefault(normalize_image_path(path), {})["xattrs"] = xattrs
    for attribute, key in (("capabilities", "capabilities"), ("acls", "acl"), ("default_acls", "default_acl")):
        for path, value in getattr(ctx.attr, attribute).items():
            if not value:
                attr_error(ctx, attribute, "%s: the value is empty (leave the path out instead)" % path)
            by_path.setdefault(normalize_image_path(path), {})[key] = value
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

def build_filesystem(ctx, *, fs_type, mnemonic, label = "", uuid = "", format_options = {}, extra_inputs = []):
    """Declares the manifest, the spec and the writer action of a filesystem rule.

    Args:
      ctx: the rule context (with CONTENT_ATTRS and the tool).
      fs_type: the canonical filesystem type.
      mnemonic: the writer action's mnemonic.
      label: the volume label, or "".
      uuid: the filesystem UUID, or "".
      format_options: format options set by the rule's own attributes.
      extra_inputs: files those options name (by exec path).

    Returns:
      The rule's providers: DefaultInfo (the image, and its block map with
      format = "bmap"), FsImageInfo and OutputGroupInfo.
    """
    image, outputs, format_args = declare_output(ctx, ctx.attr.format)
    manifest = ctx.actions.declare_file(ctx.label.name + ".manifest.json")
    content = _content(ctx)
    write_json(ctx, manifest, {
        "version": 1,
        "relative_to": "cwd",
        # Every file entry says its mode: none is read from the checkout or the sandbox.
        "file_modes": "explicit",
        "entries": content.entries,
    })
    spec = declare_spec(ctx)
    layers = ctx.files.tars + [manifest]
    mtime = ctx.attr.mtime
    if not mtime.isdigit():
        attr_error(ctx, "mtime", "expected seconds since the epoch (digits), got %r" % mtime)
    fs = {
        "type": fs_type,
        "source": [spec_path(spec, f) for f in layers],
        "size": ctx.attr.image_size,
        "mtime": int(mtime),
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
    inputs = content.inputs + content.tree_manifests + layers + extra_inputs
    if ctx.file.device_table:
        fs["device_table"] = spec_path(spec, ctx.file.device_table)
        inputs.append(ctx.file.device_table)
    for key, f in (("selinux_file_contexts", ctx.file.file_contexts), ("fs_config", ctx.file.fs_config)):
        if f:
            fs[key] = spec_path(spec, f)
            inputs.append(f)
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
    args.add("-q")
    args.add(spec)
    args.add("-o", image)
    args.add_all(format_args)
    if ctx.attr.stamp == 1 or (ctx.attr.stamp == -1 and ctx.attr.private_stamp_detect):
        # The volatile status (BUILD_TIMESTAMP) is not part of the action key: a stamped
        # image is rebuilt when its inputs change, not every second (as pkg_tar).
        args.add("--mtime-from-status", ctx.version_file)
        inputs.append(ctx.version_file)
    run_fstool(
        ctx,
        mnemonic = mnemonic,
        progress_message = "Writing %s image %s" % (fs_type, ctx.label),
        arguments = [args],
        inputs = inputs,
        outputs = outputs,
    )
    return [
        DefaultInfo(files = depset(outputs)),
        FsImageInfo(
            image = image,
            format = ctx.attr.format,
            fs_type = fs_type,
            size = ctx.attr.image_size,
            label = label,
            uuid = uuid,
        ),
        OutputGroupInfo(
            manifest = depset([manifest, spec] + content.tree_manifests),
        ),
    ]

def _fs_image_impl(ctx):
    # Whether the format has a label or a UUID is the tool's to say (its registry knows
    # every format): the writer action fails naming filesystem.label / filesystem.uuid.
    return build_filesystem(
        ctx,
        fs_type = ctx.attr.fs_type,
        mnemonic = "FsImage",
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
            doc = "The filesystem type, one of FS_TYPES (fs_types.bzl): ext2, ext3, ext4, " +
                  "squashfs, erofs, fat (FAT type by size), vfat/fat32, fat12, fat16, exfat, " +
                  "f2fs, tar and their aliases.",
        ),
        label = attr.string(doc = "Volume label."),
        uuid = attr.string(doc = "Filesystem UUID (default: derived from the inputs)."),
    ),
    toolchains = TOOLCHAINS,
    provides = [FsImageInfo],
    doc = "A filesystem image `<name>.img` of any type of fstool's registry (FS_TYPES).",
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
    ),
    toolchains = TOOLCHAINS,
    provides = [FsImageInfo],
    doc = "A SquashFS image `<name>.img`.",
)

def _iso_image_impl(ctx):
    options = {}
    if ctx.attr.bios_boot:
        options["bios_boot"] = normalize_image_path(ctx.attr.bios_boot)
    elif ctx.attr.boot_info_table:
        attr_error(ctx, "boot_info_table", "patches the bios_boot file: set bios_boot")
    if ctx.attr.boot_info_table:
        options["boot_info_table"] = "true"
    inputs = []
    if ctx.attr.efi_boot:
        target = ctx.attr.efi_boot
        if FsImageInfo in target:
            info = target[FsImageInfo]
            if info.format not in ("raw", "bmap"):
                attr_error(ctx, "efi_boot", "%s is a %s image; El Torito needs the raw ESP: " %
                                            (target.label, info.format) + "build it with format = \"raw\"")
            esp = info.image
        else:
            files = target[DefaultInfo].files.to_list()
            if len(files) != 1:
                attr_error(ctx, "efi_boot", "%s gives %d files; the ESP image is exactly one" %
                                            (target.label, len(files)))
            esp = files[0]

        # A host file, named by its exec path: fstool resolves it from its working
        # directory, the execroot (the spec's own paths start at the spec's directory).
        options["efi_boot"] = esp.path
        inputs.append(esp)
    if ctx.attr.hybrid:
        if not (ctx.attr.bios_boot or ctx.attr.efi_boot):
            attr_error(ctx, "hybrid", "an isohybrid image boots from bios_boot or efi_boot: set one")
        options["hybrid"] = "true"
    if ctx.file.mbr_code:
        if not ctx.attr.hybrid:
            attr_error(ctx, "mbr_code", "is the hybrid MBR's boot code: it needs hybrid = True")
        options["mbr_code"] = ctx.file.mbr_code.path
        inputs.append(ctx.file.mbr_code)
    for key in ("joliet", "rock_ridge"):
        if not getattr(ctx.attr, key):
            options[key] = "false"
    return build_filesystem(
        ctx,
        fs_type = "iso9660",
        mnemonic = "IsoImage",
        label = ctx.attr.label,
        format_options = options,
        extra_inputs = inputs,
    )

iso_image = rule(
    implementation = _iso_image_impl,
    attrs = dict(
        CONTENT_ATTRS,
        label = attr.string(doc = "The volume id (32 characters; default derived)."),
        bios_boot = attr.string(
            doc = "Image path of the BIOS El Torito no-emulation boot file " +
                  "(`/boot/isolinux/isolinux.bin`, GRUB's `eltorito.img`), from `srcs` or `tars`.",
        ),
        boot_info_table = attr.bool(
            default = False,
            doc = "Patch the El Torito boot info table into `bios_boot` (isolinux and GRUB need it).",
        ),
        efi_boot = attr.label(
            allow_files = True,
            doc = "The UEFI El Torito image: an ESP, usually an fs_image with fs_type = " +
                  "\"vfat\" (raw format), or one prebuilt file.",
        ),
        hybrid = attr.bool(
            default = False,
            doc = "isohybrid: a protective MBR and a GPT (the ISO data, then the ESP) so the " +
                  "same file boots from a USB stick.",
        ),
        mbr_code = attr.label(
            allow_single_file = True,
            doc = "With `hybrid`: a file whose first 432 bytes are the MBR boot code " +
                  "(syslinux's `isohdpfx.bin`).",
        ),
        joliet = attr.bool(default = True, doc = "Add the Joliet tree (Windows names)."),
        rock_ridge = attr.bool(default = True, doc = "Add Rock Ridge (POSIX names, modes, links)."),
    ),
    toolchains = TOOLCHAINS,
    provides = [FsImageInfo],
    doc = "A bootable ISO 9660 image `<name>.img` (Rock Ridge, Joliet, El Torito, isohybrid).",
)
