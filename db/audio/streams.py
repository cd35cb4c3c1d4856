"""What a media file holds (streams, duration), read by ffprobe or, without it, from ffmpeg's banner.

Both paths return the same shape as `ffprobe -show_streams -show_format -of json`, restricted to the
fields this project reads (codec, profile, rate, channels, size, pixel format, frame rate, duration).
"""

from __future__ import annotations

import json
import math
import os
import re
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Any

from db.audio.tools import AudioError, ffmpeg, ffprobe, run

NOT_MEDIA = "this does not look like an audio file ffmpeg can read"


class NoAudioStream(AudioError):
    """A readable media file without an audio stream."""


@dataclass(frozen=True)
class AudioInfo:
    duration: float | None  # seconds, as the container states it; None when it does not say
    sample_rate: int
    channels: int
    codec: str
    format: str
    size: int  # bytes


def finite(value: object) -> float | None:
    try:
        number = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) else None


def probe_streams(path: str | os.PathLike[str]) -> dict[str, Any]:
    """ffprobe's JSON (streams and format) for `path`; AudioError when nothing can read it."""
    tool = ffprobe()
    if tool is None:
        return streams_from_banner(path)
    res = run([tool, "-v", "error", "-show_streams", "-show_format", "-of", "json", str(path)], what="probe")
    if res.returncode != 0:
        raise AudioError(NOT_MEDIA)
    try:
        data = json.loads(res.stdout or b"{}")
    except json.JSONDecodeError:
        raise AudioError(NOT_MEDIA) from None
    return data if isinstance(data, dict) else {}


_INPUT = re.compile(r"^Input #0, (?P<format>[^,]+(?:,[^ ,]+)*), from ", re.M)
_DURATION = re.compile(r"^\s+Duration: (?:(?P<h>\d+):(?P<m>\d+):(?P<s>[\d.]+)|N/A)", re.M)
_STREAM = re.compile(r"^\s+Stream #0:\d+\S*: (?P<type>Audio|Video): (?P<rest>.*)$", re.M)
_CODEC = re.compile(r"^(?P<codec>[\w-]+)(?: \((?P<profile>[^)]+)\))?")
_LAYOUTS = {"mono": 1, "stereo": 2, "2.1": 3, "quad": 4, "4.0": 4, "5.0": 5, "5.1": 6, "6.1": 7, "7.1": 8}


def _audio_stream(rest: str) -> dict[str, Any]:
    parts = [p.strip() for p in rest.split(",")]
    stream: dict[str, Any] = {"codec_type": "audio"}
    codec = _CODEC.match(parts[0])
    if codec:
        stream["codec_name"] = codec["codec"]
        if codec["profile"]:
            stream["profile"] = codec["profile"]
    for part in parts[1:]:
        if m := re.fullmatch(r"(\d+) Hz", part):
            stream["sample_rate"] = m[1]
        elif m := re.fullmatch(r"(\d+) channels(?: \(.*\))?", part):
            stream["channels"] = int(m[1])
        elif (layout := part.split("(")[0]) in _LAYOUTS:
            stream["channels"] = _LAYOUTS[layout]
    return stream


def _video_stream(rest: str) -> dict[str, Any]:
    # "h264 (High) (avc1 / 0x31637661), yuv420p(progressive), 96x64 [SAR 1:1 DAR 3:2], 50 kb/s, 10 fps, ..."
    stream: dict[str, Any] = {"codec_type": "video"}
    codec = _CODEC.match(rest)
    if codec:
        stream["codec_name"] = codec["codec"]
        if codec["profile"]:
            stream["profile"] = codec["profile"]
    if m := re.search(r", (?P<pix>[a-z0-9_]+)(?:\((?P<order>[^)]*)\))?, \d+x\d+", rest):
        stream["pix_fmt"] = m["pix"]
        orders = [o.strip() for o in (m["order"] or "").split(",")]
        order = next((o for o in orders if o in ("progressive", "tt", "bb", "tb", "bt")), None)
        if order:
            stream["field_order"] = order
    if m := re.search(r", (\d+)x(\d+)(?: \[SAR (\d+:\d+) DAR \d+:\d+\])?", rest):
        stream["width"], stream["height"] = int(m[1]), int(m[2])
        if m[3]:
            stream["sample_aspect_ratio"] = m[3]
    if m := re.search(r", ([\d.]+) fps", rest):
        rate = Fraction(m[1]).limit_denominator(1001)
        stream["avg_frame_rate"] = f"{rate.numerator}/{rate.denominator}"
    return stream


def parse_banner(text: str) -> dict[str, Any]:
    """ffprobe-shaped info from the text `ffmpeg -i FILE` prints about its input."""
    head = _INPUT.search(text)
    if head is None:
        raise AudioError(NOT_MEDIA)
    fmt: dict[str, Any] = {"format_name": head["format"]}
    if (d := _DURATION.search(text)) and d["h"] is not None:
        fmt["duration"] = str(int(d["h"]) * 3600 + int(d["m"]) * 60 + float(d["s"]))
    streams = [
        _audio_stream(m["rest"]) if m["type"] == "Audio" else _video_stream(m["rest"])
        for m in _STREAM.finditer(text)
    ]
    return {"streams": streams, "format": fmt}


def streams_from_banner(path: str | os.PathLike[str]) -> dict[str, Any]:
    # `ffmpeg -i FILE` with no output exits 1 after printing the input's description; that is the point.
    res = run([ffmpeg(), "-hide_banner", "-nostdin", "-i", str(path)], what="probe")
    return parse_banner(res.stderr.decode("utf-8", "replace"))


def probe(path: str | os.PathLike[str]) -> AudioInfo:
    """What the container says about the first audio stream of a file."""
    path = Path(path)
    size = path.stat().st_size
    if size == 0:
        raise AudioError("this file is empty")
    data = probe_streams(path)
    streams = [s for s in data.get("streams") or [] if s.get("codec_type") == "audio"]
    if not streams:
        raise NoAudioStream("this file has no audio in it")
    stream, fmt = streams[0], data.get("format") or {}
    duration = None
    for raw in (stream.get("duration"), fmt.get("duration")):
        value = finite(raw)
        if value is not None and value > 0:
            duration = value
            break
    return AudioInfo(
        duration=duration,
        sample_rate=int(stream.get("sample_rate") or 0),
        channels=int(stream.get("channels") or 0),
        codec=str(stream.get("codec_name") or "?"),
        format=str(fmt.get("format_name") or "?"),
        size=size,
    )
