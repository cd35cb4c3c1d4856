"""One-token decode step and window prefill: ours against the original sampling loop, one process.

    python bench/step_speed.py --model 1b_lyrics --level 2 --batch 3
    python bench/step_speed.py --model 1b_lyrics --level 0 --batch 3 [--modes fused,compile,graph,eager]
    python bench/step_speed.py --model 5b_lyrics --level 2 --batch 3 --modes compile,fused,eager --no-ref --fused-wide
    python bench/step_speed.py --model 5b_lyrics --small --device cpu --no-ref --modes fused,eager \
        --max-k 16 --fused-wide --steps 4 --check-steps 8   # a dry run of the fused path on a CPU (interpreter)

Both sides get released-size priors with random weights and the same window: the context a
second window re-prefills (n_ctx - hop tokens: 5376 + the 384-character lyric prefix at the top of
1b_lyrics, 4096 for an upsampler), its labels and upper-level codes.

- The reference is `jukebox-infer` (the original `primed_sample` loop, fp16 as the original
  samples, chunk_size 32 for the prime): its prime time is the time to its first logits, its
  step time the median gap between consecutive logits (a hook on its output layer).
- Ours (bf16 weights) runs through `engine.sampling.decoders.RowDecoder`, the decoder the sampler uses,
  once per decode mode: prefill of the window in one pass (+ the first token), then `--steps`
  one-token steps timed with CUDA events.

JSON lines: `reference`, `ours` (one per mode, with `ratio_step` and `ratio_prefill` against the
reference measured in this run), and `fast_vs_eager`: the fastest mode's logits against the
eager bf16 step on the same tokens (teacher-forced): max |Δ| relative to max |logit|, top-1
agreement, and how often both pick the same token with the same noise.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import itertools
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("TQDM_DISABLE", "1")  # the reference's per-token progress bars

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch

from bench.common import (
    config_of,
    cpu_reference_patch,
    device_name,
    emit,
    peak_gib,
    random_prior,
    reference_prior,
    reset_peak,
    sync,
    timed,
    window_inputs,
)
from engine.sampling.batching import DecodeLoop
from engine.sampling.decoders import RowDecoder
from engine.sampling.noise import NoiseKey
from engine.sampling.window_task import WindowTask


def run_reference(
    args: argparse.Namespace,
    ctx: torch.Tensor,
    y: torch.Tensor,
    upper: torch.Tensor | None,
    device: torch.device,
) -> dict[str, Any]:
    reset_peak(device)
    t0 = time.perf_counter()
    ref = reference_prior(args.model, args.level, device, small=args.small)
    build_s = time.perf_counter() - t0
    stamps: list[float] = []

    def hook(*_: Any) -> None:
        sync(device)
        stamps.append(time.perf_counter())

    handle = ref.prior.x_out.register_forward_hook(hook)
    steps = args.ref_steps
    with torch.no_grad(), contextlib.redirect_stdout(io.StringIO()), cpu_reference_patch(device):
        sync(device)
        t0 = time.perf_counter()
        ref.sample(
            args.batch,
            z=ctx,
            z_conds=None if upper is None else [upper],
            y=y,
            fp16=True,
            temp=0.98,
            top_k=0,
            top_p=0.0,
            chunk_size=32,
            sample_tokens=ctx.shape[1] + steps + 1,
        )
        sync(device)
    handle.remove()
    gaps = [b - a for a, b in itertools.pairwise(stamps)]
    step = statistics.median(gaps)
    out = {
        "kind": "reference",
        "model": args.model,
        "level": args.level,
        "batch": args.batch,
        "dtype": "fp16",
        "context_tokens": int(ctx.shape[1]),
        "prefill_seconds": round(stamps[0] - t0 - step, 3),
        "ms_per_step": round(step * 1000, 2),
        "tokens_per_second": round(args.batch / step, 1),
        "steps_timed": len(gaps),
        "peak_gib": peak_gib(device),
        "build_seconds": round(build_s, 1),
        "device": device_name(device),
    }
    del ref
    return out


def make_task(
    prior: Any, cond: Any, ctx: torch.Tensor, abs_start: int, n_new: int, device: torch.device
) -> WindowTask:
    rb = NoiseKey(1).row_bin_hash(prior.level, range(ctx.shape[0]), prior.n_bins, device)
    return WindowTask(cond=cond, context=ctx, n_new=n_new, row_bin=rb, abs_start=abs_start, temperature=0.98)


def step_ms(device: torch.device, dec: RowDecoder, steps: int) -> float:
    """Milliseconds per `advance()`, from CUDA events around `steps` back-to-back steps."""
    if device.type != "cuda":

        def run() -> None:
            for _ in range(steps):
                dec.advance()

        s, _ = timed(device, run)
        return s * 1000 / steps
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    sync(device)
    start.record()
    for _ in range(steps):
        dec.advance()
    end.record()
    sync(device)
    return float(start.elapsed_time(end)) / steps


def profile_step(dec: RowDecoder, args: argparse.Namespace, mode: str) -> None:
    """Kernel time per step by kernel (the step's own function, outside the graph: same kernels)."""
    from torch.profiler import ProfilerActivity, profile

    n = 10
    with profile(activities=[ProfilerActivity.CUDA]) as prof:
        for _ in range(n):
            dec.runner._advance()
        torch.cuda.synchronize()
    rows = [e for e in prof.key_averages() if e.device_time_total > 0]
    rows.sort(key=lambda e: -e.device_time_total)
    total = sum(e.device_time_total for e in rows) / n
    kernels = sum(e.count for e in rows) / n
    emit(
        kind="profile",
        model=args.model,
        level=args.level,
        mode=mode,
        inductor=inductor_tag(),
        kernels_per_step=round(kernels),
        kernel_us_per_step=round(total, 1),
        top=[
            {
                "name": e.key[:90],
                "per_step": round(e.count / n, 1),
                "us_per_step": round(e.device_time_total / n, 1),
            }
            for e in rows[:18]
        ],
    )


def inductor_tag() -> str:
    from engine.sampling.graphs import inductor_flags

    return ",".join(sorted(inductor_flags())) or "default"


def run_ours(
    args: argparse.Namespace,
    prior: Any,
    cond: Any,
    ctx: torch.Tensor,
    abs_start: int,
    device: torch.device,
    mode: str,
    ref: dict[str, Any] | None,
) -> dict[str, Any]:
    dtype = torch.bfloat16
    reset_peak(device)
    with torch.inference_mode():
        setup_s, dec = timed(device, lambda: RowDecoder(prior, args.batch, device, dtype, mode=mode))  # type: ignore[arg-type]
        n_free = prior.n_ctx - ctx.shape[1]
        prefills = []
        for _ in range(3):  # the first also warms up the prefill kernels
            task = make_task(prior, cond, ctx, abs_start, n_free, device)
            s, _ = timed(device, lambda d=dec, t=task: d.admit(t))  # type: ignore[misc]
            prefills.append(s)
            dec.drop(task)
        task = make_task(prior, cond, ctx, abs_start, n_free, device)
        dec.admit(task)
        steps = max(1, min(args.steps if mode != "eager" else 40, n_free - 12))
        for _ in range(10):
            dec.advance()
        ms = step_ms(device, dec, steps)
        if args.profile and device.type == "cuda":
            try:
                profile_step(dec, args, mode)
            except Exception as e:  # the profile is a diagnostic: never lose the timing for it
                emit(kind="profile_error", error=f"{type(e).__name__}: {e}")
    out: dict[str, Any] = {
        "kind": "ours",
        "model": args.model,
        "level": args.level,
        "batch": args.batch,
        "dtype": "bfloat16",
        "mode": dec.mode,
        "asked_mode": mode,
        "inductor": inductor_tag(),
        "context_tokens": int(ctx.shape[1]),
        "prefill_seconds": round(statistics.median(prefills[1:]), 4),
        "first_prefill_seconds": round(prefills[0], 3),
        "ms_per_step": round(ms, 3),
        "tokens_per_second": round(args.batch * 1000 / ms, 1),
        "steps_timed": steps,
        "setup_seconds": round(setup_s, 1),
        "peak_gib": peak_gib(device),
        "kv_cache_gib": round(dec.cache.nbytes() / 2**30, 3),
        "device": device_name(device),
    }
    if dec.mode == "fused":
        from engine.sampling import decode_kernels as dk

        out["gemv"] = {
            "max_k": dk.MAX_K,
            "k_tile": min(dk.K_TILE, dk.MAX_K),
            "cols": os.environ.get("JUKEBOT_GEMV_COLS", "auto"),
        }
    if ref is not None:
        out["ratio_step"] = round(ref["ms_per_step"] / ms, 1)
        out["ratio_prefill"] = round(ref["prefill_seconds"] / out["prefill_seconds"], 1)
    del dec
    return out


def check_fast_vs_eager(
    args: argparse.Namespace,
    prior: Any,
    cond: Any,
    ctx: torch.Tensor,
    abs_start: int,
    device: torch.device,
    mode: str,
) -> dict[str, Any]:
    """Teacher-forced: both decoders are fed the eager path's token every step."""
    n = min(args.check_steps, prior.n_ctx - ctx.shape[1] - 1)
    with torch.inference_mode():
        eager = RowDecoder(prior, args.batch, device, torch.bfloat16, mode="eager")
        fast = RowDecoder(prior, args.batch, device, torch.bfloat16, mode=mode)  # type: ignore[arg-type]
        for d in (eager, fast):
            d.admit(make_task(prior, cond, ctx, abs_start, n + 1, device))
        rel, top1, same = [], [], []
        scale = float(eager.state.logits.abs().max())
        for _ in range(n):
            eager.advance()
            fast.advance()
            a, b = eager.state.logits, fast.state.logits
            rel.append(float((a - b).abs().max()) / scale)
            top1.append(float((a.argmax(-1) == b.argmax(-1)).float().mean()))
            same.append(float((eager.state.tok == fast.state.tok).float().mean()))
            fast.state.tok.copy_(eager.state.tok)  # teacher forcing: the same input next step
        # the same tokens through a whole window: the loop (DecodeLoop) on both
        outs = []
        for d in (eager, fast):
            d.drop(next(iter(d._rows)))
            loop, t = DecodeLoop(), make_task(prior, cond, ctx, abs_start, n, device)
            loop.submit(d, t)
            outs.append(loop.run_until_done(t))
        free_same = float((outs[0] == outs[1]).float().mean())
        first_diff = int((outs[0] != outs[1]).any(0).float().argmax()) if free_same < 1 else n
    return {
        "kind": "fast_vs_eager",
        "model": args.model,
        "level": args.level,
        "mode": fast.mode,
        "inductor": inductor_tag(),
        "steps": n,
        "max_rel_logit_diff": round(max(rel), 5),
        "median_rel_logit_diff": round(statistics.median(rel), 5),
        "top1_agreement": round(statistics.mean(top1), 4),
        "same_token_teacher_forced": round(statistics.mean(same), 4),
        "free_running_same_tokens": round(free_same, 4),
        "free_running_first_difference": first_diff,
        "device": device_name(device),
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="1b_lyrics", choices=["1b_lyrics", "5b_lyrics", "5b"])
    ap.add_argument("--level", type=int, default=2, choices=[0, 1, 2])
    ap.add_argument("--batch", type=int, default=3)
    ap.add_argument("--steps", type=int, default=300)
    ap.add_argument("--ref-steps", type=int, default=12)
    ap.add_argument("--check-steps", type=int, default=64)
    ap.add_argument("--modes", default="compile,graph,eager")
    ap.add_argument("--no-ref", action="store_true")
    ap.add_argument("--profile", action="store_true", help="also print the step's kernels by GPU time")
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--small", action="store_true", help="CPU-test sizes (checks this script on a CPU)")
    ap.add_argument(
        "--max-k",
        type=int,
        default=0,
        help="fused GEMV: most inputs held in registers at once (wider products loop over tiles); "
        "lower it on a CPU dry run so the test sizes loop as 5b's 4800 does",
    )
    ap.add_argument("--k-tile", type=int, default=0, help="fused GEMV: inputs per tile of a looped product")
    ap.add_argument(
        "--fused-wide",
        action="store_true",
        help="let priors wider than --max-k take the fused path (its looped products; the engine "
        "keeps the compiled step there unless JUKEBOT_FUSED_WIDE=1)",
    )
    args = ap.parse_args()
    device = torch.device(args.device)
    if device.type == "cpu" and "fused" in args.modes:
        os.environ.setdefault("TRITON_INTERPRET", "1")  # before the kernels are defined
    if args.max_k or args.k_tile or args.fused_wide:
        from engine.sampling import decode_kernels as dk

        dk.MAX_K = args.max_k or dk.MAX_K
        dk.K_TILE = args.k_tile or dk.K_TILE
        dk.FUSED_WIDE = dk.FUSED_WIDE or args.fused_wide
    config = config_of(args.model, args.small)
    torch.backends.cuda.matmul.allow_tf32 = True
    prior = random_prior(config, args.level, device, torch.bfloat16)
    cond, ctx, y, upper, abs_start = window_inputs(prior, config, args.batch, device)
    ref = None
    if not args.no_ref:
        ref = run_reference(args, ctx, y, upper, device)
        emit(**ref)
    modes = [m for m in args.modes.split(",") if m]
    for mode in modes:
        emit(**run_ours(args, prior, cond, ctx, abs_start, device, mode, ref))
    if modes and modes[0] != "eager" and args.check_steps > 0:
        emit(**check_fast_vs_eager(args, prior, cond, ctx, abs_start, device, modes[0]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
