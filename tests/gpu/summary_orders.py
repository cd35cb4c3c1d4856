"""Summary attention (attn_order 3, 4, 5) on the GPU's real decode path.

    python tests/gpu/summary_orders.py [--device cuda]

tests/test_original_compat.py checks these orders against the original code on the CPU (eager
steps). Here the same small random priors sample on the GPU through the sampling loop as the
worker runs it (CUDA graphs; compiled blocks where the fused kernels do not cover a layer kind),
and the tokens are compared with the CPU's for the same noise. One JSON line per order.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from engine.model.config import PriorConfig, VQVAEConfig
from engine.model.prior import JukeboxPrior
from engine.sampling.noise import NoiseKey
from engine.sampling.sample import Plan, SamplingSettings, run_plan
from tests.engine_reference import randomize_

VQ = VQVAEConfig(
    sample_rate=22050, levels=2, downs_t=(3, 2), strides_t=(2, 2), emb_width=16, l_bins=64, multipliers=(1, 1)
)


def tokens(prior: JukeboxPrior, device: str, rows: int, seed: int) -> np.ndarray:
    plan = Plan((1,), (0, 256), (0, prior.n_ctx), (4, 1), rows, NoiseKey(seed), SamplingSettings((1.0, 1.0)))  # type: ignore[arg-type]
    start = [np.zeros((rows, 0), dtype=np.int64)] * 2
    out = run_plan(plan, lambda lv: prior, lambda lv, w: None, start, device=torch.device(device))
    return out[1]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--device", default="cuda")
    a = ap.parse_args()
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    for order, depth, spread in ((3, 4, None), (4, 4, 3), (5, 8, None)):
        cfg = PriorConfig(
            level=1,
            n_ctx=128,
            width=64,
            depth=depth,
            heads=2,
            attn_order=order,
            blocks=8,
            spread=spread,
            l_bins=64,
            labels=False,
        )
        prior = JukeboxPrior(cfg, VQ).eval()
        randomize_(prior, seed=order)
        t0 = time.monotonic()
        want = tokens(prior, "cpu", 4, seed=order)
        cpu_s = time.monotonic() - t0
        gpu = prior.to(a.device)
        t0 = time.monotonic()
        got = tokens(gpu, a.device, 4, seed=order)
        gpu_s = time.monotonic() - t0
        line = {
            "attn_order": order,
            "tokens": int(want.size),
            "equal_share": float((got == want).mean()),
            "distinct_tokens": len(np.unique(got)),
            "cpu_s": round(cpu_s, 1),
            "gpu_s_with_compile": round(gpu_s, 1),
        }
        print(json.dumps(line), flush=True)


if __name__ == "__main__":
    main()
