"""The clip side of the database for the clips feature (synchronous: run in threads)."""

from __future__ import annotations

from sqlalchemy import update
from sqlmodel import col

from db import lifecycle, repo
from db.database import Database
from db.models import Clip, Song, User


def song_and_clip(db: Database, song_id: int, clip_id: int | None) -> tuple[Song, Clip | None, int]:
    """A song the bot watches, its clip (the job's, else its first unposted one, else its first) and
    its requester's Discord id. A song has a clip per draft upsampled (the winner, then drafts chosen
    again)."""
    with db.read() as s:
        song = s.get(Song, song_id)
        if song is None:
            raise LookupError(f"no song {song_id}")
        user = s.get(User, song.user_id)
        clip = s.get(Clip, clip_id) if clip_id else None
        if clip is None or clip.song_id != song_id:
            clips = repo.clips_of_song(s, song_id)
            clip = next((c for c in clips if c.message_id is None), clips[0] if clips else None)
        return song, clip, user.discord_id if user else 0


def clip_posted(db: Database, song_id: int, clip_id: int | None, channel_id: int, message_id: int) -> None:
    """Record the clip's post; the song is done unless another of its drafts is being made."""
    with db.write() as s:
        s.execute(
            update(Clip).where(col(Clip.id) == clip_id).values(channel_id=channel_id, message_id=message_id)
        )
        lifecycle.settle(s, song_id)


def settle(db: Database, song_id: int) -> bool:
    with db.write() as s:
        return lifecycle.settle(s, song_id)
