"""Captions are moderated before a clip is handed to the publisher when it goes to the operator's
shared platform account (publisher/accounts.py `caption_moderation_on`): a member of a server
otherwise writes (artist, genre, lyrics, title) on the operator's page, which every other allowed
server's clips also go to. The check is lyrics' own (blocklist, then the moderation endpoint),
switched on for captions whatever `moderation` says for lyrics."""

from __future__ import annotations

import asyncio
import logging

from db.database import Database
from db.settings import Settings
from lyrics.errors import ModerationUnavailable
from lyrics.moderation import moderate

log = logging.getLogger("jukebot.bot.clips")


def caption_text(db: Database, settings: Settings, clip_id: int) -> str | None:
    """What the publisher will send for this clip, as far as members wrote it (runs in a thread)."""
    from publisher.captions import soundcloud_text, x_caption
    from publisher.runner import load_clip_context

    context = load_clip_context(db, clip_id, settings)
    if context is None:
        return None
    sc = soundcloud_text(context.info, settings.publish.caption_templates)
    return "\n".join((x_caption(context.info, settings.publish.caption_templates), sc.title, sc.description))


async def refusal(db: Database, settings: Settings, clip_id: int) -> str | None:
    """None when the clip's captions may go out; otherwise why not, for the moderator."""
    text = await asyncio.to_thread(caption_text, db, settings, clip_id)
    if text is None:
        return f"There is no clip #{clip_id}."
    try:
        result = await moderate(text, settings=settings.model_copy(update={"moderation": True}))
    except ModerationUnavailable as exc:
        log.warning("clip %s: caption moderation unavailable: %s", clip_id, exc)
        return (
            f"Clip #{clip_id} was not scheduled: its caption must be moderated (the platform account is "
            "the bot operator's shared one) and the moderation service could not be used. Ask the bot's owner."
        )
    if result.allowed:
        return None
    why = f" ({', '.join(result.categories)})" if result.categories else ""
    return (
        f"Clip #{clip_id} was not scheduled: its caption did not pass moderation{why}. "
        "The platform account is the bot operator's shared one, so captions are checked first."
    )
