"""The publication state machine, in the database. One row per (clip, platform), never sent twice.

    scheduled ──claim──▶ publishing ──▶ published
        ▲                    │  ├──▶ failed        (the platform said no, or attempts are used up)
        │ clear failure,     │  └──▶ unconfirmed   (it may have gone through: timeout, reset, crash)
        └─ attempts left ────┘            │
                                          └─claim──▶ publishing (reconcile: look on the platform first)
                                                      found ▶ published; not found ▶ send again

- Every row carries a unique `marker` that goes out with the post (in the X text, in the SoundCloud
  description). Reconciling looks for that marker and nothing else: a post with the same caption but
  not our marker (a continuation shares its parent's artist, genre and lyrics) is someone else's.
- A claim is one conditional UPDATE, committed BEFORE any call to the platform, so of two runners
  exactly one wins. It takes a lease as the job queue does: `lease_token + 1` (the fencing token,
  named in every later write), an owner, and `lease_expires_at`, which the runner's heartbeat pushes
  forward while it uploads. A runner that lost its lease cannot overwrite a newer attempt.
- Only an expired lease means the runner died (a slow upload with a live heartbeat does not):
  `recover_interrupted` turns such a row into `unconfirmed`, and it is looked for on the platform by
  its marker before anything is sent again. So is any row that was sent before (`attempts > 0`).
- Times come from `clock(db)`: the database's clock on PostgreSQL (runners on several machines agree),
  the local clock on SQLite (one machine).

All functions are synchronous and short (one transaction each); the async runner calls them through
`asyncio.to_thread`.
"""

from __future__ import annotations

import secrets
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import func, or_, select, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlmodel import Session, col

from db.database import Database
from db.models import Publication, PublicationState, utcnow

S = PublicationState


MARKER_PREFIX = "jb-"


def new_marker() -> str:
    """Short, unique, and plain enough to sit at the end of a caption unnoticed."""
    return MARKER_PREFIX + secrets.token_hex(5)


def clock(db: Database) -> datetime:
    """Now, as leases are measured: the database server's clock on PostgreSQL, ours on SQLite."""
    if db.dialect != "postgresql":
        return utcnow()
    with db.read() as s:
        now = s.execute(select(func.now())).scalar_one()
    assert isinstance(now, datetime)
    return now


@dataclass(frozen=True)
class Claim:
    """A publication this runner holds (state `publishing`, fenced by `token`)."""

    publication: Publication
    reconcile: bool  # it may have been sent before: look on the platform (by marker) before sending
    token: int
    marker: str | None  # None only for a row sent before markers existed: it cannot be found again

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
                    marker=new_marker(),
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


def recover_interrupted(db: Database, now: datetime) -> list[Publication]:
    """`publishing` rows whose lease expired (the runner died: no heartbeat) become `unconfirmed`,
    to be checked now; returns them. A row without a lease is from before leases: expired too."""
    with db.write() as s:
        stale = list(
            s.execute(
                select(Publication).where(
                    col(Publication.state) == S.publishing.value,
                    or_(
                        col(Publication.lease_expires_at).is_(None),
                        col(Publication.lease_expires_at) < now,
                    ),
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
                    col(Publication.lease_token) == pub.lease_token,
                )
                .values(
                    state=S.unconfirmed.value,
                    scheduled_for=now,
                    updated_at=now,
                    lease_owner=None,
                    lease_expires_at=None,
                    last_error="The upload was interrupted (the publisher stopped mid-way); "
                    "checking the platform before any retry.",
                )
            )
            if done.rowcount == 1:  # type: ignore[attr-defined]
                recovered.append(pub)
        return recovered


def claim(
    db: Database, publication_id: int, now: datetime, *, owner: str = "", lease_seconds: float = 300.0
) -> Claim | None:
    """Take a due row for this runner under a new lease (committed on return), or None if it is not
    due or taken. A row without a marker (from before markers) gets one unless it may have been sent."""
    with db.write() as s:
        pub = s.get(Publication, publication_id)
        if pub is None or pub.state not in (S.scheduled, S.unconfirmed) or pub.scheduled_for > now:
            return None
        sent_before = pub.state == S.unconfirmed or (pub.attempts > 0 and pub.marker is not None)
        marker = pub.marker
        retag = marker is None and pub.state == S.scheduled  # any earlier attempt was refused: tag it now
        if retag:
            marker = new_marker()
        token = pub.lease_token + 1
        values: dict[str, Any] = {
            "state": S.publishing.value,
            "started_at": now,
            "updated_at": now,
            "marker": marker,
            "lease_token": token,
            "lease_owner": owner or None,
            "lease_expires_at": now + timedelta(seconds=lease_seconds),
        }
        if retag:
            values["caption"] = ""  # made again, with the marker
        if not sent_before:
            values["attempts"] = col(Publication.attempts) + 1
        done = s.execute(
            update(Publication)
            .where(
                col(Publication.id) == publication_id,
                col(Publication.state) == pub.state,
                col(Publication.lease_token) == pub.lease_token,
                col(Publication.scheduled_for) <= now,
            )  # still due: another runner may have rescheduled it
            .values(**values)
        )
        if done.rowcount != 1:  # type: ignore[attr-defined]
            return None
        s.flush()
        s.refresh(pub)
        return Claim(publication=pub, reconcile=sent_before, token=token, marker=marker)


def _fenced(db: Database, held: Claim, **values: Any) -> bool:
    values.setdefault("updated_at", utcnow())
    with db.write() as s:
        done = s.execute(
            update(Publication)
            .where(
                col(Publication.id) == held.id,
                col(Publication.state) == S.publishing.value,
                col(Publication.lease_token) == held.token,
            )
            .values(**values)
        )
        return done.rowcount == 1  # type: ignore[attr-defined]


def _release(**values: Any) -> dict[str, Any]:
    return {**values, "lease_owner": None, "lease_expires_at": None}


def heartbeat(db: Database, held: Claim, now: datetime, lease_seconds: float) -> bool:
    """Keep the lease while sending; False means another runner has taken the row over."""
    return _fenced(db, held, lease_expires_at=now + timedelta(seconds=lease_seconds))


def set_caption(db: Database, held: Claim, caption: str) -> bool:
    """Fix the text on first use, so retries send exactly the same thing."""
    return _fenced(db, held, caption=caption)


def set_account(db: Database, held: Claim, account_guild_id: int) -> bool:
    """Name the account about to be sent with, before sending: a later look-up searches that one."""
    return _fenced(db, held, account_guild_id=account_guild_id)


def begin_send(db: Database, held: Claim, now: datetime) -> Claim | None:
    """After a reconcile found nothing: count a new attempt (same lease)."""
    with db.write() as s:
        done = s.execute(
            update(Publication)
            .where(
                col(Publication.id) == held.id,
                col(Publication.state) == S.publishing.value,
                col(Publication.lease_token) == held.token,
            )
            .values(attempts=col(Publication.attempts) + 1, started_at=now, updated_at=now)
        )
        if done.rowcount != 1:  # type: ignore[attr-defined]
            return None
        pub = s.get(Publication, held.id)
        assert pub is not None
        s.refresh(pub)
        return Claim(publication=pub, reconcile=False, token=held.token, marker=held.marker)


def finish_published(db: Database, held: Claim, remote_id: str, remote_url: str, now: datetime) -> bool:
    return _fenced(
        db,
        held,
        **_release(
            state=S.published.value,
            remote_id=remote_id,
            remote_url=remote_url,
            published_at=now,
            last_error=None,
        ),
    )


def finish_retry(db: Database, held: Claim, error: str, at: datetime) -> bool:
    return _fenced(db, held, **_release(state=S.scheduled.value, scheduled_for=at, last_error=error))


def finish_failed(db: Database, held: Claim, error: str) -> bool:
    return _fenced(db, held, **_release(state=S.failed.value, last_error=error))


def finish_unconfirmed(db: Database, held: Claim, error: str, check_at: datetime) -> bool:
    return _fenced(db, held, **_release(state=S.unconfirmed.value, scheduled_for=check_at, last_error=error))


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
