"""The sampling loop: one loop for drafts, upsampling and continuation (gpt-fast style).

For each level to sample, for each window of the original schedule (`engine.sampling.windows`):
build the conditioning (labels of this window, codes of the level above), prefill the tokens the
window already has in one pass, then decode the new tokens one at a time with the prior's cached
`decode_step`. Tokens are picked on the device with no host sync: temperature, then top-k or top-p
filtering, then the Gumbel-max trick (`argmax(logits - log E)`, E ~ Exponential(1); gpt-fast's
`probs / Exponential(1)`).

Randomness is counter-based: the noise of a token is a hash of (seed, stream, level, sample row,
absolute token position, vocabulary index). It does not depend on how the work was cut into
windows, batches or processes, so
- a run stopped after any window and resumed anywhere from its codes produces exactly the codes of
  an uninterrupted run with the same seed (no generator state has to travel; the seed is the state),
- rows of one job can share a decode batch with other jobs, or be split by `max_batch_size`, and
  still get the same tokens,
- nothing stateful sits inside the one-token step (CUDA-graph friendly).

Windows whose tokens all exist are skipped and partly filled windows continue as primed windows,
exactly like the original's `sample_single_window`, which is what makes priming and resume work.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field, replace
from typing import Any, Protocol

import numpy as np
import torch
from torch import Tensor

from engine.sampling.batching import WindowDriver, sample_task
from engine.sampling.noise import NoiseKey
from engine.sampling.window_task import WindowTask
from engine.sampling.windows import DEFAULT_HOP_FRACTIONS, Window, level_windows, tokens_to_sample


@dataclass(frozen=True)
class SamplingSettings:
    """How to sample. Defaults are the original's: temp 0.99 for the upsamplers, 0.98 at the top
    (the Colab's favourite), no top-k/top-p, hop fractions 0.5, 0.5, 0.125."""

    temperatures: tuple[float, float, float] = (0.99, 0.99, 0.98)
    top_k: int = 0
    top_p: float = 0.0
    hop_fractions: tuple[float, float, float] = DEFAULT_HOP_FRACTIONS  # type: ignore[assignment]
    max_batch_size: int = 16  # rows per forward pass (memory); does not change the tokens

    def __post_init__(self) -> None:
        if self.top_k and self.top_p:
            raise ValueError("use top-k or top-p, not both (as in the original)")
        if any(t <= 0 for t in self.temperatures):
            raise ValueError("temperatures must be positive")
        if not 0.0 <= self.top_p <= 1.0 or self.top_k < 0:
            raise ValueError("top_p must be in [0, 1] and top_k >= 0")
        if self.max_batch_size < 1:
            raise ValueError("max_batch_size must be at least 1")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> SamplingSettings:
        return cls(
            temperatures=tuple(d["temperatures"]),  # type: ignore[arg-type]
            top_k=int(d["top_k"]),
            top_p=float(d["top_p"]),
            hop_fractions=tuple(d["hop_fractions"]),  # type: ignore[arg-type]
            max_batch_size=int(d.get("max_batch_size", 16)),
        )


@dataclass
class Progress:
    """Where a run stands; `done`/`total` count sampled tokens over all levels of the run."""

    level: int
    window: int  # index of the current (or last finished) window at `level`
    windows: int  # windows at `level`
    done: int
    total: int
    level_done: int
    level_total: int
    tokens_per_second: float = 0.0
    eta_seconds: float | None = None

    @property
    def percent(self) -> float:
        return 100.0 * self.done / self.total if self.total else 100.0


class SamplingStopped(Exception):
    """Raised between windows when `should_stop` said so; the codes so far are in `codes`."""

    def __init__(self, codes: list[np.ndarray], progress: Progress) -> None:
        super().__init__(f"stopped at level {progress.level}, window {progress.window}")
        self.codes = codes
        self.progress = progress


@dataclass
class Hooks:
    """Callbacks of a run. `on_window` gets the codes of every level after each window (for
    checkpoints); `on_tokens` is called every `tokens_every` decoded tokens (cheap: no host sync);
    `should_stop` is asked between windows."""

    on_window: Callable[[Progress, list[np.ndarray]], None] | None = None
    on_tokens: Callable[[Progress], None] | None = None
    should_stop: Callable[[], bool] | None = None
    tokens_every: int = 64


# ---------------------------------------------------------------------------------------------
# What the sampler needs from a prior (engine.model.prior.JukeboxPrior provides it)


class PriorLike(Protocol):
    def get_cond(self, labels_y: Tensor | None, upper_codes: Tensor | None) -> Any: ...
    def new_cache(self, batch: int, device: torch.device, dtype: torch.dtype) -> Any: ...
    def prefill(self, cache: Any, tokens: Tensor, cond: Any) -> Tensor: ...
    def decode_step(self, cache: Any, tokens: Tensor, pos: int, cond: Any) -> Tensor: ...


class ExactPrior:
    """The slow exact path as a prior for `run_plan`: every token recomputes its whole window from
    scratch with `prior.logits` (no cache). For tests and benchmarks: with the same noise, the
    fast path must pick the same tokens."""

    def __init__(self, prior: Any) -> None:
        self.prior = prior
        self.n_bins = _vocab_size(prior)

    def get_cond(self, labels_y: Tensor | None, upper_codes: Tensor | None) -> Any:
        return self.prior.get_cond(labels_y, upper_codes)

    def new_cache(self, batch: int, device: torch.device, dtype: torch.dtype) -> Any:
        return {}

    def _next(self, tokens: Tensor, cond: Any) -> Tensor:
        slot = torch.zeros(tokens.shape[0], 1, dtype=torch.long, device=tokens.device)
        padded = torch.cat([tokens, slot], dim=1)  # a slot for the next token
        return self.prior.logits(padded, cond)[:, -1].float()

    def prefill(self, cache: Any, tokens: Tensor, cond: Any) -> Tensor:
        cache["tokens"] = tokens.long()
        return self._next(cache["tokens"], cond)

    def decode_step(self, cache: Any, tokens: Tensor, pos: int, cond: Any) -> Tensor:
        cache["tokens"] = torch.cat([cache["tokens"], tokens.long()[:, None]], dim=1)
        return self._next(cache["tokens"], cond)


# Label vectors y for a window of a level, [B, y_len] (None for a model without labels).
LabelFn = Callable[[int, Window], Tensor | None]


@dataclass(frozen=True)
class Plan:
    """A run: which levels to sample, in order, to how many tokens each, for how many rows."""

    levels: tuple[int, ...]  # e.g. (2,), (1, 0), (2, 1, 0)
    totals: tuple[int, ...]  # target tokens per level (index = level)
    n_ctx: tuple[int, ...]  # window length per level
    downsamples: tuple[int, ...]  # tokens of level L per token of level L+1 (index = L)
    n_samples: int
    key: NoiseKey
    settings: SamplingSettings = field(default_factory=SamplingSettings)

    def windows(self, level: int) -> list[Window]:
        return level_windows(level, self.totals[level], self.n_ctx[level], self.settings.hop_fractions[level])

    def tokens_left(self, codes: Sequence[np.ndarray | Tensor]) -> dict[int, int]:
        return {lv: tokens_to_sample(self.windows(lv), int(codes[lv].shape[1])) for lv in self.levels}

    def to_dict(self) -> dict[str, Any]:
        return {
            "levels": list(self.levels),
            "totals": list(self.totals),
            "n_ctx": list(self.n_ctx),
            "downsamples": list(self.downsamples),
            "n_samples": self.n_samples,
            "seed": self.key.seed,
            "stream": self.key.stream,
            "settings": self.settings.to_dict(),
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Plan:
        return cls(
            levels=tuple(d["levels"]),
            totals=tuple(d["totals"]),
            n_ctx=tuple(d["n_ctx"]),
            downsamples=tuple(d["downsamples"]),
            n_samples=int(d["n_samples"]),
            key=NoiseKey(int(d["seed"]), int(d["stream"])),
            settings=SamplingSettings.from_dict(d["settings"]),
        )


# ---------------------------------------------------------------------------------------------
# The loop


def _codes_to_host(codes: Sequence[Tensor]) -> list[np.ndarray]:
    return [c.detach().to("cpu").numpy().astype(np.int64, copy=True) for c in codes]


@torch.inference_mode()
def sample_window(
    prior: PriorLike,
    cond: Any,
    context: Tensor,
    n_new: int,
    *,
    row_bin: Tensor,
    abs_start: int,
    temperature: float,
    top_k: int,
    top_p: float,
    dtype: torch.dtype,
    on_token: Callable[[int], None] | None = None,
    tokens_every: int = 64,
) -> Tensor:
    """Sample `n_new` tokens after `context` [B, C] within one window. Returns [B, n_new].

    `abs_start` is the absolute position (in the level) of window position 0: the noise of each
    token is keyed by its absolute position, so windows and resumes agree.

    The token loop is `engine.sampling.batching.DecodeLoop` (prefill, then one step per token, the step
    built by engine.sampling.graphs: eager on CPU, a CUDA graph on a GPU); a worker running several jobs
    decodes this window in a batch shared with theirs."""

    task = WindowTask(
        cond=cond,
        context=context,
        n_new=n_new,
        row_bin=row_bin,
        abs_start=abs_start,
        temperature=temperature,
        top_k=top_k,
        top_p=top_p,
        on_token=on_token,
        tokens_every=tokens_every,
    )
    return sample_task(prior, task, dtype)


def run_plan(
    plan: Plan,
    prior_for_level: Callable[[int], PriorLike],
    labels_for: LabelFn,
    codes: Sequence[np.ndarray | Tensor],
    *,
    device: torch.device,
    dtype: torch.dtype = torch.float32,
    hooks: Hooks | None = None,
    done_before: int = 0,
    interleave: bool = False,
) -> list[np.ndarray]:
    """Sample the plan's levels starting from `codes` (one [B, T_have] int array per level; empty
    levels are [B, 0]). Returns the codes of every level on the host.

    `interleave`: a level's window starts as soon as the codes of the level above that condition
    it are sampled (not when the whole level above is), and the windows of different levels being
    sampled at once alternate their decode steps in one loop. Exactly the same tokens: a window
    sees the same context, conditioning and noise in either order.

    Raises `SamplingStopped` between windows when `hooks.should_stop()` is true (after
    `on_window` saw the finished window; a window of another level decoding beside it is dropped,
    to be sampled again on resume); not after the last window. `done_before` counts tokens an
    earlier (resumed) run already sampled, so progress reads as one run."""
    run = _Run(plan, prior_for_level, labels_for, codes, device, dtype, hooks or Hooks(), done_before)
    return run.run(interleave)


@dataclass(eq=False)
class _Lane:
    """One level of a run: its windows in order, and the window (batch slice) being decoded."""

    level: int
    windows: list[Window]
    next: int = 0  # the next window to look at
    finished: bool = False  # no window left to sample
    prior: PriorLike | None = None
    row_bins: list[Tensor] = field(default_factory=list)
    task: WindowTask | None = None  # the slice being decoded
    slice: int = 0
    pieces: list[Tensor] = field(default_factory=list)
    y: Tensor | None = None  # the window's labels, all rows
    upper: Tensor | None = None  # the codes above that condition it, all rows
    context: Tensor | None = None  # the tokens it already has, all rows
    level_done: int = 0  # tokens of finished windows
    in_window: int = 0  # tokens of the window being decoded (counted in positions)

    @property
    def window(self) -> Window:
        return self.windows[self.next]


class _Run:
    """The windows of every level of a plan, through one decode loop (`WindowDriver`): in level
    order, or interleaved (a window starts once the codes above it are final)."""

    def __init__(
        self,
        plan: Plan,
        prior_for_level: Callable[[int], PriorLike],
        labels_for: LabelFn,
        codes: Sequence[np.ndarray | Tensor],
        device: torch.device,
        dtype: torch.dtype,
        hooks: Hooks,
        done_before: int = 0,
    ) -> None:
        self.plan, self.prior_for_level, self.labels_for = plan, prior_for_level, labels_for
        self.device, self.dtype, self.hooks = device, dtype, hooks
        self.cur = [torch.as_tensor(np.asarray(c), dtype=torch.long).to(device) for c in codes]
        for lv, c in enumerate(self.cur):
            if c.ndim != 2 or c.shape[0] != plan.n_samples:
                raise ValueError(
                    f"codes of level {lv} have shape {tuple(c.shape)}, expected [{plan.n_samples}, T]"
                )
            if lv in plan.levels and c.shape[1] > plan.totals[lv]:
                raise ValueError(f"level {lv} already has {c.shape[1]} tokens, more than {plan.totals[lv]}")
        self.left = plan.tokens_left(self.cur)
        self.total = done_before + sum(self.left.values())
        self.done_before = done_before
        self.t0 = time.monotonic()
        mb = plan.settings.max_batch_size
        self.slices = [(i, min(i + mb, plan.n_samples)) for i in range(0, plan.n_samples, mb)]
        self.lanes = [_Lane(level, plan.windows(level)) for level in plan.levels]
        self.lane_of = {lane.level: lane for lane in self.lanes}

    @property
    def done(self) -> int:
        return self.done_before + sum(lane.level_done + lane.in_window for lane in self.lanes)

    @property
    def settled(self) -> int:
        """Tokens of finished windows: what the codes hold (a checkpoint's count)."""
        return self.done_before + sum(lane.level_done for lane in self.lanes)

    def progress(self, lane: _Lane) -> Progress:
        elapsed = time.monotonic() - self.t0
        done = self.done
        fresh = done - self.done_before
        rate = fresh / elapsed if elapsed > 0 and fresh > 0 else 0.0
        eta = (self.total - done) / rate if rate > 0 else None
        w = lane.windows[min(lane.next, len(lane.windows) - 1)]
        return Progress(
            lane.level,
            w.index,
            len(lane.windows),
            done,
            self.total,
            lane.level_done + lane.in_window,
            self.left[lane.level],
            rate,
            eta,
        )

    @torch.inference_mode()
    def run(self, interleave: bool = False) -> list[np.ndarray]:
        # Interleaved, the levels above are looked at first: they are what the levels below wait for.
        order = sorted(self.lanes, key=lambda lane: -lane.level) if interleave else self.lanes
        driver = WindowDriver(self.dtype)
        try:
            while True:
                for i, lane in enumerate(order):
                    if lane.task is None and (interleave or all(a.finished for a in order[:i])):
                        self.start_window(lane, driver)
                busy = [lane.task for lane in self.lanes if lane.task is not None]
                if not busy:
                    if not all(lane.finished for lane in self.lanes):
                        raise RuntimeError("a level waits for codes that no level is sampling")
                    break
                driver.wait_any(busy)
                for lane in self.lanes:
                    if lane.task is not None and lane.task.done.is_set():
                        self.task_done(lane, driver)
        finally:
            driver.close()
        return _codes_to_host(self.cur)

    def start_window(self, lane: _Lane, driver: WindowDriver) -> None:
        """Submit the lane's next window with new tokens, once the codes it is conditioned on exist."""
        plan, cur, level = self.plan, self.cur, lane.level
        while lane.next < len(lane.windows):
            w = lane.window
            have = int(cur[level].shape[1])
            n_new = w.new_tokens(have)
            if n_new <= 0:
                lane.next += 1
                continue  # "Nothing new to sample": covered by a prompt or by an earlier run
            upper = None
            if level + 1 < len(cur):  # every level but the top is conditioned on the level above
                lo, hi = w.upper_slice(plan.downsamples[level])
                if cur[level + 1].shape[1] < hi:
                    above = self.lane_of.get(level + 1)
                    if above is not None and not above.finished:
                        return  # the level above is still sampling these codes
                    raise ValueError(
                        f"level {level + 1} has {cur[level + 1].shape[1]} tokens; "
                        f"window {w.index} of level {level} needs {hi}"
                    )
                upper = cur[level + 1][:, lo:hi]
            if lane.prior is None:
                lane.prior = self.prior_for_level(level)
                bins = _vocab_size(lane.prior)
                lane.row_bins = [
                    plan.key.row_bin_hash(level, range(i, j), bins, self.device) for i, j in self.slices
                ]
            lane.y, lane.upper = self.labels_for(level, w), upper
            lane.context, lane.pieces = cur[level][:, w.start : have], []
            self.submit_slice(lane, driver, 0)
            return
        lane.finished = True
        lane.prior, lane.row_bins = None, []  # with swap_levels, unloading it must free it

    def submit_slice(self, lane: _Lane, driver: WindowDriver, bi: int) -> None:
        assert lane.prior is not None and lane.context is not None
        i, j = self.slices[bi]
        w, s, y, upper = lane.window, self.plan.settings, lane.y, lane.upper
        n_new = w.new_tokens(int(self.cur[lane.level].shape[1]))
        lane.slice = bi
        cond = lane.prior.get_cond(
            None if y is None else y[i:j].to(self.device), None if upper is None else upper[i:j]
        )
        lane.task = WindowTask(
            cond=cond,
            context=lane.context[i:j],
            n_new=n_new,
            row_bin=lane.row_bins[bi],
            abs_start=w.start,
            temperature=s.temperatures[lane.level],
            top_k=s.top_k,
            top_p=s.top_p,
            on_token=_Ticker(self, lane, bi, n_new),
            tokens_every=self.hooks.tokens_every,
        )
        driver.submit(lane.prior, lane.task)

    def task_done(self, lane: _Lane, driver: WindowDriver) -> None:
        """A slice is done: submit the next one, or append the window's tokens to its level."""
        assert lane.task is not None
        lane.pieces.append(lane.task.tokens())  # raises the decode's error, if any
        lane.task = None
        if lane.slice + 1 < len(self.slices):
            self.submit_slice(lane, driver, lane.slice + 1)
            return
        new = torch.cat(lane.pieces, dim=0)
        self.cur[lane.level] = torch.cat([self.cur[lane.level], new], dim=1)
        lane.level_done += int(new.shape[1])
        lane.in_window, lane.pieces, lane.y, lane.upper, lane.context = 0, [], None, None, None
        prog = self.progress(lane)
        lane.next += 1
        self.after_window(prog)

    def leading(self) -> _Lane:
        """The highest level being decoded: its level names the stage in progress reports."""
        return next((lane for lane in self.lanes if lane.task is not None), self.lanes[-1])

    def after_window(self, prog: Progress) -> None:
        hooks = self.hooks
        if hooks.on_tokens is not None:
            hooks.on_tokens(prog)
        more = self.done < self.total
        if hooks.on_window is None and not (more and hooks.should_stop is not None):
            return
        # Interleaved, another level may be mid-window: its tokens are not in the codes yet.
        prog = replace(prog, done=self.settled)
        host = _codes_to_host(self.cur)
        if hooks.on_window is not None:
            hooks.on_window(prog, host)
        if more and hooks.should_stop is not None and hooks.should_stop():
            raise SamplingStopped(host, prog)


class _Ticker:
    """Progress inside a window. Every batch slice samples the same positions, so progress counts
    positions (a slice's k-th token is k / len(slices) positions of the window)."""

    def __init__(self, run: _Run, lane: _Lane, slice_index: int, n_new: int) -> None:
        self.run, self.lane, self.slice_index, self.n_new = run, lane, slice_index, n_new

    def __call__(self, k: int) -> None:
        self.lane.in_window = (self.slice_index * self.n_new + k) // len(self.run.slices)
        if self.run.hooks.on_tokens is not None:
            self.run.hooks.on_tokens(self.run.progress(self.run.leading()))


def _vocab_size(prior: Any) -> int:
    for name in ("bins", "n_bins"):
        v = getattr(prior, name, None)
        if isinstance(v, int):
            return v
    cfg = getattr(prior, "config", None)
    if cfg is not None and hasattr(cfg, "bins"):
        return int(cfg.bins)
    raise TypeError("the prior does not say its vocabulary size (`bins` or `config.bins`)")
