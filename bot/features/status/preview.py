"""Listen early: while level 0 renders (most of a song's time), the level-1 decode of the chosen
draft is posted under the song's status message, and deleted when the finished clip is posted.

The worker writes the preview and names it in its job's progress (`preview_key`); the message id
is kept on the song (`songs.preview_message_id`), so a restarted bot neither posts it again nor
forgets to remove it. A post Discord took but the database did not record is recorded on the next
try instead of being posted again (`PostLedger`)."""

from __future__ import annotations

import io
import logging
from functools import partial

import discord
from sqlalchemy import update
from sqlmodel import col

from bot.core.bot import JukeBot
from bot.core.ledger import PostLedger
from bot.core.posting import NO_PINGS
from db import lifecycle
from db.database import Database
from db.models import JobKind, JobStatus, Song, SongStatus

log = logging.getLogger("jukebot.bot.status")

PREVIEW = "preview"  # the ledger's name for these posts


def preview_wanted(db: Database, song_id: int) -> tuple[Song, str] | None:
    """The song and its preview's storage key when a preview should be posted now: the song's
    upsample is running, its worker has written the preview, and none is posted (runs in a thread)."""
    with db.read() as s:
        song = s.get(Song, song_id)
        if song is None or song.status != SongStatus.upsampling or song.preview_message_id is not None:
            return None
        job = lifecycle.latest_job(s, song_id)
    if job is None or job.kind != JobKind.upsample or job.status != JobStatus.running:
        return None
    key = (job.progress or {}).get("preview_key")
    return (song, str(key)) if key else None


def set_preview_message(db: Database, song_id: int, message_id: int | None) -> None:
    with db.write() as s:
        s.execute(update(Song).where(col(Song.id) == song_id).values(preview_message_id=message_id))


def preview_message_of(db: Database, song_id: int) -> int | None:
    with db.read() as s:
        song = s.get(Song, song_id)
        return song.preview_message_id if song is not None else None


def preview_text(song: Song) -> str:
    return (
        f"🎧 **Listen early** — song #{song.id} at level 1 of the upsampling: rougher than the final "
        "clip, which replaces this message when level 0 is done."
    )


class EarlyPreview:
    def __init__(self, bot: JukeBot) -> None:
        self.bot = bot
        self.ledger = PostLedger()

    async def post(self, song_id: int) -> bool:
        """Post the song's level-1 preview under its status message, once. True when posted now."""
        bot = self.bot
        if self.ledger.backing_off(PREVIEW, song_id):
            return False
        async with bot.locks.lock_for(song_id):
            if await self.ledger.record_pending(PREVIEW, song_id):
                return False
            wanted = await bot.to_thread(preview_wanted, bot.db, song_id)
            if wanted is None:
                return False
            song, key = wanted
            if song.channel_id is None:
                return False
            try:
                data = await bot.to_thread(bot.storage.read_bytes, key)
            except FileNotFoundError:
                log.warning("song %s: the preview %s is missing from the storage", song_id, key)
                self.ledger.failed(PREVIEW, song_id, bot.settings.discord.post_retry_seconds)
                return False
            if len(data) > bot.poster.upload_limit(song.guild_id):
                log.info("song %s: the preview is over this server's upload limit; not posted", song_id)
                self.ledger.failed(PREVIEW, song_id, 3600.0)
                return False
            channel = bot.poster.channel(song.channel_id, song.guild_id)
            ref = channel.get_partial_message(song.status_message_id) if song.status_message_id else None
            try:
                msg = await channel.send(
                    preview_text(song),
                    file=discord.File(io.BytesIO(data), filename=f"song-{song_id}-preview.mp3"),
                    reference=ref or discord.utils.MISSING,
                    mention_author=False,
                    allowed_mentions=NO_PINGS,
                )
            except discord.HTTPException as exc:
                log.warning("song %s: cannot post the preview: %s", song_id, exc)
                self.ledger.failed(PREVIEW, song_id, bot.settings.discord.post_retry_seconds)
                return False
            self.ledger.forget(PREVIEW, song_id)
            await self.ledger.record(PREVIEW, song_id, partial(set_preview_message, bot.db, song_id, msg.id))
            return True

    async def remove(self, song: Song) -> None:
        """Delete the song's preview (the clip has landed); call under the song's lock."""
        assert song.id is not None
        await self.ledger.record_pending(PREVIEW, song.id)  # a post not recorded yet is removed too
        message_id = await self.bot.to_thread(preview_message_of, self.bot.db, song.id)
        if message_id is None or song.channel_id is None:
            return
        channel = self.bot.poster.channel(song.channel_id, song.guild_id)
        try:
            await channel.get_partial_message(message_id).delete()
        except discord.NotFound:
            pass  # someone deleted it already
        except discord.HTTPException as exc:
            log.warning("song %s: cannot delete the preview %s: %s", song.id, message_id, exc)
        await self.bot.to_thread(set_preview_message, self.bot.db, song.id, None)
