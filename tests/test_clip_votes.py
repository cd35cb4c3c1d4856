"""Clip votes are per clip (trustgaps 3): a song can have several clips (a draft chosen again), and
each has its own votes, so /top, the daily pick and the clip post's count rank each clip by its own.
Existing clip votes (per song) move to the song's first clip in migration 0011. SQLite and PostgreSQL."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import text, update
from sqlmodel import col

from db import migrate, repo
from db.database import Database
from db.models import Clip, Song


def song_with_two_clips(db: Database, now: datetime) -> tuple[Song, int, int]:
    """A song whose vote's winner was made, then another of its drafts chosen again."""
    user = repo.get_or_create_user(db, 900, "ann")
    assert user.id is not None
    song = repo.create_song(db, user_id=user.id, artist="abba", genre="pop", seconds=5, seed=1, guild_id=7)
    assert song.id is not None
    d0 = repo.add_draft(db, song.id, 0, "d0.wav", "d0.npy")
    d1 = repo.add_draft(db, song.id, 1, "d1.wav", "d1.npy")
    first = repo.add_clip(db, song.id, "c0.wav", "c0.npz", draft_id=d0.id)
    again = repo.add_clip(db, song.id, "c1.wav", "c1.npz", draft_id=d1.id)
    assert first.id is not None and again.id is not None
    with db.write() as s:
        s.execute(
            update(Clip).where(col(Clip.song_id) == song.id).values(created_at=now - timedelta(hours=1))
        )
    return song, first.id, again.id


def test_each_clip_of_a_song_has_its_own_votes(db: Database) -> None:
    now = datetime(2026, 6, 2, 18, 0, tzinfo=UTC)
    song, first, again = song_with_two_clips(db, now)
    assert song.id is not None
    for voter in (1, 2, 3):
        assert repo.cast_vote(db, song.id, voter, stage=repo.CLIP, clip_id=again) is repo.VoteOutcome.new
    assert (
        repo.cast_vote(db, song.id, 1, stage=repo.CLIP, clip_id=first) is repo.VoteOutcome.new
    )  # another clip
    assert repo.cast_vote(db, song.id, 1, stage=repo.CLIP, clip_id=again) is repo.VoteOutcome.unchanged
    assert (repo.clip_votes(db, first), repo.clip_votes(db, again)) == (1, 3)
    assert repo.vote_counts(db, song.id, repo.CLIP) == {first: 1, again: 3}

    top = repo.top_clips(db, now - timedelta(days=1), now, guild_id=7)
    assert [(c.id, n) for c, n in top] == [(again, 3), (first, 1)]  # not 4 and 4
    pick = repo.daily_pick(db, now, guild_id=7)
    assert pick is not None and pick.id == again
    with pytest.raises(ValueError, match="not one of song"):
        repo.cast_vote(db, song.id + 1, 5, stage=repo.CLIP, clip_id=first)


def test_migration_0011_gives_old_clip_votes_to_the_songs_first_clip(empty_database_url: str) -> None:
    db = Database(empty_database_url)
    try:
        migrate.upgrade(db, "0010")  # clip votes were per song
        now = datetime(2026, 6, 2, 18, 0, tzinfo=UTC)
        song, first, again = song_with_two_clips(db, now)  # only the votes table changes in 0011
        for voter in (1, 2):
            user = repo.get_or_create_user(db, voter, f"m{voter}")
            with db.write() as s:
                s.execute(
                    text(
                        "INSERT INTO votes (song_id, user_id, stage, created_at, updated_at) "
                        "VALUES (:song, :user, 'clip', :t, :t)"
                    ),
                    {"song": song.id, "user": user.id, "t": now},
                )
        assert migrate.upgrade(db) == migrate.head_revision()
        assert repo.clip_votes(db, first) == 2 and repo.clip_votes(db, again) == 0
        assert song.id is not None
        assert repo.cast_vote(db, song.id, 1, stage=repo.CLIP, clip_id=again) is repo.VoteOutcome.new
        assert repo.cast_vote(db, song.id, 1, stage=repo.CLIP, clip_id=first) is repo.VoteOutcome.unchanged
        assert migrate.downgrade(db, "0010") == "0010"  # back: one clip vote per member per song
        with db.read() as s:
            assert s.execute(text("SELECT COUNT(*) FROM votes")).scalar() == 2
    finally:
        db.dispose()
