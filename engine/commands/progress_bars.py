"""rich progress bars for `jukebot generate`: one per level, with tokens/s and an ETA."""

from __future__ import annotations

import sys
from typing import Any


class ProgressBars:
    """rich progress bars, one per level: tokens, tokens/s, ETA."""

    def __init__(self, enabled: bool) -> None:
        self.enabled = enabled
        self.tasks: dict[str, Any] = {}
        self.progress: Any = None
        if enabled:
            from rich.console import Console
            from rich.progress import Progress

            from engine.commands.progress_line import fitting_column

            console = Console(stderr=True)
            # One column that fits the line to the terminal's width (parts dropped, numbers whole).
            self.progress = Progress(
                fitting_column(lambda: console.width), console=console, transient=False, expand=False
            )

    def __enter__(self) -> ProgressBars:
        if self.progress is not None:
            self.progress.start()
        return self

    def __exit__(self, *exc: object) -> None:
        if self.progress is not None:
            self.progress.stop()

    def update(self, stage: str, level_done: int, level_total: int, rate: float) -> None:
        if self.progress is None:
            return
        if stage not in self.tasks:
            self.tasks[stage] = self.progress.add_task(stage, total=level_total, rate=None, eta=None)
        eta = (level_total - level_done) / rate if rate > 0 else None
        self.progress.update(self.tasks[stage], completed=level_done, total=level_total, rate=rate, eta=eta)

    def note(self, text: str) -> None:
        if self.progress is not None:
            self.progress.console.print(text)
        else:
            print(text, file=sys.stderr)
