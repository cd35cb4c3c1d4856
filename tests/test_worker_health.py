"""The worker's health file and `jukebot worker-health` (trustgaps 5): the container healthcheck
proves the worker's loop turns and its heartbeats reach the database, not only that the database
answers. A real worker process (the tiny model, on the CPU), a real database."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from db import queue
from db.database import Database
from db.models import JobKind
from engine.serving.alive import AliveFile
from engine.serving.heartbeat import Heartbeat, ProgressTracker
from tests.pipeline_fixtures import write_tiny_model

ROOT = Path(__file__).resolve().parents[1]


def _env(tmp: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("JUKEBOT_")}
    env.update({"PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1", **extra})
    return env


def health(tmp: Path, health_file: Path, max_age: str = "60") -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "bot.cli", "worker-health", "--max-age", max_age],
        cwd=tmp,
        env=_env(tmp, JUKEBOT_WORKER_HEALTH_FILE=str(health_file)),
        capture_output=True,
        text=True,
        timeout=120,
    )


def wait_for(check: object, what: str, timeout: float = 180.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():  # type: ignore[operator]
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out waiting for {what}")
        time.sleep(0.1)


def test_the_health_file_is_fresh_while_the_worker_runs(tmp_path: Path) -> None:
    model = write_tiny_model(tmp_path / "models" / "tiny")
    alive = tmp_path / "run" / "worker.alive"
    env = _env(
        tmp_path,
        JUKEBOT_DATABASE_URL=f"sqlite:///{tmp_path / 'jukebot.db'}",
        JUKEBOT_STORAGE_URL=str(tmp_path / "storage"),
        JUKEBOT_MODEL=str(model),
        JUKEBOT_WORKER_HEALTH_FILE=str(alive),
    )
    cmd = [sys.executable, "-m", "bot.cli", "worker", "--device", "cpu", "--threads", "1"]
    proc = subprocess.Popen(cmd, cwd=tmp_path, env=env)
    try:
        assert health(tmp_path, alive).returncode == 1  # not written yet: unhealthy
        wait_for(alive.exists, "the worker's health file")
        first = alive.stat().st_mtime_ns
        wait_for(lambda: alive.stat().st_mtime_ns > first, "the idle worker to touch it again", 60)
        ok = health(tmp_path, alive)
        assert ok.returncode == 0, ok.stderr
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
    # The worker is gone: nothing touches the file; an hour later (its clock set back) it is stale.
    old = time.time() - 3600
    os.utime(alive, (old, old))
    stale = health(tmp_path, alive)
    lines = [ln for ln in stale.stderr.splitlines() if ln.strip()]
    assert stale.returncode == 1 and "Traceback" not in stale.stderr, stale.stderr
    assert len(lines) == 1 and str(alive) in lines[0] and "stuck or gone" in lines[0], stale.stderr


def test_a_job_heartbeat_touches_the_health_file(db: Database, tmp_path: Path) -> None:
    queue.enqueue(db, JobKind.draft, {"song_id": 1})
    lease = queue.claim(db, [JobKind.draft], "worker-a", 60)
    assert lease is not None
    alive = tmp_path / "worker.alive"
    with Heartbeat(db, lease, ProgressTracker(), 0.05, on_beat=AliveFile(alive).touch):
        wait_for(alive.exists, "a heartbeat to touch the file", 20)
    # A beat the database refuses (the job was given back: the lease is gone) does not count.
    alive.unlink()
    queue.release(db, lease)
    refused = Heartbeat(db, lease, ProgressTracker(), 60, on_beat=AliveFile(alive).touch)
    refused.beat()
    assert refused.lost.is_set() and not alive.exists()
