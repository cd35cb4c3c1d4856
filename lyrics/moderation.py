"""Moderation of drafted and written lyrics.

Two layers, both optional:
- the server's own blocklist (`settings.lyrics.blocklist`): whole words or phrases, any case. It is
  local and free, so it applies whenever it is set, with or without the endpoint;
- the moderation endpoint (`moderations.create` on the configured OpenAI-compatible server) when
  `settings.lyrics.moderation` is on. A moderator switched it on on purpose, so if the endpoint cannot be
  reached the lyrics are held back (ModerationUnavailable) rather than waved through.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from db.settings import Settings
from lyrics.client import MalformedReply, RetryPolicy, Sleep, make_client, with_retries
from lyrics.errors import LyricsModelError, LyricsRejected, LyricsUnavailable, ModerationUnavailable

if TYPE_CHECKING:
    from openai import AsyncOpenAI


@dataclass(frozen=True)
class ModerationResult:
    allowed: bool
    reason: str | None = None  # a plain sentence when not allowed
    source: str = "none"  # none | blocklist | endpoint
    categories: tuple[str, ...] = ()  # endpoint categories, or the (masked) blocked words


@dataclass(frozen=True)
class BlocklistHit:
    entry: str
    line: int  # 1-based


def _pattern(entry: str) -> re.Pattern[str]:
    # Word boundaries that also work for entries starting or ending with punctuation; inner
    # whitespace matches any run of whitespace so a phrase split over a line break still counts.
    words = [re.escape(w) for w in entry.split()]
    return re.compile(r"(?<!\w)" + r"\s+".join(words) + r"(?!\w)", re.IGNORECASE)


def blocklist_hits(text: str, blocklist: Iterable[str]) -> list[BlocklistHit]:
    hits: list[BlocklistHit] = []
    for entry in blocklist:
        if not entry.strip():
            continue
        m = _pattern(entry).search(text)
        if m:
            hits.append(BlocklistHit(entry=entry.strip(), line=text.count("\n", 0, m.start()) + 1))
    return sorted(hits, key=lambda h: h.line)


def mask(word: str) -> str:
    """'darn' -> 'd**n': enough to find it, without repeating it in the channel."""
    if len(word) <= 2:
        return word[0] + "*" * (len(word) - 1)
    return word[0] + "*" * (len(word) - 2) + word[-1]


def _category_names(categories: Any) -> tuple[str, ...]:
    if categories is None:
        return ()
    data = categories.model_dump(by_alias=True) if hasattr(categories, "model_dump") else dict(categories)
    return tuple(
        sorted(k.replace("/", " (") + (")" if "/" in k else "") for k, v in data.items() if v is True)
    )


def _subject(drafted: bool) -> str:
    return "The drafted lyrics" if drafted else "These lyrics"


def _remedy(drafted: bool) -> str:
    return "press Regenerate or change the prompt." if drafted else "please change them."


async def moderate(
    text: str,
    *,
    settings: Settings,
    client: AsyncOpenAI | None = None,
    drafted: bool = False,
    sleep: Sleep = asyncio.sleep,
) -> ModerationResult:
    """Check `text` against the blocklist, then (when switched on) the moderation endpoint.
    Raises ModerationUnavailable if the endpoint is on but cannot be used."""
    hits = blocklist_hits(text, settings.lyrics.blocklist)
    if hits:
        shown = ", ".join(f'"{mask(h.entry)}" on line {h.line}' for h in hits[:3])
        more = f" and {len(hits) - 3} more" if len(hits) > 3 else ""
        return ModerationResult(
            allowed=False,
            reason=f"{_subject(drafted)} contain words this server does not allow ({shown}{more}); "
            + _remedy(drafted),
            source="blocklist",
            categories=tuple(mask(h.entry) for h in hits),
        )
    if not settings.lyrics.moderation:
        return ModerationResult(allowed=True)

    own = client is None
    try:
        client = client or make_client(settings, need_model=False)
    except LyricsUnavailable as exc:
        raise ModerationUnavailable(
            "Lyrics moderation is switched on but no moderation service is configured; ask an admin."
        ) from exc
    assert client is not None

    async def call() -> Any:
        response = await client.moderations.create(input=text)
        results = getattr(response, "results", None)
        if not results:
            raise MalformedReply("no moderation results")
        return results[0]

    try:
        result = await with_retries(call, RetryPolicy.from_settings(settings), sleep=sleep)
    except LyricsModelError as exc:
        if exc.kind in ("not_found", "refused", "quota"):
            raise ModerationUnavailable(
                "Lyrics moderation is switched on but the text-model server has no usable moderation "
                "endpoint; ask an admin (or switch moderation off and use the blocklist)."
            ) from exc
        raise ModerationUnavailable(
            "Lyrics moderation is switched on but the moderation service did not answer; "
            "try again in a minute."
        ) from exc
    finally:
        if own:
            await client.close()
    if getattr(result, "flagged", False):
        names = _category_names(getattr(result, "categories", None))
        why = f" ({', '.join(names)})" if names else ""
        return ModerationResult(
            allowed=False,
            reason=f"{_subject(drafted)} were flagged by the moderation service{why}; " + _remedy(drafted),
            source="endpoint",
            categories=names,
        )
    return ModerationResult(allowed=True, source="endpoint")


async def check_lyrics(
    text: str,
    *,
    settings: Settings,
    client: AsyncOpenAI | None = None,
    drafted: bool = True,
    sleep: Sleep = asyncio.sleep,
) -> ModerationResult:
    """`moderate`, raising LyricsRejected with the plain reason when the lyrics are not allowed."""
    result = await moderate(text, settings=settings, client=client, drafted=drafted, sleep=sleep)
    if not result.allowed:
        raise LyricsRejected(result.reason or f"{_subject(drafted)} were not allowed.")
    return result
