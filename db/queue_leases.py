"""The pieces the job state machine (`db/queue.py`) is built from: the lease a worker holds, the
error a stale worker gets, the fence every worker write carries, backoff, and the one clock.

Times that decide leases come from one clock: the PostgreSQL server's (workers may run on many
hosts); on SQLite (one host) the local clock.
"""

from __future__ import annotations

import logging
import os
import random
import socket
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

from sqlalchemy import ColumnElement, Interval, and_, func, literal, select
from sqlmodel import Session, col

from db.database import Database
from db.models import Job, JobKind, JobStatus, UTCDateTime, utcnow

log = logging.getLogger("jukebot.queue")

BACKOFF_BASE_S = 15.0
BACKOFF_CAP_S = 15 * 60.0

Kinds = str | JobKind | Iterable[str | JobKind]


class LeaseLost(RuntimeError):
    """This worker no longer owns the job: its lease expired and another attempt took it, or the job
    was finished, cancelled or requeued. The write was refused; stop working on the job."""

    def __init__(
        self,
        job_id: int,
        token: int,
        owner: str,
        action: str,
        *,
        current_token: int | None = None,
        current_status: str | None = None,
        current_owner: str | None = None,
    ) -> None:
        self.job_id = job_id
        self.token = token
        self.owner = owner
        self.action = action
        self.current_token = current_token
        self.current_status = current_status
        self.current_owner = current_owner
        if current_status is None:
            now = "the job no longer exists"
        elif current_token is not None and current_token != token:
            now = f"the job is {current_status} under token {current_token} (owner {current_owner})"
        else:
            now = f"the job is {current_status}"
        super().__init__(
            f"Lease lost on job {job_id}: {owner} held token {token} but {now}; its {action} was refused "
            "so it cannot overwrite the newer attempt. This worker must stop working on the job."
        )


@dataclass(frozen=True)
class Lease:
    """What a worker holds while it runs a job. `token` is the fencing token of this attempt."""

    job_id: int
    token: int
    owner: str
    kind: str
    payload: dict[str, Any]
    song_id: int | None
    attempts: int
    checkpoint_key: str | None
    reclaims: int = 0
    lease_seconds: float = 300.0
    progress: dict[str, Any] = field(default_factory=dict)


def default_owner() -> str:
    """A worker id that says where it runs: host:pid."""
    return f"{socket.gethostname()}:{os.getpid()}"


def backoff_seconds(attempts: int, *, base: float = BACKOFF_BASE_S, cap: float = BACKOFF_CAP_S) -> float:
    """Exponential backoff with jitter: base·2^(attempts-1), capped, times a random 0.5–1.0."""
    return min(cap, base * 2 ** max(attempts - 1, 0)) * random.uniform(0.5, 1.0)


# --- clock and fence ------------------------------------------------------------------------------------


def sql_now(db: Database) -> ColumnElement[Any]:
    if db.dialect == "postgresql":
        return func.now()
    return literal(utcnow(), UTCDateTime())


def sql_after(db: Database, seconds: float) -> ColumnElement[Any]:
    if db.dialect == "postgresql":
        return func.now() + literal(timedelta(seconds=seconds), Interval())
    return literal(utcnow() + timedelta(seconds=seconds), UTCDateTime())


def kind_names(kinds: Kinds) -> list[str]:
    if isinstance(kinds, str):  # JobKind is a str too
        return [str(kinds)]
    return [str(k) for k in kinds]


def fence(lease: Lease) -> ColumnElement[bool]:
    return and_(
        col(Job.id) == lease.job_id, col(Job.lease_token) == lease.token, col(Job.status) == JobStatus.running
    )


def lease_lost(session: Session, lease: Lease, action: str) -> LeaseLost:
    """Build the LeaseLost for a refused write, saying who owns the job now, and log it."""
    row = session.execute(
        select(col(Job.lease_token), col(Job.status), col(Job.lease_owner)).where(col(Job.id) == lease.job_id)
    ).first()
    exc = LeaseLost(
        lease.job_id,
        lease.token,
        lease.owner,
        action,
        current_token=row[0] if row else None,
        current_status=row[1] if row else None,
        current_owner=row[2] if row else None,
    )
    log.warning("%s", exc, extra={"job_id": lease.job_id, "token": lease.token})
    return exc


@contextmanager
def transaction(db: Database, session: Session | None) -> Iterator[Session]:
    if session is not None:
        yield session
    else:
        with db.write() as s:
            yield s
