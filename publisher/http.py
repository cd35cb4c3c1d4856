"""Shared HTTP behaviour of the platform clients: rate limits and sorting failures into outcomes.

Rate limits (X documents `x-rate-limit-limit/-remaining/-reset`, reset in epoch seconds): when a
bucket is known to be empty we wait for its reset before calling, and a 429 waits for the reset and
tries again, as long as the wait is at most `max_wait` seconds; longer waits end the attempt with a
`retry` outcome whose `retry_at` is the reset time, so the publication is rescheduled rather than
holding the bot.

Transport failures: a connection that never opened is a clean `retry`; once the request may have
reached the platform (read timeout, reset, protocol error), the result depends on whether the call
creates something: `unclear` for the final post, `retry` for media upload steps (a half-finished
upload session simply expires on the platform).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import httpx

from db.retry_after import rate_limit_reset
from publisher.errors import Outcome, PublishError

Sleep = Callable[[float], Awaitable[None]]


@dataclass
class Bucket:
    remaining: int
    reset: float  # epoch seconds


class RateLimiter:
    """Remembers each endpoint's bucket from the response headers."""

    def __init__(self, platform: str, *, max_wait: float = 60.0, sleep: Sleep = asyncio.sleep) -> None:
        self.platform = platform
        self.max_wait = max_wait
        self.sleep = sleep
        self.buckets: dict[str, Bucket] = {}

    def observe(self, key: str, response: httpx.Response) -> None:
        remaining = response.headers.get("x-rate-limit-remaining")
        reset = response.headers.get("x-rate-limit-reset")
        if remaining is not None and reset is not None:
            with contextlib.suppress(ValueError):
                self.buckets[key] = Bucket(int(remaining), float(reset))

    async def before(self, key: str) -> None:
        bucket = self.buckets.get(key)
        if bucket is None or bucket.remaining > 0:
            return
        await self._wait_until(bucket.reset, f"{self.platform} rate limit for {key} is used up")

    async def after_429(self, key: str, response: httpx.Response) -> None:
        """Wait for the reset named by the 429 (or raise a `retry` outcome when that is too far)."""
        reset = _reset_time(response)
        await self._wait_until(reset, f"{self.platform} said too many requests (429) for {key}")

    async def _wait_until(self, reset: float, why: str) -> None:
        wait = reset - time.time()
        if wait <= 0:
            return
        if wait > self.max_wait:
            when = datetime.fromtimestamp(reset, UTC)
            raise PublishError(
                f"{why}; it resets at {when:%H:%M:%S} UTC.", Outcome.retry, status=429, retry_at=when
            )
        await self.sleep(wait + 0.05)


def _reset_time(response: httpx.Response) -> float:
    """When a 429 ends: x-rate-limit-reset (epoch s), else Retry-After (seconds or a date), else 60 s."""
    now = time.time()
    reset = rate_limit_reset(response.headers, now=now)
    return now + 60.0 if reset is None else reset


def error_message(response: httpx.Response) -> str:
    """The platform's own words for an error response (X problem JSON, SoundCloud errors, OAuth errors)."""
    try:
        body: Any = response.json()
    except ValueError:
        text = response.text.strip()
        return text[:300] if text else response.reason_phrase
    parts: list[str] = []
    if isinstance(body, dict):
        for key in ("detail", "title", "message", "error_description", "error"):
            value = body.get(key)
            if isinstance(value, str) and value and value not in parts:
                parts.append(value)
                break
        for err in body.get("errors") or []:
            if isinstance(err, dict):
                msg = err.get("message") or err.get("error_message") or err.get("detail")
                if isinstance(msg, str) and msg not in parts:
                    parts.append(msg)
    return "; ".join(parts)[:500] or response.reason_phrase


async def send(
    client: httpx.AsyncClient,
    request: Callable[[], httpx.Request],
    *,
    limiter: RateLimiter,
    key: str,
    creates: bool,
    attempts_on_429: int = 2,
) -> httpx.Response:
    """Send a request built by `request()` (rebuilt each try, so signatures and nonces are fresh).

    Returns the response for any status other than 429; transport failures become PublishError.
    """
    for _ in range(attempts_on_429 + 1):
        await limiter.before(key)
        try:
            response = await client.send(request())
        except (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout) as exc:
            raise PublishError(
                f"Could not connect to {limiter.platform}: {exc or type(exc).__name__}", Outcome.retry
            ) from exc
        except (
            httpx.TransportError
        ) as exc:  # read/write timeouts, resets, protocol errors: it may have arrived
            what = type(exc).__name__
            if creates:
                raise PublishError(
                    f"No clear answer from {limiter.platform} ({what}); the post may have gone through.",
                    Outcome.unclear,
                ) from exc
            raise PublishError(f"{limiter.platform} did not answer ({what}).", Outcome.retry) from exc
        limiter.observe(key, response)
        if response.status_code != 429:
            return response
        await limiter.after_429(key, response)
    raise PublishError(f"{limiter.platform} kept saying too many requests (429).", Outcome.retry, status=429)


def raise_for_status(response: httpx.Response, *, platform: str, creates: bool, step: str) -> None:
    """Sort a non-2xx answer: 5xx on the final post is unclear, 5xx elsewhere retry, 4xx permanent."""
    status = response.status_code
    if status < 400:
        return
    message = f"{platform} {step} failed ({status}): {error_message(response)}"
    if status >= 500:
        raise PublishError(message, Outcome.unclear if creates else Outcome.retry, status=status)
    if status == 401:
        raise PublishError(message, Outcome.auth, status=status)
    if status == 408:
        raise PublishError(message, Outcome.unclear if creates else Outcome.retry, status=status)
    raise PublishError(message, Outcome.permanent, status=status)
