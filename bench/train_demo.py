"""Train the demo model (the one shipped in engine/model/data/demo) on the labelled corpus.

    python bench/train_demo.py all --data CORPUS --out RUN [--vqvae-minutes 3.5] [--prior-minutes 4.5]
    python bench/train_demo.py config --data CORPUS --out RUN      # only write RUN/model.json
    python bench/train_demo.py ship --run RUN [--dest engine/model/data/demo]   # fp16 copy for the repository
    python bench/train_demo.py vqvae --data CORPUS --out RUN --steps 20000 --minutes 8   # VQ-VAE only
    python bench/train_demo.py vqvae-eval --run RUN --data CORPUS    # held-out reconstruction

`vqvae` trains only the VQ-VAE toward a fixed total of steps (the learning-rate schedule is the same
however many calls it takes), stops at the time budget with its whole training state saved in
RUN/train/vqvae/state.pt, and the same command on the same RUN carries on from there; each call ends
with the held-out spectral convergence (RUN/train/vqvae/heldout.json). `--vqvae-width` and
`--vqvae-depth` size the VQ-VAE of a new config (defaults: the shipped demo's 32 and 4).

`all` writes the config from the corpus's labels, trains the VQ-VAE, encodes the corpus once, then
trains the three priors at the same time (three processes share the GPU: each is small and alone
would leave it mostly idle). Every stage has a time budget, so the whole run fits a 10-minute
slot on the lent GPU machine; each stage can be re-run and resumes from its saved state.
`bench/train_demo.sh` is the command the GPU machine runs.

The demo config is sized for a CPU (see docs/DEMO.md): 22.05 kHz; VQ-VAE hops 16/64/256 samples
per token (2048 of the original's level-0 code rate becomes 1378 tokens/s here), 512 codes per
level; priors of a few layers with block attention over 1024-token windows.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from engine.model.config import (  # noqa: E402
    ConditionerConfig,
    CustomLabels,
    ModelConfig,
    PriorConfig,
    VQVAEConfig,
)


def corpus_labels(data: Path) -> tuple[list[str], list[str]]:
    """Sorted artist and genre names of a corpus folder (labels.csv or labels.json)."""
    rows: list[dict[str, str]]
    if (data / "labels.csv").exists():
        with open(data / "labels.csv", newline="", encoding="utf-8") as f:
            rows = list(csv.DictReader(f))
    else:
        rows = json.loads((data / "labels.json").read_text(encoding="utf-8"))
    artists = sorted({r["artist"].strip().lower() for r in rows if r.get("artist", "").strip()})
    genres = sorted({r["genre"].strip().lower() for r in rows if r.get("genre", "").strip()})
    return [a for a in artists if a != "unknown"], [g for g in genres if g != "unknown"]


VQVAE_WIDTH, VQVAE_DEPTH = 32, 4  # the shipped demo's VQ-VAE (residual channels, blocks per stage)


def demo_config(
    artists: list[str],
    genres: list[str],
    name: str = "demo",
    *,
    vqvae_width: int = VQVAE_WIDTH,
    vqvae_depth: int = VQVAE_DEPTH,
) -> ModelConfig:
    """The demo model: Jukebox's structure, sized to sample a 10 s song on two CPU cores."""
    labels = CustomLabels(artists=("unknown", *artists), genres=("unknown", *genres))
    vq = VQVAEConfig(
        sample_rate=22050,
        downs_t=(4, 2, 2),
        strides_t=(2, 2, 2),
        emb_width=64,
        l_bins=512,
        width=vqvae_width,
        depth=vqvae_depth,
        multipliers=(2, 1, 1),
        dilation_growth_rate=3,
    )
    common = dict(
        n_ctx=1024,
        blocks=16,
        attn_order=2,
        l_bins=vq.l_bins,
        init_scale=0.7,
        labels_version="custom",
        y_bins=(len(labels.genres), len(labels.artists)),
        t_bins=64,
        max_bow_genre_size=1,
        n_vocab=len(labels.vocab) + 1,
    )
    cond = ConditionerConfig(width=128, depth=4, dilation_growth_rate=3, dilation_cycle=4)
    level0 = PriorConfig(level=0, width=128, depth=3, heads=2, conditioner=cond, **common)  # type: ignore[arg-type]
    level1 = PriorConfig(level=1, width=256, depth=3, heads=2, conditioner=cond, **common)  # type: ignore[arg-type]
    # min_duration 30 s: a shorter song is sampled as the start of a 30 s piece (the pipeline does
    # this), so its timing labels look like the starts of the corpus pieces it learnt from.
    top = PriorConfig(level=2, width=384, depth=6, heads=4, min_duration=30.0, max_duration=600.0, **common)  # type: ignore[arg-type]
    return ModelConfig(name, vq, (level0, level1, top), custom_labels=labels)


def write_config(
    data: Path, out: Path, vqvae_width: int | None = None, vqvae_depth: int | None = None
) -> Path:
    """out/model.json for the corpus in `data`; the VQ-VAE's size (None: the shipped demo's) counts
    only for a new run."""
    if (out / "model.json").exists():  # a run being continued keeps its config
        vq = ModelConfig.load(out / "model.json").vqvae
        asked = {"width": (vqvae_width, vq.width), "depth": (vqvae_depth, vq.depth)}
        if any(want is not None and want != have for want, have in asked.values()):
            print(
                f"note: {out}/model.json keeps its VQ-VAE of width {vq.width}, depth {vq.depth} "
                f"(a size given now is for a new run)",
                file=sys.stderr,
            )
        return out / "model.json"
    vqvae_width, vqvae_depth = vqvae_width or VQVAE_WIDTH, vqvae_depth or VQVAE_DEPTH
    artists, genres = corpus_labels(data)
    cfg = demo_config(artists, genres, vqvae_width=vqvae_width, vqvae_depth=vqvae_depth)
    out.mkdir(parents=True, exist_ok=True)
    path = out / "model.json"
    if not path.exists():
        cfg.save(path)
    print(f"config: {len(artists)} artists {artists}, {len(genres)} genres {genres}", file=sys.stderr)
    print(f"config: VQ-VAE width {vqvae_width}, depth {vqvae_depth}", file=sys.stderr)
    return path


def _train_cmd(kind: str, run: Path, data: Path, minutes: float, steps: int | None, *extra: str) -> list[str]:
    budget = ["--steps", str(steps)] if steps else ["--max-minutes", f"{minutes:.2f}"]
    return [
        sys.executable,
        "-m",
        "engine.cli",
        "train",
        kind,
        "--config",
        str(run / "model.json"),
        "--data",
        str(data),
        "--out",
        str(run),
        *budget,
        "--json",
        *extra,
    ]


def run_all(a: argparse.Namespace) -> int:
    data, run = Path(a.data), Path(a.out)
    t0 = time.monotonic()
    write_config(data, run, a.vqvae_width, a.vqvae_depth)
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    if not a.skip_vqvae:
        cmd = _train_cmd(
            "vqvae", run, data, a.vqvae_minutes, a.steps, "--batch-size", str(a.vqvae_batch), "--encode"
        )
        print("+", " ".join(cmd), file=sys.stderr, flush=True)
        subprocess.run(cmd, check=True, env=env, cwd=ROOT)
    # The codes must exist before the three prior processes start (they would race to make them).
    import torch

    from engine.training.clips import prepare_codes
    from engine.training.files import load_config

    dev = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    prepare_codes(run, data, load_config(run), run / "vqvae.pth.tar", dev)  # cached by `vqvae --encode`
    left = a.prior_minutes
    if a.total_minutes:
        # What is left of the whole budget, less the priors' start-up and the packing after them.
        left = min(left, a.total_minutes - (time.monotonic() - t0) / 60 - 0.6)
        print(f"priors get {left:.2f} min", file=sys.stderr, flush=True)
    procs = []
    wanted = {int(x) for x in a.priors.split(",")}
    for level, kind, extra in (
        (2, "prior", []),
        (1, "upsampler", ["--level", "1"]),
        (0, "upsampler", ["--level", "0"]),
    ):
        if level not in wanted:
            continue
        if a.continue_run and (run / f"prior_level_{level}.pth.tar").exists():
            extra = [*extra, "--init-from", str(run)]  # more training from the weights of an earlier slot
        extra = [*extra, "--val-every", str(a.val_every)]
        if level == 2 and a.timing_jitter:
            extra = [*extra, "--timing-jitter", str(a.timing_jitter)]
        cmd = _train_cmd(
            kind, run, data, left, a.steps, "--batch-size", str(a.prior_batch), *extra, *a.prior_args
        )
        print("+", " ".join(cmd), file=sys.stderr, flush=True)
        procs.append(subprocess.Popen(cmd, env=env, cwd=ROOT))
    codes = [p.wait() for p in procs]
    print(f"all stages finished in {time.monotonic() - t0:.0f} s, exit codes {codes}", file=sys.stderr)
    return max(codes)


def run_vqvae(a: argparse.Namespace) -> int:
    """The VQ-VAE alone, toward `--steps` in all, for at most `--minutes` in this call; then the
    held-out figures. Run again on the same --out to carry on (the state is in train/vqvae/)."""
    data, run = Path(a.data), Path(a.out)
    write_config(data, run, a.vqvae_width, a.vqvae_depth)
    cmd = _train_cmd("vqvae", run, data, 0.0, a.steps, "--batch-size", str(a.batch))
    cmd += ["--max-minutes", f"{a.minutes:.2f}"]  # with --steps: stop (resumably) at the deadline
    if a.stop_after:
        cmd += ["--stop-after", str(a.stop_after)]
    if a.sample_seconds:
        cmd += ["--sample-seconds", str(a.sample_seconds)]
    print("+", " ".join(cmd), file=sys.stderr, flush=True)
    status = subprocess.run(cmd, env={**os.environ, "PYTHONUNBUFFERED": "1"}, cwd=ROOT).returncode
    if (run / "vqvae.pth.tar").exists():
        evaluate_vqvae(run, data)
    return status


def evaluate_vqvae(run: Path, data: Path) -> dict[str, object]:
    """Held-out reconstruction of run's VQ-VAE, printed and kept in run/train/vqvae/heldout.json."""
    import torch

    from engine.training.vqvae_heldout import heldout_report

    dev = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    report = heldout_report(run, data, dev)
    path = run / "train" / "vqvae" / "heldout.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(report, indent=1) + "\n", encoding="utf-8")
    print(f"held-out VQ-VAE: {json.dumps(report)}", file=sys.stderr, flush=True)
    return report


def ship(a: argparse.Namespace) -> int:
    """Copy a trained run into the repository's demo folder: model.json + fp16 original-format files."""
    import torch

    from engine.model.checkpoints import read_checkpoint

    run, dest = Path(a.run), Path(a.dest)
    dest.mkdir(parents=True, exist_ok=True)
    cfg = ModelConfig.load(run / "model.json")
    cfg.save(dest / "model.json")
    total = 0
    for part in ("vqvae", "prior_level_0", "prior_level_1", "prior_level_2"):
        ck = read_checkpoint(run / f"{part}.pth.tar")
        sd = {k: (v.half() if v.is_floating_point() else v) for k, v in ck["model"].items()}
        out = {
            "hps": ck.get("hps"),
            "model": sd,
            "step": ck.get("step"),
            "jukebot_config": ck.get("jukebot_config"),
        }
        tmp = dest / f"{part}.pth.tar.tmp"
        torch.save(out, tmp)
        tmp.replace(dest / f"{part}.pth.tar")
        size = (dest / f"{part}.pth.tar").stat().st_size
        total += size
        print(f"{part}: step {ck.get('step')}, {size / 2**20:.2f} MiB", file=sys.stderr)
    print(f"total {total / 2**20:.2f} MiB in {dest}", file=sys.stderr)
    return 0


def main() -> int:
    ap = argparse.ArgumentParser()
    sub = ap.add_subparsers(dest="cmd", required=True)

    def sized(p: argparse.ArgumentParser) -> argparse.ArgumentParser:
        p.add_argument("--data", required=True)
        p.add_argument("--out", required=True)
        p.add_argument("--vqvae-width", type=int, help=f"VQ-VAE channels of a new run ({VQVAE_WIDTH})")
        p.add_argument("--vqvae-depth", type=int, help=f"VQ-VAE blocks a stage, new run ({VQVAE_DEPTH})")
        return p

    sized(sub.add_parser("config"))
    v = sized(sub.add_parser("vqvae"))
    v.add_argument("--steps", type=int, required=True, help="the whole run's steps, over every call")
    v.add_argument("--minutes", type=float, required=True, help="this call's budget")
    v.add_argument("--batch", type=int, default=32)
    v.add_argument("--stop-after", type=int, help="save and stop at this step (tests: a call's end)")
    v.add_argument("--sample-seconds", type=float, help="training crop length (default 1.5 s)")
    e = sub.add_parser("vqvae-eval")
    e.add_argument("--run", required=True)
    e.add_argument("--data", required=True)
    r = sized(sub.add_parser("all"))
    r.add_argument("--vqvae-minutes", type=float, default=3.5)
    r.add_argument("--prior-minutes", type=float, default=4.5)
    r.add_argument("--total-minutes", type=float, help="the whole run's budget: the priors get what is left")
    r.add_argument("--vqvae-batch", type=int, default=32)
    r.add_argument("--prior-batch", type=int, default=32)
    r.add_argument("--skip-vqvae", action="store_true")
    r.add_argument(
        "--steps", type=int, help="a fixed number of steps per stage instead of time budgets (tests)"
    )
    r.add_argument("--priors", default="2,1,0", help="levels to train, e.g. 2,0")
    r.add_argument("--val-every", type=int, default=100, help="steps between held-out losses of the priors")
    r.add_argument(
        "--timing-jitter",
        type=float,
        default=0.5,
        help="share of top-prior windows labelled with a random song length",
    )
    r.add_argument(
        "--continue-run",
        action="store_true",
        help="start each prior from its weights in --out when they exist (a later slot)",
    )
    r.add_argument("--prior-args", nargs=argparse.REMAINDER, default=[])
    s = sub.add_parser("ship")
    s.add_argument("--run", required=True)
    s.add_argument("--dest", default=str(ROOT / "engine" / "data" / "demo"))
    a = ap.parse_args()
    if a.cmd == "config":
        print(write_config(Path(a.data), Path(a.out), a.vqvae_width, a.vqvae_depth))
        return 0
    if a.cmd == "all":
        return run_all(a)
    if a.cmd == "vqvae":
        return run_vqvae(a)
    if a.cmd == "vqvae-eval":
        evaluate_vqvae(Path(a.run), Path(a.data))
        return 0
    return ship(a)


if __name__ == "__main__":
    raise SystemExit(main())
