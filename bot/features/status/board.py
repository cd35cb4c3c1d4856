"""The status board: each song's status message, posted when it is asked for and edited in place
as the song moves (throttled, and only when the text changed); its end (failed, cancelled); and
cancelling, which the Cancel button on that message and `/mod cancel` ask for.

Database reads run in threads; the message text comes from `render.py`, the Cancel button from
`buttons.py` (handed in as `view_for`, so this module does not import the UI)."""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable

import discord
from sqlalchemy import select
from sqlmodel import col

from bot.config import guild_settings
from bot.core.access import may_manage, song_here
from bot.core.bot import JukeBot
from bot.core.posting import NO_PINGS
from bot.core.replies import reply
from bot.core.rows import set_status_message
from bot.core.text import message_url
from bot.edit_pacing import EditPacer, PacingRules, worker_gone_quiet
from bot.errors import UserError
from db import lifecycle, queue, repo
from db.models import Draft, Job, JobStatus, Song, SongStatus, User, utcnow

from .render import Snapshot, is_final, render, shows_cancel

log = logging.getLogger("jukebot.bot.status")

ViewFor = Callable[[int, bool], discord.ui.View | None]
CancelHook = Callable[[int], Awaitable[None]]


class StatusBoard:
    def __init__(self, bot: JukeBot, view_for: ViewFor) -> None:
        self.bot = bot
        self.view_for = view_for
        self._rendered: dict[int, tuple[str, bool]] = {}
        # Discord allows ~5 edits per 5 s per channel, shared by every song there: edits wait their
        # turn in the pacer, and the one that goes out renders the latest state (issue #14, 16).
        self.pacer = EditPacer(PacingRules(song_interval=bot.settings.discord.status_edit_seconds))
        self._cancel_hooks: list[CancelHook] = []

    def on_cancelled(self, hook: CancelHook) -> None:
        """Run `hook(song_id)` under the song's lock when a song is cancelled (voting turns its
        buttons off)."""
        self._cancel_hooks.append(hook)

    # ------------------------------------------------------------------ the message

    def snapshot(self, song_id: int) -> Snapshot:
        """Everything the status message shows, read in one go (runs in a thread)."""
        db, settings = self.bot.db, self.bot.settings
        now = utcnow()
        with db.read() as s:
            song = s.get(Song, song_id)
            if song is None:
                raise LookupError(f"no song {song_id}")
            requester = s.get(User, song.user_id)
            job = lifecycle.latest_job(s, song_id)
            drafts_msg = s.execute(
                select(col(Draft.message_id)).where(
                    col(Draft.song_id) == song_id, col(Draft.message_id).is_not(None)
                )
            ).scalar()
            clip = repo.first_clip(s, song_id)
            winner = s.get(Draft, song.winner_draft_id) if song.winner_draft_id else None
        position = queue.queue_position(db, job.id) if job is not None and job.id is not None else None
        drafts_url = None
        if drafts_msg is not None and song.channel_id is not None:
            gs = guild_settings(db, settings, song.guild_id) if song.guild_id else None
            channel = (gs.drafts_channel_id if gs else None) or song.channel_id
            drafts_url = message_url(song.guild_id, channel, drafts_msg)
        clip_url = None
        if clip is not None and clip.message_id and clip.channel_id:
            clip_url = message_url(song.guild_id, clip.channel_id, clip.message_id)
        return Snapshot(
            song=song,
            requester_id=requester.discord_id if requester else song.user_id,
            job=job,
            position=position,
            waiting_for_slot=song.status == SongStatus.queued and job is None,
            drafts_url=drafts_url,
            clip_url=clip_url,
            winner_index=winner.index if winner is not None else None,
            now=now,
            worker_quiet=job is not None
            and job.status == JobStatus.running
            and worker_gone_quiet(job.heartbeat_at, settings.queue.heartbeat_seconds, now),
        )

    async def post_status(self, song_id: int) -> str | None:
        """Post the song's status message (a normal channel message, edited later with the bot token)."""
        snap = await self.bot.to_thread(self.snapshot, song_id)
        song = snap.song
        if song.channel_id is None:
            return None
        content = render(snap)
        try:
            msg = await self.bot.poster.channel(song.channel_id, song.guild_id).send(
                content,
                view=self.view_for(song_id, shows_cancel(snap)) or discord.utils.MISSING,
                allowed_mentions=discord.AllowedMentions(users=[discord.Object(snap.requester_id)]),
            )
        except discord.HTTPException as exc:
            log.warning("song %s: cannot post the status message in %s: %s", song_id, song.channel_id, exc)
            return None
        await self.bot.to_thread(set_status_message, self.bot.db, song_id, msg.id)
        self._rendered[song_id] = (content, shows_cancel(snap))
        self.pacer.sent(song_id, song.channel_id, time.monotonic())
        return message_url(song.guild_id, song.channel_id, msg.id)

    async def refresh_status(self, song_id: int, *, force: bool = False) -> None:
        """Ask for the status message to show the song's latest state. The edit goes out when the
        channel's budget and the song's interval allow (`flush`, every watcher tick); `force` (a
        change of stage) tries at once, within the same budget."""
        snap = await self.bot.to_thread(self.snapshot, song_id)
        song = snap.song
        if song.status_message_id is None or song.channel_id is None:
            return
        if self._rendered.get(song_id) == (render(snap), shows_cancel(snap)):
            return
        self.pacer.want(song_id, song.channel_id, time.monotonic())
        if force:
            await self.flush()

    async def flush(self) -> None:
        """Make the edits the pacer allows now, each rendering its song's latest state."""
        for song_id in self.pacer.due(time.monotonic()):
            await self._edit(song_id)

    async def _edit(self, song_id: int) -> None:
        snap = await self.bot.to_thread(self.snapshot, song_id)
        song = snap.song
        if song.status_message_id is None or song.channel_id is None:
            return
        content = render(snap)
        cancel = shows_cancel(snap)
        if self._rendered.get(song_id) == (content, cancel):
            return
        channel = self.bot.poster.channel(song.channel_id, song.guild_id)
        message = channel.get_partial_message(song.status_message_id)
        try:
            await message.edit(
                content=content, view=self.view_for(song_id, cancel), allowed_mentions=NO_PINGS
            )
        except discord.NotFound:
            # Deleted by someone (10008): stop editing it; the results are still posted.
            log.info(
                "song %s: status message %s is gone; no more progress edits", song_id, song.status_message_id
            )
            await self.bot.to_thread(set_status_message, self.bot.db, song_id, None)
            return
        except discord.Forbidden as exc:
            log.warning("song %s: may not edit the status message: %s", song_id, exc)
            await self.bot.to_thread(set_status_message, self.bot.db, song_id, None)
            return
        self._rendered[song_id] = (content, cancel)
        if is_final(song):
            self._forget(song_id)

    def _forget(self, song_id: int) -> None:
        """A finished song needs nothing kept in memory any more."""
        self._rendered.pop(song_id, None)
        self.pacer.forget(song_id)
        self.bot.locks.forget(song_id)

    # ------------------------------------------------------------------ endings

    async def song_failed(self, song_id: int, job: Job) -> None:
        bot = self.bot
        error = (job.last_error or "the engine stopped").strip().splitlines()[-1][:300]
        await bot.to_thread(lifecycle.finish, bot.db, song_id, SongStatus.failed, error)
        await self.refresh_status(song_id, force=True)
        snap = await bot.to_thread(self.snapshot, song_id)
        song = snap.song
        if song.channel_id is None:
            return
        channel = bot.poster.channel(song.channel_id, song.guild_id)
        try:
            ref = channel.get_partial_message(song.status_message_id) if song.status_message_id else None
            await channel.send(
                f"<@{snap.requester_id}> song #{song_id} could not be made: {error}. "
                "It does not count against your daily songs; a moderator can retry it "
                f"with `/mod retry job:{job.id}`.",
                reference=ref or discord.utils.MISSING,
                mention_author=False,
                allowed_mentions=discord.AllowedMentions(users=[discord.Object(snap.requester_id)]),
            )
        except discord.HTTPException as exc:
            log.warning("song %s: cannot tell the requester it failed: %s", song_id, exc)

    async def song_cancelled(self, song_id: int) -> None:
        await self.bot.to_thread(lifecycle.finish, self.bot.db, song_id, SongStatus.cancelled)
        await self.refresh_status(song_id, force=True)

    # ------------------------------------------------------------------ cancel

    async def cancel_pressed(self, interaction: discord.Interaction[JukeBot], song_id: int) -> None:
        song = await song_here(interaction, song_id)
        if not await may_manage(interaction, song):
            raise UserError("Only the member who asked for this song, or a moderator, can cancel it.")
        await interaction.response.defer(ephemeral=True, thinking=True)
        outcome = await self.cancel(song_id)
        text = {
            lifecycle.CancelOutcome.cancelled: f"🛑 Song #{song_id} is cancelled. It does not count against your daily songs.",
            lifecycle.CancelOutcome.requested: f"🛑 Stopping song #{song_id}: the worker will stop within a few seconds.",
            lifecycle.CancelOutcome.finished: f"Song #{song_id} is already finished; there is nothing to cancel.",
        }[outcome]
        await reply(interaction, text)

    async def cancel(self, song_id: int) -> lifecycle.CancelOutcome:
        """Cancel a song the caller has already found in its server (`song_here`)."""
        async with self.bot.locks.lock_for(song_id):
            outcome = await self.bot.to_thread(lifecycle.cancel, self.bot.db, song_id)
            if outcome == lifecycle.CancelOutcome.cancelled:
                for hook in self._cancel_hooks:
                    await hook(song_id)
        await self.refresh_status(song_id, force=True)
        self.bot.wake_watcher()
        return outcome
