"""fstool_image: build a TOML/JSON spec written for the (Rust-compatible) fstool CLI.

A spec names its inputs by paths relative to its own directory. The rule recreates
that directory in `<name>.stage/`: the spec and every src are symlinked there under
the name the spec uses, and `fstool build` runs on the staged spec (one action,
mnemonic FsImage, or DiskImage for a disk) with `--relative-to spec`: a TOML spec
written for the fstool command line (relative paths from the working directory) reads
its inputs from the staged directory, as when it is run from its own directory.
"""

load("//rules:providers.bzl", "DiskImageInfo", "FsImageInfo")
load(":common.bzl", "TOOLCHAINS", "attr_error", "normalize_image_path", "run_fstool")
load(":fs_types.bzl", "FS_TYPES")

def _stage(ctx, name, f, attribute):
    if f.is_directory:
        attr_error(ctx, attribute, "%s is a directory; give the spec a tar or a JSON manifest instead" % f.short_path)
    clean = normalize_image_path(name)[1:]
    if not clean or name.startswith("/") or ".." in name.split("/"):
        attr_error(ctx, attribute, "%r must be a relative path below the spec's directory" % name)
    out = ctx.actions.declare_file("%s.stage/%s" % (ctx.label.name, clean))
    ctx.actions.symlink(output = out, target_file = f)
    return out

def _fstool_image_impl(ctx):
    spec = _stage(ctx, ctx.file.spec.basename, ctx.file.spec, "spec")
    staged = [spec]
    for target, name in ctx.attr.srcs.items():
        files = target[DefaultInfo].files.to_list()
        if len(files) != 1:
            attr_error(ctx, "srcs", "%s gives %d files; each key must give exactly one (the spec names it %r)" %
                                    (target.label, len(files), name))
        staged.append(_stage(ctx, name, files[0], "srcs"))

    image = ctx.actions.declare_file(ctx.label.name + ".img")
    outputs = [image]
    args = ctx.actions.args()
    args.add("build")
    args.add("-q")
    args.add("--relative-to", "spec")
    args.add(spec)
    args.add("-o", image)
    providers = []
    if ctx.attr.disk:
        layout = ctx.actions.declare_file(ctx.label.name + ".layout.json")
        outputs.append(layout)
        args.add("--layout-json", layout)
        providers.append(DiskImageInfo(
            image = image,
            format = "raw",
            partition_table = "",
            layout = layout,
            partitions = [],
            blobs = [],
            roothash = None,
        ))
        providers.append(OutputGroupInfo(layout = depset([layout])))
    else:
        providers.append(FsImageInfo(
            image = image,
            format = "raw",
            fs_type = ctx.attr.fs_type,
            size = "",
            label = "",
            uuid = "",
        ))
    run_fstool(
        ctx,
        mnemonic = "DiskImage" if ctx.attr.disk else "FsImage",
        progress_message = "Building %s from %s" % (ctx.label, ctx.file.spec.short_path),
        arguments = [args],
        inputs = staged,
        outputs = outputs,
    )
    return [DefaultInfo(files = depset([image]))] + providers

fstool_image = rule(
    implementation = _fstool_image_impl,
    attrs = dict(
        spec = attr.label(
            mandatory = True,
            allow_single_file = [".toml", ".json"],
            doc = "The spec: `[filesystem]`, or `[image]` with `[[partitions]]`.",
        ),
        srcs = attr.label_keyed_string_dict(
            allow_files = True,
            doc = "Each input the spec names, by the path the spec uses (relative to the " +
                  "spec's directory): `{\":rootfs_tar\": \"rootfs.tar\"}`. Each key gives " +
                  "one file (a tar, a JSON manifest, a device table, a prebuilt image).",
        ),
        disk = attr.bool(
            default = False,
            doc = "The spec describes a disk: also write `<name>.layout.json` (output group " +
                  "`layout`) and provide DiskImageInfo instead of FsImageInfo.",
        ),
        fs_type = attr.string(
            values = FS_TYPES + [""],
            doc = "The spec's filesystem type, for FsImageInfo (and a partition's default type).",
        ),
    ),
    toolchains = TOOLCHAINS,
    doc = "An image `<name>.img` from a spec file for the fstool command line.",
)
