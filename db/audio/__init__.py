"""Audio in and out for every package (engine, publisher, bot): probe, decode with limits, encode,
loudness. Torch-free (numpy and soundfile only), so the bot may import it.

One policy for all of it:
- **One timeout** (`FFMPEG_TIMEOUT_S`) for every ffmpeg call, a timeout being an `AudioError`.
- **Decoding always has a duration limit** (`decode(..., max_seconds=...)` has no default): the size is
  checked first, then the duration the container states, then the decode is cut at the limit by
  ffmpeg's `-t` *and* read into a buffer of bounded size, so a file whose header lies is refused
  after at most the limit's worth of work.
- **Errors are `AudioError`** (a `ValueError`) with one sentence a musician can act on.

**Where ffmpeg comes from.** The system's `ffmpeg`/`ffprobe` on PATH when present (the build the
machine's owner chose and patches); otherwise the static binary of the `imageio-ffmpeg` wheel (a
30 MB download, 164 MB installed for 0.6.0 on x86-64: one executable, ffmpeg 9 with libmp3lame,
libopus, libx264 and AAC). It was chosen over PyAV because every caller here already speaks
ffmpeg's command line (filter graphs for loudness, fades, the X video with libx264/AAC): one code
path for both sources, nothing to re-implement, and ffmpeg runs out of process under the timeout.
soundfile's MP3 writer covers only MP3, not Opus, AAC or H.264. The wheel has no ffprobe; `probe`
then reads the description ffmpeg prints of its input, in the same shape as ffprobe's JSON.

**pydub is not used** (it was declared and never imported; removed from the dependencies). Every
operation here is a single ffmpeg filter chain (cut, gain, fades) that streams from file to file;
pydub would load whole clips into memory as `AudioSegment`s, calls ffmpeg itself with no timeout and
no duration limit, looks the binary up on PATH only (so not the wheel's) and warns at import when it
is not there, and needs `audioop`, which Python 3.13 removed (pydub 0.25 then falls back to its
pure-Python copy).
"""

from db.audio.decoding import (
    LIMIT_SLACK_S,
    bytes_as_file,
    check_limits,
    decode,
    decode_bytes,
    human_bytes,
    human_seconds,
)
from db.audio.encoding import mp3_bytes, wav_bytes, write_mp3, write_wav
from db.audio.loudness import Loudness, measure, normalising_gain
from db.audio.streams import AudioInfo, probe, probe_streams
from db.audio.tools import FFMPEG_TIMEOUT_S, AudioError, ffmpeg, ffprobe, run

__all__ = [
    "FFMPEG_TIMEOUT_S",
    "LIMIT_SLACK_S",
    "AudioError",
    "AudioInfo",
    "Loudness",
    "bytes_as_file",
    "check_limits",
    "decode",
    "decode_bytes",
    "ffmpeg",
    "ffprobe",
    "human_bytes",
    "human_seconds",
    "measure",
    "mp3_bytes",
    "normalising_gain",
    "probe",
    "probe_streams",
    "run",
    "wav_bytes",
    "write_mp3",
    "write_wav",
]
