"""Posting to Discord: channels by id, files under the guild's upload limit, the first channel that
accepts a post (a configured channel may be gone), and notes to the moderators' channel."""

from __future__ import annotations

import asyncio
import io
import logging
from collections.abc import Callable
from typing import Any

import discord

from bot.config import GuildSettings, all_guild_settings, guild_settings
from bot.errors import new_error_id
from db.database import Database
from db.settings import Settings

from .media import Bundle

log = logging.getLogger("jukebot.bot.posting")

NO_PINGS = discord.AllowedMentions.none()


class Poster:
    def __init__(self, client: discord.Client, db: Database, settings: Settings) -> None:
        self.client = client
        self.db = db
        self.settings = settings

    def channel(self, channel_id: int, guild_id: int | None) -> discord.PartialMessageable:
        return self.client.get_partial_messageable(channel_id, guild_id=guild_id)

    def upload_limit(self, guild_id: int | None) -> int:
        guild = self.client.get_guild(guild_id) if guild_id is not None else None
        if guild is not None:
            return int(guild.filesize_limit)
        return int(discord.utils.DEFAULT_FILE_SIZE_LIMIT_BYTES)

    async def send_first(
        self,
        channel_ids: list[int],
        guild_id: int | None,
        content: str,
        make_bundle: Callable[[int], Bundle],
        view: discord.ui.View,
        *,
        once: str | None = None,
    ) -> discord.Message | None:
        """Post `content` with the files `make_bundle(limit)` builds under the guild's upload limit,
        to the first channel that accepts it (a configured channel may be gone). If Discord still
        says the files are too large (413: the guild lost its boost, say), build them smaller.

        `once`: a key naming this post (at most 25 characters), sent as the message's enforced
        nonce: a bot killed after Discord took the post but before the database recorded it sends
        it again on restart, and Discord hands back the first message instead of a second one."""
        limit = self.upload_limit(guild_id)
        bundle = await asyncio.to_thread(make_bundle, limit)
        once_only: dict[str, Any] = {"nonce": once} if once else {}
        for channel_id in dict.fromkeys(channel_ids):
            for _ in range(6):
                files = [
                    discord.File(io.BytesIO(a.data), filename=a.filename, description=a.description or None)
                    for a in bundle.files
                ]
                text = content + "".join(f"\n⚠️ {n}" for n in bundle.notes)
                try:
                    return await self.channel(channel_id, guild_id).send(
                        text[:2000],
                        files=files,
                        view=view,
                        allowed_mentions=discord.AllowedMentions(users=True),
                        **once_only,
                    )
                except discord.HTTPException as exc:
                    if exc.status != 413 or not bundle.files:
                        log.warning("cannot post in channel %s: %s", channel_id, exc)
                        break
                    biggest = max(len(a.data) for a in bundle.files)
                    limit = max(64 * 1024, min(limit, biggest) // 2)
                    log.info("Discord refused files of up to %d bytes; trying again under %d", biggest, limit)
                    bundle = await asyncio.to_thread(make_bundle, limit)
        return None

    async def notify_moderators(self, guild_id: int | None, text: str) -> None:
        """Post to the moderators' channel (the publisher reports failures through this)."""
        targets: list[GuildSettings] = []
        if guild_id is not None:
            targets.append(await asyncio.to_thread(guild_settings, self.db, self.settings, guild_id))
        else:
            targets = await asyncio.to_thread(all_guild_settings, self.db, self.settings)
        for gs in targets:
            if gs.mod_channel_id is None:
                log.warning("no moderators' channel in guild %s for: %s", gs.guild_id, text)
                continue
            try:
                await self.channel(gs.mod_channel_id, gs.guild_id).send(
                    text[:1900], allowed_mentions=NO_PINGS
                )
            except discord.HTTPException as exc:
                error_id = new_error_id()
                log.warning("error %s: cannot notify moderators of guild %s: %s", error_id, gs.guild_id, exc)
