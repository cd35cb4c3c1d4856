"""The daily clip's scheduled entry point, kept at this import path on purpose: the scheduler's
persistent job store saves each guild's job as `bot.daily:daily_job`, so jobs saved by any earlier
version keep firing. The clips feature registers what a fire does (bot/features/clips/daily.py);
this module imports no feature and is not an extension, so it is never reloaded under the
scheduler's feet."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable

log = logging.getLogger("jukebot.bot.daily")

PostDaily = Callable[[int], Awaitable[object]]

_running: dict[str, PostDaily] = {}


def register(post: PostDaily | None) -> None:
    """Tell scheduled jobs what posts a guild's daily clip (None: nothing does any more)."""
    if post is None:
        _running.pop("post", None)
    else:
        _running["post"] = post


async def daily_job(guild_id: int) -> None:
    """The scheduled entry point (kept importable by path for the persistent job store)."""
    post = _running.get("post")
    if post is None:
        log.warning("daily clip for guild %s fired with no bot running", guild_id)
        return
    await post(guild_id)
