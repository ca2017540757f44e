"""A Bazel persistent worker speaking the JSON worker protocol.

`fstool --persistent_worker` (what Bazel runs for an action with `supports-workers` and
`requires-worker-protocol: json`; `fstool worker --persistent_worker` also works) reads one
WorkRequest JSON object at a time on stdin (one a line, or back to back as Bazel 4.x writes
them) and answers each with one WorkResponse line on stdout: `{"exitCode": N, "output": "...", "requestId": ID}`. A request's `arguments` are the
command line the plain action would run (`build SPEC -o OUT ...`, or `@flagfile`), run by the
same `cli.main`, so a worker and a plain action write the same bytes.

What the worker keeps between requests is an in-memory block cache (fstool.cache: bounded,
least recently used first out), keyed by content, and the zero-block scans of input files
(fstool.zeros.ScanMemory), keyed by the digest the request gives for each input: it never
reads a file a request did not name, a block found in it is the block compression would have
produced, and a scan found by digest is the scan of those bytes. Requests are answered in
the order they arrive, one at a time, whether Bazel multiplexes them (requestId set) or not;
a `sandboxDir` (multiplex sandboxing) is the directory the request's paths are relative to.

Invariant: nothing but WorkResponses reaches the protocol stream. File descriptor 1 is pointed
at stderr (Bazel's worker log) at start, the protocol writes to a private copy of it, and each
request's stdout and stderr are captured into its response's `output`.
"""
from __future__ import annotations

import contextlib
import io
import json
import os
import sys
import time
from typing import Iterator

from . import cache as block_cache
from .sizes import format_size, parse_size

PERSISTENT_FLAG = "--persistent_worker"


def _options(argv: list[str]) -> int:
    """The worker's own flags (Bazel passes them before --persistent_worker, from
    --worker_extra_flag): --cache-memory SIZE (0 turns the cache off)."""
    memory = block_cache.DEFAULT_MEMORY_SIZE
    rest = [a for a in argv if a not in (PERSISTENT_FLAG, "worker")]
    i = 0
    while i < len(rest):
        a = rest[i]
        if a.startswith("--cache-memory="):
            memory = parse_size(a.split("=", 1)[1], where="--cache-memory")
        elif a == "--cache-memory" and i + 1 < len(rest):
            memory = parse_size(rest[i + 1], where="--cache-memory")
            i += 1
        else:
            print(f"fstool worker: ignoring unknown flag {a!r}", file=sys.stderr)
        i += 1
    return memory


def serve(argv: list[str], stdin=None, stdout_fd: int | None = None) -> int:
    from .cli import main as cli_main

    memory = _options(argv)
    # a cache directory would be a read no request declared: the worker's cache is its memory
    os.environ.pop("FSTOOL_CACHE_DIR", None)
    if stdout_fd is None:
        stdout_fd = os.dup(1)
        os.dup2(2, 1)  # a stray write to fd 1 lands in the worker log, not in the protocol
        sys.stdout = sys.stderr
    proto = os.fdopen(stdout_fd, "w", encoding="utf-8", buffering=1)
    stdin = stdin if stdin is not None else sys.stdin.buffer
    cache = block_cache.BlockCache(memory_size=memory) if memory else None
    from .zeros import ScanMemory
    scans = ScanMemory()
    log = sys.stderr
    print(f"fstool worker: started (pid {os.getpid()}, block cache in memory "
          f"{format_size(memory) if memory else 'off'})", file=log, flush=True)
    served = 0
    for text in json_objects(stdin):
        try:
            req = json.loads(text)
            if not isinstance(req, dict):
                raise ValueError("not an object")
        except ValueError as e:
            print(f"fstool worker: unreadable request ({e}); stopping", file=log, flush=True)
            return 1
        rid = int(req.get("requestId", 0) or 0)
        if req.get("cancel"):
            # requests run one at a time, so the one it names has been answered already
            continue
        args = [str(a) for a in req.get("arguments", [])]
        before = _snapshot(cache)
        t0 = time.monotonic()
        scans_before = (scans.reused, scans.scanned)
        code, output = run_request(cli_main, args, cache, req.get("sandboxDir") or None,
                                   _digests(req), scans)
        served += 1
        print(f"fstool worker: request {served} (id {rid}): exit {code} in {time.monotonic() - t0:.2f}s; "
              f"block cache: {_delta(cache, before)}; file scans: {scans.reused - scans_before[0]} "
              f"reused, {scans.scanned - scans_before[1]} read", file=log, flush=True)
        proto.write(json.dumps({"exitCode": code, "output": output, "requestId": rid}) + "\n")
        proto.flush()
    return 0


def json_objects(stream) -> Iterator[bytes]:
    """The JSON objects on a byte stream, each as soon as its closing brace arrives. Bazel 4.x
    writes them back to back with no separator, later versions one a line: so objects are cut
    by brace depth (outside strings), not by lines. Anything between objects but whitespace
    is returned as its own chunk, for json.loads to refuse."""
    fd = stream.fileno()
    buf = bytearray()
    depth, in_string, escaped = 0, False, False
    while True:
        chunk = os.read(fd, 65536)
        if not chunk:
            if buf.strip():
                yield bytes(buf)
            return
        i = len(buf)
        buf += chunk
        while i < len(buf):
            c = buf[i]
            if in_string:
                if escaped:
                    escaped = False
                elif c == 0x5C:  # backslash
                    escaped = True
                elif c == 0x22:  # quote
                    in_string = False
            elif c == 0x22:
                in_string = True
            elif c == 0x7B:  # {
                if depth == 0:
                    junk = buf[:i].strip()
                    if junk:
                        yield bytes(junk)
                    del buf[:i]
                    i = 0
                depth += 1
            elif c == 0x7D:  # }
                depth -= 1
                if depth == 0:
                    yield bytes(buf[:i + 1])
                    del buf[:i + 1]
                    i = -1
                elif depth < 0:
                    yield bytes(buf[:i + 1])
                    return
            i += 1


def _digests(req: dict) -> dict[str, str]:
    """The request's inputs: exec-root-relative path -> content digest (as Bazel sends them)."""
    out = {}
    for i in req.get("inputs") or ():
        if isinstance(i, dict) and isinstance(i.get("path"), str) and isinstance(i.get("digest"), str) \
                and i["digest"]:
            out[i["path"]] = i["digest"]
    return out


def run_request(cli_main, args: list[str], cache, sandbox_dir: str | None,
                digests: dict[str, str] | None = None, scans=None) -> tuple[int, str]:
    """Run one command line as the plain action would; (exit code, its stdout and stderr).
    digests (input path -> content digest) let file scans be reused from scans."""
    from .zeros import known_digests
    buf = io.StringIO()
    old_cwd = os.getcwd() if sandbox_dir else None
    try:
        with contextlib.redirect_stdout(buf), contextlib.redirect_stderr(buf), block_cache.using(cache):
            if sandbox_dir:
                os.chdir(sandbox_dir)
            here = os.getcwd()
            known = {os.path.normpath(os.path.join(here, p)): d for p, d in (digests or {}).items()}
            try:
                with known_digests(known, scans) if scans is not None and known else contextlib.nullcontext():
                    code = cli_main(args)
            except SystemExit as e:  # --help, --version
                code = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
    finally:
        if old_cwd is not None:
            os.chdir(old_cwd)
    return code, buf.getvalue()


def _snapshot(cache) -> tuple[int, ...]:
    if cache is None:
        return ()
    s = cache.stats
    return (s.hits, s.misses, s.stored)


def _delta(cache, before: tuple[int, ...]) -> str:
    if cache is None:
        return "off"
    s = cache.stats
    hits, misses = s.hits - before[0], s.misses - before[1]
    return (f"{hits} blocks reused, {misses} compressed; holding {cache.memory_entries} blocks, "
            f"{format_size(cache.memory_bytes)}")
