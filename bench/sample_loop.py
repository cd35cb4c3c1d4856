"""The sampling loop (engine.sampling.sample) on a GPU: correctness on CUDA and the eager baseline speed.

    python bench/sample_loop.py [--device cuda] [--steps 64] [--batch 3]

Prints JSON lines:
- `check`: on a tiny random-weight model (fp32), the cached loop picks exactly the tokens of the
  slow exact path (ExactPrior) on every level, and a run stopped after every few windows and
  resumed from its codes ends with the uninterrupted run's codes.
- `speed`: released-size priors with random weights in bf16 (1b_lyrics top prior, the level-0
  upsampler): one window's prefill of its context in one pass, and ms per one-token decode step
  of `engine.sample.sample_window` (this is the plain eager loop: no CUDA graphs yet).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from engine.model.config import PRESETS, tiny_config  # noqa: E402
from engine.model.labels import Labeller  # noqa: E402
from engine.model.prior import JukeboxPrior  # noqa: E402
from engine.sampling.noise import NoiseKey  # noqa: E402
from engine.sampling.sample import (  # noqa: E402
    ExactPrior,
    Hooks,
    Plan,
    SamplingSettings,
    SamplingStopped,
    run_plan,
    sample_window,
)
from engine.sampling.windows import Window, round_sample_length, tokens_per_level  # noqa: E402


def emit(**kw: object) -> None:
    print(json.dumps(kw), flush=True)


def _labels(config, sample_length: int, rows: int):  # type: ignore[no-untyped-def]
    labellers = {lv: Labeller.for_prior(config, lv) for lv in range(3)}
    songs = {
        lv: lab.encode("bach", "chorale", "Sing a song of sixpence", strict=False)
        for lv, lab in labellers.items()
    }
    total = labellers[2].label_total_length(sample_length)

    def fn(level: int, w: Window) -> torch.Tensor:
        y = labellers[level].window_y(songs[level], total, w.label_offset(config.raw_to_tokens(level)))
        return torch.tensor([y] * rows)

    return fn


def check(device: torch.device) -> None:
    for lyrics in ("prefix", "separate", "none"):
        config = tiny_config("check", lyrics=lyrics, n_ctx=64, width=64, depth=3, heads=2, blocks=8)  # type: ignore[arg-type]
        torch.manual_seed(0)
        priors = {lv: JukeboxPrior(config.priors[lv], config.vqvae).to(device).eval() for lv in range(3)}
        hops = config.vqvae.hop_lengths
        sl = round_sample_length(0.08, config.sample_rate, hops[-1])
        plan = Plan(
            (2, 1, 0),
            tuple(tokens_per_level(sl, hops)),
            tuple(p.n_ctx for p in config.priors),
            (2, 2, 0),
            3,
            NoiseKey(5),
            SamplingSettings(),
        )
        labels = _labels(config, sl, 3)
        empty = [np.zeros((3, 0), dtype=np.int64)] * 3
        t = time.monotonic()
        fast = run_plan(plan, priors.__getitem__, labels, empty, device=device)
        t_fast = time.monotonic() - t
        exact = {lv: ExactPrior(p) for lv, p in priors.items()}
        slow = run_plan(plan, exact.__getitem__, labels, empty, device=device)
        same = [bool(np.array_equal(a, b)) for a, b in zip(fast, slow, strict=True)]
        diff = [float((a != b).mean()) for a, b in zip(fast, slow, strict=True)]
        codes, stops = empty, 0
        while True:
            it = iter([False, False, True])
            try:
                codes = run_plan(
                    plan,
                    priors.__getitem__,
                    labels,
                    codes,
                    device=device,
                    hooks=Hooks(should_stop=it.__next__),
                )
                break
            except SamplingStopped as s:
                codes, stops = s.codes, stops + 1
        resumed_same = all(np.array_equal(a, b) for a, b in zip(fast, codes, strict=True))
        emit(
            kind="check",
            lyrics=lyrics,
            device=str(device),
            tokens=list(plan.totals),
            fast_equals_exact=same,
            mismatch_fraction=diff,
            stops=stops,
            resumed_equals_uninterrupted=resumed_same,
            fast_seconds=round(t_fast, 2),
        )


def speed(device: torch.device, steps: int, batch: int) -> None:
    for name, level, cfg in (
        ("1b_lyrics top prior", 2, PRESETS["1b_lyrics"]),
        ("level-0 upsampler", 0, PRESETS["1b_lyrics"]),
    ):
        pc = cfg.priors[level]
        torch.manual_seed(0)
        with torch.device(device):
            prior = JukeboxPrior(pc, cfg.vqvae)
        prior = prior.to(torch.bfloat16).eval().requires_grad_(False)
        n_ctx = pc.n_ctx
        hop = int(n_ctx * (0.125 if level == 2 else 0.5))
        context = n_ctx - hop
        w = Window(level, 1, hop, hop + n_ctx, n_ctx)
        sl = (hop + n_ctx) * cfg.raw_to_tokens(level) * 4
        y = _labels(cfg, sl, batch)(level, w).to(device)
        upper = None
        if level < 2:
            upper = torch.randint(0, pc.l_bins, (batch, n_ctx // 4), device=device)
        ctx = torch.randint(0, pc.l_bins, (batch, context), device=device)
        rb = NoiseKey(1).row_bin_hash(level, range(batch), prior.n_bins, device)
        with torch.inference_mode():
            cond = prior.get_cond(y, upper)
            # warm-up
            sample_window(
                prior,
                cond,
                ctx,
                4,
                row_bin=rb,
                abs_start=hop,
                temperature=0.98,
                top_k=0,
                top_p=0.0,
                dtype=torch.bfloat16,
            )
            torch.cuda.synchronize()
            cache = prior.new_cache(batch, device, torch.bfloat16)
            t = time.monotonic()
            prior.prefill(cache, ctx, cond)
            torch.cuda.synchronize()
            prefill_s = time.monotonic() - t
            t = time.monotonic()
            sample_window(
                prior,
                cond,
                ctx,
                steps + 1,
                row_bin=rb,
                abs_start=hop,
                temperature=0.98,
                top_k=0,
                top_p=0.0,
                dtype=torch.bfloat16,
            )
            torch.cuda.synchronize()
            window_s = time.monotonic() - t
        ms = (window_s - prefill_s) / steps * 1000
        emit(
            kind="speed",
            model=name,
            device=torch.cuda.get_device_name(),
            batch=batch,
            dtype="bfloat16",
            context_tokens=context,
            prefill_seconds=round(prefill_s, 4),
            decode_steps=steps,
            ms_per_step=round(ms, 3),
            tokens_per_second=round(batch * 1000 / ms, 1),
            peak_gib=round(torch.cuda.max_memory_allocated() / 2**30, 2),
            note="eager loop, no CUDA graphs",
        )
        del prior, cache, cond
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--steps", type=int, default=64)
    ap.add_argument("--batch", type=int, default=3)
    ap.add_argument("--skip-speed", action="store_true")
    ap.add_argument(
        "--sdpa-math",
        action="store_true",
        help="force PyTorch's math attention kernel (works around layouts other kernels return)",
    )
    args = ap.parse_args()
    device = torch.device(args.device)
    import contextlib

    from torch.nn.attention import SDPBackend, sdpa_kernel

    with sdpa_kernel([SDPBackend.MATH]) if args.sdpa_math else contextlib.nullcontext():
        check(device)
        if not args.skip_speed and device.type == "cuda":
            speed(device, args.steps, args.batch)
    return 0


if __name__ == "__main__":
    sys.exit(main())
