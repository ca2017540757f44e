"""What the tree shares between nodes to stay small (a million entries in well under 1 GB):
the read-only empty xattrs, one origin per source, one empty-file source and one int object
per distinct value in a tar, link counts kept only for hardlinked nodes."""
from __future__ import annotations

import io
import tarfile

import pytest

from fstool.inputs.tarball import load_tar
from fstool.tree import NO_XATTRS, Kind, Node, Tree


def _tar(path, members) -> None:
    """members: (name, type, extra TarInfo fields, pax headers)."""
    with tarfile.open(path, "w", format=tarfile.PAX_FORMAT) as tf:
        for name, typ, fields, pax in members:
            info = tarfile.TarInfo(name)
            info.type, info.mtime, info.mode = typ, 1_700_000_000, 0o644
            info.pax_headers = pax
            for k, v in fields.items():
                setattr(info, k, v)
            data = fields.get("size", 0)
            tf.addfile(info, io.BytesIO(b"x" * data) if data else None)


def test_empty_xattrs_are_shared_and_read_only():
    a, b = Node(Kind.FILE), Node(Kind.FILE)
    assert a.xattrs is NO_XATTRS and b.xattrs is NO_XATTRS and not a.xattrs
    with pytest.raises(TypeError):
        a.xattrs["user.x"] = b"1"  # type: ignore[index]
    a.set_xattr("user.x", b"1")
    assert a.xattrs == {"user.x": b"1"} and b.xattrs is NO_XATTRS and not NO_XATTRS
    a.update_xattrs({"user.y": b"2"})
    a.drop_xattr("user.x")
    b.drop_xattr("user.x")  # absent: nothing to copy or change
    assert list(a.xattrs.items()) == [("user.y", b"2")] and b.xattrs is NO_XATTRS
    c = Node(Kind.DIR)
    c.copy_attrs_from(b)
    assert c.xattrs is NO_XATTRS
    c.copy_attrs_from(a)
    assert c.xattrs == a.xattrs and c.xattrs is not a.xattrs


def test_tar_members_share_what_they_have_in_common(tmp_path):
    arc = tmp_path / "t.tar"
    _tar(arc, [("d", tarfile.DIRTYPE, {"mode": 0o755}, {}),
               ("d/e1", tarfile.REGTYPE, {}, {}),
               ("d/e2", tarfile.REGTYPE, {}, {}),
               ("d/full", tarfile.REGTYPE, {"size": 3}, {}),
               ("d/x", tarfile.REGTYPE, {}, {"SCHILY.xattr.user.k": "v"})])
    tree = load_tar(str(arc))
    e1, e2, full, x = (tree.lookup(f"/d/{n}") for n in ("e1", "e2", "full", "x"))
    assert e1.source is e2.source and e1.source.size == 0
    assert full.source is not e1.source and full.source.size == 3
    assert e1.xattrs is NO_XATTRS and x.xattrs == {"user.k": b"v"}
    assert e1.mtime is e2.mtime and e1.mode is full.mode  # one int object per distinct value
    assert e1.origin is x.origin and not isinstance(e1.origin, str)
    # the member's path is found when a message needs it
    assert e2.where() == f"{arc}: d/e2"


def test_where_of_a_node_moved_out_of_its_source_names_the_source(tmp_path):
    arc = tmp_path / "t.tar"
    _tar(arc, [("a", tarfile.REGTYPE, {}, {})])
    node = load_tar(str(arc)).remove("/a")
    assert node is not None and node.where() == str(arc)
    assert Node(Kind.FILE).where() is None and Node(Kind.FILE, origin="here").where() == "here"


def test_nlink_counts_names_of_hardlinked_nodes_only():
    tree = Tree()
    f, g = Node(Kind.FILE), Node(Kind.FILE)
    tree.add("/a", f)
    tree.add("/d/b", f)
    tree.add("/d/e/c", f)
    tree.add("/g", g)
    assert tree.nlink(f) == 3 and tree.nlink(g) == 1
    assert tree.nlink(tree.root) == 3 and tree.nlink(tree.lookup("/d")) == 3
    assert list(tree._nlink) == [f]  # only the hardlinked node has an entry


def test_host_entries_share_origin_source_and_ints(tmp_path):
    from fstool.inputs.hostdir import load_dir
    from fstool.tree import EMPTY_SOURCE

    (tmp_path / "src" / "d").mkdir(parents=True)
    for name in ("a", "b"):
        (tmp_path / "src" / "d" / name).write_bytes(b"")
    (tmp_path / "src" / "full").write_bytes(b"xyz")
    tree = load_dir(str(tmp_path / "src") + "/")
    a, b, full = tree.lookup("/d/a"), tree.lookup("/d/b"), tree.lookup("/full")
    assert a.source is EMPTY_SOURCE and b.source is EMPTY_SOURCE and full.source.size == 3
    assert a.origin is b.origin and a.mode is b.mode
    assert a.where() == str(tmp_path / "src" / "d" / "a")  # the host path, made when asked
    assert full.where() == full.source.path == str(tmp_path / "src" / "full")
