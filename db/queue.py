"""The job queue: the `jobs` table, claimed with leases and fenced by a token.

How a job moves (procrastinate/Oban style; each step is one small function):

    enqueue ─▶ queued ─claim─▶ running ─complete─▶ succeeded
                 ▲               │ ├─fail(retry)─▶ queued again, run_at = now + backoff
                 │               │ ├─fail(final)─▶ failed
                 │               │ ├─release────▶ queued (SIGTERM: no attempt burned)
                 └──reclaim──────┘ └─cancel──────▶ cancelled (at once if queued; asked if running)

  (reclaim and release keep the job's run_at: it goes back to its place in the queue)

- claim: takes the best queued job whose run_at has come, or a running job whose lease expired (its
  worker died or stalled), and gives it a new lease with `lease_token + 1`: the fencing token.
  PostgreSQL picks the row with `FOR UPDATE SKIP LOCKED`; SQLite runs the same UPDATE … RETURNING
  under `BEGIN IMMEDIATE` (SQLite has one writer at a time, so there is nothing to skip).
- Every write a worker makes (heartbeat, checkpoint, result, finish) carries
  `WHERE id = ? AND lease_token = ? AND status = 'running'`. Zero rows means another attempt owns
  the job now: `LeaseLost` is raised and logged, and the stale worker's write is refused.
- A lost lease counts in `reclaims` (its own cap), not `attempts`, so a crashed or preempted GPU does
  not burn the job's retries.
- Times that decide leases come from one clock: the PostgreSQL server's; on SQLite the local one.

The transitions all live here; the pieces they use live beside: `queue_leases.py` (Lease, LeaseLost,
the fence, backoff, the clock), `queue_reads.py` (a job, its place in line, when work comes due),
`queue_wait.py` (LISTEN/NOTIFY or polling until work comes). Callers use `queue.X` for all of them.
All functions are synchronous; the bot calls them through `asyncio.to_thread`.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime
from enum import StrEnum
from typing import Any

from sqlalchemy import and_, case, func, or_, select, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlmodel import Session, col

from db.database import Database
from db.models import Job, JobKind, JobStatus, utcnow
from db.queue_leases import (
    BACKOFF_BASE_S,
    BACKOFF_CAP_S,
    Kinds,
    Lease,
    LeaseLost,
    backoff_seconds,
    default_owner,
    fence,
    kind_names,
    lease_lost,
    sql_after,
    sql_now,
    transaction,
)
from db.queue_reads import get_job, queue_position, seconds_until_work
from db.queue_wait import NOTIFY_CHANNEL, wait_for_work

log = logging.getLogger("jukebot.queue")

# The public names callers use as `queue.X`, wherever they are defined.
__all__ = [
    "BACKOFF_BASE_S",
    "BACKOFF_CAP_S",
    "NOTIFY_CHANNEL",
    "CancelResult",
    "Kinds",
    "Lease",
    "LeaseLost",
    "NotRetryable",
    "backoff_seconds",
    "cancel",
    "claim",
    "complete",
    "default_owner",
    "enqueue",
    "fail",
    "fenced",
    "finish_cancelled",
    "get_job",
    "heartbeat",
    "is_cancel_requested",
    "queue_position",
    "reclaim_expired",
    "release",
    "requeue",
    "save_checkpoint",
    "seconds_until_work",
    "wait_for_work",
]

_MAX_ERROR_CHARS = 4000


# --- enqueue ----------------------------------------------------------------------------------


def enqueue(
    db: Database,
    kind: str | JobKind,
    payload: dict[str, Any] | None = None,
    *,
    song_id: int | None = None,
    idempotency_key: str | None = None,
    priority: int = 0,
    run_at: datetime | None = None,
    max_attempts: int | None = None,
    max_reclaims: int | None = None,
    session: Session | None = None,
) -> int:
    """Add a job and return its id. A second enqueue with the same idempotency_key returns the first
    job's id and adds nothing. Larger `priority` runs sooner. On PostgreSQL, wakes listening workers.

    Pass `session` (from `db.write()`) to enqueue in the caller's transaction, e.g. together with
    the song row it works on; the job then exists (and workers wake) only when that commits."""
    from db.settings import get_settings

    payload = dict(payload or {})
    try:
        json.dumps(payload)
    except (TypeError, ValueError) as exc:
        raise ValueError(
            f"The job payload must be plain JSON data (text, numbers, lists, dicts): {exc}"
        ) from None
    settings = get_settings()
    kind = str(kind)
    values: dict[str, Any] = {
        "kind": kind,
        "payload": payload,
        "song_id": song_id,
        "status": JobStatus.queued.value,
        "priority": priority,
        "run_at": run_at if run_at is not None else sql_now(db),
        "attempts": 0,
        "max_attempts": max_attempts if max_attempts is not None else settings.queue.max_attempts,
        "reclaims": 0,
        "max_reclaims": max_reclaims if max_reclaims is not None else settings.queue.max_reclaims,
        "lease_token": 0,
        "cancel_requested": False,
        "progress": {},
        "result": {},
        "idempotency_key": idempotency_key,
        "created_at": utcnow(),
        "updated_at": utcnow(),
    }
    insert = pg_insert if db.dialect == "postgresql" else sqlite_insert
    by_key = select(col(Job.id)).where(col(Job.idempotency_key) == idempotency_key)
    with transaction(db, session) as s:
        if idempotency_key is not None and (existing := s.execute(by_key).scalar()) is not None:
            return int(existing)
        stmt = insert(Job).values(**values)
        if idempotency_key is not None:
            stmt = stmt.on_conflict_do_nothing(index_elements=["idempotency_key"])
        job_id = s.execute(stmt.returning(col(Job.id))).scalar()
        if job_id is None:  # PostgreSQL: a concurrent enqueue with the same key won the race
            return int(s.execute(by_key).scalar_one())
        if db.dialect == "postgresql":
            s.execute(select(func.pg_notify(NOTIFY_CHANNEL, kind)))  # delivered on commit
    log.info("enqueued job %s (%s)", job_id, kind)
    return int(job_id)


# --- claim, heartbeat, reclaim ------------------------------------------------------------------


def claim(db: Database, kinds: Kinds, owner: str, lease_seconds: float) -> Lease | None:
    """Take the next job of one of `kinds` (or a job whose lease expired) with a fresh lease."""
    now = sql_now(db)
    ready = and_(col(Job.status) == JobStatus.queued, col(Job.run_at) <= now)
    expired = and_(
        col(Job.status) == JobStatus.running,
        col(Job.lease_expires_at) < now,
        col(Job.cancel_requested).is_(False),
        col(Job.reclaims) < col(Job.max_reclaims),
    )
    pick = (
        select(col(Job.id))
        .where(col(Job.kind).in_(kind_names(kinds)), or_(ready, expired))
        .order_by(col(Job.priority).desc(), col(Job.run_at), col(Job.id))
        .limit(1)
        .with_for_update(skip_locked=True)  # PostgreSQL; SQLite has one writer and ignores it
        .scalar_subquery()
    )
    was_expired = col(Job.status) == JobStatus.running
    stmt = (
        update(Job)
        .where(col(Job.id) == pick)
        .values(
            status=JobStatus.running.value,
            lease_owner=owner,
            lease_token=col(Job.lease_token) + 1,
            lease_expires_at=sql_after(db, lease_seconds),
            heartbeat_at=now,
            attempts=col(Job.attempts) + case((was_expired, 0), else_=1),
            reclaims=col(Job.reclaims) + case((was_expired, 1), else_=0),
            started_at=func.coalesce(col(Job.started_at), now),
            updated_at=now,
        )
        .returning(
            col(Job.id),
            col(Job.lease_token),
            col(Job.kind),
            col(Job.payload),
            col(Job.song_id),
            col(Job.attempts),
            col(Job.checkpoint_key),
            col(Job.reclaims),
            col(Job.progress),
        )
    )
    with db.write() as s:
        row = s.execute(stmt).first()
    if row is None:
        return None
    lease = Lease(
        job_id=row[0],
        token=row[1],
        owner=owner,
        kind=row[2],
        payload=dict(row[3] or {}),
        song_id=row[4],
        attempts=row[5],
        checkpoint_key=row[6],
        reclaims=row[7],
        lease_seconds=lease_seconds,
        progress=dict(row[8] or {}),
    )
    if lease.reclaims and lease.token > 1 and lease.checkpoint_key:
        log.info(
            "job %s claimed by %s (token %s), resuming from %s",
            lease.job_id,
            owner,
            lease.token,
            lease.checkpoint_key,
        )
    else:
        log.info("job %s claimed by %s (token %s)", lease.job_id, owner, lease.token)
    return lease


def heartbeat(db: Database, lease: Lease, progress: dict[str, Any] | None = None) -> bool:
    """Extend the lease (and record progress). Returns True when someone asked to cancel the job.
    Raises LeaseLost when this worker no longer owns the job."""
    values: dict[str, Any] = {
        "lease_expires_at": sql_after(db, lease.lease_seconds),
        "heartbeat_at": sql_now(db),
        "updated_at": sql_now(db),
    }
    if progress is not None:
        values["progress"] = dict(progress)
    stmt = update(Job).where(fence(lease)).values(**values).returning(col(Job.cancel_requested))
    with db.write() as s:
        row = s.execute(stmt).first()
        if row is None:
            raise lease_lost(s, lease, "heartbeat")
    return bool(row[0])


def reclaim_expired(db: Database) -> int:
    """Deal with every running job whose lease expired (the sweeper; any process may call it):
    requeue it (counting a reclaim, not an attempt), or finish it as cancelled when a cancel was
    asked, or as failed when it has been lost too many times. Returns how many jobs it moved."""
    now = sql_now(db)
    with db.write() as s:
        rows = s.execute(
            select(
                col(Job.id),
                col(Job.cancel_requested),
                col(Job.reclaims),
                col(Job.max_reclaims),
                col(Job.lease_owner),
                col(Job.lease_token),
            )
            .where(col(Job.status) == JobStatus.running, col(Job.lease_expires_at) < now)
            .order_by(col(Job.id))
            .with_for_update(skip_locked=True)
        ).all()
        for job_id, cancel_requested, reclaims, max_reclaims, owner, token in rows:
            values: dict[str, Any] = {"lease_expires_at": None, "updated_at": now}
            if cancel_requested:
                values |= {"status": JobStatus.cancelled.value, "finished_at": now}
            elif reclaims >= max_reclaims:
                values |= {
                    "status": JobStatus.failed.value,
                    "finished_at": now,
                    "last_error": f"The worker running this job was lost {reclaims + 1} times "
                    "(crashed, killed or stalled past its lease); giving up.",
                }
            else:
                values |= {
                    "status": JobStatus.queued.value,
                    "reclaims": col(Job.reclaims) + 1,
                    "attempts": case(
                        (col(Job.attempts) > 0, col(Job.attempts) - 1), else_=0
                    ),  # the lost try is free
                    "lease_owner": None,  # run_at kept: the job goes back to where it stood
                }
            s.execute(update(Job).where(col(Job.id) == job_id).values(**values))
            log.warning(
                "job %s: lease of %s (token %s) expired; now %s", job_id, owner, token, values["status"]
            )
    return len(rows)


# --- fenced writes ------------------------------------------------------------------------------


@contextmanager
def fenced(db: Database, lease: Lease) -> Iterator[Session]:
    """A write transaction in which this lease was verified and the job row is held until commit
    (row lock on PostgreSQL; the write lock on SQLite), so no other attempt can take the job
    mid-way. Write the job's results here. Raises LeaseLost instead of yielding if the lease is gone."""
    with db.write() as s:
        row = s.execute(select(col(Job.id)).where(fence(lease)).with_for_update()).first()
        if row is None:
            raise lease_lost(s, lease, "write")
        yield s


def _fenced_update(
    db: Database, lease: Lease, values: dict[str, Any], action: str, session: Session | None
) -> None:
    stmt = update(Job).where(fence(lease)).values(updated_at=sql_now(db), **values).returning(col(Job.id))
    if session is not None:
        if session.execute(stmt).first() is None:
            raise lease_lost(session, lease, action)
        return
    with db.write() as s:
        if s.execute(stmt).first() is None:
            raise lease_lost(s, lease, action)


def save_checkpoint(db: Database, lease: Lease, key: str, *, session: Session | None = None) -> None:
    """Record the storage key of the latest checkpoint (write the file first, atomically)."""
    _fenced_update(db, lease, {"checkpoint_key": key}, "checkpoint", session)


def complete(
    db: Database, lease: Lease, result: dict[str, Any] | None = None, *, session: Session | None = None
) -> None:
    """Finish the job as succeeded. Pass the session of `fenced()` to commit the results and the
    completion in one transaction (then a crash can never leave results without completion)."""
    values = {
        "status": JobStatus.succeeded.value,
        "result": dict(result or {}),
        "finished_at": sql_now(db),
        "lease_expires_at": None,
    }
    _fenced_update(db, lease, values, "completion", session)
    log.info("job %s succeeded (token %s)", lease.job_id, lease.token)


def fail(db: Database, lease: Lease, error: str, retry: bool = True, *, delay: float | None = None) -> str:
    """Record a failed attempt. With retry and attempts left, the job goes back to the queue after an
    exponential backoff (or `delay` seconds); otherwise it is failed for good (or cancelled, when a
    cancel was asked). Returns the job's new status."""
    with db.write() as s:
        row = s.execute(
            select(col(Job.attempts), col(Job.max_attempts), col(Job.cancel_requested))
            .where(fence(lease))
            .with_for_update()
        ).first()
        if row is None:
            raise lease_lost(s, lease, "failure report")
        attempts, max_attempts, cancel_requested = row
        values: dict[str, Any] = {
            "last_error": error[-_MAX_ERROR_CHARS:],
            "lease_expires_at": None,
            "updated_at": sql_now(db),
        }
        if cancel_requested:
            values |= {"status": JobStatus.cancelled.value, "finished_at": sql_now(db)}
        elif retry and attempts < max_attempts:
            wait = backoff_seconds(attempts) if delay is None else delay
            values |= {"status": JobStatus.queued.value, "run_at": sql_after(db, wait), "lease_owner": None}
        else:
            values |= {"status": JobStatus.failed.value, "finished_at": sql_now(db)}
        s.execute(update(Job).where(fence(lease)).values(**values))
    log.warning(
        "job %s attempt %s/%s failed (%s): %s",
        lease.job_id,
        attempts,
        max_attempts,
        values["status"],
        error[:300],
    )
    return str(values["status"])


def release(db: Database, lease: Lease) -> str:
    """Give the job back without burning an attempt (a worker shutting down on SIGTERM). A job whose
    cancel was asked becomes cancelled instead. Returns the job's new status."""
    with db.write() as s:
        row = s.execute(select(col(Job.cancel_requested)).where(fence(lease)).with_for_update()).first()
        if row is None:
            raise lease_lost(s, lease, "release")
        values: dict[str, Any] = {"lease_expires_at": None, "lease_owner": None, "updated_at": sql_now(db)}
        if row[0]:
            values |= {"status": JobStatus.cancelled.value, "finished_at": sql_now(db)}
        else:
            values |= {
                "status": JobStatus.queued.value,
                "attempts": case((col(Job.attempts) > 0, col(Job.attempts) - 1), else_=0),
            }  # run_at kept: the next worker takes it before the jobs queued after it
        s.execute(update(Job).where(fence(lease)).values(**values))
    return str(values["status"])


def finish_cancelled(db: Database, lease: Lease) -> None:
    """The worker stopped because a cancel was asked: mark the job cancelled."""
    _fenced_update(
        db,
        lease,
        {"status": JobStatus.cancelled.value, "finished_at": sql_now(db), "lease_expires_at": None},
        "cancellation",
        None,
    )


# --- cancel, retry ----------------------------------------------------------------------


class CancelResult(StrEnum):
    cancelled = "cancelled"  # ended now: it was queued, or its worker is gone (lease expired)
    requested = "requested"  # running: its worker stops at the next heartbeat


def cancel(db: Database, job_id: int, *, session: Session | None = None) -> CancelResult | None:
    """Cancel a job: a queued one at once, and a running one whose lease expired (its worker is
    gone, so nobody else would ever end it); a live running one is asked to stop (its worker sees it
    on the next heartbeat). None when the job is unknown or already finished."""
    now = sql_now(db)
    with transaction(db, session) as s:
        ends_now = or_(
            col(Job.status) == JobStatus.queued,
            and_(col(Job.status) == JobStatus.running, col(Job.lease_expires_at) < now),
        )
        done = s.execute(
            update(Job)
            .where(col(Job.id) == job_id, ends_now)
            .values(
                status=JobStatus.cancelled.value,
                finished_at=now,
                updated_at=now,
                lease_expires_at=None,
                cancel_requested=True,
            )
            .returning(col(Job.id))
        ).first()
        if done is not None:
            return CancelResult.cancelled
        asked = s.execute(
            update(Job)
            .where(col(Job.id) == job_id, col(Job.status) == JobStatus.running)
            .values(cancel_requested=True, updated_at=now)
            .returning(col(Job.id))
        ).first()
    return CancelResult.requested if asked is not None else None


class NotRetryable(ValueError):
    """Only failed or cancelled jobs can be put back in the queue."""


def requeue(s: Session, job_id: int, *, now: datetime | None = None) -> Job:
    """Put a failed or cancelled job back in the queue with fresh attempts, keeping its checkpoint so
    it resumes where it stopped. LookupError for an unknown job, NotRetryable for one in flight or
    done. Runs in the caller's transaction (the song moves with it: db/songs.py)."""
    now = now or utcnow()
    job = s.execute(select(Job).where(col(Job.id) == job_id).with_for_update()).scalar_one_or_none()
    if job is None:
        raise LookupError(f"There is no job #{job_id}.")
    if job.status not in (JobStatus.failed, JobStatus.cancelled):
        raise NotRetryable(f"Job #{job_id} is {job.status}; only failed or cancelled jobs can be retried.")
    s.execute(
        update(Job)
        .where(col(Job.id) == job_id)
        .values(
            status=JobStatus.queued.value,
            attempts=0,
            reclaims=0,
            run_at=now,
            finished_at=None,
            cancel_requested=False,
            lease_owner=None,
            lease_expires_at=None,
            updated_at=now,
        )
    )
    s.flush()
    s.refresh(job)
    return job


def is_cancel_requested(db: Database, lease: Lease) -> bool:
    """True when a cancel was asked. Raises LeaseLost when this worker no longer owns the job."""
    with db.read() as s:
        row = s.execute(select(col(Job.cancel_requested)).where(fence(lease))).first()
        if row is None:
            raise lease_lost(s, lease, "cancel check")
    return bool(row[0])
