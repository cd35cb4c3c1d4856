"""The MP4 for X (X takes no audio files): the title card above a moving waveform or spectrum, a
progress bar, the timed lyrics burned in; and the check of a video against X's hard limits."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Literal

from db import audio
from db.audio.streams import finite
from publisher.render_pictures import TitleCard, caption_png, title_card_png
from publisher.render_prepare import SAMPLE_RATE, AudioSource, RenderError, as_path, command, prepared, run
from publisher.timed_captions import Caption, captions_from_lrc

VideoStyle = Literal["waves", "spectrum"]

# X's hard limits for video (research/publish_queue.md §1.2).
X_MAX_SECONDS = 140.0
X_MIN_SECONDS = 0.5
X_MAX_BYTES = 512 * 1024 * 1024
X_MAX_FPS = 60.0
X_MIN_SIZE = (32, 32)
X_MAX_SIZE = (1280, 1024)


def _caption_graph(
    captions: Sequence[Caption], first_input: int, size: tuple[int, int], fps: int, tmp: Path
) -> tuple[list[str], str]:
    """Inputs and filter steps that overlay each caption on `[v0]` while its line is sung; the
    result is `[v]`."""
    w, h = size
    cap_w, cap_h = _even(w - 2 * max(8, w // 24)), _even(max(16, int(h * 0.075)))
    x, y = (w - cap_w) // 2, _even(int(h * 0.885))
    inputs: list[str] = []
    steps = []
    for i, cap in enumerate(captions):
        path = tmp / f"caption-{i}.png"
        path.write_bytes(caption_png(cap.text, (cap_w, cap_h)))
        inputs += ["-i", str(path)]
        steps.append(
            f"[{first_input + i}:v]format=yuva420p,loop=loop=-1:size=1:start=0,setpts=N/({fps}*TB)[c{i}];"
            f"[v{i}][c{i}]overlay={x}:{y}:shortest=1:format=yuv420"
            f":enable='between(t,{cap.start:.3f},{cap.end:.3f})'[v{i + 1}]"
        )
    steps.append(f"[v{len(captions)}]null[v]")
    return inputs, ";".join(steps)


def _even(n: int) -> int:
    return n - (n % 2)


def render_x_video(
    src: AudioSource,
    card: TitleCard,
    *,
    style: VideoStyle = "waves",
    size: tuple[int, int] = (1280, 720),
    fps: int = 30,
    start: float = 0.0,
    max_seconds: float = X_MAX_SECONDS,
    normalize: bool = True,
    lrc: str | None = None,
) -> bytes:
    """An MP4 that X accepts: H.264 High yuv420p (closed GOP, progressive), AAC-LC 128 kbps 48 kHz
    stereo, ≤ 140 s, title card on top and a moving waveform or spectrum below, with a progress bar.
    With `lrc` (the clip's timed lyrics), each line is burned in at the bottom while it is sung.

    Clips longer than `max_seconds` are cut there (with a fade out); clips shorter than X's 0.5 s raise.
    """
    w, h = _even(size[0]), _even(size[1])
    if not (X_MIN_SIZE[0] <= w <= X_MAX_SIZE[0] and X_MIN_SIZE[1] <= h <= X_MAX_SIZE[1]):
        raise ValueError(f"X takes videos between 32x32 and 1280x1024, not {w}x{h}")
    if not 1 <= fps <= X_MAX_FPS:
        raise ValueError("X takes at most 60 frames per second")
    max_seconds = min(max_seconds, X_MAX_SECONDS)
    with (
        prepared(src, start=start, max_seconds=max_seconds, normalize=normalize) as (wav, duration),
        tempfile.TemporaryDirectory(prefix="jukebot-video-") as tmp,
    ):
        if duration < X_MIN_SECONDS:
            raise RenderError(f"X needs at least {X_MIN_SECONDS} s of video; this clip is {duration:.2f} s.")
        card_path = Path(tmp) / "card.png"
        card_path.write_bytes(title_card_png(card, (w, h)))
        out = Path(tmp) / "x.mp4"
        band_w, band_h = _even(w - 2 * max(8, w // 24)), _even(int(h * 0.42))
        band_x, band_y = (w - band_w) // 2, _even(int(h * 0.46))
        if style == "spectrum":
            anim = (
                f"showspectrum=s={band_w}x{band_h}:slide=scroll:mode=combined:color=magma"
                f":scale=log:legend=0,fps={fps}"
            )
        else:
            # draw=full: newer ffmpeg (the imageio-ffmpeg wheel's) shades the waves by alpha, which the
            # yuva420p conversion turns purple; 5.x draws the same either way.
            anim = (
                f"aformat=channel_layouts=mono,showwaves=s={band_w}x{band_h}:mode=cline:rate={fps}"
                ":scale=sqrt:draw=full:colors=0x38bdf8"
            )
        bar_h = max(2, _even(h // 120))
        graph = (
            # The card is decoded once and repeated (re-reading the PNG for every frame doubles the cost);
            # blending happens in yuv420p, the encoder's own format.
            f"[0:v]format=yuv420p,loop=loop=-1:size=1:start=0,setpts=N/({fps}*TB)[card];"
            f"[1:a]{anim},format=yuva420p[anim];"
            f"[card][anim]overlay={band_x}:{band_y}:shortest=1:format=yuv420[base];"
            f"color=c=0x38bdf8:s={w}x{bar_h}:r={fps},format=yuv420p[bar];"
            f"[base][bar]overlay=x='-{w}+{w}*t/{duration:.4f}':y={h - bar_h}:shortest=1:format=yuv420,"
            f"setsar=1[v0];"
        )
        captions = captions_from_lrc(lrc, start=start, duration=duration) if lrc else []
        caption_inputs, caption_steps = _caption_graph(captions, 2, (w, h), fps, Path(tmp))
        graph += caption_steps
        video_args = (
            f"-c:v libx264 -profile:v high -pix_fmt yuv420p -preset veryfast -crf 23 -r {fps} -g {2 * fps} "
            f"-keyint_min {fps} -x264-params open-gop=0"
        )
        audio_args = f"-c:a aac -profile:a aac_low -b:a 128k -ar {SAMPLE_RATE} -ac 2"
        run(
            command(
                "ffmpeg",
                "-v error -nostdin -y -i",
                card_path,
                "-i",
                wav,
                caption_inputs,
                "-filter_complex",
                [graph],
                "-map [v] -map 1:a",
                video_args,
                audio_args,
                f"-t {duration:.4f} -movflags +faststart",
                out,
            ),
            what="render the video for X",
        )
        data = out.read_bytes()
    problems = check_x_video(data)
    if problems:
        raise RenderError("The video does not meet X's limits: " + "; ".join(problems))
    return data


def check_x_video(video: bytes | str | os.PathLike[str]) -> list[str]:
    """Everything about `video` that X's hard limits forbid (empty list = acceptable), read by ffprobe."""
    with as_path(video) as path:
        size = path.stat().st_size
        try:
            info = audio.probe_streams(path)
        except audio.AudioError:
            return ["the file is not a readable video"]
    problems: list[str] = []
    video_streams = [s for s in info.get("streams", []) if s.get("codec_type") == "video"]
    audio_streams = [s for s in info.get("streams", []) if s.get("codec_type") == "audio"]
    if "mp4" not in str(info.get("format", {}).get("format_name", "")):
        problems.append("the container is not MP4")
    if size > X_MAX_BYTES:
        problems.append(f"{size} bytes is over 512 MB")
    duration = finite(info.get("format", {}).get("duration")) or 0.0
    if not X_MIN_SECONDS <= duration <= X_MAX_SECONDS:
        problems.append(f"duration {duration:.2f} s is outside 0.5-140 s")
    if len(video_streams) != 1:
        problems.append("there must be exactly one video stream")
    for v in video_streams[:1]:
        if v.get("codec_name") != "h264" or v.get("profile") != "High":
            problems.append(f"video is {v.get('codec_name')} {v.get('profile')}, not H.264 High")
        if v.get("pix_fmt") != "yuv420p":
            problems.append(f"pixel format {v.get('pix_fmt')} is not yuv420p")
        width, height = int(v.get("width", 0)), int(v.get("height", 0))
        if not (X_MIN_SIZE[0] <= width <= X_MAX_SIZE[0] and X_MIN_SIZE[1] <= height <= X_MAX_SIZE[1]):
            problems.append(f"{width}x{height} is outside 32x32-1280x1024")
        if width % 2 or height % 2:
            problems.append(f"{width}x{height} has an odd side")
        if height and not 1 / 3 <= width / height <= 3:
            problems.append("aspect ratio is outside 1:3-3:1")
        num, _, den = str(v.get("avg_frame_rate", "0/1")).partition("/")
        fps = float(num) / float(den or 1) if float(den or 1) else 0.0
        if fps > X_MAX_FPS:
            problems.append(f"{fps:.1f} fps is over 60")
        if v.get("sample_aspect_ratio") not in (None, "1:1", "0:1"):
            problems.append(f"pixel aspect ratio {v.get('sample_aspect_ratio')} is not 1:1")
        if v.get("field_order") not in (None, "progressive", "unknown"):
            problems.append("video is interlaced")
    if len(audio_streams) != 1:
        problems.append("there must be exactly one audio stream")
    for a in audio_streams[:1]:
        if a.get("codec_name") != "aac" or a.get("profile") != "LC":
            problems.append(f"audio is {a.get('codec_name')} {a.get('profile')}, not AAC-LC")
        if int(a.get("channels", 0)) not in (1, 2):
            problems.append("audio must be mono or stereo")
    return problems
