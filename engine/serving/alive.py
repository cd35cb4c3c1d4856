"""The worker's "I am alive" file, for container healthchecks (`jukebot worker-health`).

A worker touches it while it waits for work (each poll) and at each successful job heartbeat, so
the file is fresh whenever the worker's loop is turning and its database answers. A worker stuck
(a hung decode, a database gone) stops touching it, and the check fails after `max_age` seconds.
"""

from __future__ import annotations

import logging
import os
import time
from pathlib import Path

log = logging.getLogger("jukebot.worker")

ENV = "JUKEBOT_WORKER_HEALTH_FILE"


class AliveFile:
    """Touches `path` (nothing when None); a failed touch is logged once, never fatal."""

    def __init__(self, path: str | os.PathLike[str] | None) -> None:
        self.path = Path(path) if path else None
        self._warned = False

    def touch(self) -> None:
        if self.path is None:
            return
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self.path.touch()
            os.utime(self.path)
        except OSError as exc:
            if not self._warned:
                log.warning("cannot write the health file %s: %s", self.path, exc)
                self._warned = True


def staleness(path: str | os.PathLike[str], max_age: float, now: float | None = None) -> str | None:
    """None when the file was touched within `max_age` seconds; otherwise why the worker is unhealthy."""
    try:
        age = (now if now is not None else time.time()) - Path(path).stat().st_mtime
    except FileNotFoundError:
        return f"the worker has not written its health file {path} yet (is it running, with {ENV} set?)"
    except OSError as exc:
        return f"cannot read the worker's health file {path}: {exc}"
    if age > max_age:
        return f"the worker's health file {path} is {age:.0f} s old (more than {max_age:g} s): it is stuck or gone"
    return None
