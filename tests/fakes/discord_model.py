"""The data of the fake Discord (tests/fakes/discord.py): Discord's constants, the recorded REST
calls and interactions, and helpers to read messages (their text, buttons and custom ids)."""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from aiohttp import web

DISCORD_EPOCH_MS = 1420070400000
DEFAULT_SIZE_LIMIT = 10 * 1024 * 1024  # Discord's default per-file limit since 2025-01
MANAGE_GUILD = 1 << 5
ADMINISTRATOR = 1 << 3
EVERYONE_PERMISSIONS = (1 << 10) | (1 << 11) | (1 << 31)  # view channel, send messages, use app commands

# Interaction types
PING, APPLICATION_COMMAND, MESSAGE_COMPONENT, AUTOCOMPLETE, MODAL_SUBMIT = 1, 2, 3, 4, 5
# Interaction callback types
CB_MESSAGE, CB_DEFER, CB_DEFER_UPDATE, CB_UPDATE, CB_AUTOCOMPLETE, CB_MODAL = 4, 5, 6, 7, 8, 9
# Application command option types
OPT_SUB, OPT_GROUP, OPT_STRING, OPT_INTEGER, OPT_BOOLEAN, OPT_NUMBER, OPT_ATTACHMENT = 1, 2, 3, 4, 5, 10, 11
OPT_CHANNEL, OPT_ROLE = 7, 8
EPHEMERAL = 1 << 6


class FakeDiscordError(AssertionError):
    """The test asked the fake for something Discord would refuse."""


def _now_iso() -> str:
    return datetime.now(UTC).isoformat()


def _json_response(data: Any, status: int = 200) -> web.Response:
    # Exactly "application/json": discord.py's json_or_text() compares the header with ==.
    return web.Response(
        body=json.dumps(data).encode(), status=status, headers={"Content-Type": "application/json"}
    )


def _error(status: int, code: int, message: str) -> web.Response:
    return _json_response({"code": code, "message": message}, status)


@dataclass
class RestCall:
    method: str
    path: str
    query: dict[str, str]
    json: Any
    files: list[tuple[str, bytes]]
    auth: str | None
    at: float = field(default_factory=time.monotonic)


@dataclass
class HostedFile:
    data: bytes | None  # None: never served (e.g. an upload that claims to be huge)
    content_type: str
    downloads: int = 0


@dataclass
class FakeInteraction:
    """One interaction a member triggered, with everything the bot answered to it."""

    id: int
    token: str
    type: int
    user_id: int
    channel_id: int
    guild_id: int
    payload: dict[str, Any]
    created_at: float = field(default_factory=time.monotonic)  # for the 3 s / 15 min deadlines
    callbacks: list[dict[str, Any]] = field(default_factory=list)
    original: dict[str, Any] | None = None  # the message created by the response (if any)
    followups: list[dict[str, Any]] = field(default_factory=list)

    @property
    def callback_types(self) -> list[int]:
        return [c["type"] for c in self.callbacks]

    @property
    def choices(self) -> list[dict[str, Any]]:
        for cb in self.callbacks:
            if cb["type"] == CB_AUTOCOMPLETE:
                return list(cb.get("data", {}).get("choices", []))
        raise FakeDiscordError("no autocomplete answer")

    @property
    def modal(self) -> dict[str, Any] | None:
        for cb in self.callbacks:
            if cb["type"] == CB_MODAL:
                return dict(cb["data"])
        return None

    def replies(self) -> list[dict[str, Any]]:
        """Messages the member sees as answers: the original response (as edited) and followups."""
        out = []
        if self.original is not None:
            out.append(self.original)
        out.extend(self.followups)
        return out

    def text(self) -> str:
        """All the text the member was shown in answer (content and embeds), joined."""
        parts: list[str] = []
        for cb in self.callbacks:
            if cb["type"] == CB_UPDATE:  # CB_MESSAGE content is in self.original
                parts.append(_message_text(cb.get("data") or {}))
        for m in self.replies():
            parts.append(_message_text(m))
        return "\n".join(p for p in parts if p)

    def is_ephemeral(self) -> bool:
        for cb in self.callbacks:
            if cb["type"] in (CB_MESSAGE, CB_DEFER) and (cb.get("data") or {}).get("flags", 0) & EPHEMERAL:
                return True
        return False


def _message_text(m: dict[str, Any]) -> str:
    parts = [m.get("content") or ""]
    for e in m.get("embeds") or []:
        parts.append(e.get("title") or "")
        parts.append(e.get("description") or "")
        for f in e.get("fields") or []:
            parts.append(f"{f.get('name', '')}: {f.get('value', '')}")
        if e.get("footer"):
            parts.append(e["footer"].get("text", ""))
    return "\n".join(p for p in parts if p)


def custom_ids(message: dict[str, Any]) -> list[str]:
    """Every custom_id of the buttons/selects on a message, in order."""
    out: list[str] = []

    def walk(components: list[dict[str, Any]]) -> None:
        for c in components:
            if "custom_id" in c:
                out.append(c["custom_id"])
            walk(c.get("components") or [])

    walk(message.get("components") or [])
    return out


def buttons(message: dict[str, Any]) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []

    def walk(components: list[dict[str, Any]]) -> None:
        for c in components:
            if c.get("type") == 2:
                out.append(c)
            walk(c.get("components") or [])

    walk(message.get("components") or [])
    return out


def _with_component_ids(components: list[dict[str, Any]]) -> list[dict[str, Any]]:
    # Discord echoes components back; discord.py reads them from the message on a click.
    return json.loads(json.dumps(components))


def _guess_type(filename: str) -> str:
    ext = filename.rsplit(".", 1)[-1].lower()
    return {
        "wav": "audio/x-wav",
        "mp3": "audio/mpeg",
        "ogg": "audio/ogg",
        "opus": "audio/ogg",
        "png": "image/png",
        "txt": "text/plain",
    }.get(ext, "application/octet-stream")
