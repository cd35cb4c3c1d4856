"""A whole song end to end: 3 level-2 drafts, then the upsample of one through levels 1 and 0.

    python bench/song_e2e.py [--model 1b_lyrics] [--seconds 20] [--budget 420] [--ref-json FILE]
                             [--interleave-levels]

The real pipeline (`engine.sampling.pipeline.make_drafts` and `upsample`, the worker's code path) on
released-size priors with random weights in bf16, one level in GPU memory at a time
(`swap_levels`, as on a 16 GB card): each level's weights are made when the pipeline asks for
them and dropped when it moves on. Prints JSON lines: `level` (wall seconds, tokens, windows,
tokens/s, peak GPU memory of the stage) for level 2, 1 and 0 and the level-0 decode to audio,
then `song` (total wall time, peak memory of the whole pipeline).

Level 0 is 76% of all decode steps. If the run would outlast `--budget` seconds, level 0 stops
after the window that crosses the budget and the rest is EXTRAPOLATED from the measured tokens
per second (the `song` line then says `extrapolated: true` and how many tokens were measured).

`--interleave-levels`: levels 1 and 0 interleaved (`upsample(interleave_levels=True)`, the same
codes): both upsamplers are resident (level 2 is dropped first), and the stage is `levels 1+0
interleaved` (wall time of the whole upsample, weights made inside it; past `--budget` it stops and
extrapolates from the tokens of both levels). Time it beside a run without the flag.

`--ref-json` (the JSON lines of bench/step_speed.py runs on the same GPU) or `--ref MS_TOP
PRIME_TOP MS_UP PRIME_UP`: the reference's ms per step and prime seconds give an ESTIMATE of the
original code's time for this song (steps x step time + windows x prime time; running it would
take hours), printed as `reference_estimate_seconds`.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
import types
from pathlib import Path
from typing import Any

os.environ.setdefault("TQDM_DISABLE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np
import torch

from bench.common import SONG, config_of, device_name, emit, random_prior, randomize, sync
from engine.model.jukebox import JukeboxModel
from engine.sampling.pipeline import Engine, SongRequest, make_drafts, upsample
from engine.sampling.sample import Hooks, Progress, SamplingSettings, SamplingStopped


class Stages:
    """Wall time and peak GPU memory per stage (a stage starts when its weights are made)."""

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self.current: str | None = None
        self.t0 = 0.0
        self.done: dict[str, dict[str, Any]] = {}

    def start(self, name: str) -> None:
        self.stop()
        self.current, self.t0 = name, time.perf_counter()
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)

    def stop(self) -> None:
        if self.current is None:
            return
        sync(self.device)
        rec = {"seconds": round(time.perf_counter() - self.t0, 2)}
        if self.device.type == "cuda":
            rec["peak_gib"] = round(torch.cuda.max_memory_allocated(self.device) / 2**30, 3)
            rec["allocated_at_end_gib"] = round(torch.cuda.memory_allocated(self.device) / 2**30, 3)
        self.done[self.current] = rec
        self.current = None


def random_engine(
    model: str, device: torch.device, small: bool, stages: Stages, interleave: bool = False
) -> Engine:
    config = config_of(model, small)
    m = JukeboxModel(config, levels=[])
    m.prior_dtype = torch.bfloat16
    randomize(m.vqvae, 0)
    m.vqvae.to(device).eval().requires_grad_(False)

    def load_level(self: JukeboxModel, level: int) -> Any:  # random weights instead of a file
        if self.priors[level] is not None:
            return self.prior(level)
        if not (interleave and level < 2):  # interleaved, one stage times the whole upsample
            stages.start(f"level {level}")
        prior = random_prior(config, level, device, torch.bfloat16)
        self._priors[str(level)] = prior
        return prior

    m.load_level = types.MethodType(load_level, m)  # type: ignore[method-assign]
    return Engine(m, device=device, swap_levels=not interleave, name=model)


def reference_estimate(
    path: str | None,
    given: list[float] | None,
    tokens: dict[int, int],
    windows: dict[int, int],
    rows: dict[int, int],
) -> dict[str, Any] | None:
    ref: dict[int, dict[str, Any]] = {}
    if given:
        ms2, prime2, ms0, prime0 = given
        ref = {
            2: {"ms_per_step": ms2, "prefill_seconds": prime2, "batch": 3},
            0: {"ms_per_step": ms0, "prefill_seconds": prime0, "batch": 3},
        }
    elif path and Path(path).exists():
        for line in Path(path).read_text().splitlines():
            try:
                d = json.loads(line)
            except ValueError:
                continue
            if d.get("kind") == "reference":
                ref[int(d["level"])] = d
    if 2 not in ref or 0 not in ref:
        return None
    per_level = {}
    for lv in (2, 1, 0):
        r = ref[2] if lv == 2 else ref[0]  # both upsamplers have the same shape
        per_level[lv] = tokens[lv] * r["ms_per_step"] / 1000 + windows[lv] * r["prefill_seconds"]
    return {
        "reference_estimate_seconds": round(sum(per_level.values())),
        "reference_estimate_per_level": {str(k): round(v) for k, v in per_level.items()},
        "reference_batch": ref[2]["batch"],
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="1b_lyrics")
    ap.add_argument("--seconds", type=float, default=20.0)
    ap.add_argument("--drafts", type=int, default=3)
    ap.add_argument(
        "--budget", type=float, default=420.0, help="seconds; level 0 stops after this and extrapolates"
    )
    ap.add_argument("--ref-json", default=None)
    ap.add_argument(
        "--ref",
        type=float,
        nargs=4,
        metavar=("MS_TOP", "PRIME_TOP", "MS_UP", "PRIME_UP"),
        help="the reference's figures from bench/step_speed.py on this GPU (instead of --ref-json)",
    )
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--small", action="store_true", help="CPU-test sizes (checks this script on a CPU)")
    ap.add_argument(
        "--interleave-levels", action="store_true", help="levels 1 and 0 interleaved (both resident)"
    )
    args = ap.parse_args()
    device = torch.device(args.device)
    stages = Stages(device)
    t_all = time.perf_counter()
    interleave = bool(args.interleave_levels)
    engine = random_engine(args.model, device, args.small, stages, interleave)
    song = SONG
    request = SongRequest(
        artist=song[0],
        genre=song[1],
        lyrics=song[2],
        seconds=args.seconds,
        seed=1,
        settings=SamplingSettings(),
    )
    counts: dict[int, dict[str, int]] = {lv: {"tokens": 0, "windows": 0} for lv in range(3)}
    level_now = {"level": 2}
    upsampled = {"done": 0, "total": 0}  # tokens of levels 1 and 0 (interleaved runs)

    def on_window(p: Progress, _codes: list[np.ndarray]) -> None:
        level_now["level"] = p.level
        counts[p.level]["windows"] += 1
        counts[p.level]["tokens"] = p.level_done
        if p.level < 2:
            upsampled.update(done=p.done, total=p.total)

    def should_stop() -> bool:
        return (interleave or level_now["level"] == 0) and time.perf_counter() - t_all > args.budget

    drafts = make_drafts(engine, request, args.drafts, hooks=Hooks(on_window=on_window), decode=False)
    stages.start("decode level 2 previews")
    engine.decode(drafts.codes, 2)
    stages.stop()
    level_plan = engine.plan(
        (1, 0),
        1,
        drafts.sample_length,
        __import__("engine.sampling.noise").sampling.noise.NoiseKey(1),
        request.settings,
    )
    totals = {lv: level_plan.totals[lv] for lv in (1, 0)}
    windows_all = {lv: len(level_plan.windows(lv)) for lv in (1, 0)}
    extrapolated = False
    up_stage = "levels 1+0 interleaved"
    if interleave:
        engine.model.unload_level(2)
        stages.start(up_stage)
    try:
        final = upsample(
            engine,
            request,
            drafts.codes[0],
            draft_index=0,
            hooks=Hooks(on_window=on_window, should_stop=should_stop),
            decode=False,
            interleave_levels=interleave,
        )
        codes0 = final.codes[0]
    except SamplingStopped as stop:
        extrapolated = True
        codes0 = stop.codes[0]
    stages.stop()
    measured0 = counts[0]["tokens"]
    if interleave:
        up = stages.done[up_stage]
        if extrapolated and upsampled["done"]:
            up["measured_seconds"] = up["seconds"]
            up["measured_tokens"] = upsampled["done"]
            up["seconds"] = round(up["seconds"] * upsampled["total"] / upsampled["done"], 1)
    else:
        level0 = stages.done.get("level 0", {"seconds": 0.0})
        if extrapolated and measured0:
            level0["measured_seconds"] = level0["seconds"]
            level0["measured_tokens"] = measured0
            level0["seconds"] = round(level0["seconds"] * totals[0] / measured0, 1)
    # the final audio: decode all of level 0 (random codes where level 0 stopped early)
    full0 = np.asarray(codes0)
    if full0.shape[1] < totals[0]:
        rest = np.random.default_rng(0).integers(
            0, engine.config.vqvae.l_bins, (1, totals[0] - full0.shape[1])
        )
        full0 = np.concatenate([full0, rest], axis=1)
    stages.start("decode level 0 (final audio)")
    engine.decode(full0, 0, chunk_tokens=1 << 20)
    stages.stop()
    tokens = {2: int(drafts.codes.shape[1]), 1: totals[1], 0: totals[0]}
    windows = {2: counts[2]["windows"], 1: windows_all[1], 0: windows_all[0]}
    rows = {2: args.drafts, 1: 1, 0: 1}
    for name, rec in stages.done.items():
        extra: dict[str, Any] = {}
        if name == up_stage:
            up_tokens = tokens[1] + tokens[0]
            extra = {"tokens": up_tokens, "windows": windows[1] + windows[0], "rows": 1}
            extra["tokens_per_second"] = round(up_tokens / max(rec["seconds"], 1e-9), 1)
        elif name.startswith("level "):
            lv = int(name.split()[1])
            extra = {
                "tokens": tokens[lv],
                "windows": windows[lv],
                "rows": rows[lv],
                "tokens_per_second": round(tokens[lv] * rows[lv] / max(rec["seconds"], 1e-9), 1),
            }
        emit(kind="stage", model=args.model, stage=name, **rec, **extra, device=device_name(device))
    total = sum(rec["seconds"] for rec in stages.done.values())
    out: dict[str, Any] = {
        "kind": "song",
        "model": args.model,
        "seconds_of_audio": round(drafts.sample_length / engine.sample_rate, 2),
        "drafts": args.drafts,
        "total_seconds": round(total, 1),
        "wall_seconds_measured": round(time.perf_counter() - t_all, 1),
        "extrapolated": extrapolated,
        "level0_tokens_measured": measured0 if extrapolated else tokens[0],
        "peak_gib": max((r.get("peak_gib", 0.0) for r in stages.done.values()), default=0.0),
        "device": device_name(device),
        "dtype": "bfloat16",
        "swap_levels": not interleave,
        "interleave_levels": interleave,
    }
    est = reference_estimate(args.ref_json, args.ref, tokens, windows, rows)
    if est:
        out.update(est)
        out["ratio"] = round(est["reference_estimate_seconds"] / total, 1)
    emit(**out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
