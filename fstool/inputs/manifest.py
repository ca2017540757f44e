"""JSON manifest input: the entry list the Bazel rules write (and anyone else may).

    {"version": 1,
     "relative_to": "manifest" | "cwd",          # where relative "source" paths start
     "file_modes": "keep" | "exec_bit" | "explicit",
                         # exec_bit: 0755 if any x bit, else 0644; explicit: every file
                         # entry says its mode and no mode is read from the host
     "entries": [
       {"kind": "dir", "path": "/etc", "mode": "0755"},
       {"kind": "file", "path": "/etc/motd", "source": "src/motd", "mode": 420, "uid": 0},
       {"kind": "symlink", "path": "/bin", "target": "usr/bin"},
       {"kind": "hardlink", "path": "/usr/bin/vi", "target": "/usr/bin/vim"},
       {"kind": "chr", "path": "/dev/null", "major": 1, "minor": 3, "mode": "0666"},
       {"kind": "blk" | "fifo" | "sock", ...},
       {"kind": "tree", "path": "/opt/app", "source": "out/app_dir"},    # a host directory
       {"kind": "tar", "path": "/", "source": "base.tar.zst"}]}          # a tar, unpacked

A bare list is read as the entries. Files keep the source's mode unless the
entry sets one, or, with "file_modes": "exec_bit", get 0755 or 0644 by their
executable bit alone, so a checkout's umask cannot change the image. With
"file_modes": "explicit" (what the Bazel rules write) a file entry without
"mode" is an error and "tree" entries of host directories are refused: the host's
mode bits are not part of Bazel's action key (a remote executor stages every input
executable), so reading them would let a cache serve an image made from other modes.
Symlinks are 0777; owner defaults to 0:0 and mtime to 0 (the metadata rules then
apply as for any input). Every error names the manifest and the entry index.

A "source" stays inside the manifest's directory or the working directory (Bazel's exec
root, a project's checkout): an absolute path or a `..` that climbs out of both is refused,
so a manifest handed over by someone else cannot put `/etc/shadow` or `../../.ssh/id_rsa`
into an image. The check is on the path as written (Bazel stages
inputs as symlinks, which are followed). `--source-root DIR` (`source_roots`) names more
directories sources may come from.
"""
from __future__ import annotations

import base64
import contextlib
import contextvars
import json
import os
import stat
from typing import Iterator

from ..errors import InputError
from ..paths import resolve, within
from ..tree import FileSource, Kind, Node, Tree, join_path, split_path

KINDS = {"dir": Kind.DIR, "file": Kind.FILE, "symlink": Kind.SYMLINK, "chr": Kind.CHR,
         "blk": Kind.BLK, "fifo": Kind.FIFO, "sock": Kind.SOCK}
ENTRY_KEYS = {"kind", "path", "source", "target", "mode", "uid", "gid", "mtime", "xattrs", "major",
              "minor", "capabilities", "capabilities_rootid", "acl", "default_acl"}


def _int(e: dict, key: str, where: str, default: int, *, octal: bool = False) -> int:
    v = e.get(key, default)
    if isinstance(v, str) and octal:
        try:
            return int(v, 8)
        except ValueError:
            raise InputError(f"{key} {v!r} is not an octal number", where=where) from None
    if not isinstance(v, int) or isinstance(v, bool) or v < 0:
        raise InputError(f"{key} must be a non-negative integer, got {v!r}", where=where)
    return v


def _xattrs(e: dict, where: str) -> dict[str, bytes]:
    raw = e.get("xattrs", {})
    if not isinstance(raw, dict):
        raise InputError("xattrs must be an object of name -> value", where=where)
    out = {}
    for k, v in sorted(raw.items()):
        if not isinstance(v, str):
            raise InputError(f"xattr {k} must be a string", where=where)
        if v.startswith("base64:"):
            try:
                out[k] = base64.b64decode(v[7:], validate=True)
            except ValueError:
                raise InputError(f"xattr {k}: bad base64", where=where) from None
        else:
            out[k] = v.encode()
    return out


_loading: list[str] = []  # the manifests being read, outermost first (a manifest may name others)
MAX_NESTING = 32


def _security(e: dict, where: str) -> dict[str, bytes]:
    """An entry's declared capabilities and ACLs, as the xattrs they become (as in a spec's
    [[filesystem.overrides]])."""
    from ..errors import SpecError
    from .security import acl_from_text, capability_xattr
    out: dict[str, bytes] = {}
    try:
        if "capabilities" in e:
            rootid = e.get("capabilities_rootid")
            if rootid is not None and (not isinstance(rootid, int) or not 0 <= rootid <= 0xFFFFFFFF):
                raise InputError(f"capabilities_rootid must be a uid, got {rootid!r}", where=where)
            out["security.capability"] = capability_xattr(e["capabilities"], where, rootid)
        for key, name in (("acl", "system.posix_acl_access"), ("default_acl", "system.posix_acl_default")):
            if key in e:
                if not isinstance(e[key], str):
                    raise InputError(f"{key} is a text ACL like \"user::rw-,group::r--,other::r--\"",
                                     where=where)
                out[name] = acl_from_text(e[key], where)
    except SpecError as err:
        raise InputError(err.message, where=err.where) from None
    return out


# more directories manifest sources may name (absolute, normalised): `--source-root`
_extra_roots: contextvars.ContextVar[tuple[str, ...]] = contextvars.ContextVar(
    "fstool_source_roots", default=())


@contextlib.contextmanager
def source_roots(roots: list[str]) -> Iterator[None]:
    """Let manifest sources also come from roots while the block runs (besides those an
    enclosing block allows)."""
    token = _extra_roots.set(_extra_roots.get() + tuple(os.path.normpath(os.path.abspath(r)) for r in roots))
    try:
        yield
    finally:
        _extra_roots.reset(token)


def confined_source(base: str, s: str, where: str) -> str:
    """base/s, refused when it lies outside base, the working directory and every
    --source-root."""
    path = resolve(s, base)
    home = os.path.normpath(base)
    if within(path, home):  # most sources: no need to ask for the working directory
        return path
    if not any(within(path, r) for r in (os.getcwd(), *_extra_roots.get())):
        raise InputError(f"source {s!r} lies outside {home} and the working directory, where "
                         f"this manifest's sources must stay (an absolute path or '..' climbing "
                         f"out; --source-root DIR allows another directory)", where=where)
    return path


def load_manifest(path: str) -> Tree:
    real = os.path.realpath(path)
    if real in _loading:
        chain = " -> ".join(_loading[_loading.index(real):] + [real])
        raise InputError(f"the manifest includes itself ({chain})", where=path)
    if len(_loading) >= MAX_NESTING:
        raise InputError(f"manifests nested more than {MAX_NESTING} deep", where=path)
    _loading.append(real)
    try:
        return _load_manifest(path)
    finally:
        _loading.pop()


def _load_manifest(path: str) -> Tree:
    try:
        with open(path, "rb") as f:
            doc = json.load(f)
    except OSError as e:
        raise InputError(e.strerror or str(e), where=path) from None
    except RecursionError:
        raise InputError("not a manifest: JSON nested too deeply", where=path) from None
    except ValueError as e:
        raise InputError(f"not valid JSON: {e}", where=path) from None
    if isinstance(doc, list):
        doc = {"entries": doc}
    if not isinstance(doc, dict) or not isinstance(doc.get("entries"), list):
        raise InputError("expected {\"entries\": [...]} or a list of entries", where=path)
    rel = doc.get("relative_to", "manifest")
    if rel not in ("manifest", "cwd"):
        raise InputError(f"relative_to must be \"manifest\" or \"cwd\", got {rel!r}", where=path)
    base = os.path.dirname(os.path.abspath(path)) if rel == "manifest" else os.getcwd()
    modes = doc.get("file_modes", "keep")
    if modes not in ("keep", "exec_bit", "explicit"):
        raise InputError(f"file_modes must be \"keep\", \"exec_bit\" or \"explicit\", got {modes!r}",
                         where=path)
    tree = Tree()
    for i, e in enumerate(doc["entries"]):
        _add_entry(tree, e, base, f"{path}: entries[{i}]", modes)
    tree.invalidate()
    return tree


def _by_exec_bit(mode: int) -> int:
    return 0o755 if mode & 0o111 else 0o644


def _add_entry(tree: Tree, e: object, base: str, where: str, modes: str = "keep") -> None:
    exec_bit = modes == "exec_bit"
    explicit = modes == "explicit"
    if not isinstance(e, dict):
        raise InputError("expected an object", where=where)
    unknown = set(e) - ENTRY_KEYS
    if unknown:
        raise InputError(f"unknown key {sorted(unknown)[0]!r}", where=where)
    kind_name = e.get("kind")
    dest = e.get("path")
    if not isinstance(dest, str):
        raise InputError("missing \"path\"", where=where)
    where = f"{where} ({dest})"
    dest = join_path(split_path(dest, where))

    def source() -> str:
        s = e.get("source")
        if not isinstance(s, str) or not s:
            raise InputError(f"a {kind_name} entry needs \"source\"", where=where)
        return confined_source(base, s, where)

    if kind_name == "tree" and explicit and os.path.isdir(source()):
        raise InputError("a \"tree\" entry of a host directory reads modes from the host, which "
                         "\"file_modes\": \"explicit\" forbids: list its files (or point it at "
                         "a manifest)", where=where)
    if kind_name == "tree" or kind_name == "tar":
        from . import graft, load_one
        sub = load_one(source())
        if exec_bit and kind_name == "tree":
            for _, n in sub.walk():
                if n.kind is Kind.FILE:
                    n.mode = _by_exec_bit(n.mode)
                elif n.kind is Kind.DIR:
                    n.mode = 0o755
        graft(tree, dest, sub.root, where)
        return
    if kind_name == "hardlink":
        t = e.get("target")
        if not isinstance(t, str):
            raise InputError("a hardlink entry needs \"target\" (an image path)", where=where)
        node = tree.lookup(join_path(split_path(t, where)))
        if node is None or node.kind is Kind.DIR:
            raise InputError(f"hardlink target {t!r} is not a non-directory listed earlier", where=where)
        tree.add(dest, node, where=where)
        return
    kind = KINDS.get(kind_name)  # type: ignore[arg-type]
    if kind is None:
        raise InputError(f"unknown kind {kind_name!r} (one of {', '.join([*KINDS, 'hardlink', 'tree', 'tar'])})",
                         where=where)
    node = Node(kind, mode=0o755 if kind is Kind.DIR else 0o644, origin=where)
    if kind is Kind.FILE:
        src = source()
        try:
            st = os.stat(src)
        except OSError as err:
            raise InputError(err.strerror or str(err), where=f"{where}: {src}") from None
        if not stat.S_ISREG(st.st_mode):
            raise InputError(f"source {src} is not a regular file", where=where)
        node.source = FileSource(src if st.st_size else None, st.st_size)
        if explicit and "mode" not in e:
            raise InputError("a file entry needs \"mode\" (\"file_modes\": \"explicit\")", where=where)
        node.mode = _by_exec_bit(st.st_mode) if exec_bit else stat.S_IMODE(st.st_mode)
    elif kind is Kind.SYMLINK:
        t = e.get("target")
        if not isinstance(t, str) or not t:
            raise InputError("a symlink entry needs \"target\"", where=where)
        node.target = t
        node.mode = 0o777
    elif kind in (Kind.CHR, Kind.BLK):
        node.rdev = (_int(e, "major", where, 0), _int(e, "minor", where, 0))
    if "mode" in e:
        node.mode = _int(e, "mode", where, 0, octal=True) & 0o7777
    node.uid = _int(e, "uid", where, 0)
    node.gid = _int(e, "gid", where, 0)
    node.mtime = _int(e, "mtime", where, 0)
    node.update_xattrs(_xattrs(e, where))
    node.update_xattrs(_security(e, where))
    tree.add(dest, node, where=where)

