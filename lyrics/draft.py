"""Draft lyrics through any OpenAI-compatible chat completions server, streamed.

    stream = DraftStream(request, settings=settings)
    async for text_so_far in stream:      # the model's raw text so far; "" again when a retry starts
        show(text_so_far)
    stream.draft                           # LyricsDraft: cleaned, fitted, moderated

or simply `await draft_lyrics(request, settings=settings, on_partial=show)`.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

from db.settings import Settings, get_settings
from lyrics.client import (
    MalformedReply,
    RetryPolicy,
    Sleep,
    classify,
    make_client,
    pause_before,
)
from lyrics.errors import LyricsError, LyricsInputError, LyricsModelError
from lyrics.fit import FittedLyrics, fit_lyrics
from lyrics.moderation import check_lyrics
from lyrics.request import LyricsRequest, max_tokens, messages
from lyrics.written import prepare_lyrics

if TYPE_CHECKING:
    from openai import AsyncOpenAI

TEMPERATURE = 0.9  # lyrics should surprise a little; Regenerate gives another take
RETRY_REASONS = {
    "timeout": "no answer in time",
    "rate_limited": "the model was busy",
    "server_error": "a server error",
    "malformed": "an unusable reply",
    "connection": "no connection",
}


@dataclass(frozen=True)
class LyricsDraft:
    request: LyricsRequest
    lyrics: str  # what the engine will sing
    notes: tuple[str, ...]  # what fitting changed, in plain words
    raw: str  # what the text model wrote
    text_model: str
    attempts: int
    edited: bool = False  # the member changed the lyrics by hand (Edit)

    @property
    def seconds(self) -> float:
        return self.request.seconds


@dataclass
class _Reply:
    text: str
    finish_reason: str | None


class DraftStream:
    """One draft, with retries. Iterate for partial text; `.draft` is set when iteration ends.
    Raises LyricsUnavailable, LyricsModelError or LyricsRejected (all LyricsError) while iterating."""

    def __init__(
        self,
        request: LyricsRequest,
        *,
        settings: Settings | None = None,
        client: AsyncOpenAI | None = None,
        stream: bool = True,
        sleep: Sleep = asyncio.sleep,
    ) -> None:
        self.request = request
        self.settings = settings or get_settings()
        self.policy = RetryPolicy.from_settings(self.settings)
        self.model = (self.settings.lyrics.model or "").strip()
        self.stream = stream
        self.attempt = 0
        self.retry_reason: str | None = None  # why the current attempt is not the first, in words
        self.draft: LyricsDraft | None = None
        self._client = client
        self._sleep = sleep

    def __aiter__(self) -> AsyncGenerator[str, None]:
        return self._run()

    async def _run(self) -> AsyncGenerator[str, None]:
        own = self._client is None
        client = self._client or make_client(self.settings)
        try:
            for attempt in range(1, self.policy.attempts + 1):
                self.attempt = attempt
                if attempt > 1:
                    yield ""  # the front end clears what the failed attempt showed
                reply = _Reply("", None)
                shown = ""
                try:
                    async for reply in self._attempt(client):
                        if reply.text != shown:
                            shown = reply.text
                            yield shown
                    fitted = self._fit(reply)
                except Exception as exc:
                    failure = classify(exc, policy=self.policy, model=self.model)
                    if not failure.retryable or attempt == self.policy.attempts:
                        raise LyricsModelError(failure.message, kind=failure.kind, attempts=attempt) from exc
                    self.retry_reason = RETRY_REASONS.get(failure.kind)
                    await self._sleep(pause_before(attempt, failure, self.policy))
                    continue
                await check_lyrics(fitted.lyrics, settings=self.settings, client=client, sleep=self._sleep)
                self.draft = LyricsDraft(
                    request=self.request,
                    lyrics=fitted.lyrics,
                    notes=fitted.notes,
                    raw=reply.text,
                    text_model=self.model,
                    attempts=attempt,
                )
                return
        finally:
            if own:
                await client.close()

    def _fit(self, reply: _Reply) -> FittedLyrics:
        if not reply.text.strip():
            raise MalformedReply("empty reply")
        try:
            return fit_lyrics(
                reply.text,
                self.request.seconds,
                engine_model=self.request.engine_model,
                from_model=True,
                truncated=reply.finish_reason == "length",
            )
        except LyricsInputError as exc:  # nothing singable in the reply: ask again
            raise MalformedReply(str(exc)) from exc

    async def _attempt(self, client: AsyncOpenAI) -> AsyncIterator[_Reply]:
        """One request. Time spent waiting on the server counts against policy.timeout; time the
        caller spends showing partial text does not (we never yield inside a timeout scope)."""
        budget = self.policy.timeout

        async def wait(aw: Awaitable[Any]) -> Any:
            nonlocal budget
            if budget <= 0:
                raise TimeoutError
            started = time.monotonic()
            try:
                return await asyncio.wait_for(aw, budget)
            finally:
                budget -= time.monotonic() - started

        kwargs: dict[str, Any] = {
            "model": self.model,
            "messages": messages(self.request),
            "max_tokens": max_tokens(self.request),
            "temperature": TEMPERATURE,
        }
        if not self.stream:
            completion = await wait(client.chat.completions.create(**kwargs))
            choices = getattr(completion, "choices", None)
            if not choices:
                raise MalformedReply("no choices")
            message = getattr(choices[0], "message", None)
            text = getattr(message, "content", None)
            if not isinstance(text, str) or not text.strip():
                raise MalformedReply("empty content")
            yield _Reply(text, getattr(choices[0], "finish_reason", None))
            return

        chunks = await wait(client.chat.completions.create(**kwargs, stream=True))
        reply = _Reply("", None)
        iterator = chunks.__aiter__()
        try:
            while True:
                try:
                    chunk = await wait(iterator.__anext__())
                except StopAsyncIteration:
                    break
                choices = getattr(chunk, "choices", None)
                if not isinstance(choices, list) or not choices:
                    continue  # e.g. a final usage-only chunk
                choice = choices[0]
                delta = getattr(getattr(choice, "delta", None), "content", None)
                if getattr(choice, "finish_reason", None):
                    reply.finish_reason = choice.finish_reason
                if isinstance(delta, str) and delta:
                    reply.text += delta
                    yield reply
        finally:
            await chunks.close()
        if not reply.text.strip():
            raise MalformedReply("empty stream")
        yield reply  # the finish reason may arrive after the last text


async def draft_lyrics(
    request: LyricsRequest,
    *,
    settings: Settings | None = None,
    on_partial: Callable[[str], Awaitable[None] | None] | None = None,
    client: AsyncOpenAI | None = None,
    stream: bool = True,
    sleep: Sleep = asyncio.sleep,
) -> LyricsDraft:
    """Draft, clean, fit and moderate lyrics for `request`. `on_partial` gets the text so far
    (sync or async callable). Raises a LyricsError with a message fit to show as is."""
    drafting = DraftStream(request, settings=settings, client=client, stream=stream, sleep=sleep)
    async with contextlib.aclosing(aiter(drafting)) as texts:
        async for text in texts:
            if on_partial is not None:
                result = on_partial(text)
                if result is not None:
                    await result
    if drafting.draft is None:  # pragma: no cover - the stream either sets it or raises
        raise LyricsError("The lyrics model did not send usable lyrics; try again or write your own lyrics.")
    return drafting.draft


async def edit_draft(
    draft: LyricsDraft,
    text: str,
    *,
    settings: Settings | None = None,
    sleep: Sleep = asyncio.sleep,
) -> LyricsDraft:
    """The draft with the member's own text in place of the lyrics, fitted and moderated like
    any written lyrics. Raises LyricsInputError, LyricsRejected or ModerationUnavailable."""
    fitted = await prepare_lyrics(
        text, draft.request.seconds, settings=settings, engine_model=draft.request.engine_model, sleep=sleep
    )
    return replace(draft, lyrics=fitted.lyrics, notes=fitted.notes, raw=text, edited=True)
