"""The clip side of the database for the clips feature (synchronous: run in threads)."""

from __future__ import annotations

from sqlalchemy import select, update
from sqlmodel import col

from db import lifecycle
from db.database import Database
from db.models import Clip, Song, SongStatus, User


def song_and_clip(db: Database, song_id: int, clip_id: int | None) -> tuple[Song, Clip | None, int]:
    """A song the bot watches, its clip (the job's, else the song's) and its requester's Discord id."""
    with db.read() as s:
        song = s.get(Song, song_id)
        if song is None:
            raise LookupError(f"no song {song_id}")
        user = s.get(User, song.user_id)
        clip = s.get(Clip, clip_id) if clip_id else None
        if clip is None or clip.song_id != song_id:
            clip = s.execute(select(Clip).where(col(Clip.song_id) == song_id)).scalar_one_or_none()
        return song, clip, user.discord_id if user else 0


def clip_posted(db: Database, song_id: int, clip_id: int | None, channel_id: int, message_id: int) -> None:
    """Record the clip's post; the song is done."""
    with db.write() as s:
        s.execute(
            update(Clip).where(col(Clip.id) == clip_id).values(channel_id=channel_id, message_id=message_id)
        )
        lifecycle.finish(s, song_id, SongStatus.done)
