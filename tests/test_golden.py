"""Byte identity: the images of tests/golden.py hash exactly as recorded in
tests/golden_hashes.json (a refactoring must not change one byte of any image)."""
from __future__ import annotations

import json

import pytest

import golden

pytestmark = pytest.mark.slow


def test_images_are_byte_identical(tmp_path):
    with open(golden.HASHES) as f:
        want = json.load(f)
    hashes = golden.build_all(str(tmp_path))
    assert set(hashes) == set(want)
    assert golden.compare(hashes, want) == []
