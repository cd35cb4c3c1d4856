"""Taking a song request on Discord: the member's rate limit, the song written with its quota
checked (`logic.py`), started when its server has a free slot, and its status message posted."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

import discord

from bot.config import guild_settings
from bot.core.bot import JukeBot
from bot.core.text import describe, message_url
from bot.errors import UserError
from bot.features.status import StatusBoard
from db.models import Song

from . import logic


@dataclass(frozen=True)
class Submitted:
    song: Song
    status_url: str | None
    note: str = ""  # what the member should know about how the request was read


def queued_text(submitted: Submitted) -> str:
    song = submitted.song
    where = f" Follow it here: {submitted.status_url}" if submitted.status_url else ""
    note = f"\n{submitted.note}" if submitted.note else ""
    return f"✅ Song #{song.id} is in the studio ({describe(song)}).{where}{note}"


class Requests:
    def __init__(self, bot: JukeBot, board: StatusBoard) -> None:
        self.bot = bot
        self.board = board
        self._start_lock = asyncio.Lock()

    def check_rate(self, member_id: int) -> None:
        limiter = self.bot.limiter
        wait = limiter.retry_after(member_id)
        if wait > 0:
            raise UserError(
                f"Easy there — you have asked for {limiter.count} songs in the last "
                f"{limiter.seconds:g} seconds. Try again in {wait:.0f} s."
            )

    def forget_rate(self, member_id: int) -> None:
        """A refused request does not count against the member's rate."""
        self.bot.limiter.forget(member_id)

    def cap_for(self, guild_id: int) -> int:
        """Songs of this guild allowed in the studio at once (runs in a thread)."""
        return guild_settings(self.bot.db, self.bot.settings, guild_id).max_running

    async def start_pending(self) -> list[tuple[int, int]]:
        async with self._start_lock:
            return await self.bot.to_thread(logic.start_pending, self.bot.db, self.cap_for)

    async def submit(
        self,
        interaction: discord.Interaction[JukeBot],
        *,
        artist: str,
        genre: str,
        lyrics: str,
        seconds: float,
        n_drafts: int,
        parent_clip_id: int | None = None,
        prime_key: str | None = None,
        prime_seconds: float | None = None,
        seed: int | None = None,
        temperature: float | None = None,
        prime_at: float | None = None,
    ) -> Submitted:
        """Write the song, start it if the guild has a free slot, post its status message. `seed` and
        `temperature` (a remix keeps its recipe's): None for a new seed and the model's choice."""
        bot = self.bot
        who = logic.Requester(
            discord_id=interaction.user.id,
            name=interaction.user.display_name,
            guild_id=interaction.guild_id,
            channel_id=interaction.channel_id,
        )
        gs = await bot.guild_config(interaction.guild_id)
        try:
            song = await bot.to_thread(
                logic.request_song,
                bot.db,
                bot.settings,
                gs,
                who,
                artist=artist,
                genre=genre,
                lyrics=lyrics,
                seconds=seconds,
                n_drafts=n_drafts,
                parent_clip_id=parent_clip_id,
                prime_key=prime_key,
                prime_seconds=prime_seconds,
                seed=seed,
                temperature=temperature,
                prime_at=prime_at,
                request_key=str(interaction.id),
                same_press_seconds=bot.settings.discord.same_press_seconds,
            )
        except UserError:
            self.forget_rate(interaction.user.id)
            raise
        assert song.id is not None
        if song.request_key != str(interaction.id):  # a double click: the first press's song
            self.forget_rate(interaction.user.id)
            posted = song.status_message_id is not None and song.channel_id is not None
            url = (
                message_url(song.guild_id, song.channel_id or 0, song.status_message_id or 0)
                if posted
                else None
            )
            return Submitted(song, url)
        await self.start_pending()
        url = await self.board.post_status(song.id)
        bot.wake_watcher()
        return Submitted(song, url)
