"""A program that says coverage is not available offline, and fails."""

def _impl(ctx):
    out = ctx.actions.declare_file(ctx.label.name + ".sh")
    ctx.actions.write(
        out,
        "#!/bin/sh\necho 'coverage is not available offline (tests/offline/coverage_tools)' >&2\nexit 1\n",
        is_executable = True,
    )
    return [DefaultInfo(executable = out)]

no_coverage_tool = rule(implementation = _impl, executable = True)
