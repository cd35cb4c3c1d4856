"""Reads of the job queue that change nothing: a job, its place in line, and when the next job of
some kinds comes due (a queued job's run_at, or a running job's lease expiry)."""

from __future__ import annotations

from sqlalchemy import and_, case, func, or_, select
from sqlmodel import col

from db.database import Database
from db.models import Job, JobStatus
from db.queue_leases import Kinds, kind_names, sql_now


def get_job(db: Database, job_id: int) -> Job | None:
    with db.read() as s:
        return s.get(Job, job_id)


def queue_position(db: Database, job_id: int) -> int | None:
    """1 for the next job of its kind to be claimed, 2 for the one after, …; None unless queued."""
    with db.read() as s:
        job = s.get(Job, job_id)
        if job is None or job.status != JobStatus.queued:
            return None
        ahead = s.execute(
            select(func.count())
            .select_from(Job)
            .where(
                col(Job.kind) == job.kind,
                col(Job.status) == JobStatus.queued,
                col(Job.id) != job.id,
                or_(
                    col(Job.priority) > job.priority,
                    and_(
                        col(Job.priority) == job.priority,
                        or_(
                            col(Job.run_at) < job.run_at,
                            and_(col(Job.run_at) == job.run_at, col(Job.id) < job.id),
                        ),
                    ),
                ),
            )
        ).scalar_one()
    return int(ahead) + 1


def seconds_until_work(db: Database, kinds: Kinds) -> float | None:
    """Seconds until a job of `kinds` can be claimed (0 or less: now); None when there is none."""
    due = case((col(Job.status) == JobStatus.queued, col(Job.run_at)), else_=col(Job.lease_expires_at))
    with db.read() as s:
        row = s.execute(
            select(func.min(due), sql_now(db)).where(
                col(Job.kind).in_(kind_names(kinds)),
                or_(
                    col(Job.status) == JobStatus.queued,
                    and_(
                        col(Job.status) == JobStatus.running,
                        col(Job.cancel_requested).is_(False),
                        col(Job.reclaims) < col(Job.max_reclaims),
                    ),
                ),
            )
        ).one()
    first, now = row
    if first is None:
        return None
    return float((first - now).total_seconds())
