"""The decoders the token loop drives, and the KV-cache memory a row of them needs.

`RowDecoder` serves `engine.model.prior.JukeboxPrior`: per-row positions, prefill into some rows, the
one-token step built by engine.sampling.graphs (eager, CUDA graph, or compiled + graph).
`EagerDecoder` serves any prior-like object with no row support (tests, the exact reference).
"""

from __future__ import annotations

import contextlib
import logging
import weakref
from collections.abc import Callable
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
from engine.sampling.noise import gumbel
from engine.sampling.window_task import WindowTask, pick_rows

log = logging.getLogger("jukebot.batching")


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
        return None  # e.g. more rows than MAX_ROWS
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
