"""A window to sample as the token loop sees it (`WindowTask`), and the token picking of its rows."""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor

from engine.sampling.noise import filter_logits

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
    wake: threading.Event | None = None  # also set when done: one waiter watching several tasks
    cancelled: bool = False  # its tokens are no longer wanted (the loop drops it at the next step)

    @property
    def rows(self) -> int:
        return int(self.context.shape[0])

    @property
    def have(self) -> int:
        return int(self.context.shape[1])

    def fail(self, e: BaseException) -> None:
        self.error = e
        self._set_done()

    def finish(self, tokens: Tensor) -> None:
        self.result = tokens
        self._set_done()

    def _set_done(self) -> None:
        self.done.set()
        if self.wake is not None:
            self.wake.set()

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
