"""Throughput: N songs sampled at once on one GPU against one song alone.

    python bench/throughput.py [--songs 8] [--draft-seconds 6] [--upsample-seconds 3] [--stages drafts,upsample]

Each song is a job of its own, in a thread of its own, running the real pipeline
(`make_drafts`: 3 level-2 drafts; `upsample`: levels 1 and 0 of one draft), all of them sharing
one `engine.sampling.batching.BatchScheduler`, as the worker runs several jobs: their windows join one
decode batch and leave it as they finish, each row at its own position and with its own noise.
Released-size priors, random weights, bf16, every level resident. For each stage the same work
is timed for 1 song and for N songs (each run's batch is sized for its songs); JSON lines give the
wall times and `time_ratio` = time(N songs) / time(1 song) (target: at most 2 for 8 songs).
"""

from __future__ import annotations

import argparse
import os
import sys
import threading
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("TQDM_DISABLE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np
import torch

from bench.common import (
    SONG,
    config_of,
    device_name,
    emit,
    peak_gib,
    random_prior,
    randomize,
    reset_peak,
    sync,
)
from engine.model.jukebox import JukeboxModel
from engine.sampling.batching import BatchScheduler, use_scheduler
from engine.sampling.pipeline import Engine, SongRequest, make_drafts, upsample
from engine.sampling.sample import SamplingSettings


def resident_engine(model: str, device: torch.device, small: bool) -> Engine:
    config = config_of(model, small)
    m = JukeboxModel(config, levels=[])
    m.prior_dtype = torch.bfloat16
    randomize(m.vqvae, 0)
    m.vqvae.to(device).eval().requires_grad_(False)
    for level in range(3):
        m._priors[str(level)] = random_prior(config, level, device, torch.bfloat16)
    return Engine(m, device=device, swap_levels=False, name=model)


def run_songs(
    engine: Engine,
    n: int,
    stage: str,
    seconds: float,
    drafts: int,
    top: dict[int, np.ndarray],
    device: torch.device,
) -> tuple[float, dict[str, int]]:
    """Wall seconds for n songs of one stage at once through one scheduler."""
    rows = drafts if stage == "drafts" else 1
    sched = BatchScheduler(budget_bytes=60 * 2**30, max_rows=n * rows)
    errors: list[BaseException] = []

    def job(i: int) -> None:
        req = SongRequest(
            artist=SONG[0],
            genre=SONG[1],
            lyrics=SONG[2],
            seconds=seconds,
            seed=100 + i,
            settings=SamplingSettings(),
        )
        try:
            if stage == "drafts":
                out = make_drafts(engine, req, drafts, decode=False)
                top[i] = out.codes
            else:
                upsample(engine, req, top[i % len(top)][0], draft_index=0, decode=False)
        except BaseException as e:
            errors.append(e)

    with sched, use_scheduler(sched):
        sync(device)
        t = time.perf_counter()
        threads = [threading.Thread(target=job, args=(i,)) for i in range(n)]
        for th in threads:
            th.start()
        for th in threads:
            th.join()
        sync(device)
        wall = time.perf_counter() - t
    if errors:
        raise errors[0]
    return wall, dict(sched.stats)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="1b_lyrics")
    ap.add_argument("--songs", type=int, default=8)
    ap.add_argument("--drafts", type=int, default=3)
    ap.add_argument("--draft-seconds", type=float, default=6.0)
    ap.add_argument("--upsample-seconds", type=float, default=3.0)
    ap.add_argument("--stages", default="drafts,upsample")
    ap.add_argument(
        "--warmup-seconds",
        type=float,
        default=0.5,
        help="first run the same number of songs this long, untimed (compiles the step for the "
        "batch size); 0: no warm-up",
    )
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--small", action="store_true", help="CPU-test sizes (checks this script on a CPU)")
    args = ap.parse_args()
    device = torch.device(args.device)
    engine = resident_engine(args.model, device, args.small)
    top: dict[int, np.ndarray] = {}
    for stage in args.stages.split(","):
        seconds = args.draft_seconds if stage == "drafts" else args.upsample_seconds
        if stage == "upsample" and not top:  # drafts to upsample
            run_songs(engine, 1, "drafts", seconds, args.drafts, top, device)
        times: dict[int, float] = {}
        for n in (1, args.songs):
            if args.warmup_seconds > 0:
                run_songs(
                    engine, n, stage, args.warmup_seconds, args.drafts, {}, device
                ) if stage == "drafts" else run_songs(
                    engine,
                    n,
                    stage,
                    args.warmup_seconds,
                    args.drafts,
                    {
                        k: v[:, : max(1, v.shape[1] * int(args.warmup_seconds * 100) // int(seconds * 100))]
                        for k, v in top.items()
                    },
                    device,
                )
            reset_peak(device)
            wall, stats = run_songs(
                engine, n, stage, seconds, args.drafts, top if stage == "drafts" else dict(top), device
            )
            times[n] = wall
            rows = args.drafts if stage == "drafts" else 1
            emit(
                kind="throughput_run",
                model=args.model,
                stage=stage,
                songs=n,
                rows=n * rows,
                song_seconds=seconds,
                wall_seconds=round(wall, 2),
                decode_steps=stats["steps"],
                max_rows_busy=stats["max_rows_busy"],
                peak_gib=peak_gib(device),
                device=device_name(device),
            )
        ratio = times[args.songs] / times[1]
        res: dict[str, Any] = dict(
            kind="throughput",
            model=args.model,
            stage=stage,
            songs=args.songs,
            seconds_one=round(times[1], 2),
            seconds_all=round(times[args.songs], 2),
            time_ratio=round(ratio, 2),
            songs_per_time_gain=round(args.songs / ratio, 2),
            device=device_name(device),
        )
        emit(**res)
    return 0


if __name__ == "__main__":
    sys.exit(main())
