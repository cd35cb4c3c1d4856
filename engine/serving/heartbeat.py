"""A running job's progress (stage, tokens, ETA) and the heartbeat that reports it and keeps the lease."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import Any

from db import queue
from db.database import Database

log = logging.getLogger("jukebot.worker")


class ProgressTracker:
    """The latest progress, written by the sampler's callbacks, read by the heartbeat thread."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._data: dict[str, Any] = {"stage": "starting"}
        self._kept: dict[str, Any] = {}

    def keep(self, **facts: Any) -> None:
        """Facts every later report carries, whatever the stage (e.g. where the preview is)."""
        with self._lock:
            self._kept.update(facts)

    def stage(self, name: str, **extra: Any) -> None:
        with self._lock:
            self._data = {"stage": name, **extra}

    def tokens(self, stage: str, p: Any) -> None:
        data = {
            "stage": stage,
            "level": p.level,
            "done": p.done,
            "total": p.total,
            "percent": round(p.percent, 2),
            "tokens_per_second": round(p.tokens_per_second, 2),
            "eta_seconds": None if p.eta_seconds is None else round(p.eta_seconds, 1),
            "window": p.window,
            "windows": p.windows,
        }
        with self._lock:
            self._data = data

    def snapshot(self) -> dict[str, Any]:
        with self._lock:
            return {**self._data, **self._kept}


class Heartbeat:
    """Extends the lease every `interval` seconds with the latest progress, from a thread.
    Remembers a cancel request and a lost lease for the sampling loop to see between windows."""

    def __init__(
        self,
        db: Database,
        lease: queue.Lease,
        tracker: ProgressTracker,
        interval: float,
        on_beat: Callable[[], None] | None = None,
    ) -> None:
        self.db, self.lease, self.tracker, self.interval = db, lease, tracker, interval
        self.on_beat = on_beat  # after each beat the database took (the worker's health file)
        self.cancel = threading.Event()
        self.lost = threading.Event()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name=f"heartbeat-job-{lease.job_id}", daemon=True)

    def __enter__(self) -> Heartbeat:
        self.beat()
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def stop(self) -> None:
        """Stop beating (before the job's final write: a beat after completion would be refused)."""
        self._stop.set()
        if self._thread.is_alive() and self._thread is not threading.current_thread():
            self._thread.join(timeout=30)

    def beat(self) -> None:
        try:
            if queue.heartbeat(self.db, self.lease, self.tracker.snapshot()):
                self.cancel.set()
            if self.on_beat is not None:
                self.on_beat()
        except queue.LeaseLost as e:
            log.warning("%s", e)
            self.lost.set()
        except Exception as e:  # the database is down for a moment: try again next time
            log.warning("heartbeat for job %s failed: %s", self.lease.job_id, e)

    def _loop(self) -> None:
        while not self._stop.wait(self.interval):
            if self.lost.is_set():
                return
            self.beat()
