"""`/mod playlist [title:]`: the server's SoundCloud playlist (publisher/playlists.py), shown with its
link (checked on SoundCloud: a playlist deleted there is made again), or renamed. A rename is stored first, then applied on SoundCloud at once when the playlist
exists (else it is the title the playlist is made with)."""

from __future__ import annotations

import discord

from bot.core.bot import JukeBot
from bot.errors import UserError
from publisher.errors import PublishError
from publisher.platforms import soundcloud_configured
from publisher.playlists import (
    TITLE_MAX,
    PlaylistInfo,
    clean_title,
    playlist_info,
    remember_guild_name,
    set_title,
    sync_now,
)

TITLE_INPUT_MAX = 200  # what the command accepts; longer than TITLE_MAX only to say why it is refused


async def _checked(bot: JukeBot, guild_id: int, info: PlaylistInfo) -> PlaylistInfo:
    """The playlist as SoundCloud has it now: one deleted there is made again (and the moderators
    told) rather than its dead link shown. SoundCloud out of reach: what we know."""
    try:
        synced = await sync_now(bot.db, bot.settings, guild_id, bot.poster.notify_moderators)
    except PublishError:
        return info
    return synced if synced is not None and synced.url else info


def _shown(title: str) -> str:
    return discord.utils.escape_markdown(title)


async def playlist_answer(bot: JukeBot, guild_id: int, guild_name: str, title: str | None) -> str:
    if not soundcloud_configured(bot.settings):
        return "SoundCloud publishing is not set up on this bot, so this server has no playlist there."
    await bot.to_thread(remember_guild_name, bot.db, guild_id, guild_name)
    if title is None:
        info = await bot.to_thread(playlist_info, bot.db, guild_id)
        if info.playlist_id is None or not info.url:
            return (
                "This server has no SoundCloud playlist yet: it is made when its first clip is published "
                f"to SoundCloud, titled “{_shown(info.title)}”. Change that with `/mod playlist title:…`."
            )
        info = await _checked(bot, guild_id, info)
        clips = f"{info.clips} clip{'s' if info.clips != 1 else ''}"
        return f"🎧 This server's SoundCloud playlist: **{_shown(info.title)}** ({clips}): {info.url}"
    wanted = " ".join(title.split())
    if not wanted:
        raise UserError("The playlist needs a title with some words in it.")
    if len(wanted) > TITLE_MAX:
        raise UserError(f"That title is {len(wanted)} characters long; SoundCloud allows {TITLE_MAX}.")
    cleaned = await bot.to_thread(set_title, bot.db, guild_id, clean_title(wanted))
    info = await bot.to_thread(playlist_info, bot.db, guild_id)
    if info.playlist_id is None:
        return f"Saved: this server's SoundCloud playlist will be called “{_shown(cleaned)}” when it is made."
    try:
        synced = await sync_now(bot.db, bot.settings, guild_id, bot.poster.notify_moderators)
    except PublishError as exc:
        return (
            f"Saved the title “{_shown(cleaned)}”, but SoundCloud could not be reached just now "
            f"({exc.message}); the playlist is renamed at the next upload."
        )
    if synced is None or synced.title != cleaned or not synced.url:
        return f"Saved the title “{_shown(cleaned)}”; the playlist is renamed at the next upload."
    return f"🎧 Renamed this server's SoundCloud playlist to **{_shown(cleaned)}**: {synced.url}"
