"""Voting on a song's drafts, on Discord: post the drafts with their vote buttons (once per song),
count votes on the buttons, close the vote (by the clock, the requester or a moderator) and show
the winner. The database side is `logic.py`; the buttons come from `buttons.py` (handed in as
`view_for`, so this module does not import the UI)."""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import datetime, timedelta
from functools import partial
from typing import Any

import discord

from bot.core import media
from bot.core.access import may_manage, song_here
from bot.core.bot import JukeBot
from bot.core.ledger import PostLedger
from bot.core.posting import NO_PINGS
from bot.core.rows import discord_id_of, song_by_own_id
from bot.errors import UserError
from bot.features.status import StatusBoard
from db import lifecycle, repo
from db.models import Song, SongStatus, utcnow
from db.scope import GuildScope

from . import again, logic
from .text import drafts_content, rerolled_content

log = logging.getLogger("jukebot.bot.voting")

# (song_id, [(draft_id, index, votes)], open_, winner_draft_id) -> the drafts message's buttons
DraftsView = Callable[..., discord.ui.View]


class Voting:
    def __init__(self, bot: JukeBot, board: StatusBoard, view_for: DraftsView) -> None:
        self.bot = bot
        self.board = board
        self.view_for = view_for
        self.ledger = PostLedger()
        self._reconciled: set[int] = set()  # songs whose drafts message was found closed this run
        board.on_cancelled(self.show_cancelled)

    async def post_drafts(self, song_id: int) -> None:
        """Post the finished drafts with vote buttons (once per song). The vote is opened in the
        database first, so a click on the fresh message always counts."""
        bot = self.bot
        if self.ledger.backing_off("drafts", song_id):
            return
        async with bot.locks.lock_for(song_id):
            song, drafts, requester = await bot.to_thread(logic.song_with_drafts, bot.db, song_id)
            if song.status not in (SongStatus.queued, SongStatus.drafting, SongStatus.voting):
                return
            if not drafts:
                await bot.to_thread(
                    lifecycle.finish,
                    bot.db,
                    song_id,
                    SongStatus.failed,
                    "the engine finished without any drafts",
                )
                await self.board.refresh_status(song_id, force=True)
                return
            if all(d.message_id is not None for d in drafts) or await self.ledger.record_pending(
                "drafts", song_id
            ):
                return
            gs = await bot.guild_config(song.guild_id)
            window = timedelta(
                minutes=gs.vote_window_minutes if gs else bot.settings.schedule.vote_window_minutes
            )
            await bot.to_thread(lifecycle.open_vote, bot.db, song_id, utcnow() + window)
            closes = utcnow() + window
            view = self.view_for(song_id, [(d.id or 0, d.index, 0) for d in drafts], open_=True)
            channels = await self._message_channels(song)
            msg = await bot.poster.send_first(
                channels,
                song.guild_id,
                drafts_content(song, requester, closes),
                partial(media.draft_bundle, bot.storage, song, drafts),
                view,
                once=f"jb-drafts-{drafts[0].id}",
            )
            if msg is None:
                await self._not_posted(song, channels)
                return
            self.ledger.forget("drafts", song_id)
            if channels and msg.channel.id != channels[0]:
                await bot.poster.notify_moderators(
                    song.guild_id,
                    f"I could not post the drafts of song #{song_id} in <#{channels[0]}> (deleted, or I may not "
                    f"post there), so they are in <#{msg.channel.id}>. Please check my channels (`/mod channels`).",
                )
            await self.ledger.record(
                "drafts", song_id, partial(logic.drafts_posted, bot.db, song_id, msg.id, closes)
            )
        await self.board.refresh_status(song_id, force=True)
        if song.rerolled_from_song_id is not None:
            await self.show_replaced(song.rerolled_from_song_id)

    async def show_replaced(self, song_id: int) -> None:
        """A reroll's drafts replaced this song's vote: its drafts message says so, buttons off."""
        bot = self.bot
        async with bot.locks.lock_for(song_id):
            song = await bot.to_thread(song_by_own_id, bot.db, song_id)
            if song is None or song.status != SongStatus.rerolled:
                return
            await self.show_tally(song, await bot.to_thread(logic.tally, bot.db, song_id), open_=False)
        await self.board.refresh_status(song_id, force=True)

    async def _not_posted(self, song: Song, channels: list[int]) -> None:
        """No channel took the drafts: try again later, a bounded number of times and not past the
        vote's window; then end the song (it does not count against the member's day) and tell the
        moderators, instead of retrying forever."""
        bot, settings = self.bot, self.bot.settings
        assert song.id is not None
        tries = self.ledger.failed("drafts", song.id, settings.discord.post_retry_seconds)
        due = song.vote_closes_at is not None and song.vote_closes_at <= utcnow()
        if tries < settings.discord.post_max_attempts and not due:
            return
        self.ledger.forget("drafts", song.id)
        where = ", ".join(f"<#{c}>" for c in channels) or "no channel"
        ended = await bot.to_thread(
            lifecycle.finish,
            bot.db,
            song.id,
            SongStatus.failed,
            f"I could not post its drafts in any channel ({where}: deleted, or I may not post there); "
            "it does not count against your songs of the day.",
        )
        if ended:
            await bot.poster.notify_moderators(
                song.guild_id,
                f"Song #{song.id} ended: I tried {tries} times to post its drafts in {where} and could not "
                "(deleted, or I may not post there). Please set my channels again with `/mod channels`.",
            )
            await self.board.refresh_status(song.id, force=True)

    async def close_vote(self, song_id: int, *, force: bool = False) -> logic.Closed | None:
        bot = self.bot
        async with bot.locks.lock_for(song_id):
            closed = await bot.to_thread(logic.close_vote, bot.db, song_id, force=force)
            if closed is None:
                return None
            await self.show_tally(closed.song, closed.tally, open_=False, winner_draft_id=closed.winner.id)
        bot.wake_watcher()
        await self.board.refresh_status(song_id, force=True)
        return closed

    async def show_tally(
        self, song: Song, tally: logic.Tally, *, open_: bool, winner_draft_id: int | None = None
    ) -> None:
        """Update the drafts message: vote counts while open; at the close, the winner and no buttons."""
        bot = self.bot
        drafts = tally.drafts
        message_id = drafts[0].message_id if drafts else None
        if message_id is None or song.channel_id is None or song.id is None:
            return
        rows = [(d.id or 0, d.index, tally.counts.get(d.id or 0, 0)) for d in drafts]
        again_ids: set[int] | None = None
        if not open_ and song.status in lifecycle.UPSAMPLED:
            made = await bot.to_thread(again.upsampled_drafts, bot.db, song.id)
            again_ids = {d.id for d in drafts if d.id is not None} - made
        kwargs: dict[str, Any] = {
            "view": self.view_for(
                song.id, rows, open_=open_, winner_draft_id=winner_draft_id, again=again_ids
            ),
            "allowed_mentions": NO_PINGS,
        }
        if song.status == SongStatus.rerolled:
            requester = await bot.to_thread(discord_id_of, bot.db, song.user_id)
            new_id = await bot.to_thread(again.replaced_by, bot.db, song.id)
            kwargs["content"] = rerolled_content(song, requester or 0, new_id)
        elif not open_ and winner_draft_id is not None:
            requester = await bot.to_thread(discord_id_of, bot.db, song.user_id)
            winner = next(d for d in drafts if d.id == winner_draft_id)
            kwargs["content"] = drafts_content(
                song, requester or 0, None, winner.index, tally.counts.get(winner_draft_id, 0)
            )
        for channel_id in await self._message_channels(song):  # it went to the first that took it
            try:
                await (
                    bot.poster.channel(channel_id, song.guild_id)
                    .get_partial_message(message_id)
                    .edit(**kwargs)
                )
                return
            except discord.NotFound:
                continue
            except discord.HTTPException as exc:
                log.warning("song %s: cannot update the drafts message: %s", song.id, exc)
                return
        log.info("song %s: drafts message %s is gone", song.id, message_id)

    async def reconcile(self, since: datetime, at_most: int = 20) -> tuple[int, bool]:
        """Give the closed form to drafts messages still showing an open vote for a song whose vote
        ended since `since` (the bot died between the close and the edit). Reads each message on
        Discord once per run and edits only those with live vote buttons; at most `at_most` reads a
        call, so one tick never waits long on Discord's rate limits. Returns (edited, more left)."""
        bot = self.bot
        edited = 0
        ended = await bot.to_thread(logic.recently_closed_with_message, bot.db, since)
        todo = [s for s in ended if s not in self._reconciled]
        for song_id in todo[:at_most]:
            self._reconciled.add(song_id)
            song = await bot.to_thread(song_by_own_id, bot.db, song_id)
            tally = await bot.to_thread(logic.tally, bot.db, song_id)
            if song is None or not tally.drafts or tally.drafts[0].message_id is None:
                continue
            if await self._shows_open_vote(song, tally.drafts[0].message_id):
                async with bot.locks.lock_for(song_id):
                    await self.show_tally(song, tally, open_=False, winner_draft_id=song.winner_draft_id)
                edited += 1
        return edited, len(todo) > at_most

    async def _shows_open_vote(self, song: Song, message_id: int) -> bool:
        for channel_id in await self._message_channels(song):
            try:
                msg = await self.bot.poster.channel(channel_id, song.guild_id).fetch_message(message_id)
            except discord.NotFound:
                continue
            except discord.HTTPException as exc:
                log.info("song %s: cannot read the drafts message: %s", song.id, exc)
                return False
            return any(
                isinstance(item, discord.Button)
                and not item.disabled
                and (item.custom_id or "").startswith(("jb:vote:", "jb:close:"))
                for row in msg.components
                if isinstance(row, discord.ActionRow)
                for item in row.children
            )
        return False

    async def _message_channels(self, song: Song) -> list[int]:
        """Where a song's drafts message may be: the drafts channel, the song's, the clips channel."""
        gs = await self.bot.guild_config(song.guild_id)
        found = [gs.drafts_channel_id if gs else None, song.channel_id, gs.clips_channel_id if gs else None]
        return [c for c in dict.fromkeys(found) if c]

    async def show_cancelled(self, song_id: int) -> None:
        """A cancelled song's vote: the drafts message keeps its counts, its buttons go off."""
        song = await self.bot.to_thread(song_by_own_id, self.bot.db, song_id)
        tally = await self.bot.to_thread(logic.tally, self.bot.db, song_id)
        if song is not None and tally.drafts and tally.drafts[0].message_id is not None:
            await self.show_tally(song, tally, open_=False)

    async def vote_pressed(
        self, interaction: discord.Interaction[JukeBot], song_id: int, draft_id: int
    ) -> None:
        bot = self.bot
        await interaction.response.defer(ephemeral=True, thinking=True)  # the answer may wait on the database
        result = await bot.to_thread(
            logic.vote,
            bot.db,
            GuildScope(interaction.guild_id),
            song_id,
            draft_id,
            interaction.user.id,
            interaction.user.display_name,
        )
        n = result.tally.votes_for_index(result.draft_index)
        label = f"draft {result.draft_index + 1}"
        if result.outcome == repo.VoteOutcome.new:
            text = f"🗳️ Your vote for {label} is in ({n} vote{'s' if n != 1 else ''} for it now)."
        elif result.outcome == repo.VoteOutcome.changed:
            text = f"🔁 You changed your vote to {label} ({n} vote{'s' if n != 1 else ''} for it now)."
        else:
            text = f"You already voted for {label}; each member's vote counts once."
        await interaction.followup.send(text, ephemeral=True)
        if result.outcome != repo.VoteOutcome.unchanged:
            await self.show_votes(song_id)

    async def show_votes(self, song_id: int) -> None:
        """Put the current counts on the vote buttons. Under the song's lock and from a fresh read,
        so edits from votes arriving together end with the right numbers, and a vote that lands
        as the window closes cannot reopen the closed message."""
        bot = self.bot
        async with bot.locks.lock_for(song_id):
            song = await bot.to_thread(song_by_own_id, bot.db, song_id)
            if song is None or song.status != SongStatus.voting:
                return
            await self.show_tally(song, await bot.to_thread(logic.tally, bot.db, song_id), open_=True)

    async def reroll_pressed(self, interaction: discord.Interaction[JukeBot], song_id: int) -> None:
        bot = self.bot
        song = await song_here(interaction, song_id)
        if not await may_manage(interaction, song):
            raise UserError("Only the member who asked for this song, or a moderator, can reroll it.")
        await interaction.response.defer(ephemeral=True, thinking=True)
        gs = await bot.guild_config(interaction.guild_id)
        rerolled = await bot.to_thread(
            again.reroll,
            bot.db,
            bot.settings,
            gs,
            GuildScope(interaction.guild_id),
            song_id,
            f"reroll:{interaction.id}",
        )
        new = rerolled.song
        assert new.id is not None
        if not rerolled.new:
            await interaction.followup.send(
                f"🎲 Song #{song_id} is already being rerolled: its new drafts are song #{new.id}.",
                ephemeral=True,
            )
            return
        url = await self.board.post_status(new.id)
        bot.wake_watcher()  # the watcher starts it when the server has a free slot
        where = f" Follow it here: {url}" if url else ""
        await interaction.followup.send(
            f"🎲 Rerolling song #{song_id}: song #{new.id} makes a new set of drafts with a new seed "
            f"(it counts as one of your songs of the day). The drafts of song #{song_id} stay up for the "
            f"vote until the new ones are posted, then those replace them.{where}",
            ephemeral=True,
        )

    async def again_pressed(
        self, interaction: discord.Interaction[JukeBot], song_id: int, draft_id: int
    ) -> None:
        bot = self.bot
        song = await song_here(interaction, song_id)
        if not await may_manage(interaction, song):
            raise UserError(
                "Only the member who asked for this song, or a moderator, can have another draft made."
            )
        await interaction.response.defer(ephemeral=True, thinking=True)
        gs = await bot.guild_config(interaction.guild_id)
        chosen = await bot.to_thread(
            again.choose_again, bot.db, bot.settings, gs, GuildScope(interaction.guild_id), song_id, draft_id
        )
        bot.wake_watcher()
        await interaction.followup.send(
            f"⬆️ Draft {chosen.draft_index + 1} of song #{song_id} is being made in full quality too "
            "(it counts as one of your songs of the day); its clip will be posted when it is ready.",
            ephemeral=True,
        )
        async with bot.locks.lock_for(song_id):
            fresh = await bot.to_thread(song_by_own_id, bot.db, song_id)
            if fresh is not None:
                tally = await bot.to_thread(logic.tally, bot.db, song_id)
                await self.show_tally(fresh, tally, open_=False, winner_draft_id=fresh.winner_draft_id)
        await self.board.refresh_status(song_id, force=True)

    async def close_pressed(self, interaction: discord.Interaction[JukeBot], song_id: int) -> None:
        song = await song_here(interaction, song_id)
        if not await may_manage(interaction, song):
            raise UserError(
                "Only the member who asked for this song, or a moderator, can close its vote early."
            )
        await interaction.response.defer(ephemeral=True, thinking=True)
        closed = await self.close_vote(song_id, force=True)
        if closed is None:
            await interaction.followup.send("This vote is already closed.", ephemeral=True)
        else:
            await interaction.followup.send(
                f"⏹️ Vote closed: draft {closed.winner.index + 1} won and is being made in full quality.",
                ephemeral=True,
            )
