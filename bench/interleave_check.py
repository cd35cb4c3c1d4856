"""Levels 1 and 0 one after another, then interleaved, on the same engine and draft: the wall time
of each upsample and whether the codes are identical (issue 18's same-token rule).

    python bench/interleave_check.py [--seconds 7] [--device cuda] [--small]

Released-size 1b_lyrics priors with random bf16 weights (bench/song_e2e.py's engine), both
upsamplers resident; the first run also builds (captures) both decode steps, so the runs go
sequential, interleaved, sequential again: compare the last two. Prints JSON lines. Pick seconds
so level 1 has at least two windows (more than 6 s at 1b_lyrics sizes), else level 0 must wait
for all of level 1 anyway.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("TQDM_DISABLE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np
import torch

from bench.common import SONG, device_name, emit, sync
from bench.song_e2e import Stages, random_engine
from engine.sampling.pipeline import SongRequest, make_drafts, upsample
from engine.sampling.sample import SamplingSettings


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="1b_lyrics")
    ap.add_argument("--seconds", type=float, default=7.0)
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--small", action="store_true", help="CPU-test sizes (checks this script on a CPU)")
    args = ap.parse_args()
    device = torch.device(args.device)
    engine = random_engine(args.model, device, args.small, Stages(device), interleave=True)
    request = SongRequest(*SONG[:3], seconds=args.seconds, seed=1, settings=SamplingSettings())
    top = make_drafts(engine, request, 1, decode=False).codes[0]
    engine.model.unload_level(2)
    codes: dict[str, list[np.ndarray]] = {}
    for name, interleave in (("sequential", False), ("interleaved", True), ("sequential again", False)):
        sync(device)
        t0 = time.perf_counter()
        codes[name] = upsample(engine, request, top, decode=False, interleave_levels=interleave).codes
        sync(device)
        tokens = [int(c.shape[1]) for c in codes[name][:2]]
        emit(kind="upsample", run=name, seconds=round(time.perf_counter() - t0, 2), tokens_0_1=tokens)
    for a, b in (("sequential", "interleaved"), ("sequential again", "interleaved")):
        same = [bool(np.array_equal(x, y)) for x, y in zip(codes[a][:2], codes[b][:2], strict=True)]
        emit(kind="same_codes", runs=f"{a} / {b}", identical_levels_0_1=same)
    emit(kind="device", device=device_name(device), model=args.model, song_seconds=args.seconds)
    return 0


if __name__ == "__main__":
    sys.exit(main())
