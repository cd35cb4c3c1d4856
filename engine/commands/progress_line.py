"""Progress lines that fit the terminal: parts are dropped whole, never cut mid-number.

At any width "done/total" is shown in full, and the stage name as far as it fits; then, as room
allows, the ETA, a bar (up to 40 columns), the percentage and the rate. Used by the rich bars of
`jukebot generate`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

BAR_MIN, BAR_MAX = 8, 40
# Lowest priority first: these go before anything else when the line is too long.
_OPTIONAL_ORDER = ("rate", "pct", "eta")


def clock(seconds: float | None) -> str:
    if seconds is None or seconds != seconds or seconds < 0:
        return "-:--"
    s = int(seconds + 0.5)
    h, rem = divmod(s, 3600)
    m, sec = divmod(rem, 60)
    return f"{h}:{m:02d}:{sec:02d}" if h else f"{m}:{sec:02d}"


def fit_line(
    desc: str,
    done: int,
    total: int,
    *,
    width: int,
    rate: float | None = None,
    eta_s: float | None = None,
    unit: str = "tok",
) -> tuple[str, int, str]:
    """(head, bar_columns, tail): the line is `head` + a bar of `bar_columns` + `tail`, at most
    `width` - 1 columns (the last column of a terminal wraps on some emulators)."""
    room = max(1, width - 1)
    counts = f"{done}/{total}"
    optional = {
        "pct": f"{100 * done / total:3.0f}%" if total else "",
        "rate": f"{rate:.1f} {unit}/s" if rate else "",
        "eta": f"ETA {clock(eta_s)}",
    }
    shown = [k for k in ("pct", "rate", "eta") if optional[k]]

    def tail() -> str:
        return " ".join([counts, *(optional[k] for k in shown)])

    def drop_until(fits: Callable[[], bool], order: tuple[str, ...] = _OPTIONAL_ORDER) -> None:
        for key in order:  # lowest priority first, each part whole
            if fits():
                return
            if key in shown:
                shown.remove(key)

    # The bar goes before the ETA: a number says more than a bar.
    drop_until(lambda: len(desc) + 1 + BAR_MIN + 1 + len(tail()) <= room, ("rate", "pct"))
    bar = min(BAR_MAX, room - len(desc) - len(tail()) - 2)
    if bar < BAR_MIN:  # no room for a bar even with the words alone: words only, as many as fit
        bar = 0
        shown = [k for k in ("pct", "rate", "eta") if optional[k]]
        drop_until(lambda: len(desc) + 1 + len(tail()) <= room)
        if len(desc) + 1 + len(tail()) > room:  # shorten the stage name, never the numbers
            keep = room - len(tail()) - 2
            desc = desc[:keep].rstrip() + "…" if keep > 0 else ""
    text = tail()
    head = f"{desc} " if desc else ""
    return head, bar, (" " if bar else "") + text


def fitting_column(width: Callable[[], int], unit: str = "tok") -> Any:
    """A rich ProgressColumn drawing the whole line with `fit_line` at the console's current width;
    the task needs fields `rate` (float) and `eta` (seconds or None)."""
    from rich.progress import ProgressColumn, Task
    from rich.text import Text

    class FittingColumn(ProgressColumn):
        def render(self, task: Task) -> Text:
            total = int(task.total or 0)
            head, bar, tail = fit_line(
                task.description,
                int(task.completed),
                total,
                width=width(),
                rate=task.fields.get("rate"),
                eta_s=task.fields.get("eta"),
                unit=unit,
            )
            filled = round(bar * task.completed / total) if total else 0
            line = Text(head)
            line.append("━" * filled, style="bar.complete")
            line.append("━" * (bar - filled), style="bar.back")
            line.append(tail)
            return line

    return FittingColumn()
