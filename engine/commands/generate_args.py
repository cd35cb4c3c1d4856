"""The arguments of `jukebot generate` (engine/commands/generate.py) and their checks, said in words."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


class GenerateError(Exception):
    """A problem with the command's input, said in words."""


@dataclass
class GenerateArgs:
    out: Path
    artist: str
    genre: str
    lyrics: str = ""
    seconds: float = 10.0
    drafts: int = 3
    pick: int = 1
    seed: int = 0
    model: str = "demo"
    device: str = "auto"
    dtype: str = "auto"
    prime: str | None = None
    prime_seconds: float | None = None
    prime_at: float | None = None  # the prime's moment where the new music starts; None: its end
    temperature: float | None = None  # drafts (level 2); None: the model's recommendation
    upsample_temperature: float | None = None  # levels 1 and 0; None: the model's recommendation
    top_k: int = 0
    top_p: float = 0.0
    fresh: bool = False
    threads: int | None = None  # None: engine.serving.device.default_threads (1 on a CPU)
    swap_levels: bool = False
    progress: bool = True
    extra: dict[str, Any] = field(default_factory=dict)


def lyrics_not_sung(model: str) -> str:
    return (
        f"the model '{model}' does not sing words, so the lyrics are not used "
        "(the models that sing them: 1b_lyrics, 5b_lyrics)"
    )


def check_args(args: GenerateArgs, max_drafts: int) -> None:
    """The checks that need no model: a bad number is one sentence before a model takes minutes
    to load."""
    from engine.sampling.song import SongError, check_drafts

    try:
        check_drafts(args.drafts, max_drafts)
    except SongError as e:
        raise GenerateError(f"--drafts: {e}") from None
    if not 1 <= args.pick <= args.drafts:
        raise GenerateError(f"--pick must be between 1 and {args.drafts} (the draft to upsample)")
    if not (math.isfinite(args.seconds) and args.seconds > 0):
        raise GenerateError(f"--seconds must be a positive number of seconds, not {args.seconds}")
    for flag, value in (
        ("--temperature", args.temperature),
        ("--upsample-temperature", args.upsample_temperature),
    ):
        if value is not None and not 0 < value <= 5:
            raise GenerateError(
                f"{flag} must be above 0 and at most 5 (1 samples as the model learnt; lower is "
                "tamer and more repetitive, higher is wilder)"
            )
    if args.threads is not None and args.threads < 1:
        raise GenerateError("--threads must be at least 1")
