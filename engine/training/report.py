"""What a training run reports: the loss curve picture and the progress line."""

from __future__ import annotations

import logging
import os
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

log = logging.getLogger("jukebot.train")


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


# Numbers first, the bar takes what is left, the loss last: in a narrow terminal tqdm shrinks the bar
# and then trims the end of the line, so the step counts are never cut.
TRAIN_BAR_FORMAT = "{desc} {n_fmt}/{total_fmt} {percentage:3.0f}% ETA {remaining} {bar} {postfix}"


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
                total=total,
                initial=start,
                desc=part,
                unit="step",
                dynamic_ncols=True,
                file=sys.stderr,
                bar_format=TRAIN_BAR_FORMAT,
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
