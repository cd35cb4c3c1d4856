"""The GPU worker: claims `draft`, `upsample` and `continue` jobs and runs them to the end.

    jukebot worker [--device cuda:N|cpu] [--model M] [--once] [--kinds draft,upsample,continue]

One worker per GPU (a lock file per device on this host refuses a second one). It keeps one model
set resident, heartbeats from a background thread with progress, checkpoints after every window
(fenced by the lease token) and writes its results in one fenced transaction together with the
job's completion.

This module is the loop: claim a job (or several, decoded in one batch), run it, rescue stalled jobs
while idle, keep the health file fresh; on SIGTERM the current window finishes, the job is given
back and the worker exits 0. What a job does (the job contract: its files, rows, progress and
errors) is engine.serving.jobs; the options are engine.serving.options.
"""

from __future__ import annotations

import logging
import signal
import threading
import time
from typing import Any

from db import queue
from db.database import Database
from db.migrate import open_database
from db.settings import Settings, get_settings
from db.storage import Storage, get_storage
from engine.serving.alive import AliveFile
from engine.serving.device import default_threads, device_lock, resolve_device, resolve_dtype
from engine.serving.jobs import JobHandlers
from engine.serving.options import WorkerOptions

log = logging.getLogger("jukebot.worker")


class Worker(JobHandlers):
    """One GPU's worker: claims jobs and runs each (`JobHandlers.run_job`) on its resident model."""

    def __init__(
        self,
        settings: Settings | None = None,
        options: WorkerOptions | None = None,
        *,
        db: Database | None = None,
        storage: Storage | None = None,
    ) -> None:
        self.settings = settings or get_settings()
        self.options = options or WorkerOptions()
        self.db = db or open_database(self.settings.storage.database_url)
        self.storage = storage or get_storage(self.settings)
        self.owner = self.options.owner or queue.default_owner()
        self.device = resolve_device(
            self.options.device if self.options.device != "auto" else self.settings.engine.device
        )
        self.dtype = resolve_dtype(self.options.dtype, self.device)
        self.model_name = self.options.model or self.settings.engine.model
        self._engine: Any = None
        self._engine_name: str | None = None
        self.terminating = threading.Event()
        self._rescued_at = float("-inf")  # monotonic time of the last stalled-job rescue
        self.jobs_done = 0
        self.batch_stats: dict[str, int] = {}
        self.alive = AliveFile(self.options.health_file)

    # -- lifecycle ------------------------------------------------------------------------------
    def _on_sigterm(self, signum: int, _frame: Any) -> None:
        log.info("signal %s: finishing the current window, then giving the job back", signum)
        self.terminating.set()

    def install_signal_handlers(self) -> None:
        if threading.current_thread() is threading.main_thread():
            signal.signal(signal.SIGTERM, self._on_sigterm)
            signal.signal(signal.SIGINT, self._on_sigterm)

    def run(self) -> int:
        """Claim and run jobs until SIGTERM (or one job with --once). Returns the exit code."""
        import torch

        threads = self.options.threads or default_threads(self.device)
        if threads:
            torch.set_num_threads(threads)
        self.install_signal_handlers()
        with device_lock(self.device):
            self.engine_for(self.model_name)  # fail fast on a model that cannot load
            if self.options.batch_jobs > 1:
                return self._run_batched()
            idle_since = time.monotonic()
            while not self.terminating.is_set():
                lease = queue.claim(
                    self.db, list(self.options.kinds), self.owner, self.settings.queue.lease_seconds
                )
                self.alive.touch()  # the loop turns and the database answered
                if lease is None:
                    if self.options.once:
                        return 0
                    if (
                        self.options.idle_exit_seconds is not None
                        and time.monotonic() - idle_since > self.options.idle_exit_seconds
                    ):
                        return 0
                    self.rescue_stalled()
                    queue.wait_for_work(
                        self.db, list(self.options.kinds), timeout=self.settings.queue.poll_seconds
                    )
                    continue
                self.run_job(lease)
                idle_since = time.monotonic()
                if self.options.once:
                    break
        return 0

    def rescue_stalled(self) -> None:
        """While idle, end or requeue the jobs whose worker died (`queue.reclaim_expired`; safe when
        every worker and the bot run it), at most once a heartbeat interval."""
        now = time.monotonic()
        if now - self._rescued_at < self.settings.queue.heartbeat_seconds:
            return
        self._rescued_at = now
        moved = queue.reclaim_expired(self.db)
        if moved:
            log.info("rescued %d job(s) whose worker stopped answering", moved)

    def _batch_budget(self) -> int:
        if self.options.batch_memory_gb is not None:
            return int(self.options.batch_memory_gb * 2**30)
        if self.device.startswith("cuda"):
            import torch

            free, _ = torch.cuda.mem_get_info(torch.device(self.device))
            return int(free * 0.7)
        return 4 << 30

    def _run_batched(self) -> int:
        """Several jobs at once, each in a thread running the usual `run_job` (its own lease,
        heartbeats, checkpoints and fenced writes), their windows decoded in one shared batch
        (engine.sampling.batching): a job joins and leaves between windows. Jobs claimed while others run
        are of the same kind, so the batch samples one level. Assumes every job uses the
        worker's model (the usual setup)."""
        from engine.sampling.batching import BatchScheduler, use_scheduler

        opts = self.options
        sched = BatchScheduler(
            budget_bytes=self._batch_budget(), max_rows=opts.batch_rows or 3 * opts.batch_jobs
        )
        running: dict[threading.Thread, str] = {}
        idle_since = time.monotonic()
        claiming = True
        with sched, use_scheduler(sched):
            while True:
                for t in [t for t in running if not t.is_alive()]:
                    t.join()
                    del running[t]
                if self.terminating.is_set():
                    claiming = False  # SIGTERM: each job finishes its window, checkpoints and is released
                if claiming and len(running) < opts.batch_jobs:
                    kinds = [next(iter(running.values()))] if running else list(opts.kinds)
                    lease = queue.claim(self.db, kinds, self.owner, self.settings.queue.lease_seconds)
                    if lease is not None:
                        t = threading.Thread(
                            target=self.run_job, args=(lease,), name=f"job-{lease.job_id}", daemon=True
                        )
                        running[t] = lease.kind
                        t.start()
                        idle_since = time.monotonic()
                        if opts.once and len(running) >= opts.batch_jobs:
                            claiming = False
                        continue
                    if opts.once:
                        claiming = False  # --once: the jobs that were waiting, no more
                if not running:
                    if not claiming:
                        break
                    if (
                        opts.idle_exit_seconds is not None
                        and time.monotonic() - idle_since > opts.idle_exit_seconds
                    ):
                        break
                    self.alive.touch()  # idle and the database answers (running jobs' heartbeats touch it)
                    self.rescue_stalled()
                    queue.wait_for_work(self.db, list(opts.kinds), timeout=self.settings.queue.poll_seconds)
                else:
                    time.sleep(min(0.2, self.settings.queue.poll_seconds))
        self.batch_stats = dict(sched.stats)
        return 0

    def engine_for(self, name: str) -> Any:
        """The resident model set; switching to another model drops the previous one."""
        if self._engine is not None and self._engine_name == name:
            return self._engine
        from engine.sampling.pipeline import Engine

        if self._engine is not None:
            self._engine = None
            import torch

            if self.device.startswith("cuda"):
                torch.cuda.empty_cache()
        log.info("loading model %s on %s (%s)", name, self.device, str(self.dtype).replace("torch.", ""))
        self._engine = Engine.load(
            name,
            device=self.device,
            dtype=self.dtype,
            swap_levels=self.options.swap_levels,
            settings=self.settings,
            progress=False,
        )
        self._engine_name = name
        return self._engine


def run_worker(options: WorkerOptions, settings: Settings | None = None) -> int:
    return Worker(settings, options).run()
