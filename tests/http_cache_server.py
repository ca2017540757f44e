"""A small HTTP remote cache for Bazel (`--remote_cache=http://127.0.0.1:PORT`).

Bazel's HTTP cache protocol: `GET`/`HEAD`/`PUT` on `/ac/<sha256>` (action results) and
`/cas/<sha256>` (file contents); a miss is a 404. Entries are files under a root
directory, written to a temporary name and renamed, so a reader never sees half an
entry. The tests run it in a thread (`start`); `python3 tests/http_cache_server.py DIR
[PORT]` serves a directory by hand. Every request is counted, so a test can say how
many hits and uploads a build made.

Nothing here is specific to fstool; it binds 127.0.0.1 only.
"""
from __future__ import annotations

import collections
import http.server
import os
import re
import sys
import tempfile
import threading

_PATH = re.compile(r"^/(ac|cas)/([0-9a-f]{64})$")


class CacheHandler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: "CacheServer"

    def _entry(self) -> str | None:
        m = _PATH.match(self.path.split("?", 1)[0])
        if not m:
            return None
        return os.path.join(self.server.root, m.group(1), m.group(2))

    def _reply(self, code: int, body: bytes = b"", send_body: bool = True) -> None:
        self.send_response(code)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if send_body and body:
            self.wfile.write(body)

    def _get(self, send_body: bool) -> None:
        path = self._entry()
        kind = self.path.split("/")[1] if self.path.count("/") >= 2 else "?"
        if path is None:
            self._reply(400, b"bad path\n", send_body)
            return
        try:
            with open(path, "rb") as f:
                data = f.read()
        except FileNotFoundError:
            self.server.count(f"{self.command} {kind} miss")
            self._reply(404, b"", send_body)
            return
        self.server.count(f"{self.command} {kind} hit")
        self._reply(200, data, send_body)

    def do_GET(self) -> None:  # noqa: N802 (http.server's naming)
        self._get(True)

    def do_HEAD(self) -> None:  # noqa: N802
        self._get(False)

    def do_PUT(self) -> None:  # noqa: N802
        path = self._entry()
        length = int(self.headers.get("Content-Length") or 0)
        data = self.rfile.read(length) if length else b""
        if path is None:
            self._reply(400, b"bad path\n")
            return
        os.makedirs(os.path.dirname(path), exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=os.path.dirname(path), prefix=".put-")
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.replace(tmp, path)
        self.server.count(f"PUT {self.path.split('/')[1]}")
        self._reply(200)

    def log_message(self, fmt: str, *args) -> None:  # quiet: the counters say enough
        pass


class CacheServer(http.server.ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, root: str, port: int = 0):
        super().__init__(("127.0.0.1", port), CacheHandler)
        self.root = root
        self.counts: collections.Counter[str] = collections.Counter()
        self._lock = threading.Lock()

    def count(self, what: str) -> None:
        with self._lock:
            self.counts[what] += 1

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"

    def blobs(self):
        """(kind, path) of every stored entry."""
        for kind in ("ac", "cas"):
            d = os.path.join(self.root, kind)
            if os.path.isdir(d):
                for name in sorted(os.listdir(d)):
                    if not name.startswith("."):
                        yield kind, os.path.join(d, name)


def start(root: str, port: int = 0) -> CacheServer:
    """Serve root on 127.0.0.1 (port 0: any free one) in a daemon thread."""
    os.makedirs(root, exist_ok=True)
    server = CacheServer(root, port)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


if __name__ == "__main__":
    srv = CacheServer(sys.argv[1], int(sys.argv[2]) if len(sys.argv) > 2 else 0)
    print(f"serving {sys.argv[1]} at {srv.url}", flush=True)
    srv.serve_forever()
