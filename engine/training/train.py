"""Training: the VQ-VAE and each prior level, from a folder of labelled audio.

Entry point (`jukebot train` in engine/commands/train.py calls it); the loop is engine.training.loop,
the data engine.training.clips, the files engine.training.files, the loss curve engine.training.report:

    train(kind, config_path, data_dir, out_dir, *, steps=None, batch_size=None, device=None,
          resume=True, level=None, max_minutes=None, ...) -> TrainSummary

- kind: ``vqvae``, ``prior`` (the top level: 2 in the released layout, ``levels - 1`` in any) or
  ``upsampler`` (the level below the top by default, ``level=0`` for the finest one).
- config_path: a model folder holding ``model.json`` or the ``model.json`` itself
  (`engine.model.config.ModelConfig`); ``demo`` for the shipped demo model's config.
- data_dir: audio files with labels (``labels.csv`` or ``labels.json``: file, artist, genre,
  lyrics, ...), read through `engine.training.dataset`; unreadable or unlabeled files are skipped with a
  message.
- out_dir: the model folder to write: ``model.json``, ``vqvae.pth.tar``,
  ``prior_level_{0,1,2}.pth.tar`` in OpenAI's original checkpoint format
  (``{'hps': ..., 'model': state_dict, 'step': n}``, original state-dict keys), so
  ``engine.model.jukebox.load_model(out_dir)`` and the original code read them; and per part
  ``train/<part>/`` with the training state (``state.pt``), the metrics (``log.jsonl``) and the
  loss curve (``loss.png``).

A prior needs the VQ-VAE's codes of the data: the VQ-VAE comes from ``out_dir/vqvae.pth.tar``
(or ``vqvae=`` another model folder or name); the codes are computed once and cached in
``out_dir/train/codes.pt``.

Resume is exact: the state file holds the model, optimizer, grad scaler, step, every RNG state
(torch CPU/CUDA and the batch sampler's generator) and the codebook EMA statistics; it is written
atomically every ``save_every`` steps, at the end, when the time budget (``max_minutes``) runs
out, and on SIGTERM/SIGINT. A run killed at any moment and started again with the same
arguments ends with the weights an uninterrupted run ends with.

Precision: bf16 autocast on CUDA, float32 on CPU. Fine-tuning: ``init_from`` takes a model
(``demo``, a released name or a folder) whose weights start the run.
"""

from __future__ import annotations

import dataclasses
import logging
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from torch import Tensor, nn

from engine.model.config import ModelConfig
from engine.model.prior import JukeboxPrior
from engine.model.vqvae import VQVAE
from engine.training.clips import AudioCrops, clip_codes_for, load_clips, prepare_codes
from engine.training.errors import TrainError
from engine.training.files import export_checkpoint, load_config, write_model_json
from engine.training.loop import LoopSpec, autocast, run_loop, setup_backend, training_device
from engine.training.losses import measure_bandwidth
from engine.training.report import save_loss_png
from engine.training.train_prior import PriorBatcher, prior_loss
from engine.training.train_vqvae import VQVAELossWeights, VQVAETrainState, vqvae_loss

log = logging.getLogger("jukebot.train")


Kind = Literal["vqvae", "prior", "upsampler"]
KINDS: tuple[str, ...] = ("vqvae", "prior", "upsampler")


@dataclass
class TrainSummary:
    kind: str
    part: str  # vqvae | prior_level_N
    out_dir: str
    checkpoint: str  # the original-format file
    step: int
    steps: int
    stopped: str  # done | time (budget spent) | stopped (signal or stop_after)
    loss: float | None  # mean loss of the last logged steps
    seconds: float
    steps_per_second: float
    resumed_from: int | None
    loss_png: str | None
    clips: int
    skipped: list[str] = field(default_factory=list)
    extra: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


# ---------------------------------------------------------------------------------------------
# Defaults per part


@dataclass(frozen=True)
class Defaults:
    batch_size: int
    lr: float
    warmup: int
    save_every: int
    sample_seconds: float = 0.0  # VQ-VAE training crops


def defaults_for(part: str, device: torch.device, *, fine_tune: bool = False) -> Defaults:
    """Sized for small models trained for minutes (the demo); fine-tuning starts 3x lower."""
    gpu = device.type == "cuda"
    scale = 1 / 3 if fine_tune else 1.0
    if part == "vqvae":
        return Defaults(
            batch_size=32 if gpu else 4, lr=5e-4 * scale, warmup=100, save_every=1000, sample_seconds=1.5
        )
    return Defaults(batch_size=32 if gpu else 4, lr=6e-4 * scale, warmup=200, save_every=1000)


def part_name(kind: str, level: int | None, levels: int = 3) -> tuple[str, int | None]:
    """The file a run trains (`vqvae`, `prior_level_N`) and its level, for a model of `levels`."""
    top = levels - 1
    if kind not in KINDS:
        raise TrainError(f"unknown training kind {kind!r}; choose one of {', '.join(KINDS)}")
    if kind == "vqvae":
        if level is not None:
            raise TrainError("the VQ-VAE trains every level at once; leave out --level")
        return "vqvae", None
    below = "|".join(str(lv) for lv in range(top))
    if kind == "prior":
        if level not in (None, top):
            raise TrainError(
                f"`prior` is the top level ({top}); use `upsampler --level {below}` for the others"
            )
        return f"prior_level_{top}", top
    level = top - 1 if level is None else level
    if not 0 <= level < top:
        names = [str(lv) for lv in range(top)]
        which = " or ".join([", ".join(names[:-1]), names[-1]] if len(names) > 1 else names)
        raise TrainError(f"an upsampler is level {which or '(none: this model has one level)'}, not {level}")
    return f"prior_level_{level}", level


# ---------------------------------------------------------------------------------------------
# Building what one run trains


def _seed_all(seed: int) -> torch.Generator:
    torch.manual_seed(seed)
    gen = torch.Generator()
    gen.manual_seed(seed + 1)
    return gen


def _init_weights(
    module: nn.Module, config: ModelConfig, part: str, init_from: str | Path | None
) -> str | None:
    """Load `part` of another model (fine-tuning). Returns where from."""
    if init_from is None:
        return None
    from engine.model.checkpoints import CheckpointError, load_into
    from engine.model.config import ConfigError
    from engine.model.jukebox import model_source

    try:
        src = model_source(str(init_from) if not isinstance(init_from, Path) else init_from)
        path = src.path(part)
        load_into(module, path, f"{part} of {init_from}")
    except (CheckpointError, ConfigError) as e:
        raise TrainError(
            f"cannot start from {init_from}: {e}\n  --init-from needs a model of the same shape (the same "
            "config, label lists of the same length included)"
        ) from e
    return str(path)


def _export_fn(module: nn.Module, config: ModelConfig, part: str) -> Callable[[int, Path], None]:
    def export(step: int, path: Path) -> None:
        export_checkpoint(module, config, part, step, path)

    return export


def train(
    kind: str,
    config_path: str | Path,
    data_dir: str | Path,
    out_dir: str | Path,
    *,
    steps: int | None = None,
    batch_size: int | None = None,
    device: str | torch.device | None = None,
    resume: bool = True,
    level: int | None = None,
    max_minutes: float | None = None,
    save_every: int | None = None,
    lr: float | None = None,
    seed: int = 0,
    init_from: str | Path | None = None,
    vqvae: str | Path | None = None,
    sample_seconds: float | None = None,
    label_dropout: float = 0.05,
    log_every: int = 50,
    val_every: int = 250,
    progress: bool = True,
    workers: int | None = None,
    stop_after: int | None = None,
    encode: bool = False,
    timing_jitter: float = 0.0,
) -> TrainSummary:
    """Train one part of a model; see the module docstring. Returns what the run did.
    `encode` (VQ-VAE only): when training finished, encode the data for the priors at once (saves
    reading the audio again)."""
    config = load_config(config_path)
    part, lv = part_name(kind, level, config.vqvae.levels)
    dev = training_device(device)
    setup_backend(dev)
    out = Path(out_dir)
    data = Path(data_dir)
    write_model_json(config, out)
    d = defaults_for(part, dev, fine_tune=init_from is not None)
    bs = batch_size or d.batch_size
    lr_ = lr or d.lr
    every = save_every or d.save_every
    if steps is not None and steps <= 0:
        raise TrainError("--steps must be positive")
    _check_options(
        part,
        sample_seconds,
        label_dropout,
        log_every,
        val_every,
        stop_after,
        timing_jitter,
        encode,
        top_part=f"prior_level_{config.vqvae.levels - 1}",
    )
    gen = _seed_all(seed)
    run_args: dict[str, Any] = {
        "batch_size": bs,
        "lr": lr_,
        "seed": seed,
        "steps": steps,
        "init_from": None if init_from is None else str(init_from),
    }
    skipped: list[str] = []
    extra: dict[str, Any] = {}
    if part == "vqvae":
        spec, n_clips, skipped, extra = _vqvae_spec(
            config,
            data,
            dev,
            bs,
            gen,
            init_from,
            sample_seconds or d.sample_seconds,
            progress,
            workers,
            run_args,
        )
    else:
        assert lv is not None
        spec, n_clips, skipped, extra = _prior_spec(
            config,
            lv,
            data,
            out,
            dev,
            bs,
            gen,
            init_from,
            vqvae,
            label_dropout,
            progress,
            run_args,
            timing_jitter,
            workers,
        )
    for msg in skipped:
        print(f"skipped {msg}", file=sys.stderr)
    res = run_loop(
        spec,
        out_dir=out,
        steps=steps,
        lr=lr_,
        warmup=d.warmup,
        save_every=every,
        device=dev,
        gen=gen,
        resume=resume,
        max_minutes=max_minutes,
        progress=progress,
        run_args=run_args,
        log_every=log_every,
        val_every=val_every if spec.val_fn is not None else 0,
        stop_after=stop_after,
    )
    png = save_loss_png(
        res["history"], out / "train" / part / "loss.png", f"{config.name}: {part}", val=res["val"]
    )
    if encode and part == "vqvae" and res["stopped"] == "done":
        prepare_codes(
            out,
            data,
            config,
            out / "vqvae.pth.tar",
            dev,
            progress=progress,
            clips=extra.pop("_clips"),
            skipped=skipped,
        )
    extra.pop("_clips", None)
    hist = res["history"]
    last = float(np.mean(hist[-min(len(hist), max(1, log_every)) :])) if hist else None
    return TrainSummary(
        kind=kind,
        part=part,
        out_dir=str(out),
        checkpoint=str(out / f"{part}.pth.tar"),
        step=res["step"],
        steps=res["steps"],
        stopped=res["stopped"],
        loss=last,
        seconds=round(res["seconds"], 2),
        steps_per_second=round(res["steps_per_second"], 3),
        resumed_from=res["resumed_from"],
        loss_png=str(png),
        clips=n_clips,
        skipped=skipped,
        extra=extra,
    )


def _check_options(
    part: str,
    sample_seconds: float | None,
    label_dropout: float,
    log_every: int,
    val_every: int,
    stop_after: int | None,
    timing_jitter: float,
    encode: bool,
    top_part: str = "prior_level_2",
) -> None:
    """Options that cannot work, said before any data is read."""
    if sample_seconds is not None and not sample_seconds > 0:
        raise TrainError("--sample-seconds must be positive")
    if not 0.0 <= label_dropout <= 1.0:
        raise TrainError("--label-dropout is a share of the training windows: between 0 and 1")
    if log_every < 1:
        raise TrainError("--log-every must be at least 1")
    if val_every < 0:
        raise TrainError("--val-every must be 0 (no held-out loss) or a number of steps")
    if stop_after is not None and stop_after < 1:
        raise TrainError("--stop-after must be at least 1")
    if not 0.0 <= timing_jitter <= 1.0:
        raise TrainError("--timing-jitter is a share of the training windows: between 0 and 1")
    if timing_jitter and part != top_part:
        raise TrainError(
            "--timing-jitter is for the top prior (`jukebot train prior`), whose labels say the song length"
        )
    if encode and part != "vqvae":
        raise TrainError("--encode is for `jukebot train vqvae` (a prior run encodes its data itself)")


def _vqvae_spec(
    config: ModelConfig,
    data: Path,
    dev: torch.device,
    bs: int,
    gen: torch.Generator,
    init_from: str | Path | None,
    sample_seconds: float,
    progress: bool,
    workers: int | None,
    run_args: dict[str, Any],
) -> tuple[LoopSpec, int, list[str], dict[str, Any]]:
    model = VQVAE(config.vqvae)
    _reset_vqvae_params(model)
    src = _init_weights(model, config, "vqvae", init_from)
    model.to(dev)
    all_clips, skipped = load_clips(data, config.sample_rate, progress=progress, workers=workers)
    clips = [c for c in all_clips if c.split != "test"] or all_clips
    top = config.vqvae.hop_lengths[-1]
    length = max(top, int(sample_seconds * config.sample_rate) // top * top)
    crops = AudioCrops(clips, length, dev)
    if crops.skipped_short:
        skipped.append(
            f"{crops.skipped_short} clips shorter than one {length / config.sample_rate:.2f} s crop"
        )
    # The loss scales come from the data (the original's calculate_bandwidth), over fixed crops.
    g = torch.Generator()
    g.manual_seed(1234)
    sample = crops.sample(min(256, max(16, bs * 4)), g).cpu().numpy()
    bandwidth = measure_bandwidth(list(sample), max_samples=sample.size)
    run_args["sample_length"] = length
    weights = VQVAELossWeights()
    state = VQVAETrainState()
    if src is not None:  # fine-tuning: start the EMA from the given codebooks
        from engine.training.train_vqvae import CodebookEMA

        state.ema = [
            CodebookEMA(b.k.detach().clone(), torch.ones(b.l_bins, device=dev), True)
            for b in (model.bottleneck[i] for i in range(model.levels))
        ]
    live: dict[str, Any] = {"bandwidth": bandwidth}

    def step_fn(step: int) -> tuple[Tensor, dict[str, Tensor]]:
        x = crops.sample(bs, gen)
        return vqvae_loss(model, x, state, live["bandwidth"], weights)

    def get_extra() -> dict[str, Any]:
        return {"vq": state.state_dict(), "bandwidth": live["bandwidth"]}

    def set_extra(d: dict[str, Any]) -> None:
        st = VQVAETrainState.from_state(d["vq"], dev)
        state.ema = st.ema
        live["bandwidth"] = d["bandwidth"]

    spec = LoopSpec(
        "vqvae",
        model,
        [p for p in model.parameters() if p.requires_grad],
        step_fn,
        _export_fn(model, config, "vqvae"),
        get_extra,
        set_extra,
    )
    return (
        spec,
        len(clips),
        skipped,
        {"bandwidth": bandwidth, "sample_length": length, "init_from": src, "_clips": all_clips},
    )


def _reset_vqvae_params(model: VQVAE) -> None:
    """PyTorch's default conv init, as the original uses; the codebooks start at zero and are set
    from the first batch."""
    for b in range(model.levels):
        model.bottleneck[b].k.zero_()


def _prior_spec(
    config: ModelConfig,
    level: int,
    data: Path,
    out: Path,
    dev: torch.device,
    bs: int,
    gen: torch.Generator,
    init_from: str | Path | None,
    vqvae: str | Path | None,
    label_dropout: float,
    progress: bool,
    run_args: dict[str, Any],
    timing_jitter: float = 0.0,
    workers: int | None = None,
) -> tuple[LoopSpec, int, list[str], dict[str, Any]]:
    part = f"prior_level_{level}"
    vq_file = _vqvae_file(out, vqvae)
    entries = prepare_codes(out, data, config, vq_file, dev, progress=progress, workers=workers)
    train_e = [e for e in entries["clips"] if e.get("split") != "test"] or entries["clips"]
    test_e = [e for e in entries["clips"] if e.get("split") == "test"]
    prior = JukeboxPrior(config.priors[level], config.vqvae)
    src = _init_weights(prior, config, part, init_from)
    prior.to(dev)
    train_clips, note = clip_codes_for(config, level, train_e)
    if note:
        print(f"[{part}] {note}", file=sys.stderr)
    batcher = PriorBatcher(train_clips, prior, label_dropout=label_dropout, timing_jitter=timing_jitter)
    if timing_jitter:
        run_args["timing_jitter"] = timing_jitter
    skipped = list(entries.get("skipped", []))
    short = len(train_clips) - len(batcher.clips)
    if short:
        skipped.append(f"{short} clips shorter than one level-{level} window")
    val_fn = None
    if test_e:
        test_clips, _ = clip_codes_for(config, level, test_e)
        try:
            vb = PriorBatcher(test_clips, prior)
        except ValueError:
            vb = None
        if vb is not None:
            vg = torch.Generator()
            vg.manual_seed(4321)
            val_batches = [vb.make(vb.sample(bs, vg), vg, dev) for _ in range(4)]

            @torch.no_grad()
            def val_fn() -> float:
                with autocast(dev):
                    return float(np.mean([float(prior_loss(prior, b)[0]) for b in val_batches]))

    def step_fn(step: int) -> tuple[Tensor, dict[str, Tensor]]:
        batch = batcher.make(batcher.sample(bs, gen), gen, dev)
        return prior_loss(prior, batch)

    spec = LoopSpec(
        part,
        prior,
        [p for p in prior.parameters() if p.requires_grad],
        step_fn,
        _export_fn(prior, config, part),
        val_fn=val_fn,
    )
    run_args["vqvae"] = entries["vqvae"]
    return spec, len(batcher.clips), skipped, {"init_from": src, "windows": batcher.windows(), "note": note}


def _vqvae_file(out: Path, vqvae: str | Path | None) -> Path:
    if vqvae is None:
        f = out / "vqvae.pth.tar"
        if not f.exists():
            raise TrainError(
                f"a prior needs the VQ-VAE: train it first (jukebot train vqvae --out {out}) "
                "or name one with --vqvae MODEL_OR_FOLDER"
            )
        return f
    p = Path(vqvae)
    if p.is_file():
        return p
    from engine.model.jukebox import model_source

    return model_source(str(vqvae)).path("vqvae")
