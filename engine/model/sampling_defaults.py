"""Recommended sampling settings of a model: its folder's optional sampling.json, else the original's
temperatures."""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path

from engine.model.config_types import ConfigError

SAMPLING_FILE = "sampling.json"
# The original's temperatures per level (0, 1, 2): 0.99 for the upsamplers, 0.98 at the top.
ORIGINAL_TEMPERATURES: tuple[float, float, float] = (0.99, 0.99, 0.98)


@dataclass(frozen=True)
class SamplingDefaults:
    """A model's recommended sampling temperatures, per level (0, 1, 2 = top): what generate, the
    worker and continuations use when the person does not choose. A model folder may recommend its
    own in `sampling.json` (`{"temperatures": [l0, l1, l2], "why": "..."}`); released models and
    folders without one keep the original's."""

    temperatures: tuple[float, float, float] = ORIGINAL_TEMPERATURES
    source: str = "the original Jukebox defaults"  # where they come from, for messages

    def __post_init__(self) -> None:
        t = self.temperatures
        ok = all(isinstance(x, int | float) and not isinstance(x, bool) for x in t)
        if ok:
            t = tuple(float(x) for x in t)  # type: ignore[assignment]
            object.__setattr__(self, "temperatures", t)
        if not ok or len(t) != 3 or not all(math.isfinite(x) and 0 < x <= 5 for x in t):
            raise ConfigError(
                f"{self.source}: temperatures must be 3 numbers above 0 (at most 5), one per level "
                f"(0, 1, 2), e.g. [0.99, 0.99, 0.98]; got {list(t)}"
            )

    def resolve(self, top: float | None = None, upsample: float | None = None) -> tuple[float, float, float]:
        """The temperatures per level: the person's choice where given, else the recommendation.
        `upsample` sets both upsamplers (levels 0 and 1), `top` the drafts (level 2)."""
        t0, t1, t2 = self.temperatures
        if upsample is not None:
            t0 = t1 = float(upsample)
        if top is not None:
            t2 = float(top)
        return (t0, t1, t2)

    @classmethod
    def load(cls, path: str | Path) -> SamplingDefaults:
        """Read and check a sampling.json; ConfigError (naming the file) for anything else."""
        path = Path(path)
        what = f"{path}"
        try:
            d = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError) as e:
            raise ConfigError(f"cannot read {what}: {e}") from None
        except json.JSONDecodeError as e:
            raise ConfigError(f"{what} is not valid JSON ({e})") from None
        if not isinstance(d, dict) or "temperatures" not in d:
            raise ConfigError(f'{what} needs {{"temperatures": [level 0, level 1, level 2]}}')
        unknown = set(d) - {"temperatures", "why"}
        if unknown:
            raise ConfigError(f"{what}: unknown fields {sorted(unknown)} (known: temperatures, why)")
        t = d["temperatures"]
        if not isinstance(t, list) or not all(
            isinstance(x, int | float) and not isinstance(x, bool) for x in t
        ):
            raise ConfigError(f"{what}: temperatures must be a list of 3 numbers, got {t!r}")
        return cls(tuple(float(x) for x in t), source=what)  # type: ignore[arg-type]


def sampling_defaults(folder: str | Path) -> SamplingDefaults:
    """A model folder's recommendation (its sampling.json), else the original's temperatures."""
    f = Path(folder) / SAMPLING_FILE
    return SamplingDefaults.load(f) if f.exists() else SamplingDefaults()
