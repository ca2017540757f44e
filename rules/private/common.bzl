"""Helpers shared by the rules: paths, the tool attribute, running the tool.

Every path handed to the tool is either an exec path (relative to the execroot, the
action's working directory) or relative to the generated spec's directory; none is
absolute, so the same inputs give the same action key in any checkout.
"""

load(":toolchain.bzl", "TOOLCHAIN_TYPE")

# What every rule that runs fstool declares: the tool comes from the toolchain.
TOOLCHAINS = [TOOLCHAIN_TYPE]

def relative_path(from_dir, to):
    """The path of `to` seen from directory `from_dir`.

    Args:
      from_dir: a directory, relative to the execroot.
      to: a path, relative to the execroot.

    Returns:
      `to` relative to `from_dir`, climbing with `..` where needed.
    """
    a = [c for c in from_dir.split("/") if c]
    b = [c for c in to.split("/") if c]
    common = 0
    for x, y in zip(a, b):
        if x != y:
            break
        common += 1
    return "/".join([".."] * (len(a) - common) + b[common:])

def repo_relative_path(f):
    """The path of a file inside its repository, whether source or generated.

    Args:
      f: a File.

    Returns:
      `pkg/dir/file` (no `external/<repo>/`, no `bazel-out/<config>/bin/`).
    """
    path = f.short_path
    if path.startswith("../"):
        # A file of an external repository: short_path is `../<repo>/<path>`.
        path = path.split("/", 2)[2] if path.count("/") >= 2 else ""
    return path

def normalize_image_path(path):
    """`/a/b` for any of `a/b`, `/a//b/`, `./a/b`."""
    parts = [c for c in path.split("/") if c and c != "."]
    return "/" + "/".join(parts)

# The writer and assembler actions may run in fstool's persistent worker (JSON protocol;
# Bazel 4.x needs --experimental_worker_allow_json_protocol, 6+ does not). Bazel picks it only
# when the strategy for the mnemonic allows it (`--config=worker` in .bazelrc); otherwise, and
# under remote execution, the same command line runs as a plain action (`fstool @params`).
WORKER_REQUIREMENTS = {
    "requires-worker-protocol": "json",
    "supports-workers": "1",
}

def run_fstool(ctx, *, mnemonic, progress_message, arguments, inputs, outputs):
    """Runs the toolchain's fstool hermetically: declared inputs only, no environment, no shell.

    The arguments go through a param file (one argument a line), which a worker request
    carries and the plain command line reads with `@file`: one command line for both.

    Args:
      ctx: the rule context (its toolchain provides fstool).
      mnemonic: the action's mnemonic (FsImage, SquashfsImage, DiskImage).
      progress_message: what Bazel prints while the action runs.
      arguments: a list of `Args`; each is given a param file.
      inputs: the action's inputs.
      outputs: the action's outputs.
    """
    for args in arguments:
        args.use_param_file("@%s", use_always = True)
        args.set_param_file_format("multiline")
    ctx.actions.run(
        executable = ctx.toolchains[TOOLCHAIN_TYPE].fstool,
        arguments = arguments,
        inputs = inputs,
        outputs = outputs,
        mnemonic = mnemonic,
        progress_message = progress_message,
        execution_requirements = WORKER_REQUIREMENTS,
    )

def declare_spec(ctx):
    """Declares `<name>.spec.json`; the spec's relative paths start at its directory."""
    return ctx.actions.declare_file(ctx.label.name + ".spec.json")

def write_json(ctx, output, content):
    """Writes `content` as indented JSON (no paths of the host, no times: byte-stable)."""
    ctx.actions.write(output, json.encode_indent(content, indent = "  ") + "\n")

def spec_path(spec, f):
    """How the spec File `spec` names File `f`: relative to the spec's directory."""
    return relative_path(spec.dirname, f.path)

def attr_error(ctx, attribute, message):
    """Fails the analysis with a message naming the target and the attribute."""
    fail("%s: attribute '%s': %s" % (ctx.label, attribute, message))

# The output containers (fstool.container.CONTAINERS) and the extension each gives the
# output; bmap writes the raw `<name>.img` and its block map `<name>.img.bmap` beside it
# (the name bmaptool looks for next to an image).
FORMATS = ["raw", "qcow2", "android-sparse", "android-sparse-crc", "bmap"]

_FORMAT_EXTENSIONS = {
    "android-sparse": ".simg",
    "android-sparse-crc": ".simg",
    "bmap": ".img",
    "qcow2": ".qcow2",
    "raw": ".img",
}

def format_attr(what):
    """The `format` attribute of an image rule (`what`: "image" or "disk")."""
    return attr.string(
        default = "raw",
        values = FORMATS,
        doc = "The output container: `raw` (`<name>.img`), `qcow2` (`<name>.qcow2`), " +
              "`android-sparse` / `android-sparse-crc` (`<name>.simg`), or `bmap` " +
              "(the raw `<name>.img` plus `<name>.img.bmap`). The %s is written raw " % what +
              "and converted; the container only changes how bytes and holes are stored.",
    )

def declare_output(ctx, fmt):
    """Declares the outputs of container `fmt`.

    Args:
      ctx: the rule context.
      fmt: one of FORMATS.

    Returns:
      (the image File, the list of every output File, the arguments to add to
      `fstool build`).
    """
    image = ctx.actions.declare_file(ctx.label.name + _FORMAT_EXTENSIONS[fmt])
    outputs = [image]
    args = []
    if fmt != "raw":
        # The raw default adds nothing, so the action keys of raw images stay unchanged.
        args = ["--format", fmt]
    if fmt == "bmap":
        outputs.append(ctx.actions.declare_file(image.basename + ".bmap"))
    return image, outputs, args
