"""The queue under real concurrency: separate worker PROCESSES (spawned), SIGKILLed at random moments.

PostgreSQL: 4 workers drain 500 jobs; every job runs exactly once to completion, no job is ever run by
two workers at the same time, none is lost. Then the same while workers are killed (and replaced):
their jobs are reclaimed after the lease and still finish exactly once.
SQLite: a "bot" process (enqueuing, polling job status, voting) and two workers share one file without
a single "database is locked".

Each attempt logs (job, token, pid, start, end) through the fenced session; completion rows have the
job id as primary key, written in the same transaction as `complete()`.
"""

from __future__ import annotations

import itertools
import json
import multiprocessing
import os
import random
import signal
import time
import traceback
from collections import defaultdict
from pathlib import Path
from typing import Any

from sqlalchemy import Column, Float, Integer, MetaData, String, Table, func, select
from sqlmodel import col

from db import lifecycle, repo
from db import queue as q
from db.database import Database
from db.models import Job, JobStatus, SongStatus

KIND = "draft"
_md = MetaData()
WORK_LOG = Table(
    "test_work_log",
    _md,
    Column("id", Integer, primary_key=True),
    Column("job_id", Integer, nullable=False),
    Column("token", Integer, nullable=False),
    Column("pid", Integer, nullable=False),
    Column("started", Float, nullable=False),
    Column("ended", Float),
)
DONE = Table(
    "test_work_done",
    _md,
    Column("job_id", Integer, primary_key=True),  # a second completion of a job would violate this
    Column("token", Integer, nullable=False),
    Column("pid", Integer, nullable=False),
)
ERRORS = Table(
    "test_worker_errors",
    _md,
    Column("id", Integer, primary_key=True),
    Column("pid", Integer),
    Column("text", String),
)
FINISHED = (JobStatus.succeeded.value, JobStatus.failed.value, JobStatus.cancelled.value)


def _unfinished(db: Database) -> int:
    with db.read() as s:
        return int(
            s.execute(
                select(func.count()).select_from(Job).where(col(Job.status).not_in(FINISHED))
            ).scalar_one()
        )


def worker_main(url: str, lease_seconds: float, work_seconds: float, deadline: float) -> None:
    """One worker process: claim, log the start, work (with a heartbeat), log the end and complete."""
    db = Database(url)
    pid = os.getpid()
    try:
        while time.time() < deadline:
            lease = q.claim(db, [KIND], f"worker:{pid}", lease_seconds)
            if lease is None:
                if _unfinished(db) == 0:
                    return
                q.wait_for_work(db, [KIND], 0.2, poll_seconds=0.02)
                continue
            try:
                with q.fenced(db, lease) as s:
                    s.execute(
                        WORK_LOG.insert().values(
                            job_id=lease.job_id, token=lease.token, pid=pid, started=time.time()
                        )
                    )
                time.sleep(random.uniform(0, work_seconds))
                q.heartbeat(db, lease, {"half": True})
                time.sleep(random.uniform(0, work_seconds))
                with q.fenced(db, lease) as s:
                    s.execute(
                        WORK_LOG.update()
                        .where(WORK_LOG.c.job_id == lease.job_id, WORK_LOG.c.token == lease.token)
                        .values(ended=time.time())
                    )
                    s.execute(DONE.insert().values(job_id=lease.job_id, token=lease.token, pid=pid))
                    q.complete(db, lease, {"pid": pid}, session=s)
            except q.LeaseLost as exc:  # only if this worker stalled past its lease: recorded, not hidden
                with db.write() as s:
                    s.execute(ERRORS.insert().values(pid=pid, text=f"LeaseLost: {exc}"))
    except Exception:
        with db.write() as s:
            s.execute(ERRORS.insert().values(pid=pid, text=traceback.format_exc()))
        raise
    finally:
        db.dispose()


def _prepare(url: str, n_jobs: int) -> Database:
    db = Database(url)
    _md.create_all(db.engine)
    with db.write() as s:
        for i in range(n_jobs):
            q.enqueue(db, KIND, {"n": i}, idempotency_key=f"job-{i}", session=s)
    return db


def _spawn(ctx: Any, url: str, lease_seconds: float, work_seconds: float, deadline: float) -> Any:
    proc = ctx.Process(target=worker_main, args=(url, lease_seconds, work_seconds, deadline))
    proc.start()
    return proc


def _check_exactly_once(
    db: Database, n_jobs: int, killed_at: dict[int, float], lease_seconds: float
) -> dict[str, int]:
    with db.read() as s:
        jobs = {j.id: j for j in s.execute(select(Job)).scalars()}
        logs = s.execute(select(WORK_LOG).order_by(WORK_LOG.c.job_id, WORK_LOG.c.token)).all()
        done = {r.job_id: r for r in s.execute(select(DONE)).all()}
        errors = [r.text for r in s.execute(select(ERRORS)).all()]
    assert errors == []
    assert len(jobs) == n_jobs
    assert all(j.status == JobStatus.succeeded for j in jobs.values()), "a job was lost or failed"
    assert set(done) == set(jobs)  # every job completed, and (primary key) at most once

    attempts: dict[int, list[Any]] = defaultdict(list)
    for row in logs:
        attempts[row.job_id].append(row)
    killed_attempts = 0
    for job_id, rows in attempts.items():
        *earlier, last = rows
        assert last.ended is not None and last.token == done[job_id].token == jobs[job_id].lease_token
        assert last.pid == done[job_id].pid
        for before, after in itertools.pairwise(rows):
            # An attempt that did not finish was killed; the next one began only after that process
            # was dead AND its lease had run out: never two at the same time.
            assert before.ended is None and before.pid in killed_at, (
                f"job {job_id}: an unfinished attempt that was not killed"
            )
            assert after.started >= killed_at[before.pid]
            assert after.started >= before.started + lease_seconds - 0.25
            assert after.token > before.token
        killed_attempts += len(earlier)
    assert set(attempts) == set(jobs)
    return {
        "killed_attempts": killed_attempts,
        "reclaims": sum(j.reclaims for j in jobs.values()),
        "attempts": sum(j.attempts for j in jobs.values()),
    }


def _working(db: Database, procs: list[Any], until: float) -> list[Any]:
    """The processes that have started working (spawning takes seconds on a busy machine)."""
    while time.time() < until:
        with db.read() as s:
            pids = set(s.execute(select(WORK_LOG.c.pid).distinct()).scalars())
        busy = [p for p in procs if p.pid in pids and p.is_alive()]
        if busy or _unfinished(db) == 0:
            return busy
        time.sleep(0.05)
    return []


def test_four_worker_processes_run_500_jobs_exactly_once(postgres_url: str) -> None:
    n_jobs, lease_seconds = 500, 30.0
    db = _prepare(postgres_url, n_jobs)
    ctx = multiprocessing.get_context("spawn")
    deadline = time.time() + 150
    workers = [_spawn(ctx, postgres_url, lease_seconds, 0.004, deadline) for _ in range(4)]
    for w in workers:
        w.join(170)
    assert [w.exitcode for w in workers] == [0, 0, 0, 0]
    try:
        stats = _check_exactly_once(db, n_jobs, {}, lease_seconds)
        assert stats == {"killed_attempts": 0, "reclaims": 0, "attempts": n_jobs}
        with db.read() as s:
            per_worker = dict(s.execute(select(DONE.c.pid, func.count()).group_by(DONE.c.pid)).all())
        assert set(per_worker) == {w.pid for w in workers}  # all four took part
    finally:
        db.dispose()


def test_killed_workers_jobs_are_reclaimed_and_finish_exactly_once(postgres_url: str) -> None:
    n_jobs, lease_seconds, kills = 500, 1.5, 6
    db = _prepare(postgres_url, n_jobs)
    ctx = multiprocessing.get_context("spawn")
    deadline = time.time() + 150
    workers = [_spawn(ctx, postgres_url, lease_seconds, 0.01, deadline) for _ in range(4)]
    killed_at: dict[int, float] = {}
    rng = random.Random(1234)
    try:
        for _ in range(kills):
            time.sleep(rng.uniform(0.1, 0.4))
            busy = _working(db, [w for w in workers if w.is_alive()], time.time() + 60)
            if not busy:
                break
            victim = rng.choice(busy)
            os.kill(victim.pid, signal.SIGKILL)
            victim.join(10)
            killed_at[victim.pid] = time.time()
            workers.remove(victim)
            workers.append(
                _spawn(ctx, postgres_url, lease_seconds, 0.01, deadline)
            )  # a supervisor restarts it
            q.reclaim_expired(db)  # the sweeper runs now and then (claim also takes expired leases)
        for w in workers:
            w.join(170)
        assert [w.exitcode for w in workers] == [0] * len(workers)
        stats = _check_exactly_once(db, n_jobs, killed_at, lease_seconds)
        print(f"\n{kills} SIGKILLs: {stats}")
        assert len(killed_at) == kills
        assert stats["killed_attempts"] >= 1, "no kill landed inside a job: the test proved nothing"
        assert stats["reclaims"] >= stats["killed_attempts"]
        assert stats["attempts"] == n_jobs  # a lost lease never burned a retry
    finally:
        for w in workers:
            if w.is_alive():
                w.kill()
        db.dispose()


# --- SQLite: one bot process and two workers on one file --------------------------------------


def _report(path: str, data: dict[str, Any]) -> None:
    Path(path).write_text(json.dumps(data))


def sqlite_bot_main(url: str, n_songs: int, out: str) -> None:
    """The bot's side: users and songs, enqueue, status polls, votes on drafts as they appear."""
    db = Database(url)
    errors: list[str] = []
    votes: dict[str, dict[str, int]] = defaultdict(lambda: defaultdict(int))
    my_vote: dict[tuple[int, int], int] = {}
    songs: list[int] = []
    rng = random.Random(os.getpid())
    try:
        end = time.time() + 90
        i = 0
        while time.time() < end:
            try:
                if i < n_songs:
                    user = repo.get_or_create_user(db, 1000 + i % 7, f"member {i % 7}")
                    assert user.id is not None
                    song = repo.create_song(
                        db, user_id=user.id, artist="a", genre="g", seconds=5, seed=i, guild_id=1
                    )
                    assert song.id is not None
                    job_id = q.enqueue(
                        db, KIND, {"song_id": song.id}, song_id=song.id, idempotency_key=f"song-{song.id}"
                    )
                    songs.append(song.id)
                    q.queue_position(db, job_id)
                    q.get_job(db, job_id)
                    repo.member_usage(db, user.id)
                    i += 1
                for song_id in rng.sample(songs, min(3, len(songs))):
                    drafts = repo.drafts_for_song(db, song_id)
                    if drafts:
                        voter = rng.randrange(5)
                        draft = rng.choice(drafts)
                        assert draft.id is not None
                        outcome = repo.cast_vote(db, song_id, 5000 + voter, draft.id)
                        previous = my_vote.get((song_id, voter))
                        if outcome is not repo.VoteOutcome.unchanged:
                            if previous is not None:
                                votes[str(song_id)][str(previous)] -= 1
                            votes[str(song_id)][str(draft.id)] += 1
                            my_vote[(song_id, voter)] = draft.id
                q.reclaim_expired(db)
                if i >= n_songs and _unfinished(db) == 0:
                    break
            except Exception:
                errors.append(traceback.format_exc())
                if len(errors) > 20:
                    break
    finally:
        db.dispose()
        _report(out, {"errors": errors, "votes": votes, "songs": songs})


def sqlite_worker_main(url: str, n_songs: int, out: str) -> None:
    """A worker: claim, mark the song drafting, heartbeat, write two drafts and complete in one fence."""
    db = Database(url)
    errors: list[str] = []
    done = 0
    try:
        end = time.time() + 90
        while time.time() < end:
            try:
                lease = q.claim(db, [KIND], f"worker:{os.getpid()}", 30)
                if lease is None:
                    with db.read() as s:
                        total = s.execute(select(func.count()).select_from(Job)).scalar_one()
                    if total >= n_songs and _unfinished(db) == 0:
                        break
                    q.wait_for_work(db, [KIND], 0.2, poll_seconds=0.01)
                    continue
                assert lease.song_id is not None
                with q.fenced(db, lease) as s:
                    lifecycle.advance(s, lease.song_id, SongStatus.drafting)
                q.heartbeat(db, lease, {"percent": 50})
                q.is_cancel_requested(db, lease)
                with q.fenced(db, lease) as s:
                    for index in range(2):
                        repo.add_draft(
                            s,
                            lease.song_id,
                            index,
                            f"s/{lease.song_id}/{index}.wav",
                            f"s/{lease.song_id}/{index}.npy",
                        )
                    lifecycle.advance(s, lease.song_id, SongStatus.voting)
                    q.complete(db, lease, {"drafts": 2}, session=s)
                done += 1
            except Exception:
                errors.append(traceback.format_exc())
                if len(errors) > 20:
                    break
    finally:
        db.dispose()
        _report(out, {"errors": errors, "done": done})


def test_sqlite_bot_and_two_workers_share_one_file_without_locking_errors(
    sqlite_url: str, tmp_path: Path
) -> None:
    n_songs = 120
    ctx = multiprocessing.get_context("spawn")
    outs = {name: str(tmp_path / f"{name}.json") for name in ("bot", "w1", "w2")}
    procs = [
        ctx.Process(target=sqlite_bot_main, args=(sqlite_url, n_songs, outs["bot"])),
        ctx.Process(target=sqlite_worker_main, args=(sqlite_url, n_songs, outs["w1"])),
        ctx.Process(target=sqlite_worker_main, args=(sqlite_url, n_songs, outs["w2"])),
    ]
    for p in procs:
        p.start()
    for p in procs:
        p.join(120)
    assert [p.exitcode for p in procs] == [0, 0, 0]
    reports = {name: json.loads(Path(path).read_text()) for name, path in outs.items()}
    all_errors = [e for r in reports.values() for e in r["errors"]]
    assert not [e for e in all_errors if "locked" in e], "database is locked:\n" + "\n".join(all_errors[:3])
    assert all_errors == []
    assert reports["w1"]["done"] + reports["w2"]["done"] == n_songs
    assert reports["w1"]["done"] > 0 and reports["w2"]["done"] > 0

    db = Database(sqlite_url)
    try:
        with db.read() as s:
            statuses = s.execute(select(col(Job.status), func.count()).group_by(col(Job.status))).all()
        assert dict(statuses) == {JobStatus.succeeded.value: n_songs}
        songs = reports["bot"]["songs"]
        assert len(songs) == n_songs
        voted = 0
        for song_id in songs:
            found = repo.song_by_id(db, song_id)
            assert found is not None and found.status == "voting"
            assert len(repo.drafts_for_song(db, song_id)) == 2
            expected = {int(d): n for d, n in reports["bot"]["votes"].get(str(song_id), {}).items() if n}
            assert repo.vote_counts(db, song_id) == expected
            voted += sum(expected.values())
        assert voted > 0
    finally:
        db.dispose()
