"""The training loop shared by every part: steps, learning rate, time budget, stop, resume."""

from __future__ import annotations

import contextlib
import json
import logging
import math
import os
import signal
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from engine.model.manifests import record_model_file
from engine.training.errors import TrainError
from engine.training.files import atomic_save, rng_state, set_rng_state
from engine.training.report import ProgressReporter

log = logging.getLogger("jukebot.train")

STATE_VERSION = 1  # of the training state files (`state.pt`) the loop writes and resumes from


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


def training_device(device: str | torch.device | None) -> torch.device:
    if device is None or str(device) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    d = torch.device(device)
    if d.type == "cuda" and not torch.cuda.is_available():
        raise TrainError("--device cuda was asked for, but PyTorch sees no CUDA GPU here")
    return d


def setup_backend(device: torch.device) -> None:
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True  # training shapes never change


def autocast(device: torch.device) -> contextlib.AbstractContextManager[Any]:
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
        print(f"[{spec.part}] starting over (--fresh); the old state is replaced", file=sys.stderr)
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
        record_model_file(out_dir, f"{spec.part}.pth.tar")  # loading the folder checks it against this

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
            with autocast(device):
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
            step_times.append(time.monotonic() - ts)
            out_of_time = False
            if deadline is not None:
                # Stop when one more step plus a save would pass the deadline.
                typical = float(np.median(step_times[-20:]))
                out_of_time = time.monotonic() + 2 * typical + 5.0 > deadline
            if stop_after is not None and step >= stop_after and not last_of_run:
                flag.stop = True  # as on SIGTERM: save, stop; a later run resumes to `steps`
            # Every stop logs its last steps too (a run of short calls keeps its whole loss curve).
            logs_now = last_of_run or flag.stop or out_of_time or step % save_every == 0
            if len(pending) >= log_every or logs_now:
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
