"""A fake model host (the CDN / blob storage that serves OpenAI's checkpoint files).

A threaded `http.server` on 127.0.0.1 with an ephemeral port that speaks enough HTTP for real
download clients: GET and HEAD, `Range: bytes=N-` answered with 206 + Content-Range (416 past the
end), 404 for unknown paths. Tests script misbehaviour:

- `fail_next(n, status=503)`: the next n requests get an error status;
- `cut_next(n, at=0.5)`: the next n bodies stop after a fraction of their bytes (the announced
  Content-Length is kept, then the connection is closed), like a dropped connection;
- `files[path] = other_bytes`: serve a different file than expected (checksum tests).

Every request is recorded in `requests` as (method, path, Range header or None, status).
"""

from __future__ import annotations

import re
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


@dataclass
class ModelHub:
    files: dict[str, bytes] = field(default_factory=dict)  # "jukebox/models/5b/vqvae.pth.tar" -> bytes
    requests: list[tuple[str, str, str | None, int]] = field(default_factory=list)
    _fail: list[int] = field(default_factory=list)
    _cut: list[float] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    url: str = ""

    def fail_next(self, n: int, status: int = 503) -> None:
        with self._lock:
            self._fail += [status] * n

    def cut_next(self, n: int, at: float = 0.5) -> None:
        with self._lock:
            self._cut += [at] * n

    def gets(self, path: str | None = None) -> list[tuple[str, str, str | None, int]]:
        return [r for r in self.requests if r[0] == "GET" and (path is None or r[1] == path)]

    def _next(self, queue: list) -> object | None:
        with self._lock:
            return queue.pop(0) if queue else None

    def handler(self) -> type[BaseHTTPRequestHandler]:
        hub = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: object) -> None:  # quiet
                pass

            def _send(
                self,
                status: int,
                body: bytes = b"",
                headers: dict[str, str] | None = None,
                head: bool = False,
                cut: float | None = None,
            ) -> None:
                range_ = self.headers.get("Range")
                hub.requests.append((self.command, self.path.lstrip("/"), range_, status))
                self.send_response(status)
                for k, v in (headers or {}).items():
                    self.send_header(k, v)
                self.send_header("Content-Length", str(len(body)))
                if cut is not None:
                    self.send_header("Connection", "close")
                self.end_headers()
                if head:
                    return
                if cut is None:
                    self.wfile.write(body)
                else:
                    self.wfile.write(body[: int(len(body) * cut)])
                    self.wfile.flush()
                    self.close_connection = True

            def _serve(self, head: bool) -> None:
                status = hub._next(hub._fail)
                if status is not None:
                    self._send(int(status), b"temporarily unavailable", head=head)  # type: ignore[call-overload]
                    return
                data = hub.files.get(self.path.lstrip("/"))
                if data is None:
                    self._send(404, b"not found", head=head)
                    return
                start = 0
                m = re.fullmatch(r"bytes=(\d+)-", self.headers.get("Range", "") or "")
                if m:
                    start = int(m.group(1))
                    if start >= len(data):
                        self._send(416, b"", {"Content-Range": f"bytes */{len(data)}"}, head=head)
                        return
                    status, headers = 206, {"Content-Range": f"bytes {start}-{len(data) - 1}/{len(data)}"}
                else:
                    status, headers = 200, {}
                cut = hub._next(hub._cut)
                self._send(
                    status,
                    data[start:],
                    {"Accept-Ranges": "bytes", **headers},
                    head=head,
                    cut=None if cut is None else float(cut),
                )  # type: ignore[arg-type]

            def do_GET(self) -> None:
                self._serve(head=False)

            def do_HEAD(self) -> None:
                self._serve(head=True)

        return Handler


@contextmanager
def serve_model_hub(files: dict[str, bytes] | None = None) -> Iterator[ModelHub]:
    """Run a ModelHub on 127.0.0.1 for the duration of the block; `hub.url` ends with '/'."""
    hub = ModelHub(files=dict(files or {}))
    server = ThreadingHTTPServer(("127.0.0.1", 0), hub.handler())
    server.daemon_threads = True
    hub.url = f"http://127.0.0.1:{server.server_address[1]}/"
    thread = threading.Thread(target=server.serve_forever, name="model-hub", daemon=True)
    thread.start()
    try:
        yield hub
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)
