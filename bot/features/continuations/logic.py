"""Which clip a message shows: read from its Continue button (clip and daily posts), else from the
database (a clip post whose buttons were removed)."""

from __future__ import annotations

import re

import discord
from sqlalchemy import select
from sqlmodel import col

from db.database import Database
from db.models import Clip

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
