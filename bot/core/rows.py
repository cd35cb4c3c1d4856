"""Database reads every feature needs (synchronous: run them with `bot.run`). Ids here are ones
the bot stored itself; an id a member typed or a button carried goes through `db.scope.GuildScope`
(`bot.core.access`)."""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

from sqlalchemy import update
from sqlmodel import Session, col

from db.database import Database
from db.models import Song, User

T = TypeVar("T")


def song_by_own_id(db: Database, song_id: int) -> Song | None:
    """A song by the id the bot itself stored (a watched row, a locked song), not one a member typed."""
    with db.read() as s:
        return s.get(Song, song_id)


def discord_id_of(db: Database, user_id: int) -> int | None:
    with db.read() as s:
        user = s.get(User, user_id)
        return user.discord_id if user else None


def scoped(db: Database, lookup: Callable[[Session, int], T], item_id: int) -> T:
    with db.read() as s:
        return lookup(s, item_id)


def set_status_message(db: Database, song_id: int, message_id: int | None) -> None:
    with db.write() as s:
        s.execute(update(Song).where(col(Song.id) == song_id).values(status_message_id=message_id))
