"""GPU memory of the whole pipeline, level by level, with one level's weights in memory at a time.

    python bench/memory.py [--models 1b_lyrics,5b_lyrics] [--drafts 3] [--seconds 20] [--mode graph]

For each model and level: the prior's weights in bf16 (random, released sizes), a decoder for the
rows that level samples (the drafts at level 2, one draft when upsampling), the prefill of a
full re-prefilled window (n_ctx - hop tokens of context) and 64 decode steps; then the prior is
dropped before the next level, as `Engine(swap_levels=True)` does. Last, the VQ-VAE decodes the
song (`--seconds`) at level 0 and the level-2 previews. JSON lines per stage: weights, KV cache,
peak (torch.cuda.max_memory_allocated); then per model the peak of the whole pipeline.
"""

from __future__ import annotations

import argparse
import gc
import os
import sys
from pathlib import Path
from typing import Any

os.environ.setdefault("TQDM_DISABLE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np
import torch

from bench.common import (
    config_of,
    device_name,
    emit,
    random_prior,
    randomize,
    reset_peak,
    sync,
    timed,
    window_inputs,
)
from engine.model.vqvae import VQVAE
from engine.sampling.decoders import RowDecoder
from engine.sampling.noise import NoiseKey
from engine.sampling.window_task import WindowTask


def gib(n: float) -> float:
    return round(n / 2**30, 3)


def level_stage(
    model: str, level: int, rows: int, device: torch.device, mode: str, small: bool
) -> dict[str, Any]:
    config = config_of(model, small)
    reset_peak(device)
    prior = random_prior(config, level, device, torch.bfloat16)
    sync(device)
    weights = sum(p.numel() * p.element_size() for p in prior.parameters())
    cond, ctx, _, _, abs_start = window_inputs(prior, config, rows, device)
    with torch.inference_mode():
        dec = RowDecoder(prior, rows, device, torch.bfloat16, mode=mode)  # type: ignore[arg-type]
        rb = NoiseKey(1).row_bin_hash(level, range(rows), prior.n_bins, device)
        task = WindowTask(
            cond=cond,
            context=ctx,
            n_new=prior.n_ctx - ctx.shape[1],
            row_bin=rb,
            abs_start=abs_start,
            temperature=0.98,
        )
        prefill_s, _ = timed(device, lambda d=dec, t=task: d.admit(t))  # type: ignore[misc]
        for _ in range(64):
            dec.advance()
        sync(device)
    out = {
        "kind": "memory",
        "model": model,
        "stage": f"level {level}",
        "rows": rows,
        "mode": dec.mode,
        "weights_gib": gib(weights),
        "kv_cache_gib": gib(dec.cache.nbytes()),
        "context_tokens": int(ctx.shape[1]),
        "prefill_seconds": round(prefill_s, 3),
        "peak_gib": gib(torch.cuda.max_memory_allocated(device)) if device.type == "cuda" else 0.0,
        "device": device_name(device),
    }
    del dec, task, cond, prior
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()
        out["left_allocated_gib"] = gib(torch.cuda.memory_allocated(device))
    return out


def decode_stage(
    model: str, seconds: float, drafts: int, device: torch.device, small: bool
) -> dict[str, Any]:
    config = config_of(model, small)
    reset_peak(device)
    vq = VQVAE(config.vqvae)
    randomize(vq, 0)
    vq = vq.to(device).eval()
    hops = config.vqvae.hop_lengths
    n = int(seconds * config.sample_rate) // hops[2] * hops[2]
    rng = np.random.default_rng(0)
    with torch.inference_mode():
        z0 = torch.as_tensor(rng.integers(0, config.vqvae.l_bins, (1, n // hops[0]))).to(device)
        s0, _ = timed(device, lambda v=vq, z=z0: v.decode([z], start_level=0, end_level=1))  # type: ignore[misc]
        z2 = torch.as_tensor(rng.integers(0, config.vqvae.l_bins, (drafts, n // hops[2]))).to(device)
        s2, _ = timed(device, lambda v=vq, z=z2: v.decode([z], start_level=2, end_level=3))  # type: ignore[misc]
    out = {
        "kind": "memory",
        "model": model,
        "stage": "VQ-VAE decode",
        "seconds_of_audio": seconds,
        "weights_gib": gib(sum(p.numel() * p.element_size() for p in vq.parameters())),
        "decode_level0_seconds": round(s0, 2),
        "decode_level2_previews_seconds": round(s2, 2),
        "peak_gib": gib(torch.cuda.max_memory_allocated(device)) if device.type == "cuda" else 0.0,
        "device": device_name(device),
    }
    del vq, z0, z2
    if device.type == "cuda":
        torch.cuda.empty_cache()
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", default="1b_lyrics,5b_lyrics")
    ap.add_argument("--drafts", type=int, default=3)
    ap.add_argument("--seconds", type=float, default=20.0)
    ap.add_argument("--mode", default="graph", choices=["eager", "graph", "compile", "fused"])
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--small", action="store_true", help="CPU-test sizes (checks this script on a CPU)")
    args = ap.parse_args()
    device = torch.device(args.device)
    for model in args.models.split(","):
        stages = [
            level_stage(model, lv, args.drafts if lv == 2 else 1, device, args.mode, args.small)
            for lv in (2, 1, 0)
        ]
        stages.append(decode_stage(model, args.seconds, args.drafts, device, args.small))
        for s in stages:
            emit(**s)
        emit(
            kind="memory_pipeline",
            model=model,
            drafts=args.drafts,
            swap_levels=True,
            peak_gib=max(s["peak_gib"] for s in stages),
            peak_stage=max(stages, key=lambda s: s["peak_gib"])["stage"],
            device=device_name(device),
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
