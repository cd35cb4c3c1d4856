"""The files attached to draft and clip posts, always under the guild's upload limit.

The limit comes from discord.py at post time (`guild.filesize_limit`, which follows the guild's
boost tier); one request also stays under Discord's 25 MiB request cap. Audio goes as WAV when it
fits, else MP3 at the best bitrate that fits (publisher/render.py); a waveform picture comes
with it. Rendering runs ffmpeg, so these functions are synchronous: call them in a thread.
"""

from __future__ import annotations

import io
import logging
from dataclasses import dataclass, field

from db.models import Clip, Draft, Song
from db.storage import Storage

log = logging.getLogger("jukebot.bot.media")

REQUEST_CAP = 25 * 1024 * 1024 - 512 * 1024  # Discord's cap per request, minus room for the JSON
PICTURE_RESERVE = 512 * 1024


@dataclass
class Attachment:
    filename: str
    data: bytes
    description: str = ""


@dataclass
class Bundle:
    files: list[Attachment] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)  # things the members should know (e.g. a draft left out)

    @property
    def size(self) -> int:
        return sum(len(f.data) for f in self.files)


def fit_audio(
    wav: bytes, stem: str, max_bytes: int, *, mp3: bytes | None = None, title: str = ""
) -> Attachment | None:
    """The audio as WAV if it fits, else the stored MP3 if it fits, else a fresh MP3 under max_bytes."""
    if len(wav) <= max_bytes:
        return Attachment(f"{stem}.wav", wav, title)
    if mp3 is not None and len(mp3) <= max_bytes:
        return Attachment(f"{stem}.mp3", mp3, title)
    from publisher.render import RenderError, render_audio

    try:
        rendered = render_audio(wav, "mp3", max_bytes=max_bytes, tags={"title": title} if title else None)
    except RenderError as exc:
        log.warning("cannot fit %s under %d bytes: %s", stem, max_bytes, exc)
        return None
    return Attachment(rendered.filename(stem), rendered.data, title)


def waveform(wav: bytes, title: str, *, height: int = 200) -> bytes | None:
    from publisher.render import RenderError, waveform_png

    try:
        return waveform_png(wav, width=900, height=height, title=title)
    except (RenderError, ValueError, OSError) as exc:
        log.warning("no waveform for %s: %s", title, exc)
        return None


def stack_pictures(pictures: list[bytes]) -> bytes:
    """One picture with the drafts' waveforms one under the other."""
    from PIL import Image

    images = [Image.open(io.BytesIO(p)).convert("RGB") for p in pictures]
    width = max(i.width for i in images)
    out = Image.new("RGB", (width, sum(i.height for i in images)), (20, 20, 28))
    y = 0
    for image in images:
        out.paste(image, (0, y))
        y += image.height
    buf = io.BytesIO()
    out.save(buf, format="PNG", optimize=True)
    return buf.getvalue()


def draft_bundle(storage: Storage, song: Song, drafts: list[Draft], limit: int) -> Bundle:
    """Every draft's audio plus one picture with their waveforms, within the limits."""
    bundle = Bundle()
    per_request = min(REQUEST_CAP, limit * 10) - PICTURE_RESERVE
    share = max(64 * 1024, min(limit, per_request // max(1, len(drafts))))
    pictures: list[bytes] = []
    for d in drafts:
        label = f"Draft {d.index + 1}"
        try:
            wav = storage.read_bytes(d.audio_key)
        except FileNotFoundError:
            bundle.notes.append(f"{label}'s audio is missing from the storage.")
            continue
        att = fit_audio(wav, f"song-{song.id}-draft-{d.index + 1}", share, title=f"{song.title} — {label}")
        if att is None:
            bundle.notes.append(f"{label} is too long to attach here; it can still win the vote.")
        else:
            bundle.files.append(att)
        pic = waveform(wav, label, height=140)
        if pic is not None:
            pictures.append(pic)
    if pictures:
        stacked = stack_pictures(pictures)
        if len(stacked) <= min(limit, PICTURE_RESERVE * 4) and bundle.size + len(stacked) <= REQUEST_CAP:
            bundle.files.append(Attachment(f"song-{song.id}-drafts.png", stacked, "The drafts' waveforms"))
    return bundle


def clip_bundle(storage: Storage, song: Song, clip: Clip, limit: int, *, stem: str | None = None) -> Bundle:
    bundle = Bundle()
    stem = stem or f"song-{song.id}-clip-{clip.id}"
    try:
        wav = storage.read_bytes(clip.audio_key)
    except FileNotFoundError:
        bundle.notes.append("The clip's audio is missing from the storage; a moderator has been told.")
        return bundle
    mp3: bytes | None = None
    if clip.mp3_key:
        try:
            mp3 = storage.read_bytes(clip.mp3_key)
        except FileNotFoundError:
            mp3 = None
    audio_limit = min(limit, REQUEST_CAP - PICTURE_RESERVE)
    att = fit_audio(wav, stem, audio_limit, mp3=mp3, title=song.title)
    if att is None:
        bundle.notes.append("The clip is too long to attach here.")
    else:
        bundle.files.append(att)
    pic = waveform(wav, song.title or f"Song #{song.id}")
    if pic is not None and len(pic) <= min(limit, PICTURE_RESERVE * 4):
        bundle.files.append(Attachment(f"{stem}.png", pic, "Waveform"))
    return bundle
