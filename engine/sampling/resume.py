"""Exact resume: a checkpoint after every window, and the way back into the sampling loop.

A checkpoint holds everything a run depends on besides the model weights: the codes of every level
so far, the plan (levels, lengths, windows, seed, noise stream, sampler settings), the position
(level, window) and caller facts (`extra`, e.g. the job's request). The sampler's randomness is
counter-based (see `engine.sampling.sample`), so the seed IS the RNG state: reloading the codes and running
the same plan skips the finished windows and continues with exactly the noise the uninterrupted
run would have used.

File format: an `.npz` (no pickle; loaded with `allow_pickle=False`) with `codes_0..2` (int16 when
the vocabulary fits, else int32), `meta` (UTF-8 JSON as uint8) and `digest`: the SHA-256 of the meta
bytes and every level's codes, checked on load. The zip's own CRC only catches damage; a file
rewritten with other codes is a valid zip and would silently resume into a different song, so a
checkpoint whose digest does not match is refused (the command line names `--fresh`; a worker
starts the job over).

Jobs write checkpoints to the shared storage under a key that names the job, the lease's fencing
token and the window (`checkpoints/job-12/token-3/L1-w00007.npz`): a file, once written, never
changes, and the job row points at the newest one through the fenced `db.queue.save_checkpoint`,
so a stalled worker that lost its lease can never make the row point at its files. The command
line keeps its own checkpoint files in the output folder.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np

if TYPE_CHECKING:
    import torch

    from db.database import Database
    from db.queue import Lease
    from engine.sampling.sample import Hooks, LabelFn, Plan, PriorLike, Progress

log = logging.getLogger("jukebot.resume")

FORMAT_VERSION = 1
NOISE_KIND = "counter-hash-v1"  # engine.sampling.sample's noise; a checkpoint of another kind cannot resume


class CheckpointError(ValueError):
    """A checkpoint that cannot be read or does not belong to this run."""


class CheckpointAltered(CheckpointError):
    """A checkpoint whose codes or facts do not match the digest stored with them."""


class BlobStore(Protocol):
    """What checkpoints need from a storage (db.storage.Storage provides it)."""

    def write_bytes(self, key: str, data: bytes) -> None: ...
    def read_bytes(self, key: str) -> bytes: ...
    def exists(self, key: str) -> bool: ...
    def delete(self, key: str) -> bool: ...


@dataclass
class Checkpoint:
    plan_dict: dict[str, Any]
    codes: list[np.ndarray]
    level: int
    window: int
    done: int
    total: int
    extra: dict[str, Any] = field(default_factory=dict)

    def plan(self) -> Plan:
        from engine.sampling.sample import Plan

        return Plan.from_dict(self.plan_dict)


def _code_dtype(codes: list[np.ndarray]) -> type[np.integer[Any]]:
    hi = max((int(c.max()) for c in codes if c.size), default=0)
    lo = min((int(c.min()) for c in codes if c.size), default=0)
    if lo < 0:
        raise CheckpointError("codes must not be negative")
    return np.int16 if hi < 2**15 else np.int32


def dumps(ckpt: Checkpoint) -> bytes:
    dtype = _code_dtype(ckpt.codes)
    meta = {
        "version": FORMAT_VERSION,
        "noise": NOISE_KIND,
        "plan": ckpt.plan_dict,
        "level": ckpt.level,
        "window": ckpt.window,
        "done": ckpt.done,
        "total": ckpt.total,
        "extra": ckpt.extra,
    }
    arrays = {f"codes_{i}": np.ascontiguousarray(c, dtype=dtype) for i, c in enumerate(ckpt.codes)}
    meta_bytes = json.dumps(meta, sort_keys=True).encode()
    arrays["meta"] = np.frombuffer(meta_bytes, dtype=np.uint8)
    arrays["digest"] = np.frombuffer(content_digest(meta_bytes, ckpt.codes).encode(), dtype=np.uint8)
    buf = io.BytesIO()
    np.savez(buf, **arrays)  # type: ignore[arg-type]
    return buf.getvalue()


def content_digest(meta_bytes: bytes, codes: Sequence[np.ndarray]) -> str:
    """SHA-256 of a checkpoint's meta bytes and codes (as int64 whatever the stored width, with
    each level's shape, so moving codes between levels or rows changes it too)."""
    h = hashlib.sha256(meta_bytes)
    for c in codes:
        a = np.ascontiguousarray(c, dtype="<i8")
        h.update(json.dumps(list(a.shape)).encode())
        h.update(a.tobytes())
    return h.hexdigest()


def loads(data: bytes, *, name: str = "checkpoint") -> Checkpoint:
    try:
        with np.load(io.BytesIO(data), allow_pickle=False) as z:
            meta_bytes = bytes(z["meta"])
            meta = json.loads(meta_bytes.decode())
            n = len([k for k in z.files if k.startswith("codes_")])
            codes = [z[f"codes_{i}"].astype(np.int64) for i in range(n)]
            stored = bytes(z["digest"]).decode("ascii") if "digest" in z.files else None
    except CheckpointError:
        raise
    except Exception as e:  # zipfile, KeyError, JSON, ... all mean the same thing here
        raise CheckpointError(
            f"{name} is damaged or not a jukebot checkpoint ({type(e).__name__}: {e})"
        ) from e
    if meta.get("version") != FORMAT_VERSION:
        raise CheckpointError(
            f"{name} has format version {meta.get('version')}, this jukebot reads {FORMAT_VERSION}"
        )
    if meta.get("noise") != NOISE_KIND:
        raise CheckpointError(f"{name} was sampled with noise {meta.get('noise')!r}, not {NOISE_KIND!r}")
    if stored is None:
        # Written before checkpoints carried a digest: accepted (refusing would throw away the
        # work of every run in progress when jukebot is upgraded), with a warning. The zip's CRC
        # still catches damage; only a deliberate rewrite goes unnoticed, as it did before.
        log.warning("%s has no digest (an older jukebot wrote it); resuming from it unchecked", name)
    elif stored != content_digest(meta_bytes, codes):
        raise CheckpointAltered(
            f"{name} was altered after it was written (its codes do not match their SHA-256 digest); "
            "resuming from it would make a different song"
        )
    return Checkpoint(
        plan_dict=meta["plan"],
        codes=codes,
        level=int(meta["level"]),
        window=int(meta["window"]),
        done=int(meta["done"]),
        total=int(meta["total"]),
        extra=dict(meta.get("extra") or {}),
    )


def request_digest(request: dict[str, Any]) -> str:
    """A short stable digest of what was asked, to tell a resumable checkpoint from a stale one."""
    return hashlib.sha256(json.dumps(request, sort_keys=True, default=str).encode()).hexdigest()[:16]


def checkpoint_key(job_id: int, token: int, level: int, window: int, stage: str = "run") -> str:
    return f"checkpoints/job-{job_id}/token-{token}/{stage}-L{level}-w{window:05d}.npz"


def compatible(ckpt: Checkpoint, plan: Plan, extra: dict[str, Any]) -> str | None:
    """None when `ckpt` continues `plan` for the same request; else why not."""
    try:
        same = ckpt.plan() == plan
    except (KeyError, TypeError, ValueError):
        same = False
    if not same:
        return "the sampling plan changed"
    for k in ("request", "stage"):
        if k in extra and ckpt.extra.get(k) != extra[k]:
            return f"the {k} changed"
    if len(ckpt.codes) != len(plan.totals):
        return "the number of levels changed"
    for lv, c in enumerate(ckpt.codes):
        if c.ndim != 2 or c.shape[0] != plan.n_samples or c.shape[1] > plan.totals[lv]:
            return f"the codes of level {lv} have shape {c.shape}"
    return None


class JobCheckpointer:
    """Checkpoints of one leased job: the file to storage (atomic), then the fenced pointer in the
    job row; the previous file of this attempt is deleted once the new one is recorded."""

    def __init__(self, db: Database, storage: BlobStore, lease: Lease, *, stage: str = "run") -> None:
        self.db, self.storage, self.lease, self.stage = db, storage, lease, stage
        self._last_key: str | None = None

    def load(self, plan: Plan, extra: dict[str, Any]) -> Checkpoint | None:
        """The job's latest checkpoint when it continues `plan`, else None (logged)."""
        key = self.lease.checkpoint_key
        if not key:
            return None
        try:
            ckpt = loads(self.storage.read_bytes(key), name=key)
        except FileNotFoundError:
            log.warning("job %s: checkpoint %s is gone; starting over", self.lease.job_id, key)
            return None
        except CheckpointError as e:  # damaged or altered (CheckpointAltered): never resumed from
            log.warning("job %s: %s; starting over", self.lease.job_id, e)
            return None
        why = compatible(ckpt, plan, extra)
        if why is not None:
            log.info("job %s: checkpoint %s not used (%s)", self.lease.job_id, key, why)
            return None
        log.info(
            "job %s: resuming at level %s window %s (%s/%s tokens) from %s",
            self.lease.job_id,
            ckpt.level,
            ckpt.window,
            ckpt.done,
            ckpt.total,
            key,
        )
        return ckpt

    def save(self, plan: Plan, progress: Progress, codes: list[np.ndarray], extra: dict[str, Any]) -> str:
        from db.queue import save_checkpoint

        key = checkpoint_key(self.lease.job_id, self.lease.token, progress.level, progress.window, self.stage)
        ckpt = Checkpoint(
            plan.to_dict(), codes, progress.level, progress.window, progress.done, progress.total, extra
        )
        self.storage.write_bytes(key, dumps(ckpt))
        save_checkpoint(self.db, self.lease, key)  # fenced: raises LeaseLost for a stale attempt
        if self._last_key and self._last_key != key:
            self._delete(self._last_key)
        self._last_key = key
        return key

    def cleanup(self) -> None:
        """Delete this attempt's checkpoint (after the results are stored) and the one it resumed."""
        for key in {self._last_key, self.lease.checkpoint_key}:
            if key:
                self._delete(key)

    def _delete(self, key: str) -> None:
        try:
            self.storage.delete(key)
        except Exception as e:  # a leftover file is harmless; never fail a job over it
            log.warning("could not delete checkpoint %s: %s", key, e)


class FileCheckpointer:
    """Checkpoints of a command-line run in its output folder: one file per stage, replaced
    atomically after every window."""

    def __init__(self, folder: str | os.PathLike[str], stage: str) -> None:
        self.path = Path(folder) / f".checkpoint-{stage}.npz"

    def load(self, plan: Plan, extra: dict[str, Any]) -> Checkpoint | None:
        if not self.path.exists():
            return None
        try:
            ckpt = loads(self.path.read_bytes(), name=str(self.path))
        except CheckpointError as e:
            raise CheckpointError(f"{e}; run again with --fresh to start over") from None
        why = compatible(ckpt, plan, extra)
        if why is not None:
            raise CheckpointError(
                f"{self.path.parent} holds an unfinished run of a different request ({why}); "
                "use another --out folder, or --fresh to start over"
            )
        return ckpt

    def save(self, plan: Plan, progress: Progress, codes: list[np.ndarray], extra: dict[str, Any]) -> str:
        ckpt = Checkpoint(
            plan.to_dict(), codes, progress.level, progress.window, progress.done, progress.total, extra
        )
        tmp = self.path.with_name(self.path.name + ".tmp")
        with open(tmp, "wb") as f:
            f.write(dumps(ckpt))
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, self.path)
        return str(self.path)

    def cleanup(self) -> None:
        self.path.unlink(missing_ok=True)


class Checkpointer(Protocol):
    def load(self, plan: Plan, extra: dict[str, Any]) -> Checkpoint | None: ...
    def save(self, plan: Plan, progress: Progress, codes: list[np.ndarray], extra: dict[str, Any]) -> str: ...
    def cleanup(self) -> None: ...


def resumable_run(
    plan: Plan,
    prior_for_level: Callable[[int], PriorLike],
    labels_for: LabelFn,
    initial_codes: Sequence[np.ndarray],
    checkpointer: Checkpointer,
    extra: dict[str, Any],
    *,
    device: torch.device,
    dtype: torch.dtype,
    hooks: Hooks | None = None,
    every_seconds: float = 0.0,
    interleave: bool = False,
) -> list[np.ndarray]:
    """`run_plan` from the latest checkpoint (or `initial_codes`), with a checkpoint after every
    window (before the caller's own `on_window`). The codes it returns are those of an
    uninterrupted run.

    `every_seconds` > 0 saves at most that often (fast GPUs finish windows in a fraction of a
    second); a stop asked through `hooks.should_stop` still saves the last window first, so only
    a hard kill loses up to that much work. Resuming stays exact either way, and in either order
    of the levels (`interleave`, see run_plan): a checkpoint holds whole windows of every level."""
    import time

    from engine.sampling.sample import Hooks, run_plan

    hooks = hooks or Hooks()
    ckpt = checkpointer.load(plan, extra)
    codes: Sequence[np.ndarray] = initial_codes
    done_before = 0
    if ckpt is not None:
        codes, done_before = ckpt.codes, ckpt.done
    user_on_window, user_should_stop = hooks.on_window, hooks.should_stop
    last_save = time.monotonic()
    pending: tuple[Progress, list[np.ndarray]] | None = None

    def save(progress: Progress, now: list[np.ndarray]) -> None:
        nonlocal last_save, pending
        checkpointer.save(plan, progress, now, extra)
        last_save, pending = time.monotonic(), None

    def on_window(progress: Progress, now: list[np.ndarray]) -> None:
        nonlocal pending
        if every_seconds <= 0 or time.monotonic() - last_save >= every_seconds:
            save(progress, now)
        else:
            pending = (progress, now)
        if user_on_window is not None:
            user_on_window(progress, now)

    def should_stop() -> bool:
        stop = user_should_stop is not None and user_should_stop()
        if stop and pending is not None:
            save(*pending)
        return stop

    return run_plan(
        plan,
        prior_for_level,
        labels_for,
        codes,
        device=device,
        dtype=dtype,
        hooks=replace(hooks, on_window=on_window, should_stop=should_stop if user_should_stop else None),
        done_before=done_before,
        interleave=interleave,
    )
