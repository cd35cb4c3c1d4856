"""Small pieces of message text shared by the features: Discord timestamps, message links and the
one-line description of a song."""

from __future__ import annotations

from datetime import datetime

from db.models import Song


def message_url(guild_id: int | None, channel_id: int, message_id: int) -> str:
    return f"https://discord.com/channels/{guild_id or '@me'}/{channel_id}/{message_id}"


def ts(when: datetime, style: str = "R") -> str:
    """A Discord timestamp (each member sees it in their own time zone / as 'in 3 minutes')."""
    return f"<t:{int(when.timestamp())}:{style}>"


def describe(song: Song) -> str:
    what = f"**{song.artist}** · *{song.genre}* · {song.seconds:g} s"
    if song.parent_clip_id is not None:
        what += f" · continuing clip #{song.parent_clip_id}"
    elif song.prime_key is not None:
        what += " · continuing your upload"
    return what
