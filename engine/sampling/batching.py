"""The token loop, and decode batches shared by several jobs (continuous batching).

Every window the sampler samples is a `WindowTask`: conditioning, the tokens the window already
has, how many new tokens, and the job's noise keys (`NoiseKey.row_bin_hash` rows, the absolute
position of the window) and temperature. A *decoder* holds the rows being decoded together with
one prior: their static KV cache and their per-row state. `DecodeLoop` is the one sampling loop:
it admits tasks into free rows (prefill of their context in one pass, first token), advances
every row by one token per step, and hands each task its tokens when its window is done.

- `engine.sample.sample_window` (drafts, upsampling, continuation, resume) runs one task through
  `sample_task`: a local decoder of the prior, kept between windows so its CUDA graph is
  captured once.
- A worker that runs several jobs at once runs them in threads and shares one `BatchScheduler`
  (`use_scheduler`): a thread that runs the same loop over every job's tasks, each job's rows at
  their own window position, joining and leaving between windows, up to a memory budget.

Tokens do not depend on who else is in the batch: each row keeps its own noise (keyed by the job's
seed, stream, row and absolute position, see engine.sampling.sample), temperature and position, and rows
never read each other's cache. Only floating-point rounding could differ between batch sizes, and
on CPU in float32 a job sampled alone and batched with others gives the same tokens (tested).

Two decoders: `RowDecoder` for `engine.model.prior.JukeboxPrior` (per-row positions, prefill into some
rows, step built by engine.sampling.graphs: eager, CUDA graph, or compiled + graph), and `EagerDecoder`
for any other prior (e.g. `ExactPrior`, the slow exact path, and test stand-ins): one task at a
time, the prior's own `prefill`/`decode_step`.
"""

from __future__ import annotations

import collections
import contextlib
import logging
import threading
import weakref
from collections.abc import Iterator
from typing import Any

import torch
from torch import Tensor

from engine.sampling.decoders import Decoder, EagerDecoder, RowDecoder, row_bytes, supports_rows
from engine.sampling.graphs import (
    DecodeMode,
    default_mode,
)
from engine.sampling.window_task import WindowTask

log = logging.getLogger("jukebot.batching")


class WindowCancelled(RuntimeError):
    """The result of a window task nobody wants any more (see `DecodeLoop.cancel`)."""

    def __init__(self) -> None:
        super().__init__("the window was cancelled")


# ---------------------------------------------------------------------------------------------
# The loop


class DecodeLoop:
    """Tasks waiting for rows (first come, first served per decoder) and tasks being decoded."""

    def __init__(self) -> None:
        self.pending: collections.deque[tuple[Decoder, WindowTask]] = collections.deque()
        self.running: dict[Decoder, list[WindowTask]] = {}
        self.completed = 0  # tasks that left (done or failed): their rows are free again
        self._cancelled: list[WindowTask] = []  # appended by any thread, reaped by the loop's

    def submit(self, decoder: Decoder, task: WindowTask) -> None:
        if task.cancelled:
            task.fail(WindowCancelled())
            return
        if task.rows > decoder.capacity:
            task.fail(
                ValueError(f"a window of {task.rows} rows does not fit a decode batch of {decoder.capacity}")
            )
            return
        self.pending.append((decoder, task))

    def busy(self, decoder: Decoder | None = None) -> bool:
        if decoder is None:
            return bool(self.pending) or any(self.running.values())
        return bool(self.running.get(decoder)) or any(d is decoder for d, _ in self.pending)

    def admit(self) -> None:
        waiting: collections.deque[tuple[Decoder, WindowTask]] = collections.deque()
        blocked: set[int] = set()
        for dec, task in self.pending:
            if id(dec) in blocked or dec.free_rows() < task.rows:
                blocked.add(id(dec))  # keep the order: no task overtakes an earlier one
                waiting.append((dec, task))
                continue
            try:
                dec.admit(task)
            except BaseException as e:
                dec.drop(task)
                task.fail(e)
                self.completed += 1
                continue
            self.running.setdefault(dec, []).append(task)
            task.sampled = 1
            self._after_token(dec, task)
        self.pending = waiting

    def _after_token(self, dec: Decoder, task: WindowTask) -> None:
        if task.on_token is not None and task.sampled % task.tokens_every == 0:
            try:
                task.on_token(task.sampled)
            except BaseException as e:
                self.running[dec].remove(task)
                dec.drop(task)
                task.fail(e)
                self.completed += 1
                return
        if task.sampled >= task.n_new:
            self.running[dec].remove(task)
            self.completed += 1
            try:
                task.finish(dec.finish(task))
            except BaseException as e:
                dec.drop(task)  # its rows, which `finish` gives back only when it succeeds
                task.fail(e)

    def tick(self) -> bool:
        """Admit what fits, then one token for every decoder with rows at work. False: idle."""
        if self._cancelled:
            self.reap_cancelled()
        self.admit()
        worked = False
        for dec, tasks in list(self.running.items()):
            if not tasks:
                continue
            try:
                dec.advance()
            except BaseException as e:
                for t in list(tasks):
                    dec.drop(t)
                    t.fail(e)
                    self.completed += 1
                tasks.clear()
                continue
            worked = True
            for t in list(tasks):
                t.sampled += 1
                self._after_token(dec, t)
        return worked

    def cancel(self, task: WindowTask) -> None:
        """Drop `task` at the next step (safe from any thread): a run that stopped between windows
        no longer wants the window another level was decoding beside it."""
        task.cancelled = True
        self._cancelled.append(task)

    def reap_cancelled(self) -> None:
        while self._cancelled:
            task = self._cancelled.pop()
            for dec, tasks in self.running.items():
                if task in tasks:
                    tasks.remove(task)
                    dec.drop(task)
                    self.completed += 1
            before = len(self.pending)
            self.pending = collections.deque((d, t) for d, t in self.pending if t is not task)
            self.completed += before - len(self.pending)
            if not task.done.is_set():
                task.fail(WindowCancelled())

    def run_until_done(self, task: WindowTask) -> Tensor:
        while not task.done.is_set():
            if not self.tick() and not task.done.is_set():
                raise RuntimeError("the decode loop has nothing to do but the window is not done")
        return task.tokens()


# ---------------------------------------------------------------------------------------------
# One window, alone (the default) or through the active scheduler


_LOCAL: weakref.WeakKeyDictionary[Any, collections.OrderedDict[tuple[Any, ...], RowDecoder]] = (
    weakref.WeakKeyDictionary()
)
_LOCAL_LOCK = threading.Lock()
_IN_USE: set[int] = set()
_ACTIVE: BatchScheduler | None = None


def local_decoder(
    prior: Any,
    rows: int,
    device: torch.device,
    dtype: torch.dtype,
    top_k: int,
    top_p: float,
    mode: DecodeMode | None = None,
) -> tuple[RowDecoder, bool]:
    """A decoder of `rows` rows for this prior, reused between windows (its graph is captured
    once); the two most recent shapes are kept per prior. Returns (decoder, cached)."""
    mode = mode or default_mode(device)
    key = (rows, str(device), dtype, top_k, top_p, mode)
    with _LOCAL_LOCK:
        per = _LOCAL.setdefault(prior, collections.OrderedDict())
        dec = per.get(key)
        if dec is not None and id(dec) not in _IN_USE:
            per.move_to_end(key)
            _IN_USE.add(id(dec))
            return dec, True
    dec = RowDecoder(prior, rows, device, dtype, top_k, top_p, mode)
    with _LOCAL_LOCK:
        if key in per:  # another thread is using the cached one: this one is temporary
            return dec, False
        per[key] = dec
        while len(per) > 2:
            per.popitem(last=False)
        _IN_USE.add(id(dec))
    return dec, True


class WindowDriver:
    """Window tasks of one or more priors, decoded together without waiting on any one of them.

    A task goes to the shared `BatchScheduler` when a worker set one (its thread decodes), else to
    this driver's own `DecodeLoop`, whose `tick` advances every decoder one token: the windows of
    two levels (two priors) alternate their steps in one loop. Decoders are the prior's local ones
    (`local_decoder`, kept between windows so their CUDA graphs are captured once), or an
    `EagerDecoder` for a prior without row support. `close()` cancels what is still running."""

    def __init__(self, dtype: torch.dtype) -> None:
        self.dtype = dtype
        self.loop = DecodeLoop()
        self.sched = _ACTIVE
        self._local: dict[WindowTask, tuple[Decoder, bool]] = {}  # task -> (decoder, cached)
        self._remote: set[WindowTask] = set()
        self._wake = threading.Event()

    def submit(self, prior: Any, task: WindowTask) -> None:
        if task.n_new <= 0:
            task.finish(torch.empty(task.rows, 0, dtype=torch.long, device=task.context.device))
            return
        if self.sched is not None and supports_rows(prior):
            task.wake = self._wake
            self._remote.add(task)
            self.sched.submit(prior, task, self.dtype)
            return
        device = task.context.device
        dec: Decoder
        if supports_rows(prior):
            dec, cached = local_decoder(prior, task.rows, device, self.dtype, task.top_k, task.top_p)
        else:
            dec, cached = EagerDecoder(prior, device, self.dtype, task.rows), False
        self._local[task] = (dec, cached)
        self.loop.submit(dec, task)

    def wait_any(self, tasks: list[WindowTask]) -> None:
        """Decode until at least one of `tasks` is done (its tokens, or its error, are in it)."""
        while not any(t.done.is_set() for t in tasks):
            if self.loop.busy():
                if not self.loop.tick() and not any(t.done.is_set() for t in tasks):
                    raise RuntimeError("the decode loop has nothing to do but the window is not done")
            elif any(t in self._remote for t in tasks):
                self._wake.wait()  # the scheduler's thread decodes; it sets this as a task ends
                self._wake.clear()
            else:
                raise RuntimeError("no decoder holds the windows waited for")
        for t in tasks:
            if t.done.is_set():
                self._release(t)

    def _release(self, task: WindowTask) -> None:
        self._remote.discard(task)
        dec, cached = self._local.pop(task, (None, False))
        if dec is not None:
            dec.drop(task)
            if cached:
                with _LOCAL_LOCK:
                    _IN_USE.discard(id(dec))

    def close(self) -> None:
        """Cancel the tasks still decoding (a run that stopped or failed) and free their decoders."""
        for task in [*self._local, *self._remote]:
            if not task.done.is_set():
                if task in self._remote and self.sched is not None:
                    self.sched.cancel(task)
                else:
                    self.loop.cancel(task)
        self.loop.reap_cancelled()
        for task in list(self._local):
            self._release(task)
        self._remote.clear()


def sample_task(prior: Any, task: WindowTask, dtype: torch.dtype) -> Tensor:
    """Sample one window: through the active scheduler if a worker set one, else alone."""
    driver = WindowDriver(dtype)
    try:
        driver.submit(prior, task)
        driver.wait_any([task])
        return task.tokens()
    finally:
        driver.close()


@contextlib.contextmanager
def use_scheduler(scheduler: BatchScheduler) -> Iterator[BatchScheduler]:
    """While active, every window of every thread of this process goes through `scheduler`."""
    global _ACTIVE
    if _ACTIVE is not None:
        raise RuntimeError("a batch scheduler is already active")
    _ACTIVE = scheduler
    try:
        yield scheduler
    finally:
        _ACTIVE = None


# ---------------------------------------------------------------------------------------------
# Several jobs in one batch


class BatchScheduler:
    """A thread that decodes the windows of several jobs together.

    Jobs (threads) call `run(prior, task, dtype)` and wait for their tokens. One decoder per
    (prior, dtype, top-k, top-p), with as many rows as `budget_bytes` allows (at most `max_rows`);
    when a new decoder needs memory, idle decoders are dropped first, and a window that cannot get
    rows waits for them. `stats` counts what happened (for tests and benchmarks)."""

    def __init__(self, *, budget_bytes: int, max_rows: int = 32, mode: DecodeMode | None = None) -> None:
        self.budget_bytes, self.max_rows, self.mode = int(budget_bytes), max_rows, mode
        self.loop = DecodeLoop()
        self._cv = threading.Condition()
        self._inbox: list[tuple[Any, torch.dtype, WindowTask]] = []
        self._waiting: list[tuple[Any, torch.dtype, WindowTask]] = []
        self._decoders: dict[tuple[Any, ...], tuple[RowDecoder, int]] = {}  # key -> (decoder, bytes)
        self._closed = False
        self._thread: threading.Thread | None = None
        self._row_bytes_cache: dict[tuple[int, torch.dtype], int] = {}
        self._seen_completed = 0
        self.stats: dict[str, int] = {"steps": 0, "max_rows_busy": 0, "decoders_made": 0, "tasks": 0}

    # -- life -----------------------------------------------------------------------------------
    def start(self) -> BatchScheduler:
        if self._thread is None:
            self._thread = threading.Thread(target=self._main, name="jukebot-batch", daemon=True)
            self._thread.start()
        return self

    def close(self) -> None:
        with self._cv:
            self._closed = True
            self._cv.notify_all()
        if self._thread is not None:
            self._thread.join(timeout=60)
        self._decoders.clear()

    def __enter__(self) -> BatchScheduler:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def used_bytes(self) -> int:
        return sum(b for _, b in self._decoders.values())

    # -- jobs' side -------------------------------------------------------------------------------
    def run(self, prior: Any, task: WindowTask, dtype: torch.dtype) -> Tensor:
        self.submit(prior, task, dtype)
        return task.tokens()

    def submit(self, prior: Any, task: WindowTask, dtype: torch.dtype) -> None:
        """Hand `task` to the scheduler's thread; `task.done` is set when its tokens are there."""
        if self._thread is None:
            raise RuntimeError("the batch scheduler is not started")
        with self._cv:
            if self._closed:
                raise RuntimeError("the batch scheduler is closed")
            self._inbox.append((prior, dtype, task))
            self._cv.notify_all()

    def cancel(self, task: WindowTask) -> None:
        """Drop a submitted task whose tokens are no longer wanted (at the thread's next step)."""
        self.loop.cancel(task)
        with self._cv:
            self._cv.notify_all()

    # -- the scheduler thread -------------------------------------------------------------------
    def _main(self) -> None:
        with torch.inference_mode():
            while True:
                with self._cv:
                    while not (self._inbox or self._waiting or self.loop.busy() or self._closed):
                        self._cv.wait()
                    if self._closed and not self._inbox and not self.loop.busy():
                        break
                    inbox, self._inbox = self._inbox, []
                done = self.loop.completed
                if inbox or (self._waiting and (done != self._seen_completed or not self.loop.busy())):
                    self._seen_completed = done
                    todo, self._waiting = [*self._waiting, *inbox], []
                    for prior, dtype, task in todo:
                        self._route(prior, dtype, task)
                busy = sum(
                    len(d.rows_of(t))
                    for d, _ in self._decoders.values()
                    for t in self.loop.running.get(d, [])
                )
                self.stats["max_rows_busy"] = max(self.stats["max_rows_busy"], busy)
                if self.loop.tick():
                    self.stats["steps"] += 1
        for _, _, task in self._waiting:
            task.fail(RuntimeError("the batch scheduler closed"))

    def _row_bytes(self, prior: Any, dtype: torch.dtype) -> int:
        key = (id(prior), dtype)
        if key not in self._row_bytes_cache:
            self._row_bytes_cache[key] = row_bytes(prior, dtype)
        return self._row_bytes_cache[key]

    def _route(self, prior: Any, dtype: torch.dtype, task: WindowTask) -> None:
        if task.cancelled:
            task.fail(WindowCancelled())
            return
        key = (id(prior), dtype, task.top_k, task.top_p)
        entry = self._decoders.get(key)
        if entry is not None and entry[0]._prior() is not prior:  # an id reused by a new object
            del self._decoders[key]
            self._row_bytes_cache.pop((id(prior), dtype), None)
            entry = None
        if entry is None:
            per_row = self._row_bytes(prior, dtype)
            if task.rows * per_row > self.budget_bytes:
                task.fail(
                    MemoryError(
                        f"one window of {task.rows} rows needs {task.rows * per_row / 2**30:.2f} GiB of decode memory; "
                        f"the batch budget is {self.budget_bytes / 2**30:.2f} GiB"
                    )
                )
                return
            most = max(self.max_rows, task.rows)
            cap = min(most, (self.budget_bytes - self.used_bytes) // per_row)
            if cap < task.rows:
                self._drop_idle()
                cap = min(most, (self.budget_bytes - self.used_bytes) // per_row)
            if cap < task.rows:
                self._waiting.append((prior, dtype, task))  # rows free up when other windows finish
                return
            try:
                dec = RowDecoder(
                    prior, int(cap), task.context.device, dtype, task.top_k, task.top_p, self.mode
                )
            except BaseException as e:
                task.fail(e)
                return
            entry = (dec, int(cap) * per_row)
            self._decoders[key] = entry
            self.stats["decoders_made"] += 1
        self.stats["tasks"] += 1
        self.loop.submit(entry[0], task)

    def _drop_idle(self) -> None:
        for key, (dec, _) in list(self._decoders.items()):
            if not self.loop.busy(dec):
                del self._decoders[key]
        if torch.cuda.is_available():
            torch.cuda.empty_cache()


__all__ = [
    "BatchScheduler",
    "DecodeLoop",
    "WindowCancelled",
    "WindowDriver",
    "local_decoder",
    "sample_task",
    "use_scheduler",
]
