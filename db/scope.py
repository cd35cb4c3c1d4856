"""Ids a member typed or a button carried, resolved only inside the server they come from.

Song, clip and job ids are sequential, so any id is easy to guess. The bot never looks one up with a
bare `session.get`: it asks a `GuildScope`, which answers None for an id of another server, for an
id out of the database's integer range (PostgreSQL's `integer` ends at 2**31 - 1: a larger literal
is an error there, not "no row"), and for an id from a direct message. "None" reads to the member as
"there is no song #N here", the same for a missing id and for someone else's.
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import select
from sqlmodel import Session, col

from db.models import Clip, Draft, Job, Song

MAX_ID = 2**31 - 1  # the range of an `integer` primary key on PostgreSQL (and what SQLite rowids we make)


def valid_id(value: int) -> bool:
    return isinstance(value, int) and 1 <= value <= MAX_ID


@dataclass(frozen=True)
class GuildScope:
    """The server a request comes from. `guild_id` None (a direct message) sees nothing."""

    guild_id: int | None

    def song(self, s: Session, song_id: int, *, for_update: bool = False) -> Song | None:
        if self.guild_id is None or not valid_id(song_id):
            return None
        stmt = select(Song).where(col(Song.id) == song_id, col(Song.guild_id) == self.guild_id)
        if for_update:
            stmt = stmt.with_for_update()
        return s.execute(stmt).scalar_one_or_none()

    def clip(self, s: Session, clip_id: int) -> Clip | None:
        if self.guild_id is None or not valid_id(clip_id):
            return None
        return s.execute(
            select(Clip)
            .join(Song, col(Song.id) == col(Clip.song_id))
            .where(col(Clip.id) == clip_id, col(Song.guild_id) == self.guild_id)
        ).scalar_one_or_none()

    def clip_with_song(self, s: Session, clip_id: int) -> tuple[Clip, Song] | None:
        clip = self.clip(s, clip_id)
        if clip is None:
            return None
        song = s.get(Song, clip.song_id)
        assert song is not None  # the join above found it
        return clip, song

    def job(self, s: Session, job_id: int) -> Job | None:
        if self.guild_id is None or not valid_id(job_id):
            return None
        return s.execute(
            select(Job)
            .join(Song, col(Song.id) == col(Job.song_id))
            .where(col(Job.id) == job_id, col(Song.guild_id) == self.guild_id)
        ).scalar_one_or_none()

    def draft(self, s: Session, song_id: int, draft_id: int) -> Draft | None:
        """A draft of a song of this server (a vote button carries both ids)."""
        if self.song(s, song_id) is None or not valid_id(draft_id):
            return None
        draft = s.get(Draft, draft_id)
        return draft if draft is not None and draft.song_id == song_id else None
