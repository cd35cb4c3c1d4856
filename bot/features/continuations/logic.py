"""Which clip a message shows (read from its Continue button on clip and daily posts, else from the
database: a clip post whose buttons were removed), and the moment of a clip a member typed."""

from __future__ import annotations

import re
from typing import Any

import discord
from sqlalchemy import select
from sqlmodel import col

from bot.errors import UserError
from db.audio.moments import MomentError, clock, parse_moment
from db.database import Database
from db.models import Clip

from .uploads import MIN_PRIME_SECONDS

CONTINUE_ID = re.compile(r"^jb:continue:(\d+)$")


def clip_id_of_message(message: discord.Message) -> int | None:
    """The clip a message shows, read from its Continue button (clip posts and daily posts)."""
    for row in message.components:
        for child in getattr(row, "children", []):
            m = CONTINUE_ID.match(getattr(child, "custom_id", None) or "")
            if m:
                return int(m[1])
    return None


def clip_by_message(db: Database, message_id: int) -> int | None:
    with db.read() as s:
        return s.execute(select(col(Clip.id)).where(col(Clip.message_id) == message_id)).scalar()


def moment_in_clip(text: str, clip: Clip) -> float:
    """`at:` (or the modal's moment) as seconds of the clip: where the new music starts. UserError
    for junk, a moment before the start, at the very start, or past the clip's end."""
    what = f"clip #{clip.id}"
    try:
        at = parse_moment(text, what=what)
    except MomentError as e:
        raise UserError(str(e)) from None
    if clip.seconds > 0 and at > clip.seconds + 0.05:  # lengths are stored rounded
        raise UserError(
            f"`{text}` is past the end of {what} ({clock(clip.seconds)} long). Choose a moment inside it, "
            "or continue from its end."
        )
    if at < MIN_PRIME_SECONDS:
        raise UserError(
            f"`{text}` is the very start of {what}: there is no music before it to keep. Choose a later "
            "moment (the new song keeps the clip up to it), or start a new song with `/generate`."
        )
    return at


def modal_value(data: Any, custom_id: str) -> str | None:
    """The value of the text input `custom_id` in a modal submission's data (rows of components,
    or label components holding one)."""
    stack = list((data or {}).get("components") or [])
    while stack:
        c = stack.pop()
        if not isinstance(c, dict):
            continue
        if c.get("custom_id") == custom_id and "value" in c:
            return str(c["value"])
        stack.extend(c.get("components") or [])
        if isinstance(c.get("component"), dict):
            stack.append(c["component"])
    return None
