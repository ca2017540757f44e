"""Where a spec's relative paths point, and the one-line error when they point at nothing.

As in the Rust fstool, relative paths in a spec (`source`, `device_table`, a
partition's `image`) resolve against the working directory, not against the
spec's own directory. A spec may say `relative_to = "spec"` to resolve against
its directory instead (JSON specs, which tools such as the Bazel rules write,
default to that). When a path is missing, the error names the directory looked
in and, when the path exists beside the spec, says so.
"""
from __future__ import annotations

import os

from .errors import InputError


def resolve(raw: str, base_dir: str) -> str:
    """raw made absolute against base_dir (an absolute raw is kept as it is)."""
    return os.path.normpath(os.path.join(base_dir, raw))


def within(path: str, root: str) -> bool:
    """path is root or lies below it (both absolute and normalised)."""
    return path == root or path.startswith(root.rstrip("/") + "/")


def split_partition(path: str) -> tuple[str, int | None]:
    """'disk.img:2' -> ('disk.img', 2); a path that exists as written keeps its colon."""
    if os.path.lexists(path) or ":" not in os.path.basename(path):
        return path, None
    head, _, tail = path.rpartition(":")
    if tail.isdigit() and int(tail) >= 1:
        return head, int(tail)
    return path, None


def missing(path: str, *, base_dir: str | None = None, spec_dir: str | None = None,
            where: str | None = None) -> InputError:
    """The error for a path that does not exist, saying where it was looked for."""
    msg = "no such file or directory"
    if base_dir is not None and within(path, base_dir):
        rel = os.path.relpath(path, base_dir)
        msg += f" (relative paths resolve against the working directory, {base_dir})"
        if spec_dir is not None and os.path.realpath(spec_dir) != os.path.realpath(base_dir):
            beside = os.path.join(spec_dir, rel)
            if os.path.lexists(beside):
                shown = os.path.relpath(beside) if not os.path.relpath(beside).startswith("../..") \
                    else beside
                msg += (f"; it exists beside the spec as {shown}: run fstool from "
                        f"{os.path.relpath(spec_dir)} or write the path as {shown}")
    return InputError(msg, where=[w for w in (where, path) if w])


def check_exists(path: str, *, base_dir: str | None = None, spec_dir: str | None = None,
                 where: str | None = None) -> str:
    """path if it exists (a dangling symlink counts as missing), else the `missing` error."""
    if not os.path.exists(split_partition(path)[0]):
        raise missing(split_partition(path)[0], base_dir=base_dir, spec_dir=spec_dir, where=where)
    return path
