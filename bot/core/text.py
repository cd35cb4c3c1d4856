"""Small pieces of message text shared by the features: Discord timestamps, message links and the
one-line description of a song."""

from __future__ import annotations

from datetime import datetime

from db.audio.moments import clock
from db.models import Song


def message_url(guild_id: int | None, channel_id: int, message_id: int) -> str:
    return f"https://discord.com/channels/{guild_id or '@me'}/{channel_id}/{message_id}"


def ts(when: datetime, style: str = "R") -> str:
    """A Discord timestamp (each member sees it in their own time zone / as 'in 3 minutes')."""
    return f"<t:{int(when.timestamp())}:{style}>"


def describe(song: Song) -> str:
    what = f"**{song.artist}** · *{song.genre}* · {song.seconds:g} s"
    return what + lineage(song, " · continuing")


def lineage(song: Song, verb: str = "Continues") -> str:
    """What a continuation continues, and from which moment: "continuing clip #12 from 0:42"
    (nothing for a song made from scratch)."""
    moment = f" from {clock(song.prime_at)}" if song.prime_at is not None else ""
    if song.parent_clip_id is not None:
        return f"{verb} clip #{song.parent_clip_id}{moment}"
    if song.prime_key is not None:
        return f"{verb} your upload{moment}"
    return ""
