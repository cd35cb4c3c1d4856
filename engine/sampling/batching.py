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
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, Protocol

import torch
from torch import Tensor

from engine.model.transformer import BlockStep
from engine.sampling.graphs import (
    DecodeMode,
    StepRunner,
    attention_context,
    compiled,
    compiled_block_step,
    default_mode,
)
from engine.sampling.noise import filter_logits, gumbel

log = logging.getLogger("jukebot.batching")


# ---------------------------------------------------------------------------------------------
# Tasks and picking


@dataclass(eq=False)
class WindowTask:
    """One window of one job's rows. `context` [R, C] are the window's existing tokens (window
    positions 0..C-1); the task samples positions C..C+n_new-1."""

    cond: Any
    context: Tensor
    n_new: int
    row_bin: Tensor  # [R, bins] noise keys of the job's rows at this level
    abs_start: int  # absolute position (in the level) of window position 0
    temperature: float
    top_k: int = 0
    top_p: float = 0.0
    on_token: Callable[[int], None] | None = None
    tokens_every: int = 64
    result: Tensor | None = None  # [R, n_new] once done
    error: BaseException | None = None
    sampled: int = 0
    done: threading.Event = field(default_factory=threading.Event)

    @property
    def rows(self) -> int:
        return int(self.context.shape[0])

    @property
    def have(self) -> int:
        return int(self.context.shape[1])

    def fail(self, e: BaseException) -> None:
        self.error = e
        self.done.set()

    def finish(self, tokens: Tensor) -> None:
        self.result = tokens
        self.done.set()

    def tokens(self) -> Tensor:
        self.done.wait()
        if self.error is not None:
            raise self.error
        assert self.result is not None
        return self.result


def pick_rows(
    logits: Tensor, noise: Tensor, temperature: Tensor, top_k: int = 0, top_p: float = 0.0
) -> Tensor:
    """`engine.sampling.noise.pick_tokens` with a per-row temperature [B, 1] (rows of different jobs share
    a batch). The same arithmetic: on CPU x / t is the same float for a Python or a tensor t."""
    scores = filter_logits(logits.float() / temperature, top_k, top_p)
    return torch.argmax(scores + noise, dim=-1)


# ---------------------------------------------------------------------------------------------
# Decoders


class Decoder(Protocol):
    capacity: int

    def free_rows(self) -> int: ...
    def admit(self, task: WindowTask) -> None: ...
    def advance(self) -> None: ...
    def finish(self, task: WindowTask) -> Tensor: ...
    def drop(self, task: WindowTask) -> None: ...


class EagerDecoder:
    """Any prior with `new_cache`, `prefill(cache, tokens, cond)` and `decode_step(cache, tok,
    pos: int, cond)`: one task at a time, all its rows at the same position."""

    def __init__(self, prior: Any, device: torch.device, dtype: torch.dtype, capacity: int) -> None:
        self.prior, self.device, self.dtype, self.capacity = prior, device, dtype, capacity
        self._task: WindowTask | None = None
        self._cache: Any = None
        self._tok: Tensor | None = None
        self._pos = 0
        self._temp: Tensor | None = None
        self._out: Tensor | None = None

    def free_rows(self) -> int:
        return 0 if self._task is not None else self.capacity

    def admit(self, task: WindowTask) -> None:
        self._task = task
        self._cache = self.prior.new_cache(task.rows, self.device, self.dtype)
        logits = self.prior.prefill(self._cache, task.context, task.cond)
        self._pos = task.have
        self._temp = torch.full(
            (task.rows, 1), float(task.temperature), dtype=torch.float32, device=self.device
        )
        self._out = torch.empty(task.rows, task.n_new, dtype=torch.long, device=self.device)
        self._pick(logits)

    def _pick(self, logits: Tensor) -> None:
        task, out = self._task, self._out
        assert task is not None and out is not None and self._temp is not None
        tok = pick_rows(
            logits, gumbel(task.row_bin, task.abs_start + self._pos), self._temp, task.top_k, task.top_p
        )
        out[:, self._pos - task.have] = tok
        self._tok = tok

    def advance(self) -> None:
        logits = self.prior.decode_step(
            self._cache, self._tok, self._pos, self._task.cond if self._task else None
        )
        self._pos += 1
        self._pick(logits)

    def finish(self, task: WindowTask) -> Tensor:
        out = self._out
        self.drop(task)
        assert out is not None
        return out

    def drop(self, task: WindowTask) -> None:
        self._task = self._cache = self._tok = self._out = None


def _pick_store(
    logits: Tensor,
    tok: Tensor,
    pos: Tensor,
    abs0: Tensor,
    temp: Tensor,
    row_bin: Tensor,
    win: Tensor,
    last: Tensor,
    top_k: int,
    top_p: float,
    last_pos: int,
) -> None:
    """Pick the token at window position pos + 1 of every row and store it (no host sync)."""
    nxt = pos + 1
    new = pick_rows(logits, gumbel(row_bin, abs0 + nxt), temp, top_k, top_p)
    nxt = nxt.clamp(max=last_pos)  # a row whose window is full keeps stepping (its result is taken)
    win.scatter_(1, nxt[:, None], new[:, None])
    tok.copy_(new)
    pos.copy_(nxt)
    last.copy_(logits)


class _State:
    """The static per-row buffers a step reads and writes (their addresses never change)."""

    def __init__(self, prior: Any, capacity: int, device: torch.device) -> None:
        c, n = capacity, prior.n_ctx
        bins = prior.n_bins
        kw: dict[str, Any] = dict(device=device)
        self.tok = torch.zeros(c, dtype=torch.long, **kw)
        self.pos = torch.zeros(c, dtype=torch.long, **kw)  # window position of `tok`
        self.abs0 = torch.zeros(c, dtype=torch.long, **kw)  # absolute position of window position 0
        self.temp = torch.ones(c, 1, dtype=torch.float32, **kw)
        self.row_bin = torch.zeros(c, bins, dtype=torch.long, **kw)
        self.win = torch.zeros(c, n, dtype=torch.long, **kw)  # tokens by window position
        self.logits = torch.zeros(c, bins, dtype=torch.float32, **kw)  # the last step's logits
        self.x_cond: Tensor | None = None
        if has_x_cond(prior):
            width = prior.config.width
            self.x_cond = torch.zeros(c, prior.config.seq_len, width, dtype=_param_dtype(prior), **kw)

    def reset(self) -> None:
        for t in (self.tok, self.pos, self.abs0, self.row_bin, self.win, self.logits):
            t.zero_()
        self.temp.fill_(1.0)
        if self.x_cond is not None:
            self.x_cond.zero_()


def _fused_block_step(prior: Any, capacity: int) -> BlockStep | None:
    """The Triton block step for this prior (its weights re-laid out for it, once), or None
    where it does not apply (no Triton, too many rows): the compiled step is used instead."""
    try:
        from engine.sampling import decode_kernels
    except ImportError as e:  # Triton ships with CUDA builds of torch; not on every machine
        log.warning("fused decode step unavailable (%s); using the compiled step", e)
        return None
    layers = prior.prior.transformer.layers
    if not all(decode_kernels.supports(layer, capacity) for layer in layers):
        return None  # e.g. more rows than MAX_ROWS, or 5b's 4800-wide blocks
    decode_kernels.relayout(prior)
    return decode_kernels.fused_block_step


def has_x_cond(prior: Any) -> bool:
    """Whether the prior's windows have per-position conditioning (timing signal or upper codes)."""
    return not (prior.is_top and not prior.config.labels)


def _param_dtype(prior: Any) -> torch.dtype:
    return prior.prior.x_emb.weight.dtype  # type: ignore[no-any-return]


class RowDecoder:
    """`capacity` rows of one JukeboxPrior decoded together, each at its own window position.

    The KV cache and the per-row buffers are allocated once; a task's rows are prefilled in
    place (`prefill(..., rows=idx)`), then every `advance()` computes one token for every row
    (free rows compute junk that nobody reads). The step is built by engine.sampling.graphs."""

    def __init__(
        self,
        prior: Any,
        capacity: int,
        device: torch.device | str,
        dtype: torch.dtype,
        top_k: int = 0,
        top_p: float = 0.0,
        mode: DecodeMode | None = None,
    ) -> None:
        from engine.model.prior import Cond

        self.device = torch.device(device)
        self.capacity, self.dtype, self.top_k, self.top_p = capacity, dtype, top_k, top_p
        # A weak reference: the decoder must not keep an unloaded level's weights alive.
        self._prior = weakref.ref(prior)
        self.n_ctx = prior.n_ctx
        with torch.inference_mode():
            self.cache = prior.new_cache(capacity, self.device, dtype)
            self.state = _State(prior, capacity, self.device)
        self._step_cond = Cond(x_cond=self.state.x_cond, start=None, lyrics=None, encoder=None)
        self._free = list(range(capacity))
        self._rows: dict[WindowTask, list[int]] = {}
        want = mode or default_mode(self.device)
        block: BlockStep | None = None
        if want == "fused":
            block = _fused_block_step(prior, capacity)
            if block is None:
                want = "compile"
        with torch.inference_mode():
            self.runner = StepRunner(
                # the token pick is compiled too, on the GPU (on a CPU the fused step is a test)
                self._make_advance(
                    compile_=want == "compile" or (want == "fused" and self.device.type == "cuda"),
                    block=block,
                ),
                self.device,
                want,
                self.reset,
                fallback=self._make_advance(compile_=False) if want in ("compile", "fused") else None,
            )
        self.mode: DecodeMode = self.runner.mode

    @property
    def prior(self) -> Any:
        p = self._prior()
        if p is None:
            raise RuntimeError("this decoder's prior was unloaded")
        return p

    def _make_advance(self, compile_: bool, block: BlockStep | None = None) -> Callable[[], None]:
        if block is None and compile_:
            block = compiled_block_step()
        pick = compiled("pick_store", _pick_store) if compile_ else _pick_store
        ref, cache, st, cond = self._prior, self.cache, self.state, self._step_cond
        top_k, top_p, last = self.top_k, self.top_p, self.n_ctx - 1

        attn = attention_context if compile_ else contextlib.nullcontext

        def advance() -> None:
            prior = ref()
            assert prior is not None
            with attn():
                logits = prior.decode_step(cache, st.tok, st.pos, cond, block_step=block)
            pick(logits, st.tok, st.pos, st.abs0, st.temp, st.row_bin, st.win, st.logits, top_k, top_p, last)

        return advance

    def reset(self) -> None:
        for t in self.cache.tensors():
            t.zero_()
        self.state.reset()

    # -- the Decoder protocol ----------------------------------------------------------------
    def free_rows(self) -> int:
        return len(self._free)

    def admit(self, task: WindowTask) -> None:
        if task.top_k != self.top_k or task.top_p != self.top_p:
            raise ValueError("a decode batch shares one top-k/top-p setting")
        if task.have + task.n_new > self.n_ctx:
            raise ValueError(f"{task.have} + {task.n_new} tokens do not fit a window of {self.n_ctx}")
        st = self.state
        if (task.cond.x_cond is None) != (st.x_cond is None):
            raise ValueError("this window's conditioning does not match the prior's")
        rows = sorted(self._free)[: task.rows]
        self._free = [r for r in self._free if r not in rows]
        self._rows[task] = rows
        prior = self.prior
        idx = torch.tensor(rows, dtype=torch.long, device=self.device)
        whole = rows == list(range(self.capacity))
        logits = prior.prefill(self.cache, task.context, task.cond, rows=None if whole else idx)
        c = task.have
        temp = torch.full((task.rows, 1), float(task.temperature), dtype=torch.float32, device=self.device)
        tok = pick_rows(logits, gumbel(task.row_bin, task.abs_start + c), temp, self.top_k, self.top_p)
        st.tok[idx] = tok
        st.pos[idx] = c
        st.abs0[idx] = task.abs_start
        st.temp[idx] = temp
        st.row_bin[idx] = task.row_bin.to(self.device)
        st.win[idx, c] = tok
        st.logits[idx] = logits
        if st.x_cond is not None:
            st.x_cond[idx] = task.cond.x_cond.to(st.x_cond.dtype)

    def advance(self) -> None:
        self.runner()

    def finish(self, task: WindowTask) -> Tensor:
        rows = self._rows[task]
        idx = torch.tensor(rows, dtype=torch.long, device=self.device)
        out = self.state.win[idx, task.have : task.have + task.n_new].clone()
        self.drop(task)
        return out

    def drop(self, task: WindowTask) -> None:
        rows = self._rows.pop(task, [])
        self._free.extend(rows)

    def rows_of(self, task: WindowTask) -> list[int]:
        return list(self._rows.get(task, []))


def supports_rows(prior: Any) -> bool:
    from engine.model.prior import JukeboxPrior

    return isinstance(prior, JukeboxPrior)


# ---------------------------------------------------------------------------------------------
# Memory


def row_bytes(prior: Any, dtype: torch.dtype) -> int:
    """Device bytes one decode row costs: its KV cache (per attention kind) and its buffers."""
    with torch.device("meta"):
        cache = prior.new_cache(1, "meta", dtype).nbytes()
    c = prior.config
    extra = c.n_ctx * 8 + prior.n_bins * (8 + 4) + 64
    if has_x_cond(prior):
        extra += c.seq_len * c.width * torch.empty(0, dtype=_param_dtype(prior)).element_size()
    return int(cache + extra)


def rows_for_budget(prior: Any, dtype: torch.dtype, budget_bytes: int) -> int:
    return max(0, int(budget_bytes) // row_bytes(prior, dtype))


# ---------------------------------------------------------------------------------------------
# The loop


class DecodeLoop:
    """Tasks waiting for rows (first come, first served per decoder) and tasks being decoded."""

    def __init__(self) -> None:
        self.pending: collections.deque[tuple[Decoder, WindowTask]] = collections.deque()
        self.running: dict[Decoder, list[WindowTask]] = {}
        self.completed = 0  # tasks that left (done or failed): their rows are free again

    def submit(self, decoder: Decoder, task: WindowTask) -> None:
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
                task.fail(e)

    def tick(self) -> bool:
        """Admit what fits, then one token for every decoder with rows at work. False: idle."""
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


def sample_task(prior: Any, task: WindowTask, dtype: torch.dtype) -> Tensor:
    """Sample one window: through the active scheduler if a worker set one, else alone."""
    if task.n_new <= 0:
        return torch.empty(task.rows, 0, dtype=torch.long, device=task.context.device)
    device = task.context.device
    sched = _ACTIVE
    if sched is not None and supports_rows(prior):
        return sched.run(prior, task, dtype)
    loop = DecodeLoop()
    if not supports_rows(prior):
        loop.submit(EagerDecoder(prior, device, dtype, task.rows), task)
        return loop.run_until_done(task)
    dec, cached = local_decoder(prior, task.rows, device, dtype, task.top_k, task.top_p)
    try:
        loop.submit(dec, task)
        return loop.run_until_done(task)
    finally:
        dec.drop(task)
        if cached:
            with _LOCAL_LOCK:
                _IN_USE.discard(id(dec))


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
        if self._thread is None:
            raise RuntimeError("the batch scheduler is not started")
        with self._cv:
            if self._closed:
                raise RuntimeError("the batch scheduler is closed")
            self._inbox.append((prior, dtype, task))
            self._cv.notify_all()
        return task.tokens()

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
    "Decoder",
    "EagerDecoder",
    "RowDecoder",
    "WindowTask",
    "local_decoder",
    "pick_rows",
    "row_bytes",
    "rows_for_budget",
    "sample_task",
    "supports_rows",
    "use_scheduler",
]
