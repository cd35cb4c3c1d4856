"""Discord's limits, as the fake Discord enforces them (research/discord.md §2.4, §2.5; issue #14
defect 16): per-route rate-limit buckets answered with 429 and ``retry_after``, the rate-limit
headers on every answer (discord.py paces itself with them), the 3-second deadline for the first
interaction callback, and the size limits of a message (content, embeds, files).

Defaults are the real rules; a test may pass other ``DiscordLimits`` to its fake.
"""

from __future__ import annotations

import hashlib
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

MIB = 1024 * 1024


@dataclass(frozen=True)
class RouteLimit:
    limit: int  # requests per window
    per: float  # the window, in seconds (fixed, starting at the first request, as Discord's)


@dataclass(frozen=True)
class DiscordLimits:
    # Keyed as Discord keys them: per channel for channel messages, per interaction token for
    # interaction webhooks (followups and @original edits).
    message_create: RouteLimit = RouteLimit(5, 5.0)  # POST /channels/{id}/messages
    message_edit: RouteLimit = RouteLimit(5, 5.0)  # PATCH /channels/{id}/messages/{mid}
    message_delete: RouteLimit = RouteLimit(5, 5.0)  # DELETE /channels/{id}/messages/{mid}
    webhook: RouteLimit = RouteLimit(5, 2.0)  # /webhooks/{app}/{token}...: as observed on webhooks
    global_per_second: int = 50  # bot-token requests; interaction endpoints are exempt
    interaction_deadline: float = 3.0  # the first callback must come within it (else 10062)
    interaction_token_seconds: float = 15 * 60.0  # followups and edits work this long
    content_chars: int = 2000
    embeds_per_message: int = 10
    embed_chars: int = 6000  # all titles, descriptions, fields, footers and authors together
    files_per_message: int = 10
    request_bytes: int = 25 * MIB  # the whole upload; each file also within the guild's limit

    @classmethod
    def no_rate_limits(cls) -> DiscordLimits:
        """Discord's size rules and deadlines, but no rate limits: for a benchmark of the bot's own
        latency, which would otherwise measure Discord's pacing."""
        unlimited = RouteLimit(10**9, 1.0)
        return cls(
            message_create=unlimited,
            message_edit=unlimited,
            message_delete=unlimited,
            webhook=unlimited,
            global_per_second=10**9,
        )


@dataclass
class Verdict:
    allowed: bool
    headers: dict[str, str]
    retry_after: float = 0.0
    is_global: bool = False


@dataclass
class _Window:
    started: float
    used: int = 0


@dataclass
class RateBuckets:
    """Fixed windows per (route, major parameter), as Discord's buckets behave."""

    clock: Callable[[], float] = time.monotonic
    _windows: dict[tuple[str, str], _Window] = field(default_factory=dict)

    def take(self, route: str, major: str, rule: RouteLimit) -> Verdict:
        now = self.clock()
        key = (route, major)
        w = self._windows.get(key)
        if w is None or now >= w.started + rule.per:
            w = self._windows[key] = _Window(now)
        reset_after = max(0.0, w.started + rule.per - now)
        headers = {
            "X-RateLimit-Limit": str(rule.limit),
            "X-RateLimit-Bucket": hashlib.sha1(route.encode()).hexdigest()[:16],
            "X-RateLimit-Reset-After": f"{reset_after:.3f}",
            "X-RateLimit-Reset": f"{time.time() + reset_after:.3f}",
        }
        if w.used >= rule.limit:
            headers["X-RateLimit-Remaining"] = "0"
            headers["X-RateLimit-Scope"] = "user"
            headers["Retry-After"] = str(max(1, math.ceil(reset_after)))
            return Verdict(False, headers, retry_after=round(reset_after, 3))
        w.used += 1
        headers["X-RateLimit-Remaining"] = str(rule.limit - w.used)
        return Verdict(True, headers)


def route_of(method: str, seg: list[str], limits: DiscordLimits) -> tuple[str, str, RouteLimit] | None:
    """The bucket a request falls in: (route name, major parameter, rule), or None if the fake
    does not limit that route (it still counts towards the global limit)."""
    if seg[0] == "channels" and len(seg) >= 3 and seg[2] == "messages":
        if len(seg) == 3 and method == "POST":
            return "POST /channels/{channel_id}/messages", seg[1], limits.message_create
        if len(seg) == 4 and method == "PATCH":
            return "PATCH /channels/{channel_id}/messages/{message_id}", seg[1], limits.message_edit
        if len(seg) == 4 and method == "DELETE":
            return "DELETE /channels/{channel_id}/messages/{message_id}", seg[1], limits.message_delete
    if seg[0] == "webhooks" and len(seg) >= 3 and method in ("POST", "PATCH", "DELETE"):
        return "/webhooks/{webhook_id}/{webhook_token}", f"{seg[1]}/{seg[2]}", limits.webhook
    return None


def is_interaction_endpoint(seg: list[str]) -> bool:
    """Interaction callbacks and interaction webhooks are outside the bot's global limit."""
    return seg[0] in ("interactions", "webhooks")


def rate_limited_body(retry_after: float, *, is_global: bool) -> dict[str, Any]:
    return {"message": "You are being rate limited.", "retry_after": retry_after, "global": is_global}


def _field_error(field_name: str, code: str, message: str) -> dict[str, Any]:
    return {
        "code": 50035,
        "message": "Invalid Form Body",
        "errors": {field_name: {"_errors": [{"code": code, "message": message}]}},
    }


def message_problem(
    body: Any, files: list[tuple[str, bytes]], limits: DiscordLimits, file_limit: int
) -> tuple[int, dict[str, Any]] | None:
    """What Discord answers to a message create/edit/followup that breaks a size limit
    (status, JSON body), or None when it is within them."""
    body = body if isinstance(body, dict) else {}
    content = body.get("content") or ""
    if len(content) > limits.content_chars:
        return 400, _field_error(
            "content", "BASE_TYPE_MAX_LENGTH", f"Must be {limits.content_chars} or fewer in length."
        )
    embeds = body.get("embeds") or []
    if len(embeds) > limits.embeds_per_message:
        return 400, _field_error(
            "embeds", "BASE_TYPE_MAX_LENGTH", f"Must be {limits.embeds_per_message} or fewer in length."
        )
    if sum(_embed_chars(e) for e in embeds) > limits.embed_chars:
        return 400, _field_error(
            "embeds", "MAX_EMBED_SIZE_EXCEEDED", "Embed size exceeds maximum size of 6000"
        )
    if len(files) > limits.files_per_message:
        return 400, _field_error(
            "files", "BASE_TYPE_MAX_LENGTH", f"Must be {limits.files_per_message} or fewer in length."
        )
    too_big = {"code": 40005, "message": "Request entity too large"}
    if any(len(data) > file_limit for _, data in files):
        return 413, too_big
    if sum(len(data) for _, data in files) > limits.request_bytes + 1024:
        return 413, too_big
    return None


def _embed_chars(embed: dict[str, Any]) -> int:
    n = len(embed.get("title") or "") + len(embed.get("description") or "")
    for f in embed.get("fields") or []:
        n += len(f.get("name") or "") + len(f.get("value") or "")
    n += len((embed.get("footer") or {}).get("text") or "")
    n += len((embed.get("author") or {}).get("name") or "")
    return n
