"""How long the publisher's renders take for a clip of a given length (CPU, ffmpeg).

    .venv/bin/python bench/render_publish.py --seconds 30 140

Prints one line per render: format, seconds of audio, wall seconds, bytes.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable

from publisher import render
from tests.publish_fixtures import tone_wav


def timed(label: str, seconds: float, fn: Callable[[bytes], bytes], wav: bytes) -> None:
    start = time.perf_counter()
    data = fn(wav)
    print(
        f"{label:<22} {seconds:>6.0f} s audio  {time.perf_counter() - start:>7.2f} s wall  {len(data):>10,d} bytes"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seconds", type=float, nargs="+", default=[30.0])
    args = parser.parse_args()
    card = render.TitleCard("Harbour Rain", "Frank Sinatra", "jazz", "alice", "#jukebot")
    renders: dict[str, Callable[[bytes], bytes]] = {
        "mp3 (10 MiB limit)": lambda w: render.render_audio(w, "mp3", max_bytes=10 << 20).data,
        "opus (10 MiB limit)": lambda w: render.render_audio(w, "opus", max_bytes=10 << 20).data,
        "flac (SoundCloud)": lambda w: render.render_audio(w, "flac").data,
        "mp4 1280x720 (X)": lambda w: render.render_x_video(w, card),
        "waveform png": lambda w: render.waveform_png(w, 900, 200, title="Harbour Rain"),
        "spectrogram png": lambda w: render.spectrogram_png(w, 900, 300),
    }
    for seconds in args.seconds:
        wav = tone_wav(seconds)
        for label, fn in renders.items():
            timed(label, seconds, fn, wav)


if __name__ == "__main__":
    main()
