"""The OpenAI-compatible client and the retry rules shared by drafting and moderation.

The openai client's own retries are switched off (max_retries=0): we retry here so that replies the
client accepts but we cannot use (no choices, empty text, broken JSON) count against the same
bound, and so that a Retry-After longer than we are willing to wait ends in a plain "busy" message
instead of a silent multi-minute stall.
"""

from __future__ import annotations

import asyncio
import json
import math
import random
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, TypeVar

from db.retry_after import retry_after_seconds as parse_retry_after
from db.settings import Settings
from lyrics.errors import LyricsModelError, LyricsUnavailable

if TYPE_CHECKING:
    from openai import AsyncOpenAI

T = TypeVar("T")
Sleep = Callable[[float], Awaitable[None]]

# Local servers (Ollama, llama.cpp, vLLM, LM Studio) ignore the key, but the client insists on one.
PLACEHOLDER_KEY = "not-needed"

NOT_CONFIGURED = (
    "Lyric drafting is not set up on this server: no text model is configured. "
    "You can still write your own lyrics."
)
NO_KEY = (
    "Lyric drafting is not set up on this server: the text model needs an API key. "
    "You can still write your own lyrics."
)


class MalformedReply(Exception):
    """The server answered 200 but with nothing we can use."""


def make_client(settings: Settings, *, need_model: bool = True) -> AsyncOpenAI:
    """An AsyncOpenAI for the configured server. Raises LyricsUnavailable when drafting is not set up
    (no model; or OpenAI itself with no key). `need_model=False` is for the moderation endpoint."""
    if need_model and not (settings.lyrics.model or "").strip():
        raise LyricsUnavailable(NOT_CONFIGURED)
    key = settings.lyrics.openai_api_key.get_secret_value() if settings.lyrics.openai_api_key else ""
    if not key and not settings.lyrics.openai_base_url:
        raise LyricsUnavailable(NO_KEY)
    from openai import AsyncOpenAI

    return AsyncOpenAI(
        api_key=key or PLACEHOLDER_KEY,
        base_url=settings.lyrics.openai_base_url or None,
        max_retries=0,
        timeout=settings.lyrics.timeout,
    )


@dataclass(frozen=True)
class RetryPolicy:
    attempts: int = 3
    timeout: float = 90.0  # one attempt, from request to the last streamed character
    max_retry_after: float = 30.0
    backoff: float = 0.5  # first pause after a timeout or a 5xx; doubles, capped
    max_backoff: float = 8.0

    @classmethod
    def from_settings(cls, settings: Settings) -> RetryPolicy:
        return cls(
            attempts=max(1, settings.lyrics.attempts),
            timeout=settings.lyrics.timeout,
            max_retry_after=settings.lyrics.max_retry_after,
        )


@dataclass(frozen=True)
class Failure:
    kind: str
    retryable: bool
    message: str  # shown if this is the last failure
    retry_after: float | None = None


_GIVE_UP = {
    "timeout": "The lyrics model did not answer in time; try again or write your own lyrics.",
    "rate_limited": "The lyrics model is busy (too many requests); try again in a minute or write your own lyrics.",
    "server_error": "The lyrics model's server had an error; try again or write your own lyrics.",
    "malformed": "The lyrics model did not send usable lyrics; try again or write your own lyrics.",
    "connection": "Could not reach the lyrics model; try again later or write your own lyrics.",
}


def _minutes(seconds: float) -> str:
    if seconds < 90:
        return f"{math.ceil(seconds)} seconds"
    return f"{math.ceil(seconds / 60)} minutes"


def classify(exc: BaseException, *, policy: RetryPolicy, model: str | None = None) -> Failure:
    import openai

    if isinstance(exc, TimeoutError | openai.APITimeoutError):
        return Failure("timeout", True, _GIVE_UP["timeout"])
    if isinstance(exc, MalformedReply | json.JSONDecodeError | openai.APIResponseValidationError):
        return Failure("malformed", True, _GIVE_UP["malformed"])
    if isinstance(exc, openai.APIConnectionError):
        return Failure("connection", True, _GIVE_UP["connection"])
    if isinstance(exc, openai.RateLimitError):
        body = exc.body if isinstance(exc.body, dict) else {}
        if body.get("code") == "insufficient_quota" or body.get("type") == "insufficient_quota":
            return Failure(
                "quota",
                False,
                "The text model's account has run out of credit; ask an admin, or write your own lyrics.",
            )
        wait = parse_retry_after(exc.response.headers)
        if wait is not None and wait > policy.max_retry_after:
            return Failure(
                "rate_limited",
                False,
                f"The lyrics model is busy; it asks us to wait {_minutes(wait)}. "
                "Try again then, or write your own lyrics.",
                retry_after=wait,
            )
        return Failure("rate_limited", True, _GIVE_UP["rate_limited"], retry_after=wait)
    if isinstance(exc, openai.AuthenticationError | openai.PermissionDeniedError):
        return Failure(
            "refused",
            False,
            "The lyrics model refused this server's API key; ask an admin to check it. "
            "You can still write your own lyrics.",
        )
    if isinstance(exc, openai.NotFoundError):
        name = f'"{model}" ' if model else ""
        return Failure(
            "not_found",
            False,
            f"The text model {name}was not found on the lyrics server; ask an admin to check "
            "the model name. You can still write your own lyrics.",
        )
    if isinstance(exc, openai.APIStatusError):
        if exc.status_code >= 500 or exc.status_code in (408, 409):
            return Failure("server_error", True, _GIVE_UP["server_error"])
        return Failure(
            "refused",
            False,
            f"The lyrics model refused the request (HTTP {exc.status_code}); try a different prompt "
            "or write your own lyrics.",
        )
    if isinstance(exc, openai.APIError):  # an error event inside a stream
        return Failure("server_error", True, _GIVE_UP["server_error"])
    raise exc


def pause_before(attempt: int, failure: Failure, policy: RetryPolicy) -> float:
    """Seconds to wait before attempt `attempt + 1` (attempt counts from 1)."""
    if failure.retry_after is not None:
        return min(failure.retry_after, policy.max_retry_after)
    base = min(policy.backoff * 2 ** (attempt - 1), policy.max_backoff)
    return base * random.uniform(0.75, 1.0)


async def with_retries(
    call: Callable[[], Awaitable[T]],
    policy: RetryPolicy,
    *,
    model: str | None = None,
    sleep: Sleep = asyncio.sleep,
) -> T:
    """Run `call` (one request) up to policy.attempts times, each under policy.timeout.
    Raises LyricsModelError with the last failure's plain message."""
    for attempt in range(1, policy.attempts + 1):
        try:
            async with asyncio.timeout(policy.timeout):
                return await call()
        except Exception as exc:  # classify re-raises anything that is not a model failure
            failure = classify(exc, policy=policy, model=model)
            if not failure.retryable or attempt == policy.attempts:
                raise LyricsModelError(failure.message, kind=failure.kind, attempts=attempt) from exc
            await sleep(pause_before(attempt, failure, policy))
    raise AssertionError("unreachable")
