"""How the one-token decode step is built: eager, captured in a CUDA graph, or compiled and captured.

The sampling loop (engine.sampling.batching.DecodeLoop) calls `advance()` once per token. What that call
runs is decided here, once per decoder:

- ``eager``: the Python step as written (CPU, and the fallback everywhere).
- ``graph``: the same eager step recorded once into a `torch.cuda.CUDAGraph` and replayed: one
  launch per token instead of ~2,000 (the original code is launch-bound: 69 ms per step).
- ``fused``: every transformer block's step is five Triton kernels (engine.sampling.decode_kernels: the
  LayerNorm, GEMV, bias, GELU and residual of each product in one kernel, GEMVs that keep every
  multiprocessor reading weights, a split-key one-query attention), the token pick compiled, and
  the whole step recorded into a CUDA graph. For up to `decode_kernels.MAX_ROWS` rows; a
  decoder with more rows, or a block the kernels do not cover, runs the compiled step.
- ``compile``: every transformer block's step goes through `torch.compile` (Inductor fuses the
  LayerNorms, casts, GELU, residual adds and the KV-cache write into a few kernels), the token
  pick too, and the whole step is then recorded into a CUDA graph as above. Blocks are compiled
  per block, not as one 72-layer graph: blocks of one attention kind share one compiled graph,
  so a model compiles in seconds, and a new model of the same shapes hits Inductor's cache.

The graph is captured by hand rather than with ``mode="reduce-overhead"``: the step writes into
KV caches passed as arguments, and the automatic CUDA-graph trees skip functions that mutate
their inputs. Here every input and output of the step is a static buffer owned by the decoder
(token, position, noise keys, temperature, conditioning, caches), written between replays.

Choose with ``JUKEBOT_DECODE=eager|graph|compile|fused`` (default: fused on CUDA, which falls back
to compile where the kernels do not apply, eager on CPU). A
failure to compile or capture logs a warning and falls back to the next simpler mode; tokens do
not depend on the mode beyond floating-point rounding of fused kernels (checked by the
benchmarks: logits within bf16 tolerance, same top-1).
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Callable
from typing import Any, Literal

import torch
from torch import Tensor

log = logging.getLogger("jukebot.graphs")

DecodeMode = Literal["eager", "graph", "compile", "fused"]
MODES: tuple[str, ...] = ("eager", "graph", "compile", "fused")


def default_mode(device: torch.device | str) -> DecodeMode:
    """The mode for a device: JUKEBOT_DECODE if set, else fused on CUDA and eager elsewhere."""
    dev = torch.device(device)
    want = os.environ.get("JUKEBOT_DECODE", "").strip().lower()
    if want:
        if want not in MODES:
            raise ValueError(f"JUKEBOT_DECODE={want!r}: use one of {', '.join(MODES)}")
        return want  # type: ignore[return-value]
    return "fused" if dev.type == "cuda" else "eager"


def _block_step(layer: Any, x: Tensor, s: Tensor, cache: Any, masks: dict[int, Tensor]) -> Tensor:
    return layer.step(x, s, cache, masks)


_COMPILED: dict[tuple[str, str], Callable[..., Any]] = {}
# Inductor on the GPU; tests on CPU set "aot_eager" (same tracing and functionalization of the
# in-place cache writes, no C++/Triton code generation).
COMPILE_BACKEND = os.environ.get("JUKEBOT_COMPILE_BACKEND", "inductor")


def inductor_flags() -> frozenset[str]:
    """JUKEBOT_INDUCTOR: comma-separated tuning flags for the compiled step (benchmarks compare
    them): `cd` coordinate-descent tuning of Triton kernels, `autotune` Triton GEMM templates
    (epilogue fusion) benchmarked against cuBLAS, `math` attention decomposed into plain ops
    that Inductor fuses (instead of an SDPA kernel), `efficient` the memory-efficient SDPA kernel
    (else plain ops) instead of the default choice (cuDNN's, slow for one query), `splitk` the
    decode step's weight products split 4 ways along their inputs (engine.model.attention.Conv1D)."""
    raw = os.environ.get("JUKEBOT_INDUCTOR", "")
    flags = frozenset(f.strip() for f in raw.split(",") if f.strip() and f.strip() != "default")
    unknown = flags - {"cd", "autotune", "math", "efficient", "splitk"}
    if unknown:
        raise ValueError(
            f"JUKEBOT_INDUCTOR: unknown flags {sorted(unknown)} (use cd, autotune, math, efficient, splitk)"
        )
    return flags


def compiled(name: str, fn: Callable[..., Any]) -> Callable[..., Any]:
    """`torch.compile(fn, fullgraph=True, dynamic=False)`, made once per name per process.

    Dynamo keeps one compiled graph per distinct set of shapes and constants (per attention kind,
    model width, batch size); the default limit of 8 would silently send later ones back to eager."""
    flags = inductor_flags()
    key = (name, COMPILE_BACKEND)
    if key not in _COMPILED:
        import torch._dynamo

        cfg = torch._dynamo.config
        cfg.cache_size_limit = max(int(cfg.cache_size_limit), 256)
        if hasattr(cfg, "accumulated_cache_size_limit"):
            cfg.accumulated_cache_size_limit = max(int(cfg.accumulated_cache_size_limit), 1024)
        options: dict[str, Any] = {}
        if COMPILE_BACKEND == "inductor":
            if "cd" in flags:
                options["coordinate_descent_tuning"] = True
            if "autotune" in flags:
                options.update(max_autotune=True, max_autotune_gemm_backends="TRITON,ATEN")
        _COMPILED[key] = torch.compile(
            fn, fullgraph=True, dynamic=False, backend=COMPILE_BACKEND, options=options or None
        )
    return _COMPILED[key]


def attention_context() -> contextlib.AbstractContextManager[Any]:
    """Around the compiled step's tracing: the attention kernel (and split-K products) that
    JUKEBOT_INDUCTOR asks for."""
    flags = inductor_flags()
    stack = contextlib.ExitStack()
    if "splitk" in flags:
        stack.enter_context(_split_k(4))
    if {"math", "efficient"} & flags:
        from torch.nn.attention import SDPBackend, sdpa_kernel

        if "math" in flags:
            stack.enter_context(sdpa_kernel(SDPBackend.MATH))
        else:
            stack.enter_context(sdpa_kernel([SDPBackend.EFFICIENT_ATTENTION, SDPBackend.MATH]))
    return stack


@contextlib.contextmanager
def _split_k(s: int) -> Any:
    import engine.model.attention as attention

    saved = attention.SPLIT_K
    attention.SPLIT_K = s
    try:
        yield
    finally:
        attention.SPLIT_K = saved


def compiled_block_step() -> Callable[..., Tensor]:
    return compiled("block_step", _block_step)


class StepRunner:
    """Runs `advance` (a no-argument function that reads and writes only static buffers) as the
    decoder's mode says. With a graph, `__call__` is one replay.

    `reset` is called after the capture's warm-up runs, which wrote junk into the buffers."""

    def __init__(
        self,
        advance: Callable[[], None],
        device: torch.device,
        mode: DecodeMode,
        reset: Callable[[], None],
        fallback: Callable[[], None] | None = None,
    ) -> None:
        self.mode: DecodeMode = mode
        self._advance = advance
        self._graph: torch.cuda.CUDAGraph | None = None
        if mode == "eager" or device.type != "cuda":
            # No CUDA graphs off the GPU; a compiled or fused step still runs (tests on CPU).
            self.mode = mode if mode in ("compile", "fused") else "eager"
            return
        try:
            self._graph = _capture(advance, device)
        except Exception as e:  # compile or capture failed: keep sampling, slower
            log.warning("decode step %s failed (%s: %s); falling back", mode, type(e).__name__, e)
            self._graph = None
            if fallback is not None:
                self._advance = fallback
                try:
                    self._graph = _capture(fallback, device)
                    self.mode = "graph"
                except Exception as e2:
                    log.warning(
                        "decode step graph capture failed (%s: %s); running eager", type(e2).__name__, e2
                    )
                    self.mode = "eager"
            else:
                self.mode = "eager"
        reset()

    def __call__(self) -> None:
        if self._graph is not None:
            self._graph.replay()
        else:
            self._advance()


def _capture(advance: Callable[[], None], device: torch.device, warmup: int = 3) -> torch.cuda.CUDAGraph:
    """Warm up on a side stream (compiles, autotunes, creates cuBLAS handles), then record."""
    with torch.cuda.device(device):
        cur = torch.cuda.current_stream()
        side = torch.cuda.Stream()
        side.wait_stream(cur)
        with torch.cuda.stream(side):
            for _ in range(warmup):
                advance()
        cur.wait_stream(side)
        torch.cuda.synchronize()
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            advance()
        torch.cuda.synchronize()
    return graph


__all__ = [
    "MODES",
    "DecodeMode",
    "StepRunner",
    "attention_context",
    "compiled",
    "compiled_block_step",
    "default_mode",
    "inductor_flags",
]
