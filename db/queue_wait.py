"""Waiting for work: blocking until a job of some kinds can be claimed.

PostgreSQL wakes waiting workers with LISTEN/NOTIFY (`db/queue.py` notifies on enqueue); SQLite
polls. Either way a delayed retry or an expired lease coming due also wakes them.
"""

from __future__ import annotations

import logging
import threading
import time
import weakref

from db.database import Database
from db.queue_leases import Kinds, kind_names
from db.queue_reads import seconds_until_work

log = logging.getLogger("jukebot.queue")

NOTIFY_CHANNEL = "jukebot_jobs"


class _Listener:
    """One LISTEN connection per Database: notifications queue up between waits, so none is missed."""

    def __init__(self, db: Database) -> None:
        import psycopg

        conninfo = db.url.set(drivername="postgresql").render_as_string(hide_password=False)
        self.conn = psycopg.connect(conninfo, autocommit=True, connect_timeout=10)
        self.conn.execute(f"LISTEN {NOTIFY_CHANNEL}")
        self.lock = threading.Lock()

    def wait(self, kinds: list[str], timeout: float) -> bool:
        """True as soon as a job of `kinds` is announced; False after `timeout` seconds without."""
        deadline = time.monotonic() + max(timeout, 0.0)
        with self.lock:
            while True:
                remaining = deadline - time.monotonic()
                for note in self.conn.notifies(timeout=max(remaining, 0.0)):
                    if note.payload in kinds:
                        return True
                    break  # another kind: keep waiting for the rest of the time
                if time.monotonic() >= deadline:
                    return False

    def close(self) -> None:
        if not self.conn.closed:
            self.conn.close()


_listeners: weakref.WeakKeyDictionary[Database, _Listener] = weakref.WeakKeyDictionary()
_listeners_lock = threading.Lock()


def _listener(db: Database) -> _Listener:
    with _listeners_lock:
        found = _listeners.get(db)
        if found is None or found.conn.closed:
            found = _Listener(db)
            _listeners[db] = found
            db.on_dispose(found.close)
            weakref.finalize(db, found.close)
        return found


def wait_for_work(db: Database, kinds: Kinds, timeout: float, *, poll_seconds: float | None = None) -> bool:
    """Block until a job of `kinds` can probably be claimed (True) or `timeout` seconds pass (False).

    PostgreSQL: LISTEN/NOTIFY (enqueue notifies), plus a wake-up when a delayed retry or an expired
    lease comes due. SQLite: short polling every `poll_seconds` (default JUKEBOT_POLL_SECONDS).
    """
    kind_list = kind_names(kinds)
    deadline = time.monotonic() + timeout
    if poll_seconds is None:
        from db.settings import get_settings

        poll_seconds = get_settings().queue.poll_seconds
    listener: _Listener | None = None
    if db.dialect == "postgresql":
        try:
            listener = _listener(db)
            listener.wait(kind_list, 0)  # drop what was announced before now: the query below sees it
        except Exception as exc:  # a dropped LISTEN connection: fall back to polling, retry next time
            log.warning("LISTEN on %s failed (%s); polling instead", db.masked_url, exc)
            _listeners.pop(db, None)
            listener = None
    while True:
        due = seconds_until_work(db, kind_list)
        if due is not None and due <= 0:
            return True
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            return False
        step = remaining if due is None else min(remaining, due + 0.01)
        if listener is not None:
            try:
                listener.wait(kind_list, step)  # an announcement or the due time: look again
                continue
            except Exception as exc:
                log.warning("LISTEN on %s failed (%s); polling instead", db.masked_url, exc)
                _listeners.pop(db, None)
                listener = None
        time.sleep(min(step, poll_seconds))
