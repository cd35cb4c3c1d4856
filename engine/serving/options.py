"""`WorkerOptions`: how one worker runs (the flags of `jukebot worker`, engine/commands/worker.py)."""

from __future__ import annotations

from dataclasses import dataclass

from db.models import JobKind

ALL_KINDS = (JobKind.draft.value, JobKind.upsample.value, JobKind.continue_.value)


@dataclass
class WorkerOptions:
    device: str = "auto"  # auto | cpu | cuda | cuda:N
    model: str | None = None  # default: settings.engine.model
    kinds: tuple[str, ...] = ALL_KINDS
    once: bool = False  # run one job (or none, if the queue is empty) and exit
    owner: str | None = None
    dtype: str = "auto"  # auto (float32 on CPU, bfloat16 on CUDA) | float32 | bfloat16 | float16
    swap_levels: bool = False  # keep only the prior being sampled in memory
    threads: int | None = None  # CPU threads for torch (None: default_threads(device))
    tokens_every: int = 64  # progress granularity inside a window
    checkpoint_seconds: float = 0.0  # 0: a checkpoint after every window; else at most this often
    idle_exit_seconds: float | None = None  # exit after this long without work (tests, batch use)
    batch_jobs: int = 1  # jobs decoded together in one batch (engine.sampling.batching); 1: one job at a time
    batch_rows: int | None = None  # rows of that batch (default: 3 per job)
    batch_memory_gb: float | None = None  # decode memory (KV caches) for the batch (default: 70% of free)
    health_file: str | None = None  # touched while the loop turns (engine/serving/alive.py); None: none
