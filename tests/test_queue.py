"""db.queue on SQLite and PostgreSQL: enqueue, claim, leases, fencing, retries, cancel, reclaim, wake-ups."""

from __future__ import annotations

import logging
import threading
import time
from datetime import timedelta

import pytest
from sqlalchemy import text, update
from sqlmodel import col

from db import queue as q
from db.database import Database
from db.models import Job, JobKind, JobStatus, User, utcnow


def job(db: Database, job_id: int) -> Job:
    found = q.get_job(db, job_id)
    assert found is not None
    return found


def expire(db: Database, job_id: int) -> None:
    """Make a running job's lease run out now (as if its worker stopped heartbeating long ago)."""
    with db.write() as s:
        s.execute(
            update(Job).where(col(Job.id) == job_id).values(lease_expires_at=utcnow() - timedelta(seconds=5))
        )


# --- enqueue --------------------------------------------------------------------------------------


def test_enqueue_with_the_same_key_returns_the_first_job(db: Database) -> None:
    first = q.enqueue(db, JobKind.draft, {"song": 1}, idempotency_key="song-1-draft")
    again = q.enqueue(db, JobKind.draft, {"song": 999}, idempotency_key="song-1-draft")
    other = q.enqueue(db, JobKind.draft, {"song": 2}, idempotency_key="song-2-draft")
    assert again == first != other
    assert job(db, first).payload == {"song": 1}
    assert job(db, first).status == JobStatus.queued and job(db, first).kind == "draft"


def test_enqueue_refuses_a_payload_that_is_not_json(db: Database) -> None:
    with pytest.raises(ValueError, match="plain JSON data"):
        q.enqueue(db, "draft", {"when": object()})


def test_continue_kind_is_stored_by_value_on_both_dialects(db: Database) -> None:
    job_id = q.enqueue(db, JobKind.continue_, {})
    assert job(db, job_id).kind == "continue"
    lease = q.claim(db, [JobKind.continue_], "w", 30)
    assert lease is not None and lease.kind == "continue"


# --- claim -----------------------------------------------------------------------------------------


def test_claim_order_kinds_and_future_jobs(db: Database) -> None:
    low = q.enqueue(db, "draft", {"n": "low"})
    high = q.enqueue(db, "draft", {"n": "high"}, priority=5)
    later = q.enqueue(db, "draft", {"n": "later"}, priority=9, run_at=utcnow() + timedelta(hours=1))
    q.enqueue(db, "upsample", {"n": "other kind"})
    low2 = q.enqueue(db, "draft", {"n": "low2"})
    got = [q.claim(db, ["draft"], "w1", 60) for _ in range(4)]
    assert [lease.job_id if lease else None for lease in got] == [high, low, low2, None]
    assert later not in [lease.job_id for lease in got if lease]
    lease = got[0]
    assert lease is not None
    assert (lease.token, lease.attempts, lease.owner, lease.payload) == (1, 1, "w1", {"n": "high"})
    row = job(db, high)
    assert row.status == JobStatus.running and row.lease_owner == "w1" and row.lease_token == 1
    assert row.lease_expires_at is not None and row.lease_expires_at > utcnow() + timedelta(seconds=50)
    assert q.claim(db, "upsample", "w2", 60) is not None


def test_heartbeat_extends_the_lease_and_records_progress(db: Database) -> None:
    q.enqueue(db, "draft", {})
    lease = q.claim(db, ["draft"], "w", 2)
    assert lease is not None
    before = job(db, lease.job_id).lease_expires_at
    time.sleep(0.05)
    assert q.heartbeat(db, lease, {"stage": "level 2", "percent": 40}) is False
    row = job(db, lease.job_id)
    assert row.progress == {"stage": "level 2", "percent": 40}
    assert before is not None and row.lease_expires_at is not None and row.lease_expires_at > before
    assert row.heartbeat_at is not None


def test_checkpoint_and_completion(db: Database) -> None:
    q.enqueue(db, "upsample", {})
    lease = q.claim(db, ["upsample"], "w", 60)
    assert lease is not None
    q.save_checkpoint(db, lease, "checkpoints/1/window-3.pt")
    q.complete(db, lease, {"clip_id": 7})
    row = job(db, lease.job_id)
    assert (row.status, row.result, row.checkpoint_key) == (
        JobStatus.succeeded,
        {"clip_id": 7},
        "checkpoints/1/window-3.pt",
    )
    assert row.finished_at is not None and row.lease_expires_at is None
    assert q.claim(db, ["upsample"], "w", 60) is None


def test_results_and_completion_commit_together_in_the_fenced_session(db: Database) -> None:
    q.enqueue(db, "draft", {})
    lease = q.claim(db, ["draft"], "w", 60)
    assert lease is not None
    with pytest.raises(RuntimeError), q.fenced(db, lease) as s:
        s.add(User(discord_id=42, name="result row"))
        q.complete(db, lease, {"ok": True}, session=s)
        raise RuntimeError("crash before commit")
    assert job(db, lease.job_id).status == JobStatus.running  # neither the result nor the completion
    with db.read() as s:
        assert s.execute(text("SELECT count(*) FROM users")).scalar() == 0
    with q.fenced(db, lease) as s:
        s.add(User(discord_id=42, name="result row"))
        q.complete(db, lease, {"ok": True}, session=s)
    assert job(db, lease.job_id).status == JobStatus.succeeded


# --- fencing ----------------------------------------------------------------------------------------


def test_a_worker_whose_lease_expired_cannot_overwrite_the_new_attempt(
    db: Database, caplog: pytest.LogCaptureFixture
) -> None:
    job_id = q.enqueue(db, "draft", {"song": 3})
    stale = q.claim(db, ["draft"], "host-a:11", 60)
    assert stale is not None
    expire(db, job_id)
    fresh = q.claim(db, ["draft"], "host-b:22", 60)
    assert fresh is not None and fresh.job_id == job_id and fresh.token == stale.token + 1
    assert (fresh.attempts, fresh.reclaims) == (1, 1)  # the lost lease did not burn an attempt

    caplog.set_level(logging.WARNING, logger="jukebot.queue")
    refused = [
        lambda: q.heartbeat(db, stale, {"percent": 99}),
        lambda: q.save_checkpoint(db, stale, "stale.pt"),
        lambda: q.complete(db, stale, {"from": "stale"}),
        lambda: q.fail(db, stale, "stale error"),
        lambda: q.release(db, stale),
        lambda: q.is_cancel_requested(db, stale),
    ]
    for write in refused:
        with pytest.raises(q.LeaseLost) as err:
            write()
        assert err.value.job_id == job_id and err.value.token == 1 and err.value.current_token == 2
    with pytest.raises(q.LeaseLost) as err, q.fenced(db, stale) as s:
        s.add(User(discord_id=1))  # never reached
    message = str(err.value)
    assert message.startswith(
        f"Lease lost on job {job_id}: host-a:11 held token 1 but the job is running under token 2 (owner host-b:22)"
    )
    assert "refused" in message
    logged = [r.getMessage() for r in caplog.records if r.name == "jukebot.queue"]
    assert (
        len([m for m in logged if f"Lease lost on job {job_id}" in m and "token 1" in m and "token 2" in m])
        == len(refused) + 1
    )

    row = job(db, job_id)
    assert (row.status, row.progress, row.checkpoint_key, row.lease_owner) == (
        JobStatus.running,
        {},
        None,
        "host-b:22",
    )
    with db.read() as s:
        assert s.execute(text("SELECT count(*) FROM users")).scalar() == 0
    q.complete(db, fresh, {"from": "fresh"})
    assert job(db, job_id).result == {"from": "fresh"}
    with pytest.raises(q.LeaseLost, match="the job is succeeded"):
        q.complete(db, stale, {"from": "stale"})


def test_the_fence_holds_until_commit(db: Database) -> None:
    """Once a fenced transaction has verified the lease, nobody can take the job until it commits."""
    job_id = q.enqueue(db, "draft", {})
    lease = q.claim(db, ["draft"], "a", 60)
    assert lease is not None
    expire(db, job_id)
    stolen: list[q.Lease | None] = []
    with q.fenced(db, lease) as s:
        thief = threading.Thread(target=lambda: stolen.append(q.claim(db, ["draft"], "b", 60)))
        thief.start()
        thief.join(0.5)  # PostgreSQL: skips the locked row at once; SQLite: waits for the write lock
        q.complete(db, lease, {"by": "a"}, session=s)
    thief.join(10)
    assert stolen == [None]
    assert job(db, job_id).result == {"by": "a"}


# --- failures and retries -----------------------------------------------------------------------


def test_backoff_grows_exponentially_with_jitter_and_a_cap() -> None:
    for attempts, base in [(1, 15.0), (2, 30.0), (3, 60.0), (4, 120.0)]:
        values = [q.backoff_seconds(attempts) for _ in range(200)]
        assert all(0.5 * base <= v <= base for v in values)
        assert max(values) - min(values) > 0.1 * base  # jitter: not all the same
    assert all(q.backoff_seconds(30) <= q.BACKOFF_CAP_S for _ in range(50))


def test_failed_attempts_retry_after_a_backoff_then_give_up(db: Database) -> None:
    job_id = q.enqueue(db, "draft", {}, max_attempts=2)
    lease = q.claim(db, ["draft"], "w", 60)
    assert lease is not None
    assert q.fail(db, lease, "CUDA out of memory") == JobStatus.queued
    row = job(db, job_id)
    assert row.last_error == "CUDA out of memory" and row.attempts == 1 and row.lease_owner is None
    wait = (row.run_at - utcnow()).total_seconds()
    assert 0.5 * q.BACKOFF_BASE_S - 1 <= wait <= q.BACKOFF_BASE_S
    assert q.claim(db, ["draft"], "w", 60) is None  # not before run_at
    due = q.seconds_until_work(db, ["draft"])
    assert due is not None and 0 < due <= q.BACKOFF_BASE_S

    with db.write() as s:  # let time pass
        s.execute(update(Job).where(col(Job.id) == job_id).values(run_at=utcnow() - timedelta(seconds=1)))
    lease = q.claim(db, ["draft"], "w", 60)
    assert lease is not None and lease.attempts == 2 and lease.token == 2
    assert q.fail(db, lease, "CUDA out of memory again") == JobStatus.failed
    row = job(db, job_id)
    assert row.status == JobStatus.failed and row.finished_at is not None
    assert q.claim(db, ["draft"], "w", 60) is None


def test_fail_without_retry_and_with_a_chosen_delay(db: Database) -> None:
    a = q.enqueue(db, "draft", {}, max_attempts=5)
    lease = q.claim(db, ["draft"], "w", 60)
    assert lease is not None
    assert q.fail(db, lease, "unknown artist", retry=False) == JobStatus.failed
    b = q.enqueue(db, "draft", {}, max_attempts=5)
    lease = q.claim(db, ["draft"], "w", 60)
    assert lease is not None and lease.job_id == b
    assert q.fail(db, lease, "busy", delay=0) == JobStatus.queued
    assert job(db, a).status == JobStatus.failed
    again = q.claim(db, ["draft"], "w", 60)
    assert again is not None and again.job_id == b


def test_release_gives_the_job_back_without_burning_an_attempt(db: Database) -> None:
    job_id = q.enqueue(db, "upsample", {})
    lease = q.claim(db, ["upsample"], "w", 60)
    assert lease is not None
    q.save_checkpoint(db, lease, "ck/1.pt")
    assert q.release(db, lease) == JobStatus.queued
    row = job(db, job_id)
    assert (row.status, row.attempts, row.lease_owner) == (JobStatus.queued, 0, None)
    again = q.claim(db, ["upsample"], "w2", 60)
    assert (
        again is not None and again.attempts == 1 and again.token == 2 and again.checkpoint_key == "ck/1.pt"
    )


# --- cancel -------------------------------------------------------------------------------------


def test_cancel_a_queued_job_at_once(db: Database) -> None:
    job_id = q.enqueue(db, "draft", {})
    assert q.cancel(db, job_id) == q.CancelResult.cancelled
    assert job(db, job_id).status == JobStatus.cancelled
    assert q.claim(db, ["draft"], "w", 60) is None
    assert q.cancel(db, job_id) is None  # already finished
    assert q.cancel(db, 123456) is None


def test_cancel_a_running_job_asks_its_worker(db: Database) -> None:
    job_id = q.enqueue(db, "draft", {})
    lease = q.claim(db, ["draft"], "w", 60)
    assert lease is not None
    assert q.is_cancel_requested(db, lease) is False
    assert q.cancel(db, job_id) == q.CancelResult.requested
    assert job(db, job_id).status == JobStatus.running
    assert q.is_cancel_requested(db, lease) is True
    assert q.heartbeat(db, lease) is True
    q.finish_cancelled(db, lease)
    assert job(db, job_id).status == JobStatus.cancelled


@pytest.mark.parametrize("how", ["fail", "release"])
def test_a_cancelled_job_is_never_retried(db: Database, how: str) -> None:
    job_id = q.enqueue(db, "draft", {}, max_attempts=3)
    lease = q.claim(db, ["draft"], "w", 60)
    assert lease is not None
    q.cancel(db, job_id)
    status = q.fail(db, lease, "stopped") if how == "fail" else q.release(db, lease)
    assert status == JobStatus.cancelled == job(db, job_id).status


# --- reclaim ---------------------------------------------------------------------------------------


def test_reclaim_expired_requeues_cancels_or_gives_up(db: Database) -> None:
    requeue = q.enqueue(db, "draft", {"n": 1}, max_reclaims=3)
    cancelled = q.enqueue(db, "draft", {"n": 2})
    lost_too_often = q.enqueue(db, "draft", {"n": 3}, max_reclaims=0)
    alive = q.enqueue(db, "draft", {"n": 4})
    leases = {lease.job_id: lease for lease in (q.claim(db, ["draft"], "w", 60) for _ in range(4)) if lease}
    assert set(leases) == {requeue, cancelled, lost_too_often, alive}
    q.cancel(db, cancelled)
    for job_id in (requeue, cancelled, lost_too_often):
        expire(db, job_id)
    assert q.reclaim_expired(db) == 3
    assert q.reclaim_expired(db) == 0

    row = job(db, requeue)
    assert (row.status, row.reclaims, row.attempts, row.lease_owner) == (JobStatus.queued, 1, 0, None)
    assert job(db, cancelled).status == JobStatus.cancelled
    row = job(db, lost_too_often)
    assert row.status == JobStatus.failed and row.last_error is not None and "lost 1 times" in row.last_error
    assert job(db, alive).status == JobStatus.running
    with pytest.raises(q.LeaseLost):
        q.heartbeat(db, leases[requeue])
    again = q.claim(db, ["draft"], "w2", 60)
    assert again is not None and again.job_id == requeue
    assert (again.token, again.attempts, again.reclaims) == (2, 1, 1)


def test_a_reclaimed_job_keeps_its_place_before_newer_jobs(db: Database) -> None:
    """A song whose worker died was asked for first: the sweeper puts its job back where it stood
    (its own run_at), not behind the jobs queued while it ran."""
    lost = q.enqueue(db, "upsample", {"n": 1})
    lease = q.claim(db, ["upsample"], "w", 60)
    assert lease is not None and lease.job_id == lost
    newer = q.enqueue(db, "upsample", {"n": 2})
    expire(db, lost)
    assert q.reclaim_expired(db) == 1
    assert [q.queue_position(db, x) for x in (lost, newer)] == [1, 2]
    again = q.claim(db, ["upsample"], "w2", 60)
    assert again is not None and again.job_id == lost
    assert q.release(db, again) == "queued"  # the worker shut down (SIGTERM): the same place
    assert [q.queue_position(db, x) for x in (lost, newer)] == [1, 2]


def test_claim_skips_expired_jobs_that_must_not_be_reclaimed(db: Database) -> None:
    a = q.enqueue(db, "draft", {}, max_reclaims=0)
    lease = q.claim(db, ["draft"], "w", 60)
    assert lease is not None and lease.job_id == a
    expire(db, a)
    assert q.claim(db, ["draft"], "w2", 60) is None
    assert q.seconds_until_work(db, ["draft"]) is None


# --- position and wake-ups ---------------------------------------------------------------------


def test_queue_position(db: Database) -> None:
    a = q.enqueue(db, "draft", {})
    b = q.enqueue(db, "draft", {})
    c = q.enqueue(db, "draft", {}, priority=1)
    u = q.enqueue(db, "upsample", {})
    assert [q.queue_position(db, x) for x in (c, a, b, u)] == [1, 2, 3, 1]
    lease = q.claim(db, ["draft"], "w", 60)
    assert lease is not None and lease.job_id == c
    assert [q.queue_position(db, x) for x in (c, a, b)] == [None, 1, 2]
    assert q.queue_position(db, 987654) is None


def test_wait_for_work_wakes_up_when_a_job_arrives(db: Database) -> None:
    assert q.wait_for_work(db, ["draft"], 0.2, poll_seconds=0.05) is False
    timer = threading.Timer(0.3, lambda: q.enqueue(db, "draft", {}))
    start = time.monotonic()
    timer.start()
    try:
        assert q.wait_for_work(db, ["draft"], 20, poll_seconds=0.05) is True
    finally:
        timer.join()
    assert time.monotonic() - start < 5
    assert q.claim(db, ["draft"], "w", 60) is not None


def test_wait_for_work_ignores_other_kinds_and_wakes_for_a_delayed_job(db: Database) -> None:
    q.enqueue(db, "upsample", {})
    assert q.wait_for_work(db, ["draft"], 0.3, poll_seconds=0.05) is False
    q.enqueue(db, "draft", {}, run_at=utcnow() + timedelta(seconds=0.5))
    start = time.monotonic()
    assert q.wait_for_work(db, ["draft"], 20, poll_seconds=0.05) is True
    assert 0.2 < time.monotonic() - start < 5
    assert q.claim(db, ["draft"], "w", 60) is not None


def test_wait_for_work_wakes_when_a_lease_expires(db: Database) -> None:
    q.enqueue(db, "draft", {})
    assert q.claim(db, ["draft"], "dies", 0.5) is not None
    start = time.monotonic()
    assert q.wait_for_work(db, ["draft"], 20, poll_seconds=0.05) is True
    assert time.monotonic() - start < 5
    reclaimed = q.claim(db, ["draft"], "w", 60)
    assert reclaimed is not None and reclaimed.reclaims == 1


def test_enqueue_inside_the_callers_transaction(db: Database) -> None:
    with pytest.raises(RuntimeError), db.write() as s:
        s.add(User(discord_id=9, name="requester"))
        q.enqueue(db, "draft", {}, session=s, idempotency_key="together")
        raise RuntimeError("the song could not be saved")
    assert q.claim(db, ["draft"], "w", 60) is None  # rolled back with the rest
    with db.write() as s:
        first = q.enqueue(db, "draft", {}, session=s, idempotency_key="together")
        assert q.enqueue(db, "draft", {}, session=s, idempotency_key="together") == first
    lease = q.claim(db, ["draft"], "w", 60)
    assert lease is not None and lease.job_id == first
