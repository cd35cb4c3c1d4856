"""The decode GEMV (engine.sampling.decode_kernels.gemv) against cuBLAS for the few-row products of a
decode step, over tile choices: which tiles read the weights nearest the GPU's bandwidth.

    python bench/gemv_tiles.py [--rows 1,3]

Each case runs the product over 16 different weights of one shape (like 16 layers: 100+ MB, more
than the L2 cache holds) captured in one CUDA graph, so the figure is what a decode step sees:
µs per product and GB/s of weight read. JSON lines, then a table.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import device_name, emit

SHAPES = {  # (n_in, n_out) of the 1b_lyrics top prior and the upsamplers
    "top c_attn": (2048, 1536),
    "top c_proj": (512, 2048),
    "top mlp": (2048, 2048),
}
LAYERS = 16


def graph_us(fn: Any, reps: int = 20) -> float:
    from engine.sampling.graphs import _capture  # the decoder's own warm-up and capture

    g = _capture(fn, torch.device("cuda"))
    times = []
    for _ in range(reps):
        a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        a.record()
        g.replay()
        b.record()
        b.synchronize()
        times.append(a.elapsed_time(b) * 1000 / LAYERS)
    times.sort()
    return times[len(times) // 2]


def one_shape(rows: int, name: str, k: int, n: int) -> tuple[Any, ...]:
    from engine.sampling import decode_kernels as dk

    dev = torch.device("cuda")
    ws = [torch.randn(k, n, device=dev, dtype=torch.bfloat16) * 0.02 for _ in range(LAYERS)]
    wts = [w.t().contiguous().t() for w in ws]
    b = torch.randn(n, device=dev, dtype=torch.bfloat16)
    x = torch.randn(rows, k, device=dev, dtype=torch.bfloat16)
    ref = torch.addmm(b, x, ws[0]).float()
    gb = k * n * 2 / 1e9
    cublas = graph_us(lambda: [torch.addmm(b, x, w) for w in ws])
    emit(kind="gemv", rows=rows, shape=name, impl="cublas", us=round(cublas, 2), gbs=round(gb / cublas * 1e6))
    best = ("cublas", cublas)
    bb = 1 << max(0, (rows - 1).bit_length())
    for bn in (4, 8, 16):
        for bk in (1 << (k - 1).bit_length(),):  # the kernel holds a whole input row
            if bn * bk > 16384:
                continue
            for warps in (4, 8):
                tiles = (bb, bn, bk, warps)
                try:
                    got = dk.gemv(x, wts[0], b, tiles=tiles).float()
                    err = float((got - ref).abs().max() / ref.abs().max())
                    us = graph_us(lambda t=tiles: [dk.gemv(x, w, b, tiles=t) for w in wts])  # type: ignore[misc]
                except Exception as e:  # a tile the compiler rejects: report, go on
                    emit(kind="gemv_error", rows=rows, shape=name, tiles=tiles, error=str(e)[:200])
                    continue
                emit(
                    kind="gemv",
                    rows=rows,
                    shape=name,
                    impl="triton",
                    tiles=tiles,
                    us=round(us, 2),
                    gbs=round(gb / us * 1e6),
                    rel_err=round(err, 5),
                )
                if us < best[1]:
                    best = (f"bn={bn} bk={bk} w={warps}", us)
    default = graph_us(lambda: [dk.gemv(x, w, b) for w in wts])
    os.environ["JUKEBOT_PDL"] = "0"  # the same without programmatic dependent launch
    no_pdl = graph_us(lambda: [dk.gemv(x, w, b) for w in wts])
    os.environ.pop("JUKEBOT_PDL")
    return rows, name, cublas, default, no_pdl, dk.gemv_tiles(rows, n, k), best


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rows", default="1,3")
    args = ap.parse_args()
    table = [one_shape(int(r), name, k, n) for r in args.rows.split(",") for name, (k, n) in SHAPES.items()]
    print(f"\n{device_name(torch.device('cuda'))}: µs per product (16 weights in one graph)")
    print("rows | shape | cuBLAS | ours (default tiles) | same, no PDL | default tiles | best | best µs")
    for rows, name, cub, dflt, nopdl, tiles, best in table:
        print(f"{rows} | {name} | {cub:.2f} | {dflt:.2f} | {nopdl:.2f} | {tiles} | {best[0]} | {best[1]:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
