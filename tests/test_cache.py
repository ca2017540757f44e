"""The block cache (--cache-dir): warm, cold, damaged and absent caches give the same image bytes;
entries are checked, bounded (LRU) and safe to share between concurrent builds."""
from __future__ import annotations

import hashlib
import os
import re
import subprocess
import sys
import textwrap

import pytest

from conftest import REPO, assert_one_line_error, run_fstool
from fstool.cache import ENTRY_HEADER, ENTRY_MAGIC

pytestmark = pytest.mark.slow


def make_tree(root, seed: int = 0, dup: bool = True) -> None:
    """A few MB: compressible text across several blocks, incompressible bytes (stored raw),
    small files (fragments), a hole and an all-zero block (sparse entries), a duplicate."""
    import random
    rnd = random.Random(seed)
    (root / "d").mkdir(parents=True)
    (root / "text.txt").write_text("".join(f"line {i} {rnd.random()}\n" for i in range(40000)))
    (root / "random.bin").write_bytes(rnd.randbytes(600_000))
    if dup:
        (root / "dup.bin").write_bytes((root / "random.bin").read_bytes())
    for i in range(30):
        (root / "d" / f"small{i}").write_text(f"small file {i} " * (i * 7))
    with open(root / "sparse", "wb") as f:
        f.write(b"head" * 1000)
        f.seek(1 << 20)
        f.write(bytes(131072) + b"tail")


def build(src, img, *extra, env=None):
    p = run_fstool("create", "-t", "squashfs", src, "-o", img, "-v", *extra, env=env)
    assert p.returncode == 0, p.stderr
    return p.stderr


def stats(stderr: str) -> dict[str, int]:
    m = re.search(r"block cache .*: (\d+) hits \((\d+) in memory\), (\d+) misses, (\d+) damaged entries "
                  r"ignored, (\d+) stored, (\d+) evicted", stderr)
    assert m, stderr
    return dict(zip(("hits", "memory_hits", "misses", "corrupt", "stored", "evicted"), map(int, m.groups())))


def digest(path) -> str:
    return hashlib.sha256(open(path, "rb").read()).hexdigest()


def packs(cache):
    out = []
    for dirpath, _, files in os.walk(cache):
        out += [os.path.join(dirpath, f) for f in files if f.endswith(".pack")]
    return sorted(out)


def records(blob) -> list[tuple[int, int]]:
    """(offset, payload length) of each record of a pack."""
    out, off = [], 0
    while off < len(blob):
        magic, _key, n, _digest = ENTRY_HEADER.unpack(blob, off)
        assert magic == ENTRY_MAGIC
        out.append((off, n))
        off += ENTRY_HEADER.size + n
    return out


@pytest.mark.parametrize("opts", [["-O", "compression=zstd"], ["-O", "compression=xz"],
                                  ["-O", "compression=gzip,compression_level=4,always_fragments"]])
def test_warm_cold_corrupted_and_no_cache_identical(tmp_path, opts):
    src = tmp_path / "src"
    make_tree(src)
    cache = tmp_path / "cache"
    build(src, tmp_path / "none.img", *opts)
    s_cold = stats(build(src, tmp_path / "cold.img", "--cache-dir", cache, *opts))
    # (a duplicate file's blocks are compressed before it is known to be one: those hit)
    assert s_cold["misses"] > 5 and s_cold["stored"] == s_cold["misses"]
    s_warm = stats(build(src, tmp_path / "warm.img", "--cache-dir", cache, *opts))
    assert s_warm["misses"] == 0 and s_warm["hits"] == s_cold["misses"] + s_cold["hits"]
    # damage the pack: a payload byte flipped in every other record, and the last record cut
    # short (a pack whose writer was killed is never renamed into place; this one was damaged
    # afterwards)
    (pack,) = packs(cache)
    blob = bytearray(open(pack, "rb").read())
    offsets = records(blob)
    assert len(offsets) >= 5
    flipped = 0
    for i, (off, n) in enumerate(offsets[:-1]):
        if i % 2 == 0 and n > 1:
            blob[off + ENTRY_HEADER.size + n // 2] ^= 0x40
            flipped += 1
    del blob[offsets[-1][0] + ENTRY_HEADER.size + offsets[-1][1] // 2:]
    open(pack, "wb").write(bytes(blob))
    s_bad = stats(build(src, tmp_path / "corrupt.img", "--cache-dir", cache, *opts))
    # every damaged record was found wrong and its block compressed again (the cut one is
    # reported once, when the pack's index is read)
    assert s_bad["corrupt"] >= flipped + 1 and s_bad["misses"] >= flipped + 1
    # the blocks compressed again went into a new pack: the next build compresses nothing
    s_fixed = stats(build(src, tmp_path / "fixed.img", "--cache-dir", cache, *opts))
    assert s_fixed["misses"] == 0
    ref = digest(tmp_path / "none.img")
    for name in ("cold", "warm", "corrupt", "fixed"):
        assert digest(tmp_path / f"{name}.img") == ref, name
    subprocess.run(["unsquashfs", "-n", "-d", str(tmp_path / "x"), str(tmp_path / "warm.img")],
                   check=True, capture_output=True)


def test_edit_one_file_reuses_the_rest(tmp_path):
    src = tmp_path / "src"
    make_tree(src)
    cache = tmp_path / "cache"
    build(src, tmp_path / "a.img", "--cache-dir", cache)
    with open(src / "text.txt", "r+b") as f:
        f.seek(300_000)
        f.write(b"EDITED")
    s = stats(build(src, tmp_path / "b.img", "--cache-dir", cache))
    build(src, tmp_path / "ref.img")
    assert digest(tmp_path / "b.img") == digest(tmp_path / "ref.img")
    assert s["hits"] > 0 and 1 <= s["misses"] <= 3  # the edited block and the fragment block at most


def test_parameters_are_part_of_the_key(tmp_path):
    """Another level, codec or block size never takes a block compressed with different settings."""
    src = tmp_path / "src"
    make_tree(src, dup=False)  # no block repeats within one build
    cache = tmp_path / "cache"
    build(src, tmp_path / "a.img", "--cache-dir", cache, "-O", "compression=zstd")
    for opts in (["-O", "compression=zstd,compression_level=3"], ["-O", "compression=gzip"],
                 ["-O", "compression=zstd", "-O", "block_size=65536"]):
        s = stats(build(src, tmp_path / "b.img", "--cache-dir", cache, *opts))
        assert s["hits"] == 0, opts
        build(src, tmp_path / "ref.img", *opts)
        assert digest(tmp_path / "b.img") == digest(tmp_path / "ref.img"), opts


def test_environment_variable_and_build_verb(tmp_path):
    src = tmp_path / "src"
    make_tree(src)
    spec = tmp_path / "fs.toml"
    spec.write_text(textwrap.dedent(f"""
        [filesystem]
        type = "squashfs"
        source = "{src}"
    """))
    env = {"FSTOOL_CACHE_DIR": str(tmp_path / "envcache")}
    p = run_fstool("build", spec, "-o", tmp_path / "a.img", "-v", env=env)
    assert p.returncode == 0, p.stderr
    assert stats(p.stderr)["stored"] > 0
    p = run_fstool("build", spec, "-o", tmp_path / "b.img", "-v", env=env)
    assert stats(p.stderr)["misses"] == 0
    p = run_fstool("build", spec, "-o", tmp_path / "c.img")
    assert digest(tmp_path / "a.img") == digest(tmp_path / "b.img") == digest(tmp_path / "c.img")


def test_bounded_lru_eviction(tmp_path):
    src = tmp_path / "src"
    make_tree(src)
    cache = tmp_path / "cache"
    build(src, tmp_path / "a.img", "--cache-dir", cache)
    total = sum(os.path.getsize(f) for f in packs(cache))
    limit = total * 3 // 2
    # another level: a new pack, and the old one, least recently used, goes
    s = stats(build(src, tmp_path / "b.img", "--cache-dir", cache, "--cache-max-size", str(limit),
                    "-O", "compression_level=3"))
    assert s["evicted"] > 0
    assert sum(os.path.getsize(f) for f in packs(cache)) <= limit
    s = stats(build(src, tmp_path / "c.img", "--cache-dir", cache, "--cache-max-size", str(limit),
                    "-O", "compression_level=3"))
    assert s["hits"] > 0  # the newest entries stayed
    build(src, tmp_path / "ref.img", "-O", "compression_level=3")
    assert digest(tmp_path / "c.img") == digest(tmp_path / "ref.img")


def test_two_concurrent_builds_share_a_cache(tmp_path):
    src = tmp_path / "src"
    make_tree(src)
    cache = tmp_path / "cache"
    env = dict(os.environ, PYTHONPATH=REPO, FSTOOL_THREADS="2")
    procs = [subprocess.Popen([sys.executable, "-m", "fstool", "create", "-t", "squashfs", str(src),
                               "-o", str(tmp_path / f"p{i}.img"), "--cache-dir", str(cache)],
                              env=env, stderr=subprocess.PIPE) for i in range(2)]
    for p in procs:
        assert p.wait() == 0, p.stderr.read()
    build(src, tmp_path / "ref.img")
    s = stats(build(src, tmp_path / "warm.img", "--cache-dir", cache))
    assert s["misses"] == 0 and s["corrupt"] == 0
    ref = digest(tmp_path / "ref.img")
    assert {digest(tmp_path / f"{n}.img") for n in ("p0", "p1", "warm")} == {ref}
    assert not [f for _, _, fs in os.walk(cache) for f in fs if f.endswith(".tmp")]


def test_bad_cache_flags(tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    (tmp_path / "file").write_text("x")
    p = run_fstool("create", "-t", "squashfs", src, "-o", tmp_path / "a.img", "--cache-dir", tmp_path / "file")
    assert_one_line_error(p, 2, "cache directory")
    p = run_fstool("create", "-t", "squashfs", src, "-o", tmp_path / "a.img", "--cache-dir", tmp_path / "c",
                   "--cache-max-size", "lots")
    assert_one_line_error(p, 2, "--cache-max-size")


@pytest.mark.parametrize("opts", ["compression=lz4hc", "compression=lzma,ztailpacking",
                                  "compression=lz4,pcluster_size=65536"])
def test_erofs_pclusters_warm_cold_and_no_cache_identical(tmp_path, opts):
    """EROFS: a file's compressed physical clusters (per 4 MiB segment) come from the cache."""
    src = tmp_path / "src"
    make_tree(src)
    cache = tmp_path / "cache"
    args = ("-t", "erofs", "-O", opts)

    def erofs(img, *extra):
        p = run_fstool("create", *args, src, "-o", img, "-v", *extra)
        assert p.returncode == 0, p.stderr
        return p.stderr

    erofs(tmp_path / "none.img")
    s_cold = stats(erofs(tmp_path / "cold.img", "--cache-dir", cache))
    assert s_cold["misses"] >= 3 and s_cold["stored"] == s_cold["misses"]
    s_warm = stats(erofs(tmp_path / "warm.img", "--cache-dir", cache))
    assert s_warm["misses"] == 0 and s_warm["hits"] >= 3
    (pack,) = packs(cache)
    blob = bytearray(open(pack, "rb").read())
    for off, n in records(blob):
        blob[off + ENTRY_HEADER.size + n - 1] ^= 1  # every record's last payload byte
    open(pack, "wb").write(bytes(blob))
    s_bad = stats(erofs(tmp_path / "corrupt.img", "--cache-dir", cache))
    assert s_bad["corrupt"] >= 3 and s_bad["hits"] == 0
    ref = digest(tmp_path / "none.img")
    for name in ("cold", "warm", "corrupt"):
        assert digest(tmp_path / f"{name}.img") == ref, name
    subprocess.run(["fsck.erofs", str(tmp_path / "warm.img")], check=True, capture_output=True)


def test_erofs_search_codecs_are_not_cached(tmp_path):
    """deflate and zstd pick a pcluster's fill by a search that starts from the ratio the thread
    saw last: not a function of the segment alone, so never served from the cache."""
    src = tmp_path / "src"
    make_tree(src)
    p = run_fstool("create", "-t", "erofs", "-O", "compression=zstd", src, "-o", tmp_path / "z.img", "-v",
                   "--cache-dir", tmp_path / "cache")
    assert p.returncode == 0, p.stderr
    s = stats(p.stderr)
    assert s["hits"] == s["misses"] == s["stored"] == 0
