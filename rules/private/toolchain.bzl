"""The fstool toolchain: which program the rules run, and on which executors.

The rules ask for `@rules_fstool//fstool:toolchain_type`; the default toolchain
(`@rules_fstool//fstool:linux_toolchain`, registered by MODULE.bazel) runs the
`py_binary` `//fstool:fstool_bin` and is compatible with Linux executors only, so
remote execution routes the actions to Linux and a macOS host without a Linux
executor gets a clear toolchain resolution error instead of a traceback.
Users register their own (a prebuilt fstool, another platform) with
`register_toolchains`.
"""

TOOLCHAIN_TYPE = str(Label("//fstool:toolchain_type"))

def _fstool_toolchain_impl(ctx):
    return [platform_common.ToolchainInfo(
        fstool = ctx.attr.tool[DefaultInfo].files_to_run,
    )]

fstool_toolchain = rule(
    implementation = _fstool_toolchain_impl,
    attrs = {
        "tool": attr.label(
            mandatory = True,
            cfg = "exec",
            executable = True,
            doc = "The fstool program: any executable taking fstool's command line " +
                  "(`build SPEC -o OUT [--layout-json FILE] [--mtime-from-status FILE]`).",
        ),
    },
    doc = "An fstool for the rules (wrap it in a `toolchain` with " +
          "`toolchain_type = \"@rules_fstool//fstool:toolchain_type\"`).",
)
