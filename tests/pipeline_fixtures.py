"""Tiny random-weight Jukebox pieces for the engine-pipeline tests, and a child process that runs a
checkpointed job and can SIGKILL itself at a chosen point (tests/test_resume.py).

Run as a script: `python tests/pipeline_fixtures.py run-job --db URL --storage DIR ...`.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # when run as a script
    sys.path.insert(0, str(ROOT))

import torch  # noqa: E402

from engine.model.config import ModelConfig, tiny_config  # noqa: E402
from engine.model.labels import Labeller  # noqa: E402
from engine.model.prior import JukeboxPrior  # noqa: E402
from engine.sampling.noise import NoiseKey  # noqa: E402
from engine.sampling.sample import Hooks, Plan, Progress, SamplingSettings  # noqa: E402
from engine.sampling.windows import Window, round_sample_length, tokens_per_level  # noqa: E402

CPU = torch.device("cpu")
LYRICS = "Sing a song of sixpence, a pocket full of rye"


def tiny_model_config() -> ModelConfig:
    return tiny_config("tiny-test", n_ctx=64, width=32, depth=2, heads=2, blocks=8)


def tiny_priors(config: ModelConfig, seed: int = 0) -> dict[int, JukeboxPrior]:
    """Random-weight priors; the same seed builds the same weights in any process."""
    torch.manual_seed(seed)
    return {lv: JukeboxPrior(config.priors[lv], config.vqvae).eval() for lv in range(3)}


class TinyLabels:
    """Label vectors of every window, like the pipeline builds them."""

    def __init__(self, config: ModelConfig, sample_length: int, n_rows: int) -> None:
        self.config, self.sample_length, self.n_rows = config, sample_length, n_rows
        self.labellers = {lv: Labeller.for_prior(config, lv) for lv in range(3)}
        self.songs = {lv: lab.encode("bach", "chorale", LYRICS) for lv, lab in self.labellers.items()}

    def __call__(self, level: int, w: Window) -> torch.Tensor:
        offset = w.label_offset(self.config.raw_to_tokens(level))
        y = self.labellers[level].window_y(self.songs[level], self.sample_length, offset)
        return torch.tensor([y] * self.n_rows, dtype=torch.long)


def tiny_plan(config: ModelConfig, seconds: float, n_rows: int, seed: int) -> tuple[Plan, int]:
    hops = config.vqvae.hop_lengths
    sample_length = round_sample_length(seconds, config.sample_rate, hops[-1])
    totals = tuple(tokens_per_level(sample_length, hops))
    plan = Plan(
        levels=(2, 1, 0),
        totals=totals,
        n_ctx=tuple(p.n_ctx for p in config.priors),
        downsamples=(hops[1] // hops[0], hops[2] // hops[1], 0),
        n_samples=n_rows,
        key=NoiseKey(seed),
        settings=SamplingSettings(temperatures=(1.0, 1.0, 1.0)),
    )
    return plan, sample_length


def write_tiny_model(folder: Path, config: ModelConfig | None = None, seed: int = 0) -> Path:
    """A custom model folder: `model.json` plus the original-format checkpoint files
    (`{'model': state_dict}` in `vqvae.pth.tar` and `prior_level_{0,1,2}.pth.tar`), random weights."""
    from engine.model.jukebox import JukeboxModel

    config = config or tiny_model_config()
    folder.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(seed)
    model = JukeboxModel(config)
    with torch.no_grad():
        for level in range(3):
            model.vqvae.bottleneck[
                level
            ].k.normal_()  # a codebook of distinct vectors, so encoding spreads over codes
    config.save(folder / "model.json")
    torch.save({"model": model.vqvae.state_dict()}, folder / "vqvae.pth.tar")
    for level, prior in enumerate(model.priors):
        assert prior is not None
        torch.save({"model": prior.state_dict()}, folder / f"prior_level_{level}.pth.tar")
    return folder


def empty_codes(n_rows: int) -> list[np.ndarray]:
    return [np.zeros((n_rows, 0), dtype=np.int64) for _ in range(3)]


# --- the child process ----------------------------------------------------------------------------


def _run_job(args: argparse.Namespace) -> int:
    from db.database import Database
    from db.queue import claim, complete
    from db.storage import Storage
    from engine.sampling.resume import JobCheckpointer, resumable_run

    torch.set_num_threads(1)  # as in the test process: same numerics, and fast for tiny models
    db = Database(args.db)
    storage = Storage(args.storage)
    lease = None
    deadline = time.monotonic() + 30
    while lease is None:  # the killed attempt's lease must expire first
        lease = claim(db, ["draft"], args.owner, lease_seconds=args.lease_seconds)
        if lease is None:
            if time.monotonic() > deadline:
                print("no job to claim", file=sys.stderr)
                return 3
            time.sleep(0.2)
    config = tiny_model_config()
    priors = tiny_priors(config)
    plan, sample_length = tiny_plan(config, args.seconds, args.rows, args.seed)
    labels = TinyLabels(config, sample_length, args.rows)
    saved_at_level: dict[int, int] = {}

    def on_window(p: Progress, codes: list[np.ndarray]) -> None:
        saved_at_level[p.level] = saved_at_level.get(p.level, 0) + 1

    def on_tokens(p: Progress) -> None:
        # Die mid-window, after at least two checkpoints at the chosen level.
        if args.kill_level is not None and p.level == args.kill_level and saved_at_level.get(p.level, 0) >= 2:
            print(json.dumps({"killed_at": [p.level, p.window, p.level_done]}), flush=True)
            os.kill(os.getpid(), signal.SIGKILL)

    ckpt = JobCheckpointer(db, storage, lease)
    codes = resumable_run(
        plan,
        priors.__getitem__,
        labels,
        empty_codes(args.rows),
        ckpt,
        {"request": "tiny"},
        device=CPU,
        dtype=torch.float32,
        hooks=Hooks(on_window=on_window, on_tokens=on_tokens, tokens_every=4),
        interleave=args.interleave,
    )
    np.savez(args.out, *codes)
    complete(db, lease, {"ok": True})
    ckpt.cleanup()
    return 0


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser()
    sub = ap.add_subparsers(dest="cmd", required=True)
    run = sub.add_parser("run-job")
    run.add_argument("--db", required=True)
    run.add_argument("--storage", required=True)
    run.add_argument("--owner", required=True)
    run.add_argument("--out", required=True)
    run.add_argument("--seconds", type=float, default=0.06)
    run.add_argument("--rows", type=int, default=2)
    run.add_argument("--seed", type=int, default=5)
    run.add_argument("--lease-seconds", type=float, default=1.0)
    run.add_argument("--kill-level", type=int, default=None)
    run.add_argument(
        "--interleave", action="store_true", help="levels interleaved (tests/test_interleave.py)"
    )
    args = ap.parse_args(argv)
    if args.cmd == "run-job":
        return _run_job(args)
    return 2


if __name__ == "__main__":
    sys.exit(main())
