"""Finished clips on Discord: the clip post (audio under the guild's limit, waveform, buttons), the
clip vote for the daily clip, and handing a clip to the publisher. The buttons come from
`buttons.py` (handed in as `view_for`, so this module does not import the UI)."""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import datetime
from functools import partial

import discord

from bot.core import media
from bot.core.access import clip_here, is_mod
from bot.core.bot import JukeBot
from bot.core.ledger import PostLedger
from bot.core.text import describe
from bot.errors import UserError
from bot.features.recipes import recipe_for, recipe_lines
from bot.features.status import StatusBoard
from db import lifecycle, repo
from db.models import Clip, Song, SongStatus
from db.storage import Storage
from publisher.accounts import accounts_for_guild
from publisher.playlists import remember_guild_name

from . import logic

log = logging.getLogger("jukebot.bot.clips")

NOT_ALLOWED = (
    "Publishing is off here: this server has no X/SoundCloud account of its own, and the bot's owner "
    "has not allowed publishing from this server (the clips would go to the owner's own account)."
)

ClipView = Callable[..., discord.ui.View]  # (clip_id, votes=0, *, publish=True) -> the clip post's buttons


def clip_bundle_with_lyrics(storage: Storage, song: Song, clip: Clip, limit: int) -> media.Bundle:
    """The clip's files (`media.clip_bundle`) plus its timed lyrics (LRC) when the model sang them
    (runs in a thread)."""
    bundle = media.clip_bundle(storage, song, clip, limit)
    if clip.lrc_key:
        try:
            lrc = storage.read_bytes(clip.lrc_key)
        except FileNotFoundError:
            bundle.notes.append("The clip's timed lyrics are missing from the storage.")
        else:
            bundle.files.append(media.Attachment(f"song-{song.id}-clip-{clip.id}.lrc", lrc, "Timed lyrics"))
    return bundle


async def may_publish(bot: JukeBot, guild_id: int | None) -> bool:
    """A server publishes to its own accounts (logged in by the operator with `--guild`), or to the
    operator's shared ones where the bot's owner allowed it (`/owner publish`, or the
    `publish_guilds` setting); the owner's deny stops both (publisher/accounts.py)."""
    from publisher.platforms import enabled_platforms

    settings = bot.settings
    accounts = await bot.to_thread(
        accounts_for_guild, bot.db, settings, guild_id, enabled_platforms(settings)
    )
    return bool(accounts)


class Clips:
    def __init__(self, bot: JukeBot, board: StatusBoard, view_for: ClipView) -> None:
        self.bot = bot
        self.board = board
        self.view_for = view_for
        self.ledger = PostLedger()

    async def post_clip(self, song_id: int, clip_id: int | None = None) -> None:
        """Post the finished clip (audio under the guild's limit, waveform, buttons); song → done."""
        bot = self.bot
        key = clip_id or song_id  # a song may have several clips (drafts chosen again): each posts once
        if self.ledger.backing_off("clip", key):
            return
        async with bot.locks.lock_for(song_id):
            song, clip, requester = await bot.to_thread(logic.song_and_clip, bot.db, song_id, clip_id)
            if song.status in (SongStatus.done, SongStatus.cancelled, SongStatus.failed):
                return
            if clip is None:
                await bot.to_thread(
                    lifecycle.finish,
                    bot.db,
                    song_id,
                    SongStatus.failed,
                    "the engine finished without a clip",
                )
                await self.board.refresh_status(song_id, force=True)
                return
            # The clip replaces the level-1 preview posted while level 0 rendered.
            await self.board.preview.remove(song)
            if clip.message_id is None and not await self.ledger.record_pending("clip", key):
                gs = await bot.guild_config(song.guild_id)
                again = clip.draft_id is not None and clip.draft_id != song.winner_draft_id
                draft = await bot.to_thread(repo.draft_by_id, bot.db, clip.draft_id) if again else None
                what = f"draft {draft.index + 1}, chosen again" if draft is not None else "finished"
                recipe = await bot.to_thread(recipe_for, bot.db, song)
                content = "\n".join(
                    [
                        f"🎶 **Song #{song.id} is {what}** — {describe(song)} — made for <@{requester}>. "
                        f"Clip #{clip.id}.",
                        *recipe_lines(recipe),
                        "Press **Continue** to make it longer, **Vote** to put it up for the daily clip, "
                        "**Remix** to make it again with something changed.",
                    ]
                )
                found = (
                    (gs.clips_channel_id if gs else None),
                    song.channel_id,
                    (gs.drafts_channel_id if gs else None),
                )
                channels = [c for c in dict.fromkeys(found) if c]
                msg = await bot.poster.send_first(
                    channels,
                    song.guild_id,
                    content,
                    partial(clip_bundle_with_lyrics, bot.storage, song, clip),
                    self.view_for(clip.id or 0, publish=await self.may_publish(song.guild_id)),
                    once=f"jb-clip-{clip.id}",
                )
                if msg is None:
                    await self._not_posted(song_id, song.guild_id, channels, key)
                    return
                self.ledger.forget("clip", key)
                await self.ledger.record(
                    "clip",
                    key,
                    partial(logic.clip_posted, bot.db, song_id, clip.id, msg.channel.id, msg.id),
                )
            else:
                await bot.to_thread(logic.settle, bot.db, song_id)
        await self.board.refresh_status(song_id, force=True)

    async def settle(self, song_id: int) -> None:
        """Every clip of the song is posted and none is being made: it is done again."""
        async with self.bot.locks.lock_for(song_id):
            await self.bot.to_thread(logic.settle, self.bot.db, song_id)
        await self.board.refresh_status(song_id, force=True)

    async def _not_posted(self, song_id: int, guild_id: int | None, channels: list[int], key: int) -> None:
        """No channel took the clip: try again later, a bounded number of times; then end the song
        (it does not count against the member's day) and tell the moderators."""
        bot, settings = self.bot, self.bot.settings
        tries = self.ledger.failed("clip", key, settings.discord.post_retry_seconds)
        if tries < settings.discord.post_max_attempts:
            return
        self.ledger.forget("clip", key)
        where = ", ".join(f"<#{c}>" for c in channels) or "no channel"
        ended = await bot.to_thread(
            lifecycle.finish,
            bot.db,
            song_id,
            SongStatus.failed,
            f"I could not post its clip in any channel ({where}: deleted, or I may not post there); "
            "it does not count against your songs of the day.",
        )
        if ended:
            await bot.poster.notify_moderators(
                guild_id,
                f"Song #{song_id} ended: I tried {tries} times to post its clip in {where} and could not "
                "(deleted, or I may not post there). Please set my channels again with `/mod channels`.",
            )

    async def clip_vote_pressed(self, interaction: discord.Interaction[JukeBot], clip_id: int) -> None:
        bot = self.bot
        clip = await clip_here(interaction, clip_id)
        outcome = await bot.to_thread(
            repo.cast_vote,
            bot.db,
            clip.song_id,
            interaction.user.id,
            None,
            repo.CLIP,
            voter_name=interaction.user.display_name,
            clip_id=clip.id,
        )
        votes = await bot.to_thread(repo.clip_votes, bot.db, clip_id)
        if outcome == repo.VoteOutcome.unchanged:
            await interaction.response.send_message(
                f"You already voted for clip #{clip_id}; each member's vote counts once.", ephemeral=True
            )
            return
        await interaction.response.send_message(
            f"👍 Thanks! Clip #{clip_id} has {votes} vote{'s' if votes != 1 else ''} for the daily clip.",
            ephemeral=True,
        )
        if interaction.message is not None:
            try:
                publish = await self.may_publish(interaction.guild_id)
                await interaction.message.edit(view=self.view_for(clip_id, votes, publish=publish))
            except discord.HTTPException as exc:
                log.info("clip %s: cannot update the vote count: %s", clip_id, exc)

    async def publish_pressed(self, interaction: discord.Interaction[JukeBot], clip_id: int) -> None:
        if not await is_mod(interaction):
            raise UserError("Only moderators can publish clips.")
        await clip_here(interaction, clip_id)
        if not await self.may_publish(interaction.guild_id):
            raise UserError(NOT_ALLOWED)
        await interaction.response.defer(ephemeral=True, thinking=True)
        text = await self.publish(clip_id, guild_id=interaction.guild_id)
        await interaction.followup.send(text, ephemeral=True)

    async def may_publish(self, guild_id: int | None) -> bool:
        return await may_publish(self.bot, guild_id)

    async def publish(self, clip_id: int, when: datetime | None = None, *, guild_id: int | None) -> str:
        """Hand a clip of `guild_id` to the publisher: one publication per configured platform, each
        at its next upload time, if the bot's owner allowed publishing from that server. Idempotent
        (one row per clip and platform), so nothing is ever posted twice."""
        from publisher.platforms import enabled_platforms
        from publisher.scheduler import schedule_for_guild

        settings = self.bot.settings
        if not enabled_platforms(settings):
            return "No publishing platform is set up (X or SoundCloud credentials), so nothing was scheduled."
        guild = self.bot.get_guild(guild_id) if guild_id is not None else None
        if guild is not None:
            # A SoundCloud playlist is titled after the server when made; remember its name now.
            await self.bot.to_thread(remember_guild_name, self.bot.db, guild.id, guild.name)
        done = await schedule_for_guild(self.bot.db, settings, clip_id, guild_id, when=when)
        if not done.allowed:
            return NOT_ALLOWED
        if done.refused:
            return done.refused
        return (
            f"📣 Clip #{clip_id} is scheduled for {', '.join(done.platforms)} at the next upload time. "
            "Each upload happens once, however often it is asked for."
        )
