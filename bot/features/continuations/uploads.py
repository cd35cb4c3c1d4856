"""Audio a member uploads to continue: checked before, during and after the download.

1. Before: the size Discord reports and the file name. A 200 MB file is refused without a
   single byte fetched.
2. During: the download is streamed and stopped as soon as it passes the limit (a server may lie
   about the size, or send no Content-Length).
3. After: the first bytes must be a known audio container (WAV, MP3, Ogg, FLAC, M4A), and db.audio
   must read a duration from it; a corrupt file is refused with a sentence, not stored.
The worker encodes the stored file with the VQ-VAE (prime_key on the song).
"""

from __future__ import annotations

import re
import tempfile
import uuid
from dataclasses import dataclass
from pathlib import Path

import aiohttp

from bot.errors import UserError
from db.audio.moments import MomentError, clock, parse_moment

AUDIO_EXTENSIONS = {"wav", "mp3", "ogg", "opus", "oga", "flac", "m4a", "aac"}
CHUNK = 64 * 1024
MIN_PRIME_SECONDS = 0.1  # less than this before the moment is no music to continue


@dataclass(frozen=True)
class Upload:
    data: bytes
    filename: str
    kind: str  # wav | mp3 | ogg | flac | m4a
    duration: float | None


def human_size(n: int) -> str:
    if n >= 1024 * 1024:
        return f"{n / (1024 * 1024):.0f} MB"
    if n >= 1024:
        return f"{n / 1024:.0f} KB"
    return f"{n} bytes"


def check_declared(filename: str, size: int, max_bytes: int) -> None:
    ext = filename.rsplit(".", 1)[-1].lower() if "." in filename else ""
    if ext not in AUDIO_EXTENSIONS:
        raise UserError(
            f"`{filename}` does not look like an audio file. Upload a WAV, MP3, Ogg/Opus, FLAC or M4A file."
        )
    if size <= 0:
        raise UserError(f"`{filename}` is empty.")
    if size > max_bytes:
        raise UserError(
            f"`{filename}` is {human_size(size)}; the most I take is {human_size(max_bytes)}. "
            "A few seconds of audio are enough to continue from: trim it and upload again."
        )


def sniff(head: bytes) -> str | None:
    """The audio container by its first bytes (None: not audio we know)."""
    if head[:4] == b"RIFF" and head[8:12] == b"WAVE":
        return "wav"
    if head[:3] == b"ID3" or (len(head) > 1 and head[0] == 0xFF and (head[1] & 0xE0) == 0xE0):
        return "mp3"
    if head[:4] == b"OggS":
        return "ogg"
    if head[:4] == b"fLaC":
        return "flac"
    if head[4:8] == b"ftyp":
        return "m4a"
    return None


async def download(
    session: aiohttp.ClientSession, url: str, max_bytes: int, *, timeout: float = 60.0
) -> bytes:
    """Fetch at most max_bytes; UserError if the file is bigger or cannot be fetched."""
    too_big = UserError(
        f"That file is bigger than {human_size(max_bytes)}, the most I take. Trim it and upload again."
    )
    try:
        async with session.get(url, timeout=aiohttp.ClientTimeout(total=timeout)) as resp:
            if resp.status != 200:
                raise UserError("I could not download that attachment from Discord. Please upload it again.")
            if resp.content_length is not None and resp.content_length > max_bytes:
                raise too_big
            chunks: list[bytes] = []
            total = 0
            async for chunk in resp.content.iter_chunked(CHUNK):
                total += len(chunk)
                if total > max_bytes:
                    raise too_big
                chunks.append(chunk)
            return b"".join(chunks)
    except (aiohttp.ClientError, TimeoutError):
        raise UserError("Downloading that attachment failed. Please upload it again in a moment.") from None


def check_audio(data: bytes, filename: str) -> Upload:
    """Make sure the bytes are audio we can read (db.audio.probe); UserError otherwise."""
    from publisher.render import RenderError, probe_audio

    kind = sniff(data[:16])
    if kind is None:
        raise UserError(
            f"`{filename}` is not an audio file I can read (it may be damaged). "
            "Upload a WAV, MP3, Ogg/Opus, FLAC or M4A file."
        )
    try:
        info = probe_audio(data)
    except RenderError:
        raise UserError(
            f"`{filename}` looks damaged: I could not read any audio from it. "
            "Export it again and upload the new file."
        ) from None
    if not info.duration or info.duration <= 0:
        raise UserError(f"`{filename}` has no audio in it.")
    return Upload(data=data, filename=filename, kind=kind, duration=float(info.duration))


@dataclass(frozen=True)
class Part:
    """The seconds of an upload that prime the song: from `start`, `seconds` long; the new music
    starts where it ends."""

    start: float
    seconds: float

    @property
    def end(self) -> float:
        return self.start + self.seconds

    def describe(self, filename: str) -> str:
        return (
            f"Using {clock(self.start)}–{clock(self.end)} of `{filename}`: the new music starts at "
            f"{clock(self.end)}. To start it elsewhere, give the moment with `at:` (e.g. `at:1:30`)."
        )


def choose_part(upload: Upload, at: str | None, max_seconds: float) -> Part:
    """The part of the upload that ends where the new music starts (`at`; default: the first
    `max_seconds`), at most `max_seconds` long. UserError when `at` is not a moment of the file."""
    duration = upload.duration or max_seconds
    if at is None:
        return Part(0.0, min(duration, max_seconds))
    try:
        end = parse_moment(at, what=f"`{upload.filename}`")
    except MomentError as e:
        raise UserError(str(e)) from None
    if end > duration + 0.05:  # the container's duration is rounded
        raise UserError(
            f"`{at}` is past the end of `{upload.filename}` ({clock(duration)} long). "
            "Choose a moment inside the file, or leave `at:` out to use its beginning."
        )
    end = min(end, duration)
    if end < MIN_PRIME_SECONDS:
        raise UserError(
            f"`{at}` is the very start of `{upload.filename}`: there is no music before it to continue. "
            "Choose a later moment (the new music starts there)."
        )
    start = max(0.0, end - max_seconds)
    return Part(start, end - start)


def cut(upload: Upload, part: Part) -> bytes:
    """The chosen part as a WAV file (the worker primes on the stored file from its start)."""
    from db.audio import AudioError, bytes_as_file, ffmpeg, run

    with bytes_as_file(upload.data, "." + upload.kind) as src, tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "part.wav"
        cmd = [ffmpeg(), "-nostdin", "-v", "error", "-ss", f"{part.start:.3f}", "-i", str(src)]
        cmd += ["-t", f"{part.seconds:.3f}", "-map", "0:a:0", "-c:a", "pcm_s16le", str(out)]
        try:
            done = run(cmd, what="cut the audio")
        except AudioError as exc:
            raise UserError(f"I could not cut `{upload.filename}`: {exc}.") from None
        if done.returncode != 0 or not out.exists():
            raise UserError(f"I could not cut `{upload.filename}` at {clock(part.start)}; it may be damaged.")
        return out.read_bytes()


def storage_key(filename: str) -> str:
    stem = re.sub(r"[^A-Za-z0-9._-]+", "_", filename)[-80:].strip("._") or "upload"
    return f"uploads/{uuid.uuid4().hex}/{stem}"
