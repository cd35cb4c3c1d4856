"""db.repo on SQLite and PostgreSQL: users, songs, drafts, votes, winners, clips, the daily pick, quotas."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta

import pytest
from sqlalchemy import update
from sqlmodel import col

from db import queue as q
from db import repo
from db.database import Database
from db.models import Clip, Draft, JobKind, Song, SongStatus, utcnow


def make_song(
    db: Database, requester: int = 100, *, drafts: int = 3, guild_id: int | None = 1
) -> tuple[Song, list[Draft]]:
    user = repo.get_or_create_user(db, requester, f"member{requester}")
    assert user.id is not None
    song = repo.create_song(
        db, user_id=user.id, artist="the beatles", genre="rock", seconds=10, seed=7, guild_id=guild_id
    )
    assert song.id is not None
    made = [
        repo.add_draft(db, song.id, i, f"songs/{song.id}/d{i}.wav", f"songs/{song.id}/d{i}.npy")
        for i in range(drafts)
    ]
    return song, made


def make_clip(db: Database, requester: int, made_at: datetime | None = None) -> tuple[int, Clip]:
    song, _ = make_song(db, requester, drafts=0)
    assert song.id is not None
    clip = repo.add_clip(db, song.id, f"clips/{song.id}.wav", f"clips/{song.id}.npz", seconds=10)
    if made_at is not None:
        with db.write() as s:
            s.execute(update(Clip).where(col(Clip.id) == clip.id).values(created_at=made_at))
    assert clip.id is not None
    return clip.id, clip


def test_users_are_created_once_and_keep_their_name_current(db: Database) -> None:
    a = repo.get_or_create_user(db, 2**62, "ann")  # Discord ids need 64 bits
    b = repo.get_or_create_user(db, 2**62, "ann (new nick)")
    assert a.id == b.id and b.name == "ann (new nick)"
    assert repo.get_or_create_user(db, 2**62).name == "ann (new nick)"  # no name given: keep it


def test_songs_and_drafts(db: Database) -> None:
    song, drafts = make_song(db)
    assert song.id is not None
    found = repo.song_by_id(db, song.id)
    assert found is not None and found.status == SongStatus.queued and found.artist == "the beatles"
    assert repo.song_by_id(db, 99999) is None
    assert [d.index for d in repo.drafts_for_song(db, song.id)] == [0, 1, 2]
    again = repo.add_draft(db, song.id, 1, "retry/d1.wav", "retry/d1.npy", seconds=9.5)  # a retried job
    assert again.id == drafts[1].id
    assert [d.audio_key for d in repo.drafts_for_song(db, song.id)][1] == "retry/d1.wav"


def test_one_vote_per_member_per_song_and_stage(db: Database) -> None:
    song, (d0, d1, d2) = make_song(db)
    assert song.id is not None
    assert repo.cast_vote(db, song.id, 1, d0.id) is repo.VoteOutcome.new
    assert repo.cast_vote(db, song.id, 1, d0.id) is repo.VoteOutcome.unchanged
    assert repo.cast_vote(db, song.id, 1, d2.id) is repo.VoteOutcome.changed
    assert repo.cast_vote(db, song.id, 2, d2.id) is repo.VoteOutcome.new
    assert repo.cast_vote(db, song.id, 3, d1.id, voter_name="cid") is repo.VoteOutcome.new
    assert repo.vote_counts(db, song.id) == {d2.id: 2, d1.id: 1}
    clip = repo.add_clip(db, song.id, "c.wav", "c.npz", draft_id=d2.id)
    assert repo.cast_vote(db, song.id, 1, stage=repo.CLIP) is repo.VoteOutcome.new  # a separate stage
    assert repo.cast_vote(db, song.id, 1, stage=repo.CLIP) is repo.VoteOutcome.unchanged
    assert repo.vote_counts(db, song.id, repo.CLIP) == {clip.id: 1}
    assert repo.vote_counts(db, song.id) == {d2.id: 2, d1.id: 1}


def test_votes_for_a_draft_of_another_song_are_refused(db: Database) -> None:
    song, _ = make_song(db, 1)
    _, other_drafts = make_song(db, 2)
    assert song.id is not None
    with pytest.raises(ValueError, match="is not one of song"):
        repo.cast_vote(db, song.id, 5, other_drafts[0].id)
    with pytest.raises(ValueError, match="Unknown vote stage"):
        repo.cast_vote(db, song.id, 5, None, stage="upsample")


def test_top_clips_and_the_daily_pick(db: Database) -> None:
    now = datetime(2026, 6, 2, 18, 0, tzinfo=UTC)
    old_id, old = make_clip(db, 1, now - timedelta(days=3))
    quiet_id, _ = make_clip(db, 2, now - timedelta(hours=5))
    loved_id, loved = make_clip(db, 3, now - timedelta(hours=2))
    liked_id, liked = make_clip(db, 4, now - timedelta(hours=1))
    for voter in range(10, 15):
        repo.cast_vote(db, old.song_id, voter, stage=repo.CLIP)  # popular, but not from today
    for voter in range(10, 13):
        repo.cast_vote(db, loved.song_id, voter, stage=repo.CLIP)
    repo.cast_vote(db, liked.song_id, 10, stage=repo.CLIP)

    top = repo.top_clips(db, now - timedelta(days=1), now)
    assert [(c.id, n) for c, n in top] == [(loved_id, 3), (liked_id, 1), (quiet_id, 0)]
    assert [c.id for c, _ in repo.top_clips(db, now - timedelta(days=7), now, limit=2)] == [old_id, loved_id]
    assert repo.top_clips(db, now - timedelta(days=1), now, guild_id=424242) == []

    pick = repo.daily_pick(db, now)
    assert pick is not None and pick.id == loved_id
    assert repo.mark_featured(db, loved_id, now.date()) is True
    assert repo.mark_featured(db, liked_id, now.date()) is False  # one clip per server and day
    assert repo.mark_featured(db, loved_id, "2026-06-03") is False  # a clip is featured once
    featured = repo.featured_clip(db, 1, date(2026, 6, 2))
    assert featured is not None and featured.id == loved_id
    pick = repo.daily_pick(db, now + timedelta(hours=1))
    assert pick is not None and pick.id == liked_id  # the best one not featured yet
    assert repo.mark_featured(db, liked_id, "2026-06-03") is True
    assert repo.daily_pick(db, now - timedelta(days=10)) is None


def test_each_server_gets_its_own_daily_clip_and_only_a_voted_one(db: Database) -> None:
    """Reliability issue, defect 12: `featured_on` was unique across servers, so with two servers
    only one got its daily clip; and a clip nobody voted for could be the clip of the day."""
    now = datetime(2026, 6, 2, 18, 0, tzinfo=UTC)
    ours, _ = make_song(db, 100, drafts=0, guild_id=1)
    theirs, _ = make_song(db, 200, drafts=0, guild_id=2)
    unvoted, _ = make_song(db, 300, drafts=0, guild_id=3)
    clips = {}
    for song in (ours, theirs, unvoted):
        assert song.id is not None
        clip = repo.add_clip(db, song.id, f"c/{song.id}.wav", f"c/{song.id}.npz", seconds=5)
        with db.write() as s:
            s.execute(update(Clip).where(col(Clip.id) == clip.id).values(created_at=now - timedelta(hours=1)))
        clips[song.guild_id] = clip.id
    repo.cast_vote(db, ours.id or 0, 11, stage=repo.CLIP)
    repo.cast_vote(db, theirs.id or 0, 12, stage=repo.CLIP)
    for guild in (1, 2):
        pick = repo.daily_pick(db, now, guild_id=guild)
        assert pick is not None and pick.id == clips[guild]
        assert repo.mark_featured(db, pick.id, now.date()) is True  # the same day, both servers
        assert repo.featured_clip(db, guild, now.date()) == pick
        assert repo.featured_day(db, pick.id) == "2026-06-02"
    assert repo.daily_pick(db, now, guild_id=3) is None  # nobody voted for server 3's clip
    allowed = repo.daily_pick(db, now, guild_id=3, min_votes=0)  # ...unless its moderators allow it
    assert allowed is not None and allowed.id == clips[3]


def test_member_usage_and_running_per_guild(db: Database) -> None:
    song_a, _ = make_song(db, 100, drafts=0, guild_id=7)
    song_b, _ = make_song(db, 100, drafts=0, guild_id=7)
    song_c, _ = make_song(db, 200, drafts=0, guild_id=7)
    make_song(db, 100, drafts=0, guild_id=8)
    user = repo.get_or_create_user(db, 100)
    assert user.id is not None
    with db.write() as s:  # one song from yesterday does not count today
        s.execute(
            update(Song).where(col(Song.id) == song_b.id).values(created_at=utcnow() - timedelta(days=2))
        )
    for song in (song_a, song_b, song_c):
        q.enqueue(db, JobKind.draft, {}, song_id=song.id)
    lease = q.claim(db, [JobKind.draft], "w", 60)
    assert lease is not None and lease.song_id == song_a.id

    usage = repo.member_usage(db, user.id)
    assert usage == repo.MemberUsage(songs_since=2, queued=1, running=1)
    assert repo.member_usage(db, user.id, since=utcnow() - timedelta(days=3)).songs_since == 3
    assert repo.running_in_guild(db, 7) == 1
    assert repo.running_in_guild(db, 8) == 0
    q.complete(db, lease)
    assert repo.member_usage(db, user.id).running == 0
    assert repo.running_in_guild(db, 7) == 0


def test_start_of_day_is_utc_midnight() -> None:
    assert repo.start_of_day(datetime(2026, 1, 2, 23, 59, tzinfo=UTC)) == datetime(2026, 1, 2, tzinfo=UTC)
