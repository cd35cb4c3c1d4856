"""Training: the VQ-VAE and each prior level, from a folder of labelled audio.

Entry point (`jukebot train` in engine/cli.py calls it):

    train(kind, config_path, data_dir, out_dir, *, steps=None, batch_size=None, device=None,
          resume=True, level=None, max_minutes=None, ...) -> TrainSummary

- kind: ``vqvae``, ``prior`` (the top level, 2) or ``upsampler`` (level 1 by default, ``level=0``
  for the finest one).
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

import contextlib
import dataclasses
import hashlib
import json
import logging
import math
import os
import signal
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from torch import Tensor, nn

from engine.model.checkpoints import read_checkpoint, state_dict_of
from engine.model.config import ModelConfig, resolve_model_dir
from engine.model.hparams import config_dict, part_hparams
from engine.model.labels import LabelSet, labels_for_prior
from engine.model.prior import JukeboxPrior
from engine.model.vqvae import VQVAE
from engine.training.losses import measure_bandwidth
from engine.training.train_prior import ClipCodes, PriorBatcher, prior_loss
from engine.training.train_vqvae import VQVAELossWeights, VQVAETrainState, vqvae_loss

log = logging.getLogger("jukebot.train")

Kind = Literal["vqvae", "prior", "upsampler"]
KINDS: tuple[str, ...] = ("vqvae", "prior", "upsampler")
STATE_VERSION = 1


class TrainError(ValueError):
    """A training run that cannot start, said in words."""


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


def part_name(kind: str, level: int | None) -> tuple[str, int | None]:
    if kind not in KINDS:
        raise TrainError(f"unknown training kind {kind!r}; choose one of {', '.join(KINDS)}")
    if kind == "vqvae":
        if level is not None:
            raise TrainError("the VQ-VAE trains every level at once; leave out --level")
        return "vqvae", None
    if kind == "prior":
        if level not in (None, 2):
            raise TrainError("`prior` is the top level (2); use `upsampler --level 0|1` for the others")
        return "prior_level_2", 2
    level = 1 if level is None else level
    if level not in (0, 1):
        raise TrainError(f"an upsampler is level 0 or 1, not {level}")
    return f"prior_level_{level}", level


# ---------------------------------------------------------------------------------------------
# Files


def load_config(config_path: str | Path) -> ModelConfig:
    p = resolve_model_dir(config_path)
    if p.is_dir():
        p = p / "model.json"
    if not p.is_file():
        raise TrainError(f"no model config at {p}: give a model.json or a folder that holds one")
    try:
        return ModelConfig.load(p)
    except (ValueError, TypeError, KeyError) as e:
        raise TrainError(f"{p} is not a usable model config: {e}") from e


def atomic_save(obj: Any, path: Path) -> None:
    """torch.save to a temporary file, fsync, then rename: a kill leaves the old file or the new."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as f:
        torch.save(obj, f)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def export_checkpoint(
    module: nn.Module,
    config: ModelConfig,
    part: str,
    step: int,
    path: Path,
    *,
    dtype: torch.dtype | None = None,
) -> None:
    """The original file format: {'hps': original hparams, 'model': state_dict, 'step': n}, plus our
    config as `jukebot_config` (the original reads only 'model'). `dtype=torch.float16` stores
    floating tensors in half precision (smaller files; loaders cast)."""
    sd = {}
    for k, v in module.state_dict().items():
        t = v.detach().to("cpu")
        if dtype is not None and t.is_floating_point():
            t = t.to(dtype)
        sd[k] = t.clone()
    atomic_save(
        {
            "hps": part_hparams(config, part),
            "model": sd,
            "step": int(step),
            "jukebot_config": config_dict(config),
        },
        path,
    )


def write_model_json(config: ModelConfig, out: Path) -> None:
    """out/model.json; an existing one must describe the same model."""
    path = out / "model.json"
    if path.exists():
        existing = ModelConfig.load(path)
        if existing.to_dict() != config.to_dict():
            raise TrainError(
                f"{out} already holds a different model (its model.json differs from the config given); "
                "use another --out folder, or the same config"
            )
        return
    out.mkdir(parents=True, exist_ok=True)
    config.save(path)


# ---------------------------------------------------------------------------------------------
# RNG state


def rng_state(gen: torch.Generator, device: torch.device) -> dict[str, Any]:
    return {
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state(device) if device.type == "cuda" else None,
        "sampler": gen.get_state(),
    }


def set_rng_state(d: dict[str, Any], gen: torch.Generator, device: torch.device) -> None:
    torch.set_rng_state(d["torch"])
    if device.type == "cuda" and d.get("cuda") is not None:
        torch.cuda.set_rng_state(d["cuda"], device)
    gen.set_state(d["sampler"])


# ---------------------------------------------------------------------------------------------
# Loss curve


def save_loss_png(
    history: list[float], path: Path, title: str, *, val: list[tuple[int, float]] | None = None
) -> Path:
    """Training loss per step (light) and its running mean (dark); matplotlib, else Pillow."""
    path.parent.mkdir(parents=True, exist_ok=True)
    y = np.asarray(history, dtype=np.float64)
    steps = np.arange(1, len(y) + 1)
    win = max(1, len(y) // 50)
    smooth = np.convolve(y, np.ones(win) / win, mode="valid") if len(y) >= win else y
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        fig, ax = plt.subplots(figsize=(7, 3.5), dpi=100)
        ax.plot(steps, y, color="#9ecae1", lw=0.6, label="loss")
        ax.plot(steps[win - 1 :], smooth, color="#08519c", lw=1.5, label=f"mean of {win}")
        if val:
            ax.plot([s for s, _ in val], [v for _, v in val], "o-", color="#e6550d", ms=3, label="held out")
        ax.set_xlabel("step")
        ax.set_ylabel("loss")
        ax.set_title(title)
        if len(y) and np.all(y > 0) and y.max() / max(y.min(), 1e-12) > 20:
            ax.set_yscale("log")
        ax.grid(alpha=0.3)
        ax.legend(loc="upper right", fontsize=8)
        fig.tight_layout()
        tmp = path.with_name(path.name + ".tmp.png")
        fig.savefig(tmp)
        plt.close(fig)
        os.replace(tmp, path)
        return path
    except ImportError:
        pass
    from PIL import Image, ImageDraw

    w, h, m = 700, 350, 40
    img = Image.new("RGB", (w, h), "white")
    d = ImageDraw.Draw(img)
    if len(y) > 1:
        lo, hi = float(y.min()), float(y.max()) or 1.0
        span = (hi - lo) or 1.0

        def pt(i: float, v: float) -> tuple[float, float]:
            return m + (w - 2 * m) * i / (len(y) - 1), h - m - (h - 2 * m) * (v - lo) / span

        d.line([pt(i, v) for i, v in enumerate(y)], fill=(158, 202, 225), width=1)
        d.line([pt(i + win - 1, v) for i, v in enumerate(smooth)], fill=(8, 81, 156), width=2)
        d.text((m, 10), f"{title}  (last {y[-1]:.4g}, min {lo:.4g})", fill="black")
    d.rectangle([m, m, w - m, h - m], outline="black")
    tmp = path.with_name(path.name + ".tmp.png")
    img.save(tmp, format="PNG")
    os.replace(tmp, path)
    return path


# ---------------------------------------------------------------------------------------------
# Progress


class ProgressReporter:
    """A tqdm bar on a terminal; plain lines every `every_s` seconds otherwise (logs on a GPU box)."""

    def __init__(self, part: str, start: int, total: int, enabled: bool, every_s: float = 15.0) -> None:
        self.part, self.total, self.enabled, self.every_s = part, total, enabled, every_s
        self.bar: Any = None
        self.t0 = time.monotonic()
        self.start = start
        self.last_print = 0.0
        if enabled and sys.stderr.isatty():
            from tqdm import tqdm

            self.bar = tqdm(
                total=total, initial=start, desc=part, unit="step", dynamic_ncols=True, file=sys.stderr
            )

    def update(self, step: int, loss: float, extra: str = "") -> None:
        if not self.enabled:
            return
        if self.bar is not None:
            self.bar.n = step
            self.bar.set_postfix_str(f"loss {loss:.4f} {extra}".strip(), refresh=False)
            self.bar.refresh()
            return
        now = time.monotonic()
        if now - self.last_print < self.every_s and step < self.total:
            return
        self.last_print = now
        rate = (step - self.start) / max(now - self.t0, 1e-9)
        eta = (self.total - step) / rate if rate > 0 else float("nan")
        print(
            f"[{self.part}] step {step}/{self.total} loss {loss:.4f} {rate:.2f} steps/s "
            f"ETA {eta / 60:.1f} min {extra}".rstrip(),
            file=sys.stderr,
            flush=True,
        )

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


# ---------------------------------------------------------------------------------------------
# Stopping


class StopFlag:
    """SIGTERM/SIGINT ask the loop to save and stop after the current step."""

    def __init__(self) -> None:
        self.stop = False
        self._old: dict[int, Any] = {}

    def __enter__(self) -> StopFlag:
        if hasattr(signal, "SIGTERM"):
            with contextlib.suppress(ValueError):  # not the main thread: no handlers
                for sig in (signal.SIGTERM, signal.SIGINT):
                    self._old[sig] = signal.signal(sig, self._handle)
        return self

    def _handle(self, signum: int, frame: Any) -> None:
        if self.stop:  # a second signal: give up at once
            raise KeyboardInterrupt
        self.stop = True
        log.warning("signal %d: saving and stopping after this step", signum)

    def __exit__(self, *exc: Any) -> None:
        for sig, old in self._old.items():
            signal.signal(sig, old)


# ---------------------------------------------------------------------------------------------
# The loop


def lr_at(step: int, steps: int, lr: float, warmup: int, final_frac: float = 0.1) -> float:
    """Linear warmup, then cosine decay to `final_frac * lr` at `steps`."""
    if step < warmup:
        return lr * (step + 1) / warmup
    p = min(1.0, (step - warmup) / max(1, steps - warmup))
    return lr * (final_frac + (1 - final_frac) * 0.5 * (1 + math.cos(math.pi * p)))


@dataclass
class LoopSpec:
    part: str
    module: nn.Module
    params: list[nn.Parameter]
    step_fn: Callable[[int], tuple[Tensor, dict[str, Tensor]]]  # step -> (loss, metrics)
    export: Callable[[int, Path], None]
    get_extra: Callable[[], dict[str, Any] | None] = lambda: None  # more training state (EMA sums)
    set_extra: Callable[[dict[str, Any]], None] = lambda d: None
    val_fn: Callable[[], float] | None = None


def _device(device: str | torch.device | None) -> torch.device:
    if device is None or str(device) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    d = torch.device(device)
    if d.type == "cuda" and not torch.cuda.is_available():
        raise TrainError("--device cuda was asked for, but PyTorch sees no CUDA GPU here")
    return d


def _setup_backend(device: torch.device) -> None:
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True  # training shapes never change


def _autocast(device: torch.device) -> contextlib.AbstractContextManager[Any]:
    if device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()


def _test_hang_after(step: int) -> None:
    """Test hook: JUKEBOT_TRAIN_HANG_AFTER=N makes the run stop moving after saving step N, so a
    test can SIGKILL it at a known point (the resume test). Does nothing otherwise."""
    want = os.environ.get("JUKEBOT_TRAIN_HANG_AFTER")
    if want is not None and int(want) == step:
        print(f"HANGING AFTER STEP {step}", file=sys.stderr, flush=True)
        while True:
            time.sleep(1)


CALIBRATION_STEPS = 30  # steps timed before an open-ended run (no --steps) fixes its length


def run_loop(
    spec: LoopSpec,
    *,
    out_dir: Path,
    steps: int | None,
    lr: float,
    warmup: int,
    save_every: int,
    device: torch.device,
    gen: torch.Generator,
    resume: bool,
    max_minutes: float | None,
    progress: bool,
    run_args: dict[str, Any],
    log_every: int = 50,
    val_every: int = 0,
    grad_clip: float = 1.0,
    stop_after: int | None = None,
) -> dict[str, Any]:
    """Train `spec.module` to `steps` (None: as many as fit in `max_minutes`, decided after timing
    the first steps and then fixed, so the learning-rate schedule ends on time and a resumed run
    follows the same schedule)."""
    state_dir = out_dir / "train" / spec.part
    state_path = state_dir / "state.pt"
    log_path = state_dir / "log.jsonl"
    opt = torch.optim.AdamW(spec.params, lr=lr, betas=(0.9, 0.999), weight_decay=0.0)
    # bf16 needs no loss scaling; the scaler is kept (disabled) so fp16 runs and the state format agree.
    scaler = torch.amp.GradScaler(device.type, enabled=False)
    step, resumed_from = 0, None
    history: list[float] = []
    val_hist: list[tuple[int, float]] = []
    if resume and state_path.exists():
        st = torch.load(state_path, map_location="cpu", weights_only=False)
        if st.get("version") != STATE_VERSION or st.get("part") != spec.part:
            raise TrainError(
                f"{state_path} is not a training state of {spec.part}; move it away to start over"
            )
        saved_steps = st["args"].get("steps")
        if steps is None or (run_args.get("steps") is None and saved_steps is not None):
            steps = saved_steps
        run_args = {**run_args, "steps": steps}
        changed = {k: (st["args"].get(k), v) for k, v in run_args.items() if st["args"].get(k) != v}
        if changed:
            log.warning(
                "resuming with changed settings %s: the run will not match an uninterrupted one", changed
            )
            print(f"[{spec.part}] note: resuming with changed settings {changed}", file=sys.stderr)
        spec.module.load_state_dict(st["model"])
        opt.load_state_dict(st["opt"])
        scaler.load_state_dict(st["scaler"])
        set_rng_state(st["rng"], gen, device)
        step, history = int(st["step"]), list(st["history"])
        val_hist = [(int(a), float(b)) for a, b in st.get("val", [])]
        resumed_from = step
        if st.get("extra") is not None:
            spec.set_extra(st["extra"])
        if log_path.exists():  # drop lines written after the state we resume from
            keep = [
                ln
                for ln in log_path.read_text(encoding="utf-8").splitlines()
                if ln.strip() and json.loads(ln).get("step", 0) <= step
            ]
            log_path.write_text("".join(ln + "\n" for ln in keep), encoding="utf-8")
        print(f"[{spec.part}] resuming from step {step}", file=sys.stderr, flush=True)
    elif state_path.exists() and not resume:
        print(f"[{spec.part}] starting over (--no-resume); the old state is replaced", file=sys.stderr)
        if log_path.exists():
            log_path.unlink()
    t0 = time.monotonic()
    deadline = None if max_minutes is None else t0 + max_minutes * 60.0
    if steps is None and deadline is None:
        raise TrainError("give the number of steps (--steps) or a time budget (--max-minutes)")
    run_args = {**run_args, "steps": steps}

    def save(at: int) -> None:
        atomic_save(
            {
                "version": STATE_VERSION,
                "part": spec.part,
                "step": at,
                "args": run_args,
                "model": spec.module.state_dict(),
                "opt": opt.state_dict(),
                "scaler": scaler.state_dict(),
                "rng": rng_state(gen, device),
                "history": history,
                "val": val_hist,
                "extra": spec.get_extra(),
            },
            state_path,
        )
        spec.export(at, out_dir / f"{spec.part}.pth.tar")

    start_step = step
    reporter: ProgressReporter | None = None
    pending: list[Tensor] = []
    metric_acc: dict[str, list[Tensor]] = {}
    stopped = "done"
    step_times: list[float] = []
    spec.module.train()
    with StopFlag() as flag:
        while steps is None or step < steps:
            if steps is None and step - start_step == CALIBRATION_STEPS:
                assert deadline is not None
                if device.type == "cuda":
                    torch.cuda.synchronize(device)
                per_step = (
                    float(np.median(step_times[5:])) if len(step_times) > 5 else float(np.median(step_times))
                )
                left = deadline - time.monotonic() - 10.0 - 3 * per_step
                steps = step + max(1, int(left / per_step))
                run_args = {**run_args, "steps": steps}
                print(
                    f"[{spec.part}] {1 / per_step:.1f} steps/s: training to step {steps}",
                    file=sys.stderr,
                    flush=True,
                )
            total = steps if steps is not None else start_step + 10**9
            if reporter is None and (steps is not None):
                reporter = ProgressReporter(spec.part, step, steps, progress)
            ts = time.monotonic()
            for g in opt.param_groups:
                g["lr"] = lr_at(step, total, lr, warmup)
            with _autocast(device):
                loss, metrics = spec.step_fn(step)
            opt.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()
            scaler.unscale_(opt)
            gnorm = torch.nn.utils.clip_grad_norm_(spec.params, grad_clip)
            scaler.step(opt)
            scaler.update()
            step += 1
            pending.append(loss.detach().float())
            for k, v in {**metrics, "grad_norm": gnorm}.items():
                metric_acc.setdefault(k, []).append(v.detach().float())
            last_of_run = steps is not None and step >= steps
            if len(pending) >= log_every or last_of_run or flag.stop or step % save_every == 0:
                vals = torch.stack(pending).cpu().tolist()  # one host sync per log interval
                history.extend(float(v) for v in vals)
                pending = []
                rec: dict[str, Any] = {
                    "step": step,
                    "loss": float(np.mean(vals)),
                    "lr": lr_at(step - 1, total, lr, warmup),
                    **{k: float(torch.stack(v).mean()) for k, v in metric_acc.items()},
                }
                metric_acc = {}
                if spec.val_fn is not None and val_every and (step % val_every == 0 or last_of_run):
                    spec.module.eval()
                    rec["val_loss"] = spec.val_fn()
                    spec.module.train()
                    if not val_hist or rec["val_loss"] < min(v for _, v in val_hist):
                        # The weights with the lowest held-out loss so far (a small corpus is learnt by
                        # heart long before the schedule ends): train/<part>/best.pth.tar.
                        spec.export(step, state_dir / "best.pth.tar")
                        rec["best"] = True
                    val_hist.append((step, rec["val_loss"]))
                state_dir.mkdir(parents=True, exist_ok=True)
                with open(log_path, "a", encoding="utf-8") as f:
                    f.write(json.dumps(rec) + "\n")
                if reporter is not None:
                    reporter.update(step, rec["loss"], f"lr {rec['lr']:.2e}")
            step_times.append(time.monotonic() - ts)
            out_of_time = False
            if deadline is not None:
                # Stop when one more step plus a save would pass the deadline.
                typical = float(np.median(step_times[-20:]))
                out_of_time = time.monotonic() + 2 * typical + 5.0 > deadline
            if stop_after is not None and step >= stop_after and not last_of_run:
                flag.stop = True  # as on SIGTERM: save, stop; a later run resumes to `steps`
            if step % save_every == 0 or last_of_run or flag.stop or out_of_time:
                if pending:
                    history.extend(float(v) for v in torch.stack(pending).cpu().tolist())
                    pending = []
                save(step)
                _test_hang_after(step)
            if flag.stop:
                stopped = "stopped"
                break
            if out_of_time and not last_of_run:
                stopped = "time"
                break
    if reporter is not None:
        reporter.close()
    if step == start_step and not state_path.exists():
        save(step)
    seconds = time.monotonic() - t0
    return {
        "step": step,
        "steps": steps if steps is not None else step,
        "stopped": stopped,
        "resumed_from": resumed_from,
        "history": history,
        "val": val_hist,
        "seconds": seconds,
        "steps_per_second": (step - start_step) / max(seconds, 1e-9),
    }


# ---------------------------------------------------------------------------------------------
# Data


@dataclass
class AudioClip:
    """One labelled clip of the training data, mono float32 at the model's sample rate."""

    name: str
    audio: np.ndarray
    artist: str
    genre: str
    lyrics: str = ""
    offset_seconds: float = 0.0  # where the clip starts in its piece
    total_seconds: float = 0.0  # the whole piece (0: the clip is the piece)
    split: str = "train"


def load_clips(
    data_dir: str | Path, sample_rate: int, *, progress: bool = True, workers: int | None = None
) -> tuple[list[AudioClip], list[str]]:
    """Every usable clip of `data_dir` (both splits) via `engine.training.dataset`, and a message per
    skipped file (unreadable, truncated, unlabeled, too short, silent)."""
    from engine.training.dataset import AudioDataset, DatasetError

    folder = Path(data_dir)
    if not folder.is_dir():
        raise TrainError(f"no data folder at {folder}")
    threads = workers or min(16, os.cpu_count() or 1)
    try:
        # Both splits; names are resolved to ids later, against the model's lists (engine.model.labels).
        ds = AudioDataset(
            folder, sample_rate=sample_rate, sample_length=sample_rate, split=None, threads=threads
        )
    except DatasetError as e:
        raise TrainError(str(e)) from e
    skipped = {(s.file, s.reason): None for s in ds.skipped}
    clips = [
        AudioClip(
            name=f.file,
            audio=f.audio.astype(np.float32) / 32768.0,
            artist=f.artist,
            genre=f.genre,
            lyrics=f.lyrics,
            offset_seconds=f.offset / sample_rate,
            total_seconds=f.total_length / sample_rate,
            split=f.split,
        )
        for f in ds.files
    ]
    if progress:
        secs = sum(len(c.audio) for c in clips) / sample_rate
        print(
            f"[data] {len(clips)} clips ({secs / 3600:.2f} h) from {folder}, {len(skipped)} files skipped",
            file=sys.stderr,
            flush=True,
        )
    return clips, [f"{f}: {r}" for f, r in skipped]


def resolve_ids(
    labels: LabelSet, clip: AudioClip, unknown: dict[str, set[str]]
) -> tuple[int, tuple[int, ...]]:
    """Artist and genre ids of a clip; names the model does not know become `unknown` (id 0),
    collected in `unknown` for one message at the end."""
    from engine.model.labels import UnknownLabel

    try:
        artist = labels.artist_id(clip.artist)
    except UnknownLabel:
        unknown.setdefault("artist", set()).add(clip.artist)
        artist = 0
    try:
        genres = tuple(labels.genre_word_ids(clip.genre))
    except UnknownLabel:
        unknown.setdefault("genre", set()).add(clip.genre)
        genres = (0,)
    return artist, genres


class AudioCrops:
    """All training audio in one tensor on the device; random crops of `length` samples."""

    def __init__(self, clips: list[AudioClip], length: int, device: torch.device) -> None:
        usable = [c for c in clips if len(c.audio) >= length]
        if not usable:
            raise TrainError(f"every clip is shorter than one training crop ({length} samples)")
        self.length = length
        self.skipped_short = len(clips) - len(usable)
        lengths = np.array([len(c.audio) for c in usable], dtype=np.int64)
        self.offsets = np.concatenate([[0], np.cumsum(lengths)[:-1]])
        self.starts = lengths - length + 1
        self.cum = np.cumsum(self.starts)
        flat = np.concatenate([c.audio.astype(np.float32) for c in usable])
        self.audio = torch.from_numpy(flat).to(device)  # 3 h at 22.05 kHz is under 1 GB
        self.device = device

    def sample(self, batch_size: int, gen: torch.Generator) -> Tensor:
        picks = torch.randint(0, int(self.cum[-1]), (batch_size,), generator=gen).numpy()
        idx = np.searchsorted(self.cum, picks, side="right")
        within = picks - np.where(idx > 0, self.cum[np.maximum(idx - 1, 0)], 0)
        begin = torch.from_numpy(self.offsets[idx] + within).to(self.device)
        ar = torch.arange(self.length, device=self.device)
        return self.audio[begin[:, None] + ar[None]].float()


# ---------------------------------------------------------------------------------------------
# Codes of the data (for the priors)


def _file_digest(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(1 << 22):
            h.update(block)
    return h.hexdigest()[:16]


@torch.no_grad()
def encode_clips(
    vqvae: VQVAE,
    clips: list[AudioClip],
    device: torch.device,
    *,
    chunk_seconds: float = 60.0,
    progress: bool = True,
) -> list[list[np.ndarray]]:
    """Codes of every level for every clip (each clip cut to a whole number of top-level tokens)."""
    vqvae = vqvae.to(device).eval()
    top = vqvae.hop_lengths[-1]
    chunk = max(top, int(chunk_seconds * vqvae.sample_rate) // top * top)
    out: list[list[np.ndarray]] = []
    t0 = time.monotonic()
    for n, clip in enumerate(clips):
        usable = len(clip.audio) // top * top
        levels: list[list[np.ndarray]] = [[] for _ in range(vqvae.levels)]
        for s in range(0, usable, chunk):
            x = (
                torch.from_numpy(np.ascontiguousarray(clip.audio[s : min(usable, s + chunk)]))
                .float()
                .to(device)
            )
            zs = vqvae.encode(x[None])  # float32, as the sampler encodes prompts
            for lv, z in enumerate(zs):
                levels[lv].append(z[0].to("cpu", torch.int32).numpy())
        out.append([np.concatenate(lv).astype(np.int16) if lv else np.zeros(0, np.int16) for lv in levels])
        if progress and (n + 1) % 200 == 0:
            print(
                f"[encode] {n + 1}/{len(clips)} clips, {time.monotonic() - t0:.0f} s",
                file=sys.stderr,
                flush=True,
            )
    return out


def prepare_codes(
    out_dir: Path,
    data_dir: Path,
    config: ModelConfig,
    vqvae_file: Path,
    device: torch.device,
    *,
    progress: bool = True,
    clips: list[AudioClip] | None = None,
    skipped: list[str] | None = None,
    workers: int | None = None,
) -> dict[str, Any]:
    """The cached codes of the data (`out_dir/train/codes.pt`), made when missing or stale."""
    cache = out_dir / "train" / "codes.pt"
    vq_digest = _file_digest(vqvae_file)
    if cache.exists():
        c = torch.load(cache, map_location="cpu", weights_only=False)
        if c.get("vqvae") == vq_digest and c.get("data_dir") == str(data_dir.resolve()):
            return c
        print("[encode] the VQ-VAE or the data changed: encoding again", file=sys.stderr)
    if clips is None:
        clips, skipped = load_clips(data_dir, config.sample_rate, progress=progress, workers=workers)
    vqvae = VQVAE(config.vqvae)
    vqvae.load_state_dict(state_dict_of(read_checkpoint(vqvae_file)), strict=True)
    t0 = time.monotonic()
    codes = encode_clips(vqvae, clips, device, progress=progress)
    print(
        f"[encode] {len(clips)} clips encoded in {time.monotonic() - t0:.1f} s", file=sys.stderr, flush=True
    )
    entry = {
        "vqvae": vq_digest,
        "data_dir": str(data_dir.resolve()),
        "skipped": list(skipped or []),
        "clips": [
            {
                "name": c.name,
                "codes": z,
                "artist": c.artist,
                "genre": c.genre,
                "lyrics": c.lyrics,
                "offset_seconds": c.offset_seconds,
                "total_seconds": c.total_seconds,
                "split": c.split,
            }
            for c, z in zip(clips, codes, strict=True)
        ],
    }
    atomic_save(entry, cache)
    return entry


def clip_codes_for(
    config: ModelConfig, level: int, entries: list[dict[str, Any]]
) -> tuple[list[ClipCodes], str | None]:
    """ClipCodes with this level's label ids; plus a note about names the model does not know."""
    labels = labels_for_prior(config, level)
    p = config.priors[level]
    sr = config.sample_rate
    unknown: dict[str, set[str]] = {}
    out = []
    for e in entries:
        clip = AudioClip(e["name"], np.zeros(0, np.float32), e["artist"], e["genre"], e.get("lyrics", ""))
        artist, genres = resolve_ids(labels, clip, unknown)
        lyric_tokens: tuple[int, ...] = ()
        if p.n_tokens and e.get("lyrics"):
            cleaned, _ = labels.clean_lyrics(e["lyrics"])
            lyric_tokens = tuple(labels.tokenise(cleaned))
        offset = round(float(e.get("offset_seconds") or 0.0) * sr)
        clip_len = len(e["codes"][0]) * config.raw_to_tokens(0)
        total = max(round(float(e.get("total_seconds") or 0.0) * sr), offset + clip_len)
        out.append(ClipCodes(e["name"], list(e["codes"]), artist, genres, lyric_tokens, offset, total))
    note = None
    if unknown:
        parts = [f"{k}s {', '.join(sorted(v)[:8])}" for k, v in unknown.items()]
        note = (
            "these labels are not in the model's lists and train as 'unknown': "
            + "; ".join(parts)
            + " (add them to the model's custom labels in model.json to learn them)"
        )
    return out, note


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
    part, lv = part_name(kind, level)
    config = load_config(config_path)
    dev = _device(device)
    _setup_backend(dev)
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
        part, sample_seconds, label_dropout, log_every, val_every, stop_after, timing_jitter, encode
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
    if timing_jitter and part != "prior_level_2":
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
                with _autocast(dev):
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
