"""Derived identifiers: from the spec's parsed content (never its text) plus the tree's
fingerprint; a `seed` key pins them whatever the tree holds."""
from __future__ import annotations

import json
import subprocess

import pytest

from conftest import run_fstool, same_file

pytestmark = pytest.mark.slow


def _uuid(img) -> str:
    out = subprocess.run(["dumpe2fs", "-h", str(img)], capture_output=True, text=True, check=True).stdout
    return next(ln.split(":", 1)[1].strip() for ln in out.splitlines() if ln.startswith("Filesystem UUID"))


@pytest.fixture
def tree(tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    (src / "hello").write_text("hello\n")
    return src


def test_comments_whitespace_order_and_json_change_nothing(tmp_path, tree):
    a = tmp_path / "a.toml"
    a.write_text(f'[filesystem]\ntype = "ext4"\nsource = "{tree}"\nmtime = 1700000000\nlabel = "root"\n')
    b = tmp_path / "b.toml"
    b.write_text(f'# a comment\n\n[filesystem]\nlabel   = "root"   # same label\n'
                 f'mtime = 1700000000\nsource = "{tree}"\ntype = "ext4"\n')
    c = tmp_path / "c.json"
    c.write_text(json.dumps({"filesystem": {"type": "ext4", "source": str(tree), "mtime": 1700000000,
                                            "label": "root"}}))
    imgs = []
    for spec in (a, b, c):
        img = tmp_path / (spec.stem + ".img")
        run_fstool("build", spec, "-o", img, check=True)
        imgs.append(img)
    assert same_file(imgs[0], imgs[1]) and same_file(imgs[0], imgs[2])
    d = tmp_path / "d.toml"  # a different value is a different identity
    d.write_text(a.read_text().replace('"root"', '"other"'))
    run_fstool("build", d, "-o", tmp_path / "d.img", check=True)
    assert _uuid(tmp_path / "d.img") != _uuid(imgs[0])


def test_two_trees_under_one_spec_get_two_uuids_unless_seeded(tmp_path, tree):
    spec = tmp_path / "s.toml"
    spec.write_text(f'[filesystem]\ntype = "ext4"\nsource = "{tree}"\nmtime = 1700000000\n')
    run_fstool("build", spec, "-o", tmp_path / "1.img", check=True)
    (tree / "more").write_text("another file\n")
    run_fstool("build", spec, "-o", tmp_path / "2.img", check=True)
    assert _uuid(tmp_path / "1.img") != _uuid(tmp_path / "2.img")
    pinned = tmp_path / "p.toml"
    pinned.write_text(spec.read_text() + 'seed = "my-board"\n')
    run_fstool("build", pinned, "-o", tmp_path / "3.img", check=True)
    (tree / "more").unlink()
    run_fstool("build", pinned, "-o", tmp_path / "4.img", check=True)
    assert _uuid(tmp_path / "3.img") == _uuid(tmp_path / "4.img")
