"""The progress bars of `jukebot generate` fit narrow terminals without cutting a number."""

from __future__ import annotations

import io

import pytest
from rich.console import Console
from rich.progress import Progress

from engine.commands.progress_line import clock, fit_line, fitting_column

STAGE = "continuing (level 2)"  # the longest stage name


def _render(width: int, done: int, total: int, rate: float | None, eta: float | None) -> list[str]:
    out = io.StringIO()
    console = Console(file=out, width=width, color_system=None, force_terminal=True, legacy_windows=False)
    progress = Progress(fitting_column(lambda: console.width), console=console, expand=False)
    progress.add_task(STAGE, total=total, completed=done, rate=rate, eta=eta)
    console.print(progress.make_tasks_table(progress.tasks))
    return out.getvalue().rstrip("\n").split("\n")


@pytest.mark.parametrize("width", [120, 80, 60, 40])
def test_a_line_fits_and_keeps_every_number_whole(width: int) -> None:
    lines = _render(width, 861, 8192, 1234.5, 3723.0)
    assert len(lines) == 1, lines
    line = lines[0]
    assert len(line) <= width - 1
    assert "861/8192" in line and "…" not in line
    if width >= 80:
        assert STAGE in line and "11%" in line and "ETA 1:02:03" in line and "1234.5 tok/s" in line
        assert "━" in line
    if width == 60:
        assert STAGE in line and "ETA 1:02:03" in line  # the rate goes first, then the percentage


def test_parts_are_dropped_whole_in_priority_order() -> None:
    head, bar, tail = fit_line("drafts (level 2)", 5, 10, width=200, rate=3.0, eta_s=61)
    assert (head, bar, tail) == ("drafts (level 2) ", 40, " 5/10  50% 3.0 tok/s ETA 1:01")
    _, bar, tail = fit_line("drafts (level 2)", 5, 10, width=50, rate=3.0, eta_s=61)
    assert tail == " 5/10  50% ETA 1:01" and bar >= 8
    _, bar, tail = fit_line("drafts (level 2)", 5, 10, width=32, rate=3.0, eta_s=61)
    assert bar == 0 and tail == "5/10 ETA 1:01"
    head, bar, tail = fit_line("drafts (level 2)", 861, 8192, width=16, rate=3.0, eta_s=61)
    assert (head, bar, tail) == ("draft… ", 0, "861/8192")
    assert clock(None) == "-:--" and clock(59.6) == "1:00" and clock(3600) == "1:00:00"


@pytest.mark.parametrize("width", [80, 60])
def test_the_training_bar_keeps_its_step_counts_whole(width: int) -> None:
    from tqdm import tqdm

    from engine.training.report import TRAIN_BAR_FORMAT

    out = io.StringIO()
    bar = tqdm(total=8192, initial=861, desc="vqvae", ncols=width, file=out, bar_format=TRAIN_BAR_FORMAT)
    bar.set_postfix_str("loss 0.1234 lr 3.00e-04")
    bar.refresh()
    bar.close()
    line = out.getvalue().split("\r")[-1].strip("\n")
    assert len(line) <= width and "vqvae 861/8192  11% ETA" in line
