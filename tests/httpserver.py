"""Test helpers shared by the download and real-dataset tests: a loopback HTTP file server
(127.0.0.1 only, stops by itself), checksums and in-memory archives."""

from __future__ import annotations

import hashlib
import http.server
import io
import re
import tarfile
import threading
import zipfile
from collections.abc import Mapping


class LoopbackServer:
    """A tiny HTTP file server on 127.0.0.1 (port chosen by the OS) for tests.

    ``files``: URL path -> bytes. Supports ``Range: bytes=N-`` (206) unless ``ignore_range``.
    ``drop``: URL path -> how many responses are cut off after half their body (the connection is
    closed while the advertised Content-Length is the full one). ``fail``: URL path -> list of
    HTTP status codes answered (and consumed) before the file is served. Every request is
    recorded in ``requests`` as ``(path, Range header or None)``. A watchdog stops the server
    after ``lifetime_s`` even if a test forgets to.
    """

    def __init__(
        self,
        files: Mapping[str, bytes],
        ignore_range: bool = False,
        drop: Mapping[str, int] | None = None,
        fail: Mapping[str, list[int]] | None = None,
        lifetime_s: float = 120.0,
    ) -> None:
        self.files = dict(files)
        self.ignore_range = ignore_range
        self.drop = dict(drop or {})
        self.fail = {k: list(v) for k, v in (fail or {}).items()}
        self.requests: list[tuple[str, str | None]] = []
        self._lock = threading.Lock()
        server = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def log_message(self, *args: object) -> None:  # keep test output clean
                pass

            def do_GET(self) -> None:  # noqa: N802 (http.server API)
                rng = self.headers.get("Range")
                with server._lock:
                    server.requests.append((self.path, rng))
                    fail = server.fail.get(self.path)
                    status = fail.pop(0) if fail else None
                    drop = server.drop.get(self.path, 0) > 0
                    if drop:
                        server.drop[self.path] -= 1
                if status is not None:
                    self.send_error(status)
                    return
                data = server.files.get(self.path)
                if data is None:
                    self.send_error(404)
                    return
                start = 0
                m = re.fullmatch(r"bytes=(\d+)-", rng or "")
                if m and not server.ignore_range:
                    start = int(m.group(1))
                    if start >= len(data):
                        self.send_response(416)
                        self.send_header("Content-Range", f"bytes */{len(data)}")
                        self.end_headers()
                        return
                    self.send_response(206)
                    self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
                else:
                    self.send_response(200)
                body = data[start:]
                self.send_header("Content-Length", str(len(body)))
                self.send_header("Content-Type", "application/octet-stream")
                self.end_headers()
                if drop:
                    self.wfile.write(body[: len(body) // 2])
                    self.wfile.flush()
                    self.close_connection = True
                    return
                self.wfile.write(body)

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self._thread = threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        self._watchdog = threading.Timer(lifetime_s, self.httpd.shutdown)
        self._watchdog.daemon = True

    def url(self, path: str) -> str:
        """Full URL of a served path."""
        host, port = self.httpd.server_address[:2]
        return f"http://{host}:{port}{path}"

    def __enter__(self) -> LoopbackServer:
        self._thread.start()
        self._watchdog.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._watchdog.cancel()
        self.httpd.shutdown()
        self.httpd.server_close()
        self._thread.join(timeout=5)


def md5_of(data: bytes) -> str:
    return hashlib.md5(data).hexdigest()


def sha256_of(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def make_tar_gz(members: Mapping[str, bytes]) -> bytes:
    """A .tar.gz (in memory) of regular files ``{name: content}``."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tf:
        for name, data in members.items():
            ti = tarfile.TarInfo(name)
            ti.size = len(data)
            tf.addfile(ti, io.BytesIO(data))
    return buf.getvalue()


def make_zip(members: Mapping[str, bytes]) -> bytes:
    """A .zip (in memory, deflated) of files ``{name: content}``."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        for name, data in members.items():
            zf.writestr(name, data)
    return buf.getvalue()
