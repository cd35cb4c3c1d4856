"""The recipe card: how a song was made, in a few lines a musician can read and copy.

The temperatures shown are the ones the worker used: the song's own drafts temperature when the
request chose one (`songs.temperature` > 0), else the model's recommendation (its folder's
`sampling.json`, else the original's 0.98 / 0.99), which the upsamplers always use
(engine/serving/jobs.py `request_from_song`). Synchronous (reads a file and the database): run in
a thread.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

from sqlmodel import Session

from bot.core.text import message_url
from db.audio.moments import clock
from db.database import Database
from db.models import Clip, Song

LYRICS_EXCERPT = 160  # characters of lyrics on the card (the full words are in the Remix form)


@functools.lru_cache(maxsize=16)
def recommended_temperatures(model: str) -> tuple[tuple[float, float, float], bool]:
    """The model's recommended temperatures per level (0, 1, 2) and whether they come from its own
    sampling.json (False: the original Jukebox defaults). torch-free."""
    from engine.model.config import ConfigError, SamplingDefaults, resolve_model_dir, sampling_defaults

    folder = resolve_model_dir(model)
    try:
        if folder.is_dir():
            found = sampling_defaults(folder)
            return found.temperatures, found.source != SamplingDefaults().source
    except (ConfigError, OSError):
        pass  # the worker refuses such a folder; the card still shows the original's values
    return SamplingDefaults().temperatures, False


@dataclass(frozen=True)
class Recipe:
    song_id: int
    model: str
    artist: str
    genre: str
    lyrics: str
    seconds: float
    seed: int
    n_drafts: int
    draft_temperature: float  # level 2, as used
    chose_temperature: bool  # the request set it (else the model's recommendation)
    upsample_temperatures: tuple[float, float]  # levels 1 and 0, as used
    from_sampling_json: bool
    parent_clip_id: int | None = None
    parent_song_id: int | None = None
    parent_clip_url: str | None = None
    prime_at: float | None = None  # the moment of the parent clip it continues from (None: its end)
    from_upload: bool = False
    rerolled_from_song_id: int | None = None


def recipe_of(s: Session, song: Song) -> Recipe:
    """The recipe of a song (the parent clip is read in the same session: same server by design)."""
    (t0, t1, t2), own = recommended_temperatures(song.model)
    chose = bool(song.temperature and song.temperature > 0)
    parent = s.get(Clip, song.parent_clip_id) if song.parent_clip_id is not None else None
    url = (
        message_url(song.guild_id, parent.channel_id, parent.message_id)
        if parent is not None and parent.channel_id and parent.message_id
        else None
    )
    return Recipe(
        song_id=song.id or 0,
        model=song.model,
        artist=song.artist,
        genre=song.genre,
        lyrics=song.lyrics or "",
        seconds=float(song.seconds),
        seed=int(song.seed),
        n_drafts=int(song.n_drafts),
        draft_temperature=float(song.temperature) if chose else t2,
        chose_temperature=chose,
        upsample_temperatures=(t1, t0),
        from_sampling_json=own,
        parent_clip_id=song.parent_clip_id,
        parent_song_id=parent.song_id if parent is not None else None,
        parent_clip_url=url,
        prime_at=song.prime_at,
        from_upload=song.prime_key is not None,
        rerolled_from_song_id=song.rerolled_from_song_id,
    )


def recipe_for(db: Database, song: Song) -> Recipe:
    with db.read() as s:
        return recipe_of(s, song)


def lyrics_excerpt(lyrics: str, limit: int = LYRICS_EXCERPT) -> str:
    text = " / ".join(line.strip() for line in lyrics.strip().splitlines() if line.strip())
    if not text:
        return "instrumental"
    return f"“{text[:limit]}{'…' if len(text) > limit else ''}”"


def recipe_lines(r: Recipe) -> list[str]:
    """The card: model, style, words, seed, temperatures, and where the song comes from."""
    whose = "chosen" if r.chose_temperature else "the model's recommendation"
    source = "its sampling.json" if r.from_sampling_json else "the original Jukebox defaults"
    up1, up0 = r.upsample_temperatures
    lines = [
        f"🧾 **Recipe** — model `{r.model}` · seed `{r.seed}` · {r.seconds:g} s · {r.n_drafts} drafts",
        f"Artist **{r.artist}** · genre *{r.genre}* · lyrics: {lyrics_excerpt(r.lyrics)}",
        f"Temperatures: drafts {r.draft_temperature:g} ({whose}) · upsampling {up1:g} / {up0:g} ({source})",
    ]
    origin: list[str] = []
    if r.parent_clip_id is not None:
        moment = f"from {clock(r.prime_at)}" if r.prime_at is not None else "from its end"
        song = f" (song #{r.parent_song_id})" if r.parent_song_id is not None else ""
        link = f" {r.parent_clip_url}" if r.parent_clip_url else ""
        origin.append(f"continues clip #{r.parent_clip_id}{song} {moment}{link}")
    elif r.from_upload:
        origin.append("continues an uploaded file")
    if r.rerolled_from_song_id is not None:
        origin.append(f"🎲 reroll of song #{r.rerolled_from_song_id}")
    if origin:
        lines.append("Made from: " + " · ".join(origin))
    return lines


def recipe_text(r: Recipe) -> str:
    return "\n".join(recipe_lines(r))
