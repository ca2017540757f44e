"""The metadata rules every format shares, applied after the inputs are merged.

Order: all_root (uid = gid = 0) -> mtime = N (every timestamp N) -> clamp to
SOURCE_DATE_EPOCH (no timestamp later than it) -> SELinux labels from
file_contexts -> per-path overrides (owner, mode, time, xattrs, capabilities,
ACLs), so a spec can still set one file's metadata explicitly -> an Android
fs_config table, applied last as e2fsdroid applies it over everything else.
"""
from __future__ import annotations

from ..errors import InputError
from ..tree import Kind, Tree


def apply_policy(tree: Tree, *, all_root: bool = False, mtime: int | None = None, clamp: int | None = None,
                 overrides: list[dict] | None = None, file_contexts: str | None = None,
                 fs_config: str | None = None) -> None:
    if all_root or mtime is not None or clamp is not None:
        # each rule sets a value or lowers it to a bound: applied twice to a hardlinked node,
        # or in any order, it gives the same, so the nodes are visited unsorted, without paths
        pending = [tree.root]
        while pending:
            node = pending.pop()
            if all_root:
                node.uid = node.gid = 0
            if mtime is not None:
                node.mtime, node.mtime_ns = mtime, 0
            if clamp is not None and node.mtime >= clamp and (node.mtime > clamp or node.mtime_ns):
                node.mtime, node.mtime_ns = clamp, 0
            if node.kind is Kind.DIR:
                pending.extend(node.children.values())
    if file_contexts:
        from .security import apply_file_contexts
        apply_file_contexts(tree, file_contexts)
    for ov in overrides or []:
        node = tree.lookup(ov["path"])
        if node is None:
            raise InputError(f"override for {ov['path']!r}: no such path in the tree", where=ov.get("where"))
        if "mode" in ov:
            node.mode = ov["mode"] & 0o7777
        if "uid" in ov:
            node.uid = ov["uid"]
        if "gid" in ov:
            node.gid = ov["gid"]
        if "mtime" in ov:
            node.mtime, node.mtime_ns = ov["mtime"], 0
        xattrs = ov.get("xattrs") or {}
        if "system.posix_acl_default" in xattrs and node.kind is not Kind.DIR:
            raise InputError(f"a default ACL is for directories; {ov['path']!r} is not one",
                             where=ov.get("where"))
        node.update_xattrs(xattrs)
    if fs_config:
        from .security import apply_fs_config
        apply_fs_config(tree, fs_config)
