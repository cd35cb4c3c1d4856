"""The local GPU worker as a child of the bot (single-machine installs on SQLite).

`jukebot worker` runs in its own process (it loads torch; the bot must not), with the same
settings (inherited environment and working directory, so the same .env). If it dies it is
started again, with a growing pause so a worker that cannot start does not spin. On shutdown it
gets SIGTERM (the worker gives its job back to the queue without burning an attempt), then SIGKILL
after a grace period.
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import threading
import time

log = logging.getLogger("jukebot.bot.worker")

MAX_PAUSE_S = 300.0
DEFAULT_COMMAND = [sys.executable, "-m", "bot.cli", "worker"]  # `jukebot worker`


class WorkerProcess:
    def __init__(
        self,
        command: list[str] | None = None,
        *,
        grace_seconds: float = 30.0,
        env: dict[str, str] | None = None,
    ) -> None:
        self.command = list(command or DEFAULT_COMMAND)
        self.grace_seconds = grace_seconds
        self.env = env
        self.proc: subprocess.Popen[bytes] | None = None
        self.restarts = 0
        self._stopping = threading.Event()
        self._lock = threading.Lock()
        self._monitor: threading.Thread | None = None

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc is not None else None

    def _spawn(self) -> None:
        self.proc = subprocess.Popen(
            self.command, env=self.env if self.env is not None else os.environ.copy()
        )
        log.info("started a local worker (pid %s): %s", self.proc.pid, " ".join(self.command[1:]))

    def start(self) -> None:
        with self._lock:
            self._spawn()
        self._monitor = threading.Thread(target=self._watch, name="jukebot-worker-monitor", daemon=True)
        self._monitor.start()

    def _watch(self) -> None:
        pause = 2.0
        while not self._stopping.wait(1.0):
            with self._lock:
                proc = self.proc
                if proc is None or proc.poll() is None:
                    continue
                code = proc.returncode
            if self._stopping.is_set():
                return
            log.warning("the local worker exited with code %s; starting it again in %.0f s", code, pause)
            if self._stopping.wait(pause):
                return
            with self._lock:
                if self._stopping.is_set():
                    return
                self._spawn()
                self.restarts += 1
            pause = min(pause * 2, MAX_PAUSE_S)

    def stop(self) -> int | None:
        """SIGTERM, wait for the grace period, then SIGKILL. Returns the exit code."""
        self._stopping.set()
        with self._lock:
            proc = self.proc
        if proc is None:
            return None
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(self.grace_seconds)
            except subprocess.TimeoutExpired:
                log.warning("the local worker did not stop within %.0f s; killing it", self.grace_seconds)
                proc.kill()
                proc.wait()
        if self._monitor is not None:
            self._monitor.join(timeout=5)
        log.info("the local worker stopped (exit code %s)", proc.returncode)
        return proc.returncode

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def wait_started(self, timeout: float = 10.0) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.alive():
                return True
            time.sleep(0.05)
        return False
