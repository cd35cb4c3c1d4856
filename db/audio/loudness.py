"""Loudness as streaming services measure it: EBU R128 integrated loudness and true peak (ffmpeg's
`ebur128` filter), and the one constant gain that brings a clip to a target without clipping."""

from __future__ import annotations

import os
import re
from dataclasses import dataclass

from db.audio.streams import finite
from db.audio.tools import AudioError, ffmpeg, run


@dataclass(frozen=True)
class Loudness:
    integrated_lufs: float | None  # None for digital silence
    true_peak_dbfs: float | None


def measure(path: str | os.PathLike[str], pre_filter: str = "anull") -> Loudness:
    """Integrated loudness and true peak of `path` after `pre_filter` (e.g. the cut to be rendered)."""
    args = [ffmpeg(), "-hide_banner", "-nostats", "-nostdin", "-i", str(path)]
    args += ["-af", f"{pre_filter},ebur128=peak=true", "-f", "null", "-"]
    res = run(args, what="measure the loudness")
    text = res.stderr.decode("utf-8", "replace")
    if res.returncode != 0:
        last = text.strip().splitlines()[-1:] or [f"exit status {res.returncode}"]
        raise AudioError(f"Could not measure the loudness: {last[0]}")
    summary = text.rpartition("Summary:")[2]
    loudness = re.search(r"I:\s+(-?[\d.]+|-inf) LUFS", summary)
    peak = re.search(r"True peak:\s+Peak:\s+(-?[\d.]+|-inf) dBFS", summary)
    if loudness is None or peak is None:
        raise AudioError("Could not measure the loudness (ffmpeg printed no measurement).")
    measured = finite(loudness.group(1))
    return Loudness(None if measured is None or measured <= -70 else measured, finite(peak.group(1)))


def normalising_gain(level: Loudness, target_lufs: float, max_true_peak_dbtp: float) -> float | None:
    """The gain (dB) to `target_lufs`, held back so the true peak stays at most `max_true_peak_dbtp`;
    None for silence (nothing to lift)."""
    if level.integrated_lufs is None or level.true_peak_dbfs is None:
        return None
    return min(target_lufs - level.integrated_lufs, max_true_peak_dbtp - level.true_peak_dbfs)
