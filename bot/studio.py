"""The studio: what the bot does on Discord for a song, from request to posted clip.

Cogs (commands) and buttons call in here; the job watcher calls in here when the database says
something moved. Database work runs in threads (`asyncio.to_thread`); Discord work is awaited.
Every message edit tolerates a message deleted by a moderator (Discord error 10008).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from functools import partial
from typing import TYPE_CHECKING, Any, TypeVar

import discord
from sqlalchemy import select, update
from sqlmodel import col

from db import lifecycle, queue, repo
from db.models import Clip, Draft, Job, Song, SongStatus, User, utcnow
from db.scope import GuildScope
from db.settings import Settings

from . import media, songs, voting
from .config import GuildSettings, guild_settings
from .errors import UserError, new_error_id
from .labels import Labels
from .permissions import is_moderator
from .ratelimit import RateLimiter
from .status import Snapshot, describe, is_final, message_url, render, shows_cancel, ts
from .views.buttons import clip_view, drafts_view, reply, status_view

if TYPE_CHECKING:
    from .main import JukeBot

log = logging.getLogger("jukebot.bot.studio")
T = TypeVar("T")

NO_PINGS = discord.AllowedMentions.none()


@dataclass(frozen=True)
class Submitted:
    song: Song
    status_url: str | None


class Studio:
    def __init__(self, bot: JukeBot) -> None:
        self.bot = bot
        self.settings: Settings = bot.settings
        self.db = bot.db
        self.storage = bot.storage
        self.limiter = RateLimiter(self.settings.request_rate_count, self.settings.request_rate_seconds)
        self._rendered: dict[int, tuple[str, bool]] = {}
        self._edited_at: dict[int, float] = {}
        self._start_lock = asyncio.Lock()
        self._song_locks: dict[int, asyncio.Lock] = {}
        self._retry_at: dict[tuple[str, int], float] = {}
        # Posted to Discord but not yet recorded in the database (a database hiccup right after
        # the post): recorded on the next try instead of posting again.
        self._unrecorded: dict[tuple[str, int], Callable[[], None]] = {}
        self._labels: Labels | None = None

    # ------------------------------------------------------------------ helpers

    async def run(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        return await asyncio.to_thread(fn, *args, **kwargs)

    def lock_for(self, song_id: int) -> asyncio.Lock:
        return self._song_locks.setdefault(song_id, asyncio.Lock())

    @property
    def labels(self) -> Labels:
        if self._labels is None:
            from .labels import load_labels

            self._labels = load_labels(self.settings.model)
        return self._labels

    async def guild(self, guild_id: int | None) -> GuildSettings | None:
        if guild_id is None:
            return None
        return await self.run(guild_settings, self.db, self.settings, guild_id)

    def upload_limit(self, guild_id: int | None) -> int:
        guild = self.bot.get_guild(guild_id) if guild_id is not None else None
        if guild is not None:
            return int(guild.filesize_limit)
        return int(discord.utils.DEFAULT_FILE_SIZE_LIMIT_BYTES)

    def channel(self, channel_id: int, guild_id: int | None) -> discord.PartialMessageable:
        return self.bot.get_partial_messageable(channel_id, guild_id=guild_id)

    def check_rate(self, member_id: int) -> None:
        wait = self.limiter.retry_after(member_id)
        if wait > 0:
            raise UserError(
                f"Easy there — you have asked for {self.limiter.count} songs in the last "
                f"{self.limiter.seconds:g} seconds. Try again in {wait:.0f} s."
            )

    def cap_for(self, guild_id: int) -> int:
        """Songs of this guild allowed in the studio at once (runs in a thread)."""
        return guild_settings(self.db, self.settings, guild_id).max_running

    async def start_pending(self) -> list[tuple[int, int]]:
        async with self._start_lock:
            return await self.run(songs.start_pending, self.db, self.cap_for)

    async def is_mod(self, interaction: discord.Interaction) -> bool:
        return is_moderator(interaction, await self.guild(interaction.guild_id))

    async def song_here(self, interaction: discord.Interaction, song_id: int) -> Song:
        """The song with this id in the server the interaction comes from; UserError otherwise."""
        song = await self.run(_scoped, self.db, GuildScope(interaction.guild_id).song, song_id)
        if song is None:
            raise UserError(f"There is no song #{song_id} here.")
        return song

    async def clip_here(self, interaction: discord.Interaction, clip_id: int) -> Clip:
        """The clip with this id in the server the interaction comes from; UserError otherwise."""
        clip = await self.run(_scoped, self.db, GuildScope(interaction.guild_id).clip, clip_id)
        if clip is None:
            raise UserError(f"There is no clip #{clip_id} here.")
        return clip

    # ------------------------------------------------------------------ requests

    async def submit(
        self,
        interaction: discord.Interaction,
        *,
        artist: str,
        genre: str,
        lyrics: str,
        seconds: float,
        n_drafts: int,
        parent_clip_id: int | None = None,
        prime_key: str | None = None,
        prime_seconds: float | None = None,
    ) -> Submitted:
        """Write the song, start it if the guild has a free slot, post its status message."""
        who = songs.Requester(
            discord_id=interaction.user.id,
            name=interaction.user.display_name,
            guild_id=interaction.guild_id,
            channel_id=interaction.channel_id,
        )
        gs = await self.guild(interaction.guild_id)
        try:
            song = await self.run(
                songs.request_song,
                self.db,
                self.settings,
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
            )
        except UserError:
            self.limiter.forget(interaction.user.id)
            raise
        assert song.id is not None
        await self.start_pending()
        url = await self.post_status(song.id)
        self.bot.wake_watcher()
        return Submitted(song, url)

    async def post_status(self, song_id: int) -> str | None:
        """Post the song's status message (a normal channel message, edited later with the bot token)."""
        snap = await self.run(self.snapshot, song_id)
        song = snap.song
        if song.channel_id is None:
            return None
        content = render(snap)
        try:
            msg = await self.channel(song.channel_id, song.guild_id).send(
                content,
                view=status_view(song_id, shows_cancel(snap)) or discord.utils.MISSING,
                allowed_mentions=discord.AllowedMentions(users=[discord.Object(snap.requester_id)]),
            )
        except discord.HTTPException as exc:
            log.warning("song %s: cannot post the status message in %s: %s", song_id, song.channel_id, exc)
            return None
        await self.run(_set_status_message, self.db, song_id, msg.id)
        self._rendered[song_id] = (content, shows_cancel(snap))
        self._edited_at[song_id] = time.monotonic()
        return message_url(song.guild_id, song.channel_id, msg.id)

    # ------------------------------------------------------------------ status message

    def snapshot(self, song_id: int) -> Snapshot:
        """Everything the status message shows, read in one go (runs in a thread)."""
        with self.db.read() as s:
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
            clip = s.execute(select(Clip).where(col(Clip.song_id) == song_id)).scalar_one_or_none()
            winner = s.get(Draft, song.winner_draft_id) if song.winner_draft_id else None
        position = queue.queue_position(self.db, job.id) if job is not None and job.id is not None else None
        drafts_url = None
        if drafts_msg is not None and song.channel_id is not None:
            gs = guild_settings(self.db, self.settings, song.guild_id) if song.guild_id else None
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
            now=utcnow(),
        )

    async def refresh_status(self, song_id: int, *, force: bool = False) -> None:
        """Edit the status message if what it should show changed (throttled unless forced)."""
        snap = await self.run(self.snapshot, song_id)
        song = snap.song
        if song.status_message_id is None or song.channel_id is None:
            return
        content = render(snap)
        cancel = shows_cancel(snap)
        if self._rendered.get(song_id) == (content, cancel):
            return
        last = self._edited_at.get(song_id, 0.0)
        if not force and time.monotonic() - last < self.settings.status_edit_seconds:
            return
        message = self.channel(song.channel_id, song.guild_id).get_partial_message(song.status_message_id)
        try:
            await message.edit(content=content, view=status_view(song_id, cancel), allowed_mentions=NO_PINGS)
        except discord.NotFound:
            # Deleted by someone (10008): stop editing it; the results are still posted.
            log.info(
                "song %s: status message %s is gone; no more progress edits", song_id, song.status_message_id
            )
            await self.run(_set_status_message, self.db, song_id, None)
            return
        except discord.Forbidden as exc:
            log.warning("song %s: may not edit the status message: %s", song_id, exc)
            await self.run(_set_status_message, self.db, song_id, None)
            return
        self._rendered[song_id] = (content, cancel)
        self._edited_at[song_id] = time.monotonic()
        if is_final(song):
            self._forget(song_id)

    def _forget(self, song_id: int) -> None:
        """A finished song needs nothing kept in memory any more."""
        self._rendered.pop(song_id, None)
        self._edited_at.pop(song_id, None)
        lock = self._song_locks.get(song_id)
        if lock is not None and not lock.locked():
            del self._song_locks[song_id]

    # ------------------------------------------------------------------ drafts and voting

    def _backoff(self, what: str, song_id: int) -> bool:
        """True while a failed post of `what` for this song should not be retried yet."""
        return self._retry_at.get((what, song_id), 0.0) > time.monotonic()

    def _failed(self, what: str, song_id: int, delay: float = 30.0) -> None:
        self._retry_at[(what, song_id)] = time.monotonic() + delay

    async def post_drafts(self, song_id: int) -> None:
        """Post the finished drafts with vote buttons (once per song). The vote is opened in the
        database first, so a click on the fresh message always counts."""
        if self._backoff("drafts", song_id):
            return
        async with self.lock_for(song_id):
            song, drafts, requester = await self.run(_song_drafts, self.db, song_id)
            if song.status not in (SongStatus.queued, SongStatus.drafting, SongStatus.voting):
                return
            if not drafts:
                await self.run(
                    lifecycle.finish,
                    self.db,
                    song_id,
                    SongStatus.failed,
                    "the engine finished without any drafts",
                )
                await self.refresh_status(song_id, force=True)
                return
            if all(d.message_id is not None for d in drafts) or await self._record_pending("drafts", song_id):
                return
            gs = await self.guild(song.guild_id)
            window = timedelta(minutes=gs.vote_window_minutes if gs else self.settings.vote_window_minutes)
            await self.run(lifecycle.open_vote, self.db, song_id, utcnow() + window)
            closes = utcnow() + window
            view = drafts_view(song_id, [(d.id or 0, d.index, 0) for d in drafts], open_=True)
            channels = [c for c in ((gs.drafts_channel_id if gs else None), song.channel_id) if c]
            msg = await self.send_first(
                channels,
                song.guild_id,
                drafts_content(song, requester, closes),
                partial(media.draft_bundle, self.storage, song, drafts),
                view,
            )
            if msg is None:
                self._failed("drafts", song_id)
                return
            await self._record(
                "drafts", song_id, partial(voting.drafts_posted, self.db, song_id, msg.id, closes)
            )
        await self.refresh_status(song_id, force=True)

    async def _record(self, what: str, song_id: int, write: Callable[[], None]) -> None:
        """Record a post in the database; if that fails, keep it to record later (never post twice)."""
        self._unrecorded[(what, song_id)] = write
        await self._record_pending(what, song_id)

    async def _record_pending(self, what: str, song_id: int) -> bool:
        """True when a post of `what` was made but not recorded; records it now if possible."""
        write = self._unrecorded.get((what, song_id))
        if write is None:
            return False
        await self.run(write)  # raises if the database is still unavailable: tried again next tick
        self._unrecorded.pop((what, song_id), None)
        return True

    async def send_first(
        self,
        channel_ids: list[int],
        guild_id: int | None,
        content: str,
        make_bundle: Callable[[int], media.Bundle],
        view: discord.ui.View,
    ) -> discord.Message | None:
        """Post `content` with the files `make_bundle(limit)` builds under the guild's upload limit,
        to the first channel that accepts it (a configured channel may be gone). If Discord still
        says the files are too large (413: the guild lost its boost, say), build them smaller."""
        limit = self.upload_limit(guild_id)
        bundle = await self.run(make_bundle, limit)
        for channel_id in dict.fromkeys(channel_ids):
            for _ in range(6):
                files = [
                    discord.File(_bytes_io(a.data), filename=a.filename, description=a.description or None)
                    for a in bundle.files
                ]
                text = content + "".join(f"\n⚠️ {n}" for n in bundle.notes)
                try:
                    return await self.channel(channel_id, guild_id).send(
                        text[:2000],
                        files=files,
                        view=view,
                        allowed_mentions=discord.AllowedMentions(users=True),
                    )
                except discord.HTTPException as exc:
                    if exc.status != 413 or not bundle.files:
                        log.warning("cannot post in channel %s: %s", channel_id, exc)
                        break
                    biggest = max(len(a.data) for a in bundle.files)
                    limit = max(64 * 1024, min(limit, biggest) // 2)
                    log.info("Discord refused files of up to %d bytes; trying again under %d", biggest, limit)
                    bundle = await self.run(make_bundle, limit)
        return None

    async def close_vote(self, song_id: int, *, force: bool = False) -> voting.Closed | None:
        async with self.lock_for(song_id):
            closed = await self.run(voting.close_vote, self.db, song_id, force=force)
            if closed is None:
                return None
            await self._show_tally(closed.song, closed.tally, open_=False, winner_draft_id=closed.winner.id)
        self.bot.wake_watcher()
        await self.refresh_status(song_id, force=True)
        return closed

    async def _show_tally(
        self, song: Song, tally: voting.Tally, *, open_: bool, winner_draft_id: int | None = None
    ) -> None:
        """Update the drafts message: vote counts while open; at the close, the winner and no buttons."""
        drafts = tally.drafts
        message_id = drafts[0].message_id if drafts else None
        if message_id is None or song.channel_id is None or song.id is None:
            return
        rows = [(d.id or 0, d.index, tally.counts.get(d.id or 0, 0)) for d in drafts]
        kwargs: dict[str, Any] = {
            "view": drafts_view(song.id, rows, open_=open_, winner_draft_id=winner_draft_id),
            "allowed_mentions": NO_PINGS,
        }
        if not open_ and winner_draft_id is not None:
            requester = await self.run(_discord_id_of, self.db, song.user_id)
            winner = next(d for d in drafts if d.id == winner_draft_id)
            kwargs["content"] = drafts_content(
                song, requester or 0, None, winner.index, tally.counts.get(winner_draft_id, 0)
            )
        gs = await self.guild(song.guild_id)
        channel_id = (gs.drafts_channel_id if gs else None) or song.channel_id
        try:
            await self.channel(channel_id, song.guild_id).get_partial_message(message_id).edit(**kwargs)
        except discord.NotFound:
            log.info("song %s: drafts message %s is gone", song.id, message_id)
        except discord.HTTPException as exc:
            log.warning("song %s: cannot update the drafts message: %s", song.id, exc)

    async def vote_pressed(self, interaction: discord.Interaction, song_id: int, draft_id: int) -> None:
        await interaction.response.defer(ephemeral=True, thinking=True)  # the answer may wait on the database
        result = await self.run(
            voting.vote,
            self.db,
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
        async with self.lock_for(song_id):
            song = await self.run(_song, self.db, song_id)
            if song is None or song.status != SongStatus.voting:
                return
            await self._show_tally(song, await self.run(voting.tally, self.db, song_id), open_=True)

    async def close_pressed(self, interaction: discord.Interaction, song_id: int) -> None:
        song = await self.song_here(interaction, song_id)
        if not await self._may_manage(interaction, song):
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

    async def _may_manage(self, interaction: discord.Interaction, song: Song) -> bool:
        requester = await self.run(_discord_id_of, self.db, song.user_id)
        return requester == interaction.user.id or await self.is_mod(interaction)

    # ------------------------------------------------------------------ cancel

    async def cancel_pressed(self, interaction: discord.Interaction, song_id: int) -> None:
        song = await self.song_here(interaction, song_id)
        if not await self._may_manage(interaction, song):
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
        async with self.lock_for(song_id):
            outcome = await self.run(lifecycle.cancel, self.db, song_id)
            if outcome == lifecycle.CancelOutcome.cancelled:
                song = await self.run(_song, self.db, song_id)
                tally = await self.run(voting.tally, self.db, song_id)
                if song is not None and tally.drafts and tally.drafts[0].message_id is not None:
                    await self._show_tally(song, tally, open_=False)  # a cancelled vote: buttons off
        await self.refresh_status(song_id, force=True)
        self.bot.wake_watcher()
        return outcome

    # ------------------------------------------------------------------ clips

    async def post_clip(self, song_id: int, clip_id: int | None = None) -> None:
        """Post the finished clip (audio under the guild's limit, waveform, buttons); song → done."""
        if self._backoff("clip", song_id):
            return
        async with self.lock_for(song_id):
            song, clip, requester = await self.run(_song_clip, self.db, song_id, clip_id)
            if song.status in (SongStatus.done, SongStatus.cancelled, SongStatus.failed):
                return
            if clip is None:
                await self.run(
                    lifecycle.finish,
                    self.db,
                    song_id,
                    SongStatus.failed,
                    "the engine finished without a clip",
                )
                await self.refresh_status(song_id, force=True)
                return
            if clip.message_id is None and not await self._record_pending("clip", song_id):
                gs = await self.guild(song.guild_id)
                content = (
                    f"🎶 **Song #{song.id} is finished** — {describe(song)} — made for <@{requester}>. "
                    f"Clip #{clip.id}.\nPress **Continue** to make it longer, **Vote** to put it up for the "
                    "daily clip."
                )
                channels = [c for c in ((gs.clips_channel_id if gs else None), song.channel_id) if c]
                msg = await self.send_first(
                    channels,
                    song.guild_id,
                    content,
                    partial(media.clip_bundle, self.storage, song, clip),
                    clip_view(clip.id or 0),
                )
                if msg is None:
                    self._failed("clip", song_id)
                    return
                await self._record(
                    "clip", song_id, partial(_clip_posted, self.db, song_id, clip.id, msg.channel.id, msg.id)
                )
            else:
                await self.run(lifecycle.finish, self.db, song_id, SongStatus.done)
        await self.refresh_status(song_id, force=True)

    async def clip_vote_pressed(self, interaction: discord.Interaction, clip_id: int) -> None:
        clip = await self.clip_here(interaction, clip_id)
        outcome = await self.run(
            repo.cast_vote,
            self.db,
            clip.song_id,
            interaction.user.id,
            None,
            repo.CLIP,
            voter_name=interaction.user.display_name,
        )
        votes = (await self.run(repo.vote_counts, self.db, clip.song_id, repo.CLIP)).get(None, 0)
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
                await interaction.message.edit(view=clip_view(clip_id, votes))
            except discord.HTTPException as exc:
                log.info("clip %s: cannot update the vote count: %s", clip_id, exc)

    async def continue_pressed(self, interaction: discord.Interaction, clip_id: int) -> None:
        await interaction.response.defer(ephemeral=True, thinking=True)
        submitted = await self.continue_clip(interaction, clip_id)
        await interaction.followup.send(self.queued_text(submitted), ephemeral=True)

    async def continue_clip(
        self,
        interaction: discord.Interaction,
        clip_id: int,
        *,
        seconds: float | None = None,
        artist: str | None = None,
        genre: str | None = None,
    ) -> Submitted:
        self.check_rate(interaction.user.id)
        try:
            seconds_ = songs.check_seconds(self.settings, seconds)
            clip, parent = await self.run(
                songs.continuation_source, self.db, GuildScope(interaction.guild_id), clip_id
            )
            artist_ = self.labels.artists.resolve(artist) if artist else parent.artist
            genre_ = self.labels.genres.resolve(genre) if genre else parent.genre
        except UserError:
            self.limiter.forget(interaction.user.id)
            raise
        return await self.submit(
            interaction,
            artist=artist_,
            genre=genre_,
            lyrics=parent.lyrics,
            seconds=seconds_,
            n_drafts=self.settings.default_drafts,
            parent_clip_id=clip.id,
        )

    def queued_text(self, submitted: Submitted) -> str:
        song = submitted.song
        where = f" Follow it here: {submitted.status_url}" if submitted.status_url else ""
        return f"✅ Song #{song.id} is in the studio ({describe(song)}).{where}"

    async def publish_pressed(self, interaction: discord.Interaction, clip_id: int) -> None:
        if not await self.is_mod(interaction):
            raise UserError("Only moderators can publish clips.")
        await self.clip_here(interaction, clip_id)
        await interaction.response.defer(ephemeral=True, thinking=True)
        text = await self.publish(clip_id)
        await interaction.followup.send(text, ephemeral=True)

    async def publish(self, clip_id: int, when: datetime | None = None) -> str:
        """Hand a clip to the publisher: one publication per configured platform, each at its next
        upload time. Idempotent (one row per clip and platform), so nothing is ever posted twice."""
        from publisher.platforms import enabled_platforms
        from publisher.scheduler import schedule_clip

        platforms = enabled_platforms(self.settings)
        if not platforms:
            return "No publishing platform is set up (X or SoundCloud credentials), so nothing was scheduled."
        await self.run(schedule_clip, self.db, clip_id, platforms, when, settings=self.settings)
        return (
            f"📣 Clip #{clip_id} is scheduled for {', '.join(platforms)} at the next upload time. "
            "Each upload happens once, however often it is asked for."
        )

    # ------------------------------------------------------------------ failures

    async def song_failed(self, song_id: int, job: Job) -> None:
        error = (job.last_error or "the engine stopped").strip().splitlines()[-1][:300]
        await self.run(lifecycle.finish, self.db, song_id, SongStatus.failed, error)
        await self.refresh_status(song_id, force=True)
        snap = await self.run(self.snapshot, song_id)
        song = snap.song
        if song.channel_id is not None:
            try:
                ref = (
                    self.channel(song.channel_id, song.guild_id).get_partial_message(song.status_message_id)
                    if song.status_message_id
                    else None
                )
                await self.channel(song.channel_id, song.guild_id).send(
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
        await self.run(lifecycle.finish, self.db, song_id, SongStatus.cancelled)
        await self.refresh_status(song_id, force=True)

    async def notify_moderators(self, guild_id: int | None, text: str) -> None:
        """Post to the moderators' channel (the publisher reports failures through this)."""
        targets: list[GuildSettings] = []
        if guild_id is not None:
            gs = await self.guild(guild_id)
            if gs is not None:
                targets.append(gs)
        else:
            from .config import all_guild_settings

            targets = await self.run(all_guild_settings, self.db, self.settings)
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


def drafts_content(
    song: Song,
    requester_id: int,
    closes: datetime | None,
    winner_index: int | None = None,
    winner_votes: int = 0,
) -> str:
    head = f"🎧 **Song #{song.id}** — {describe(song)} — drafts for <@{requester_id}>."
    if winner_index is None:
        return (
            f"{head}\nListen and vote for the one that should be made in full quality. "
            f"Voting closes {ts(closes) if closes else 'soon'}; one vote per member, and you can change it."
        )
    plural = "s" if winner_votes != 1 else ""
    return (
        f"{head}\n🏆 Voting closed: **draft {winner_index + 1}** won with {winner_votes} vote{plural}. "
        "It is being made in full quality now."
    )


# ---------------------------------------------------------------------- database helpers (threads)


def _bytes_io(data: bytes) -> Any:
    import io

    return io.BytesIO(data)


def _set_status_message(db: Any, song_id: int, message_id: int | None) -> None:
    with db.write() as s:
        s.execute(update(Song).where(col(Song.id) == song_id).values(status_message_id=message_id))


def _discord_id_of(db: Any, user_id: int) -> int | None:
    with db.read() as s:
        user = s.get(User, user_id)
        return user.discord_id if user else None


def _song_drafts(db: Any, song_id: int) -> tuple[Song, list[Draft], int]:
    with db.read() as s:
        song = s.get(Song, song_id)
        if song is None:
            raise LookupError(f"no song {song_id}")
        user = s.get(User, song.user_id)
        drafts = repo.drafts_for_song(s, song_id)
        return song, drafts, user.discord_id if user else 0


def _song_clip(db: Any, song_id: int, clip_id: int | None) -> tuple[Song, Clip | None, int]:
    with db.read() as s:
        song = s.get(Song, song_id)
        if song is None:
            raise LookupError(f"no song {song_id}")
        user = s.get(User, song.user_id)
        clip = s.get(Clip, clip_id) if clip_id else None
        if clip is None or clip.song_id != song_id:
            clip = s.execute(select(Clip).where(col(Clip.song_id) == song_id)).scalar_one_or_none()
        return song, clip, user.discord_id if user else 0


def _clip_posted(db: Any, song_id: int, clip_id: int | None, channel_id: int, message_id: int) -> None:
    with db.write() as s:
        s.execute(
            update(Clip).where(col(Clip.id) == clip_id).values(channel_id=channel_id, message_id=message_id)
        )
        lifecycle.finish(s, song_id, SongStatus.done)


def _song(db: Any, song_id: int) -> Song | None:
    """A song by the id the bot itself stored (a watched row, a locked song), not one a member typed."""
    with db.read() as s:
        return s.get(Song, song_id)


def _scoped(db: Any, lookup: Callable[[Any, int], T], item_id: int) -> T:
    with db.read() as s:
        return lookup(s, item_id)
