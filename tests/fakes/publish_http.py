"""A tiny threaded HTTP server on 127.0.0.1 (ephemeral port) for the fake X and SoundCloud servers.

Each fake subclasses `FakeHTTPServer` and implements `handle(request) -> Response`. Tests script
misbehaviour with `script(method, path_regex, action, when=...)`: a rule fires once (or `times` times),
either before the normal handling ("before": its response replaces the real one, the platform did
nothing) or after it ("after": the platform did the work, then the rule decides what the client
sees, e.g. a 500, a hang or a killed client). Every request is kept in `requests` for assertions.
"""

from __future__ import annotations

import contextlib
import email.parser
import email.policy
import json
import os
import re
import signal
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit


@dataclass
class UploadedFile:
    filename: str | None
    content_type: str | None
    data: bytes


@dataclass
class Request:
    method: str
    path: str  # without the query
    raw_path: str  # with the query, as sent
    query: dict[str, list[str]]
    headers: dict[str, str]  # lower-case names
    body: bytes
    host: str
    form: dict[str, str] = field(default_factory=dict)  # urlencoded or multipart text fields
    files: dict[str, UploadedFile] = field(default_factory=dict)  # multipart file fields
    multipart_names: list[str] = field(default_factory=list)  # every part name, in order

    def json(self) -> Any:
        return json.loads(self.body or b"null")

    def q(self, name: str) -> str | None:
        values = self.query.get(name)
        return values[0] if values else None


@dataclass
class Response:
    status: int = 200
    body: Any = None  # JSON-serialisable, or bytes
    headers: dict[str, str] = field(default_factory=dict)

    def encode(self) -> tuple[bytes, str]:
        if isinstance(self.body, bytes):
            return self.body, self.headers.get("Content-Type", "application/octet-stream")
        if self.body is None:
            return b"", "application/json"
        return json.dumps(self.body).encode(), "application/json; charset=utf-8"


class Hang:
    """Action result: do not answer for `seconds` (the client times out), then drop the connection."""

    def __init__(self, seconds: float = 30.0) -> None:
        self.seconds = seconds


class Drop:
    """Action result: close the connection without an answer (a reset after the request was sent)."""


Action = Callable[[Request, "Response | None"], "Response | Hang | Drop | None"]


@dataclass
class Rule:
    method: str
    pattern: re.Pattern[str]
    action: Action
    when: str
    times: int


def respond(status: int, body: Any = None, headers: dict[str, str] | None = None) -> Action:
    """An action that answers with a fixed response."""
    return lambda _req, _resp: Response(status, body, dict(headers or {}))


def hang(seconds: float = 30.0) -> Action:
    return lambda _req, _resp: Hang(seconds)


def drop() -> Action:
    return lambda _req, _resp: Drop()


def parse_multipart(
    content_type: str, body: bytes
) -> tuple[dict[str, str], dict[str, UploadedFile], list[str]]:
    message = email.parser.BytesParser(policy=email.policy.HTTP).parsebytes(
        b"Content-Type: " + content_type.encode("latin-1") + b"\r\nMIME-Version: 1.0\r\n\r\n" + body
    )
    if not message.is_multipart():
        raise ValueError("not a multipart body")
    form: dict[str, str] = {}
    files: dict[str, UploadedFile] = {}
    names: list[str] = []
    for part in message.iter_parts():
        disposition = part.get("Content-Disposition", "")
        if not str(disposition).startswith("form-data"):
            raise ValueError("a multipart part without form-data disposition")
        name = part.get_param("name", header="content-disposition")
        filename = part.get_param("filename", header="content-disposition")
        raw = part.get_payload(decode=True)
        payload = raw if isinstance(raw, bytes) else b""
        assert isinstance(name, str)
        names.append(name)
        if filename is not None:
            files[name] = UploadedFile(str(filename), part.get_content_type(), payload)
        else:
            form[name] = payload.decode("utf-8")
    return form, files, names


class FakeHTTPServer:
    def __init__(self) -> None:
        self.requests: list[Request] = []
        self.violations: list[str] = []  # protocol mistakes by the client that the real API would punish
        self._rules: list[Rule] = []
        self._lock = threading.RLock()
        self.client_pid: int | None = None  # for kill_client()
        fake = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def _serve(self) -> None:
                fake._dispatch(self)

            do_GET = do_POST = do_PUT = do_DELETE = _serve

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(
            target=self._server.serve_forever, name=type(self).__name__, daemon=True
        )

    @property
    def base_url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}"

    def start(self) -> FakeHTTPServer:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    def __enter__(self) -> FakeHTTPServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # ----------------------------------------------------------------------------------- scripting

    def script(
        self, method: str, path_regex: str, action: Action, *, when: str = "before", times: int = 1
    ) -> None:
        assert when in ("before", "after")
        with self._lock:
            self._rules.append(Rule(method.upper(), re.compile(path_regex), action, when, times))

    def kill_client(self) -> Action:
        """Action: SIGKILL the client process (set `client_pid`) — a crash right after the platform acted."""

        def action(_req: Request, _resp: Response | None) -> Drop:
            deadline = time.monotonic() + 10
            while self.client_pid is None and time.monotonic() < deadline:
                time.sleep(0.05)
            assert self.client_pid is not None, "set fake.client_pid to the publisher subprocess"
            os.kill(self.client_pid, signal.SIGKILL)
            return Drop()

        return action

    def _take_rule(self, req: Request, when: str) -> Rule | None:
        with self._lock:
            for rule in self._rules:
                if rule.when == when and rule.method == req.method and rule.pattern.fullmatch(req.path):
                    rule.times -= 1
                    if rule.times <= 0:
                        self._rules.remove(rule)
                    return rule
        return None

    def pending_rules(self) -> int:
        with self._lock:
            return len(self._rules)

    # ------------------------------------------------------------------------------------- serving

    def handle(self, req: Request) -> Response:  # pragma: no cover - subclasses implement
        raise NotImplementedError

    def _read(self, h: BaseHTTPRequestHandler) -> Request:
        split = urlsplit(h.path)
        length = int(h.headers.get("Content-Length") or 0)
        body = h.rfile.read(length) if length else b""
        headers = {k.lower(): v for k, v in h.headers.items()}
        req = Request(
            method=h.command,
            path=split.path,
            raw_path=h.path,
            query=parse_qs(split.query, keep_blank_values=True),
            headers=headers,
            body=body,
            host=headers.get("host", ""),
        )
        ctype = headers.get("content-type", "")
        if ctype.startswith("multipart/form-data"):
            req.form, req.files, req.multipart_names = parse_multipart(ctype, body)
        elif ctype.startswith("application/x-www-form-urlencoded"):
            req.form = {k: v[0] for k, v in parse_qs(body.decode("utf-8"), keep_blank_values=True).items()}
        return req

    def _dispatch(self, h: BaseHTTPRequestHandler) -> None:
        try:
            req = self._read(h)
        except ValueError as exc:
            self._write(h, Response(400, {"error": f"bad request body: {exc}"}))
            return
        with self._lock:
            self.requests.append(req)
        result: Response | Hang | Drop | None = None
        rule = self._take_rule(req, "before")
        if rule is not None:
            result = rule.action(req, None)
        if result is None:
            with self._lock:
                result = self.handle(req)
            after = self._take_rule(req, "after")
            if after is not None:
                result = after.action(req, result) or result
        if isinstance(result, Hang):
            time.sleep(result.seconds)
            h.close_connection = True
            return
        if isinstance(result, Drop):
            h.close_connection = True
            with contextlib.suppress(OSError):
                h.connection.shutdown(2)
            return
        self._write(h, result)

    def _write(self, h: BaseHTTPRequestHandler, resp: Response) -> None:
        data, ctype = resp.encode()
        try:
            h.send_response(resp.status)
            h.send_header("Content-Type", ctype)
            h.send_header("Content-Length", str(len(data)))
            for key, value in resp.headers.items():
                if key.lower() != "content-type":
                    h.send_header(key, value)
            h.end_headers()
            h.wfile.write(data)
        except (BrokenPipeError, ConnectionResetError):
            pass
