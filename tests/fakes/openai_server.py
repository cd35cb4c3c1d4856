"""A local fake of an OpenAI-compatible server: `/v1/chat/completions` (plain JSON and SSE streaming)
and `/v1/moderations`, on 127.0.0.1 with an ephemeral port, in a background thread so that sync code
(the CLI under CliRunner) and async code (the bot, the drafting functions) can both talk to it with
the real `openai` client.

Each test scripts the replies, one per request, in order:

    with FakeOpenAI() as server:
        server.chat.append(Reply.rate_limited(retry_after=1))
        server.chat.append(Reply.text("[Verse]\\nla la la"))
        ... base_url=server.base_url ...
        server.requests  # what the client sent, parsed

When a queue is empty the server answers 500 "nothing scripted", so a test never passes by luck.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


@dataclass
class Reply:
    """One scripted answer. `content` is the assistant's text (chat) — or `flagged` for moderation."""

    content: str | None = None
    status: int = 200
    delay: float = 0.0  # before the status line: the client sees nothing at all
    headers: dict[str, str] = field(default_factory=dict)
    body: str | None = None  # raw body, sent as is (malformed JSON, odd shapes)
    chunks: list[str] | None = None  # streaming: how to split `content` (default: by word)
    chunk_delay: float = 0.0  # streaming: pause between chunks
    stall_after: int | None = None  # streaming: stop sending (but keep the socket open) after N chunks
    raw_events: list[str] | None = None  # streaming: exact `data:` payloads, sent as is
    finish_reason: str = "stop"
    flagged: bool = False
    categories: tuple[str, ...] = ()

    @classmethod
    def text(cls, content: str, **kw: Any) -> Reply:
        return cls(content=content, **kw)

    @classmethod
    def slow(cls, delay: float, content: str = "too late") -> Reply:
        return cls(content=content, delay=delay)

    @classmethod
    def rate_limited(cls, retry_after: float | str | None = 1) -> Reply:
        headers = {} if retry_after is None else {"Retry-After": str(retry_after)}
        body = {"error": {"message": "Rate limit reached", "type": "requests", "code": "rate_limit_exceeded"}}
        return cls(status=429, headers=headers, body=json.dumps(body))

    @classmethod
    def server_error(cls, status: int = 500) -> Reply:
        body = {"error": {"message": "The server had an error", "type": "server_error", "code": None}}
        return cls(status=status, body=json.dumps(body))

    @classmethod
    def error(cls, status: int, message: str = "nope", code: str | None = None) -> Reply:
        return cls(
            status=status, body=json.dumps({"error": {"message": message, "type": "error", "code": code}})
        )

    @classmethod
    def malformed(cls, body: str = '{"choices": [ this is not json') -> Reply:
        return cls(body=body)

    @classmethod
    def moderation(cls, flagged: bool, *categories: str) -> Reply:
        return cls(flagged=flagged, categories=tuple(categories))


@dataclass
class Recorded:
    method: str
    path: str
    headers: dict[str, str]
    json: Any
    at: float  # time.monotonic() when it arrived


_CATEGORIES = (
    "harassment",
    "harassment/threatening",
    "hate",
    "hate/threatening",
    "illicit",
    "illicit/violent",
    "self-harm",
    "self-harm/instructions",
    "self-harm/intent",
    "sexual",
    "sexual/minors",
    "violence",
    "violence/graphic",
)


class FakeOpenAI:
    def __init__(self) -> None:
        self.chat: list[Reply] = []
        self.moderation: list[Reply] = []
        self.requests: list[Recorded] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self._server.daemon_threads = True
        self._thread = threading.Thread(
            target=self._server.serve_forever, args=(0.05,), name="fake-openai", daemon=True
        )

    # -- lifecycle -------------------------------------------------------------------------------

    @property
    def base_url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}/v1"

    def __enter__(self) -> FakeOpenAI:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()  # wakes handlers sleeping in a scripted delay
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)

    def chat_requests(self) -> list[Recorded]:
        return [r for r in self.requests if r.path.endswith("/chat/completions")]

    def moderation_requests(self) -> list[Recorded]:
        return [r for r in self.requests if r.path.endswith("/moderations")]

    # -- the handler -----------------------------------------------------------------------------

    def _next(self, queue: list[Reply]) -> Reply | None:
        with self._lock:
            return queue.pop(0) if queue else None

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        fake = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: Any) -> None:  # keep test output quiet
                pass

            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(length) if length else b""
                try:
                    payload = json.loads(raw or b"null")
                except ValueError:
                    payload = None
                path = self.path.split("?", 1)[0]
                with fake._lock:
                    headers = {k.lower(): v for k, v in self.headers.items()}
                    fake.requests.append(Recorded("POST", path, headers, payload, time.monotonic()))
                if path == "/v1/chat/completions":
                    reply = fake._next(fake.chat)
                elif path == "/v1/moderations":
                    reply = fake._next(fake.moderation)
                else:
                    self._json(
                        404, {"error": {"message": f"unknown path {path}", "type": "invalid_request_error"}}
                    )
                    return
                if reply is None:
                    self._json(500, {"error": {"message": "fake: nothing scripted", "type": "server_error"}})
                    return
                if reply.delay and fake._stop.wait(reply.delay):
                    return
                try:
                    if reply.status != 200 or reply.body is not None:
                        self._send(reply.status, (reply.body or "").encode(), reply.headers)
                    elif path == "/v1/moderations":
                        self._json(200, fake._moderation_body(payload, reply), reply.headers)
                    elif isinstance(payload, dict) and payload.get("stream"):
                        self._stream(payload, reply)
                    else:
                        self._json(200, fake._completion_body(payload, reply), reply.headers)
                except (BrokenPipeError, ConnectionResetError):
                    pass  # the client gave up (a timeout test): fine

            def _json(self, status: int, body: Any, headers: dict[str, str] | None = None) -> None:
                self._send(status, json.dumps(body).encode(), headers or {})

            def _send(self, status: int, data: bytes, headers: dict[str, str]) -> None:
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                for k, v in headers.items():
                    self.send_header(k, v)
                self.end_headers()
                self.wfile.write(data)
                self.wfile.flush()

            def _stream(self, payload: dict[str, Any], reply: Reply) -> None:
                self.send_response(200)
                self.send_header("Content-Type", "text/event-stream")
                self.send_header("Transfer-Encoding", "chunked")
                self.send_header("Cache-Control", "no-cache")
                for k, v in reply.headers.items():
                    self.send_header(k, v)
                self.end_headers()
                for i, event in enumerate(fake._events(payload, reply)):
                    if reply.stall_after is not None and i >= reply.stall_after:
                        fake._stop.wait(3600)  # say nothing more until the test ends
                        return
                    if i and reply.chunk_delay and fake._stop.wait(reply.chunk_delay):
                        return
                    data = f"data: {event}\n\n".encode()
                    self.wfile.write(b"%X\r\n%s\r\n" % (len(data), data))
                    self.wfile.flush()
                self.wfile.write(b"0\r\n\r\n")
                self.wfile.flush()

        return Handler

    # -- bodies ----------------------------------------------------------------------------------

    @staticmethod
    def _completion_body(payload: Any, reply: Reply) -> dict[str, Any]:
        model = payload.get("model", "fake") if isinstance(payload, dict) else "fake"
        return {
            "id": "chatcmpl-fake",
            "object": "chat.completion",
            "created": int(time.time()),
            "model": model,
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": reply.content},
                    "finish_reason": reply.finish_reason,
                }
            ],
            "usage": {"prompt_tokens": 10, "completion_tokens": 10, "total_tokens": 20},
        }

    @staticmethod
    def _events(payload: dict[str, Any], reply: Reply) -> Iterator[str]:
        if reply.raw_events is not None:
            yield from reply.raw_events
            return
        model = payload.get("model", "fake")
        content = reply.content or ""
        pieces = reply.chunks if reply.chunks is not None else [w + " " for w in content.split(" ")]
        if reply.chunks is None and pieces:
            pieces[-1] = pieces[-1][:-1]

        def chunk(delta: dict[str, Any], finish: str | None) -> str:
            return json.dumps(
                {
                    "id": "chatcmpl-fake",
                    "object": "chat.completion.chunk",
                    "created": int(time.time()),
                    "model": model,
                    "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
                }
            )

        yield chunk({"role": "assistant", "content": ""}, None)
        for piece in pieces:
            yield chunk({"content": piece}, None)
        yield chunk({}, reply.finish_reason)
        yield "[DONE]"

    @staticmethod
    def _moderation_body(payload: Any, reply: Reply) -> dict[str, Any]:
        flagged = set(reply.categories)
        return {
            "id": "modr-fake",
            "model": "omni-moderation-latest",
            "results": [
                {
                    "flagged": reply.flagged,
                    "categories": {c: c in flagged for c in _CATEGORIES},
                    "category_scores": {c: (0.9 if c in flagged else 0.01) for c in _CATEGORIES},
                    "category_applied_input_types": {c: ["text"] for c in _CATEGORIES},
                }
            ],
        }
