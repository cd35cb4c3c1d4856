"""The publication state machine, in the database. One row per (clip, platform), never sent twice.

    scheduled ──claim──▶ publishing ──▶ published
        ▲                    │  ├──▶ failed        (the platform said no, or attempts are used up)
        │ clear failure,     │  └──▶ unconfirmed   (it may have gone through: timeout, reset, crash)
        └─ attempts left ────┘            │
                                          └─claim──▶ publishing (reconcile: look on the platform first)
                                                      found ▶ published; not found ▶ send again

- A claim is one conditional UPDATE (`WHERE state = <what we read>`), committed BEFORE any call to the
  platform, so of two runners (a double scheduler fire, the CLI next to the bot) exactly one wins.
- A claim's `started_at` is its fencing token: every later write says `WHERE state='publishing' AND
  started_at = <ours>`, so a runner that was declared dead cannot overwrite a newer attempt.
- A `publishing` row older than `stale_seconds` was interrupted (the process died between the
  platform's accept and our commit, or before); `recover_interrupted` turns it into `unconfirmed`, and
  it is reconciled on the platform before anything is sent again.

All functions are synchronous and short (one transaction each); the async runner calls them through
`asyncio.to_thread`.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlmodel import Session, col

from db.database import Database
from db.models import Publication, PublicationState, utcnow

S = PublicationState


@dataclass(frozen=True)
class Claim:
    """A publication this runner holds (state `publishing`, fenced by `started_at`)."""

    publication: Publication
    reconcile: bool  # it was unconfirmed (or interrupted): look on the platform before sending
    started_at: datetime

    @property
    def id(self) -> int:
        assert self.publication.id is not None
        return self.publication.id


def _insert(session: Session) -> Any:
    return pg_insert if session.get_bind().dialect.name == "postgresql" else sqlite_insert


def insert_publications(
    db: Database,
    clip_id: int,
    when: Mapping[str, datetime],
    *,
    max_attempts: int = 3,
) -> list[int]:
    """One `scheduled` row per platform in `when` (platform -> time), skipping rows that exist
    (INSERT … ON CONFLICT DO NOTHING on the unique (clip_id, platform)). Returns the rows' ids, old or new."""
    now = utcnow()
    with db.write() as s:
        for platform, at in when.items():
            s.execute(
                _insert(s)(Publication)
                .values(
                    clip_id=clip_id,
                    platform=platform,
                    state=S.scheduled.value,
                    scheduled_for=at,
                    attempts=0,
                    max_attempts=max_attempts,
                    caption="",
                    created_at=now,
                    updated_at=now,
                )
                .on_conflict_do_nothing(index_elements=["clip_id", "platform"])
            )
        rows = s.execute(
            select(col(Publication.id))
            .where(col(Publication.clip_id) == clip_id, col(Publication.platform).in_(list(when)))
            .order_by(col(Publication.id))
        ).scalars()
        return [int(r) for r in rows]


def get_publication(db: Database, publication_id: int) -> Publication | None:
    with db.read() as s:
        return s.get(Publication, publication_id)


def publications_for_clip(db: Database, clip_id: int) -> list[Publication]:
    with db.read() as s:
        stmt = (
            select(Publication).where(col(Publication.clip_id) == clip_id).order_by(col(Publication.platform))
        )
        return list(s.execute(stmt).scalars())


def list_publications(db: Database, *, limit: int = 50) -> list[Publication]:
    with db.read() as s:
        stmt = select(Publication).order_by(col(Publication.id).desc()).limit(limit)
        return list(s.execute(stmt).scalars())


def due_publications(
    db: Database, now: datetime, platforms: Iterable[str] | None = None
) -> list[Publication]:
    """Rows that want action now: scheduled ones whose time has come, unconfirmed ones due a check."""
    stmt = (
        select(Publication)
        .where(
            col(Publication.state).in_([S.scheduled.value, S.unconfirmed.value]),
            col(Publication.scheduled_for) <= now,
        )
        .order_by(col(Publication.scheduled_for), col(Publication.id))
    )
    if platforms is not None:
        stmt = stmt.where(col(Publication.platform).in_(list(platforms)))
    with db.read() as s:
        return list(s.execute(stmt).scalars())


def recover_interrupted(db: Database, now: datetime, stale_seconds: float) -> list[Publication]:
    """`publishing` rows older than `stale_seconds` become `unconfirmed` (checked now); returns them."""
    cutoff = now - timedelta(seconds=stale_seconds)
    with db.write() as s:
        stale = list(
            s.execute(
                select(Publication).where(
                    col(Publication.state) == S.publishing.value, col(Publication.started_at) < cutoff
                )
            ).scalars()
        )
        recovered = []
        for pub in stale:
            done = s.execute(
                update(Publication)
                .where(
                    col(Publication.id) == pub.id,
                    col(Publication.state) == S.publishing.value,
                    col(Publication.started_at) == pub.started_at,
                )
                .values(
                    state=S.unconfirmed.value,
                    scheduled_for=now,
                    updated_at=now,
                    last_error="The upload was interrupted (the publisher stopped mid-way); "
                    "checking the platform before any retry.",
                )
            )
            if done.rowcount == 1:  # type: ignore[attr-defined]
                recovered.append(pub)
        return recovered


def claim(db: Database, publication_id: int, now: datetime) -> Claim | None:
    """Take a due row for this runner (committed on return), or None if it is not due or taken."""
    with db.write() as s:
        pub = s.get(Publication, publication_id)
        if pub is None or pub.state not in (S.scheduled, S.unconfirmed) or pub.scheduled_for > now:
            return None
        reconcile = pub.state == S.unconfirmed
        values: dict[str, Any] = {"state": S.publishing.value, "started_at": now, "updated_at": now}
        if not reconcile:
            values["attempts"] = col(Publication.attempts) + 1
        done = s.execute(
            update(Publication)
            .where(
                col(Publication.id) == publication_id,
                col(Publication.state) == pub.state,
                col(Publication.scheduled_for) <= now,
            )  # still due: another runner may have rescheduled it
            .values(**values)
        )
        if done.rowcount != 1:  # type: ignore[attr-defined]
            return None
        s.flush()
        s.refresh(pub)
        return Claim(publication=pub, reconcile=reconcile, started_at=now)


def _fenced(db: Database, held: Claim, **values: Any) -> bool:
    values.setdefault("updated_at", utcnow())
    with db.write() as s:
        done = s.execute(
            update(Publication)
            .where(
                col(Publication.id) == held.id,
                col(Publication.state) == S.publishing.value,
                col(Publication.started_at) == held.started_at,
            )
            .values(**values)
        )
        return done.rowcount == 1  # type: ignore[attr-defined]


def set_caption(db: Database, held: Claim, caption: str) -> bool:
    """Fix the text on first use, so retries and the reconcile look for exactly what was sent."""
    return _fenced(db, held, caption=caption)


def begin_send(db: Database, held: Claim, now: datetime) -> Claim | None:
    """After a reconcile found nothing: count a new attempt under a new fencing token."""
    with db.write() as s:
        done = s.execute(
            update(Publication)
            .where(
                col(Publication.id) == held.id,
                col(Publication.state) == S.publishing.value,
                col(Publication.started_at) == held.started_at,
            )
            .values(attempts=col(Publication.attempts) + 1, started_at=now, updated_at=now)
        )
        if done.rowcount != 1:  # type: ignore[attr-defined]
            return None
        pub = s.get(Publication, held.id)
        assert pub is not None
        s.refresh(pub)
        return Claim(publication=pub, reconcile=False, started_at=now)


def finish_published(db: Database, held: Claim, remote_id: str, remote_url: str, now: datetime) -> bool:
    return _fenced(
        db,
        held,
        state=S.published.value,
        remote_id=remote_id,
        remote_url=remote_url,
        published_at=now,
        last_error=None,
    )


def finish_retry(db: Database, held: Claim, error: str, at: datetime) -> bool:
    return _fenced(db, held, state=S.scheduled.value, scheduled_for=at, last_error=error)


def finish_failed(db: Database, held: Claim, error: str) -> bool:
    return _fenced(db, held, state=S.failed.value, last_error=error)


def finish_unconfirmed(db: Database, held: Claim, error: str, check_at: datetime) -> bool:
    return _fenced(db, held, state=S.unconfirmed.value, scheduled_for=check_at, last_error=error)


def retry_failed(db: Database, publication_id: int, now: datetime | None = None) -> bool:
    """A moderator's "try again" for a failed row: scheduled now with fresh attempts. Only from `failed`
    (an unconfirmed row must be reconciled first; a published one is done)."""
    now = now or utcnow()
    with db.write() as s:
        done = s.execute(
            update(Publication)
            .where(col(Publication.id) == publication_id, col(Publication.state) == S.failed.value)
            .values(state=S.scheduled.value, scheduled_for=now, attempts=0, updated_at=now)
        )
        return done.rowcount == 1  # type: ignore[attr-defined]


def backoff(attempts: int, base_seconds: float, cap_seconds: float = 3600.0) -> timedelta:
    """Wait before attempt `attempts + 1`: base, 4x base, 16x base, … capped."""
    return timedelta(seconds=min(cap_seconds, base_seconds * 4 ** max(0, attempts - 1)))
