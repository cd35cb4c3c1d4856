"""db/lifecycle.py (a song's states and moves) and db/scope.py (ids resolved inside one server),
on SQLite and PostgreSQL."""

from __future__ import annotations

import ast
from datetime import timedelta
from pathlib import Path

import pytest
from sqlalchemy import select, update
from sqlmodel import col

from db import lifecycle, repo
from db import queue as q
from db.database import Database
from db.models import Clip, Job, JobKind, JobStatus, Song, SongStatus, utcnow
from db.scope import MAX_ID, GuildScope
from tests.test_repo import make_clip, make_song

ROOT = Path(__file__).resolve().parents[1]


def _status(db: Database, song_id: int) -> str:
    found = repo.song_by_id(db, song_id)
    assert found is not None
    return found.status


def _jobs(db: Database, song_id: int) -> list[Job]:
    with db.read() as s:
        return list(s.execute(select(Job).where(col(Job.song_id) == song_id).order_by(col(Job.id))).scalars())


def _voting(db: Database, song_id: int, closes_in: float = 300.0) -> None:
    lifecycle.open_vote(db, song_id, utcnow() + timedelta(seconds=closes_in))


def test_moves_follow_the_table_and_the_rest_are_refused(db: Database) -> None:
    song, _ = make_song(db)
    assert song.id is not None
    lifecycle.move(db, song.id, SongStatus.drafting)
    lifecycle.move(db, song.id, SongStatus.drafting)  # the same news twice: a no-op
    with pytest.raises(lifecycle.IllegalMove, match="drafting to done"):
        lifecycle.move(db, song.id, SongStatus.done)
    assert lifecycle.advance(db, song.id, SongStatus.queued) is False  # too late: left alone
    lifecycle.move(db, song.id, SongStatus.failed, error="CUDA out of memory")
    found = repo.song_by_id(db, song.id)
    assert found is not None and (found.status, found.error) == ("failed", "CUDA out of memory")
    assert lifecycle.finish(db, song.id, SongStatus.cancelled) is False  # ended already: stays failed
    assert _status(db, song.id) == "failed"
    with pytest.raises(LookupError, match="no song 4242"):
        lifecycle.move(db, 4242, SongStatus.done)
    # every state has a row; `done` only goes back to upsample a draft chosen again; `rerolled` is the end
    assert set(lifecycle.MOVES) == set(SongStatus)
    assert lifecycle.MOVES[SongStatus.done] == {SongStatus.upsampling}
    assert not lifecycle.MOVES[SongStatus.rerolled]


def test_winner_most_votes_then_requesters_vote_then_draft_order(db: Database) -> None:
    song, (d0, d1, d2) = make_song(db, requester=100)
    assert song.id is not None

    def winner() -> int | None:
        with db.read() as s:
            found = s.get(Song, song.id)
            assert found is not None
            w = lifecycle.pick_winner(s, found)
            return w.id if w is not None else None

    assert winner() == d0.id  # nobody voted: the first draft
    repo.cast_vote(db, song.id, 1, d1.id)
    repo.cast_vote(db, song.id, 2, d2.id)
    assert winner() == d1.id  # tie, nobody's tie-break: draft order
    repo.cast_vote(db, song.id, 100, d0.id)  # the requester's own vote
    repo.cast_vote(db, song.id, 3, d0.id)
    repo.cast_vote(db, song.id, 4, d2.id)
    assert winner() == d0.id  # tie at 2: the requester voted d0
    repo.cast_vote(db, song.id, 5, d2.id)
    assert winner() == d2.id  # most votes wins outright


def test_close_vote_records_winner_moves_song_and_queues_the_upsample_together(db: Database) -> None:
    song, (d0, d1, _) = make_song(db)
    assert song.id is not None
    _voting(db, song.id)
    repo.cast_vote(db, song.id, 1, d1.id)
    assert lifecycle.close_vote(db, song.id) is None  # not due yet
    closed = lifecycle.close_vote(db, song.id, force=True)
    assert closed is not None and closed.winner.id == d1.id
    (job,) = _jobs(db, song.id)
    assert (job.id, job.kind, job.payload) == (
        closed.job_id,
        "upsample",
        {"song_id": song.id, "draft_id": d1.id},
    )
    found = repo.song_by_id(db, song.id)
    assert found is not None and (found.status, found.winner_draft_id) == ("upsampling", d1.id)
    repo.cast_vote(db, song.id, 2, d0.id)
    assert lifecycle.close_vote(db, song.id, force=True) is None  # only once
    assert len(_jobs(db, song.id)) == 1
    empty, _ = make_song(db, drafts=0)
    assert empty.id is not None
    _voting(db, empty.id)
    with pytest.raises(RuntimeError, match="no drafts"):
        lifecycle.close_vote(db, empty.id, force=True)
    assert _status(db, empty.id) == "voting" and _jobs(db, empty.id) == []  # nothing half-done


def test_a_failed_enqueue_rolls_the_vote_close_back(db: Database, monkeypatch: pytest.MonkeyPatch) -> None:
    """The defect of the first wave: the vote was committed, then the job queued in a second
    transaction; a crash in between left a closed vote with no upsample job."""
    song, _ = make_song(db)
    assert song.id is not None
    _voting(db, song.id)

    def crash(*_a: object, **_k: object) -> int:
        raise RuntimeError("the process died here")

    monkeypatch.setattr(q, "enqueue", crash)  # the crash point itself cannot be reached otherwise
    with pytest.raises(RuntimeError, match="died"):
        lifecycle.close_vote(db, song.id, force=True)
    found = repo.song_by_id(db, song.id)
    assert found is not None and (found.status, found.winner_draft_id) == ("voting", None)


def test_cancel_waiting_queued_running_and_orphaned_songs(db: Database) -> None:
    waiting, _ = make_song(db)
    assert waiting.id is not None
    assert lifecycle.cancel(db, waiting.id) == lifecycle.CancelOutcome.cancelled
    assert lifecycle.start(db, waiting.id, JobKind.draft) is None  # a cancelled song gets no job
    assert lifecycle.cancel(db, waiting.id) == lifecycle.CancelOutcome.finished

    queued, _ = make_song(db)
    assert queued.id is not None
    job_id = lifecycle.start(db, queued.id, JobKind.draft)
    assert job_id is not None and lifecycle.start(db, queued.id, JobKind.draft) == job_id  # idempotent
    assert lifecycle.cancel(db, queued.id) == lifecycle.CancelOutcome.cancelled
    assert [j.status for j in _jobs(db, queued.id)] == ["cancelled"]

    running, _ = make_song(db)
    assert running.id is not None
    lifecycle.start(db, running.id, JobKind.draft)
    lease = q.claim(db, [JobKind.draft], "w1", 60)
    assert lease is not None and lease.song_id == running.id
    assert lifecycle.cancel(db, running.id) == lifecycle.CancelOutcome.requested
    assert _status(db, running.id) == "queued" and q.is_cancel_requested(db, lease)


def test_cancel_of_a_job_whose_worker_died_ends_it_at_once(db: Database) -> None:
    """Defect 6 of the reliability issue: a job cancelled while its worker was dead stayed `running`."""
    song, _ = make_song(db)
    assert song.id is not None
    lifecycle.start(db, song.id, JobKind.draft)
    lease = q.claim(db, [JobKind.draft], "dead-worker", 60)
    assert lease is not None
    with db.write() as s:  # the worker was SIGKILLed a while ago: its lease ran out
        s.execute(update(Job).values(lease_expires_at=utcnow() - timedelta(seconds=5)))
    assert lifecycle.cancel(db, song.id) == lifecycle.CancelOutcome.cancelled
    assert _status(db, song.id) == "cancelled"
    assert [j.status for j in _jobs(db, song.id)] == ["cancelled"]


def test_the_sweeper_ends_a_cancelled_job_of_a_dead_worker(db: Database) -> None:
    song, _ = make_song(db)
    assert song.id is not None
    lifecycle.start(db, song.id, JobKind.draft)
    assert q.claim(db, [JobKind.draft], "w", 60) is not None
    assert lifecycle.cancel(db, song.id) == lifecycle.CancelOutcome.requested  # the worker was alive
    with db.write() as s:  # ...and then died before its next heartbeat
        s.execute(update(Job).values(lease_expires_at=utcnow() - timedelta(seconds=5)))
    assert q.reclaim_expired(db) == 1
    assert [j.status for j in _jobs(db, song.id)] == ["cancelled"]


def test_retry_moves_job_and_song_back_together(db: Database) -> None:
    song, _ = make_song(db)
    assert song.id is not None
    _voting(db, song.id)
    closed = lifecycle.close_vote(db, song.id, force=True)
    assert closed is not None
    lease = q.claim(db, [JobKind.upsample], "w", 60)
    assert lease is not None
    q.fail(db, lease, "boom", retry=False)
    lifecycle.finish(db, song.id, SongStatus.failed, "boom")
    job = lifecycle.retry(db, closed.job_id)
    assert job.status == JobStatus.queued and job.attempts == 0
    found = repo.song_by_id(db, song.id)
    assert found is not None and (found.status, found.error) == ("upsampling", None)
    with pytest.raises(q.NotRetryable, match="only failed or cancelled"):
        lifecycle.retry(db, closed.job_id)
    with pytest.raises(LookupError, match="no job #999"):
        lifecycle.retry(db, 999)


def test_ids_resolve_only_inside_their_own_server(db: Database) -> None:
    ours, _ = make_song(db, guild_id=1)
    theirs, (their_draft, *_) = make_song(db, guild_id=2)
    assert ours.id is not None and theirs.id is not None
    clip_id, _ = make_clip(db, 100)  # a song of guild 1
    their_job = lifecycle.start(db, theirs.id, JobKind.draft)
    assert their_job is not None
    here, there, dm = GuildScope(1), GuildScope(2), GuildScope(None)
    with db.read() as s:
        assert here.song(s, ours.id) is not None and there.song(s, ours.id) is None
        assert here.song(s, theirs.id) is None and dm.song(s, ours.id) is None
        assert here.clip(s, clip_id) is not None and there.clip(s, clip_id) is None
        assert there.job(s, their_job) is not None and here.job(s, their_job) is None
        assert there.draft(s, theirs.id, their_draft.id or 0) is not None
        assert here.draft(s, theirs.id, their_draft.id or 0) is None
        # Out of PostgreSQL's integer range: "not here", never a database error.
        for bad in (0, -1, MAX_ID + 1, 3_000_000_000, 2**63):
            assert here.song(s, bad) is None and here.clip(s, bad) is None and here.job(s, bad) is None


def _writes_song_status(tree: ast.AST) -> list[int]:
    """Lines that assign `<x>.status = ...` where x names a song, or `update(Song)...values(status=`."""
    found: list[int] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Assign):
            for target in node.targets:
                if (
                    isinstance(target, ast.Attribute)
                    and target.attr == "status"
                    and isinstance(target.value, ast.Name)
                    and "song" in target.value.id.lower()
                ):
                    found.append(node.lineno)
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "values":
            text = ast.unparse(node)
            if any(k.arg == "status" for k in node.keywords) and "update(Song)" in text:
                found.append(node.lineno)
    return found


def test_only_the_lifecycle_module_writes_a_song_status() -> None:
    offenders = []
    for package in ("bot", "db", "engine", "lyrics", "publisher"):
        for path in (ROOT / package).rglob("*.py"):
            if path == ROOT / "db" / "lifecycle.py" or "migrations" in path.parts:
                continue
            lines = _writes_song_status(ast.parse(path.read_text(), str(path)))
            offenders += [f"{path.relative_to(ROOT)}:{n}" for n in lines]
    assert offenders == [], f"song status written outside db/lifecycle.py: {offenders}"


def test_the_status_write_detector_finds_a_raw_write() -> None:
    sample = "def f(s, song):\n    song.status = 'done'\n    s.execute(update(Song).values(status='x'))\n"
    assert _writes_song_status(ast.parse(sample)) == [2, 3]


def test_a_reroll_holds_the_old_vote_open_then_replaces_it(db: Database) -> None:
    old, _ = make_song(db)
    assert old.id is not None
    _voting(db, old.id, closes_in=-1)  # its window is over
    new, _ = make_song(db)
    assert new.id is not None
    with db.write() as s:
        s.execute(update(Song).where(col(Song.id) == new.id).values(rerolled_from_song_id=old.id))
    with db.read() as s:
        found = lifecycle.live_reroll(s, old.id)
        assert found is not None and found.id == new.id
    assert lifecycle.close_vote(db, old.id) is None  # held open while the reroll is on its way
    with db.write() as s:
        assert lifecycle.replace_vote(s, old.id) is True
        assert lifecycle.replace_vote(s, old.id) is False  # once
    assert _status(db, old.id) == "rerolled"
    assert lifecycle.close_vote(db, old.id, force=True) is None
    with pytest.raises(lifecycle.IllegalMove, match="rerolled to upsampling"):
        lifecycle.move(db, old.id, SongStatus.upsampling)


def test_a_failed_reroll_lets_the_old_vote_close(db: Database) -> None:
    old, _ = make_song(db)
    new, _ = make_song(db)
    assert old.id is not None and new.id is not None
    _voting(db, old.id, closes_in=-1)
    with db.write() as s:
        s.execute(update(Song).where(col(Song.id) == new.id).values(rerolled_from_song_id=old.id))
    lifecycle.finish(db, new.id, SongStatus.failed, "no worker")
    closed = lifecycle.close_vote(db, old.id)
    assert closed is not None and _status(db, old.id) == "upsampling"


def test_choose_again_brings_a_done_song_back_until_its_clips_are_posted(db: Database) -> None:
    song, (d0, d1, _d2) = make_song(db)
    assert song.id is not None and d0.id is not None and d1.id is not None
    with pytest.raises(lifecycle.IllegalMove), db.write() as s:  # not before the vote is over
        lifecycle.choose_again(db, s, song.id, d1.id)
    _voting(db, song.id)
    closed = lifecycle.close_vote(db, song.id, force=True)
    assert closed is not None and closed.winner.id == d0.id
    first = repo.add_clip(db, song.id, "a.wav", "a.npz", draft_id=d0.id)
    with db.write() as s:
        assert lifecycle.settle(s, song.id) is False  # its job still runs, its clip is not posted
    with db.write() as s:
        s.execute(update(Job).where(col(Job.song_id) == song.id).values(status=JobStatus.succeeded.value))
        s.execute(update(Clip).where(col(Clip.id) == first.id).values(message_id=1))
        assert lifecycle.settle(s, song.id) is True
    assert _status(db, song.id) == "done"
    with db.write() as s:
        job_id = lifecycle.choose_again(db, s, song.id, d1.id)
    with db.write() as s:
        assert lifecycle.choose_again(db, s, song.id, d1.id) == job_id  # each draft once
    assert _status(db, song.id) == "upsampling"
    second = repo.add_clip(db, song.id, "b.wav", "b.npz", draft_id=d1.id)
    assert second.id != first.id  # a clip per draft
    with db.write() as s:
        assert lifecycle.settle(s, song.id) is False
        s.execute(update(Job).where(col(Job.id) == job_id).values(status=JobStatus.succeeded.value))
        s.execute(update(Clip).where(col(Clip.id) == second.id).values(message_id=2))
        assert lifecycle.settle(s, song.id) is True
