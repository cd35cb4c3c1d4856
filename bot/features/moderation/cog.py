"""`/mod ...`: moderators set the guild's channels, limits and daily time, cancel or retry jobs, and
see or rename the server's SoundCloud playlist.

A moderator is a member with the configured moderator role or the Manage Server permission
(choosing the moderator role itself needs Manage Server).
"""

from __future__ import annotations

from typing import Any

import discord
from discord import app_commands
from discord.ext import commands

from bot.config import GuildSettings, parse_daily_time, parse_timezone, update_guild
from bot.core.access import is_mod
from bot.core.bot import JukeBot
from bot.errors import UserError
from bot.features.clips.cog import DailyCog
from bot.features.requests.logic import ACTIVE_JOB, retry_job
from bot.features.status import StatusBoard
from db import lifecycle
from db.database import Database
from db.models import Job
from db.scope import GuildScope

from .playlist import TITLE_INPUT_MAX, playlist_answer


def _channel(cid: int | None) -> str:
    return f"<#{cid}>" if cid else "the channel where the command was used"


def describe_settings(gs: GuildSettings) -> str:
    return "\n".join(
        [
            "**Studio settings for this server**",
            f"Drafts go to {_channel(gs.drafts_channel_id)}; clips to {_channel(gs.clips_channel_id)}.",
            f"Daily clip: {('<#' + str(gs.daily_channel_id) + '>') if gs.daily_channel_id else 'off (no channel)'} "
            f"at {gs.daily_time} ({gs.timezone}).",
            f"Moderators' channel: {('<#' + str(gs.mod_channel_id) + '>') if gs.mod_channel_id else 'none'}; "
            f"moderator role: {('<@&' + str(gs.moderator_role_id) + '>') if gs.moderator_role_id else 'Manage Server only'}.",
            f"Songs per member per day: {gs.songs_per_day}; songs in the studio at once: {gs.max_running}; "
            f"voting lasts {gs.vote_window_minutes:g} min.",
        ]
    )


@app_commands.guild_only()
class ModCog(
    commands.GroupCog, name="Mod", group_name="mod", group_description="Moderator settings and jobs."
):
    def __init__(self, bot: JukeBot) -> None:
        self.bot = bot
        super().__init__()

    async def interaction_check(self, interaction: discord.Interaction[JukeBot]) -> bool:  # type: ignore[override]
        if interaction.guild_id is None:
            raise app_commands.CheckFailure("Moderator commands work in a server, not in direct messages.")
        if not await is_mod(interaction):
            raise app_commands.CheckFailure(
                "Only moderators can do that (the moderator role, or the Manage Server permission)."
            )
        return True

    async def _update(self, interaction: discord.Interaction[JukeBot], **changes: Any) -> GuildSettings:
        assert interaction.guild_id is not None
        return await self.bot.to_thread(
            update_guild, self.bot.db, self.bot.settings, interaction.guild_id, **changes
        )

    @app_commands.command(
        name="channels", description="Where drafts, clips, the daily clip and moderator notes go."
    )
    @app_commands.describe(
        drafts="Channel for drafts and voting",
        clips="Channel for finished clips",
        daily="Channel for the daily clip (turns it on)",
        mods="Channel for notes to moderators",
    )
    async def channels(
        self,
        interaction: discord.Interaction[JukeBot],
        drafts: discord.TextChannel | None = None,
        clips: discord.TextChannel | None = None,
        daily: discord.TextChannel | None = None,
        mods: discord.TextChannel | None = None,
    ) -> None:
        changes = {
            k: v.id
            for k, v in (
                ("drafts_channel_id", drafts),
                ("clips_channel_id", clips),
                ("daily_channel_id", daily),
                ("mod_channel_id", mods),
            )
            if v is not None
        }
        gs = (
            await self._update(interaction, **changes)
            if changes
            else await self.bot.guild_config(interaction.guild_id)
        )
        assert gs is not None
        if "daily_channel_id" in changes:
            await self._reschedule(gs)
        await interaction.response.send_message(
            ("Saved. " if changes else "") + describe_settings(gs), ephemeral=True
        )

    @app_commands.command(name="role", description="The role whose members are moderators here.")
    async def role(self, interaction: discord.Interaction[JukeBot], role: discord.Role) -> None:
        if not (interaction.permissions.manage_guild or interaction.permissions.administrator):
            raise UserError("Choosing the moderator role needs the Manage Server permission.")
        gs = await self._update(interaction, moderator_role_id=role.id)
        await interaction.response.send_message("Saved. " + describe_settings(gs), ephemeral=True)

    @app_commands.command(name="limits", description="Songs per member per day, songs at once, voting time.")
    @app_commands.describe(
        songs_per_day="Songs each member may ask for in 24 hours",
        at_once="Songs of this server in the studio at the same time",
        vote_minutes="How long each vote lasts, in minutes",
    )
    async def limits(
        self,
        interaction: discord.Interaction[JukeBot],
        songs_per_day: int | None = None,
        at_once: int | None = None,
        vote_minutes: float | None = None,
    ) -> None:
        changes: dict[str, Any] = {}
        if songs_per_day is not None:
            if not 0 <= songs_per_day <= 1000:
                raise UserError("Songs per day must be between 0 and 1000.")
            changes["songs_per_day"] = songs_per_day
        if at_once is not None:
            if not 1 <= at_once <= 100:
                raise UserError("Songs at once must be between 1 and 100.")
            changes["max_running"] = at_once
        if vote_minutes is not None:
            if not 0.1 <= vote_minutes <= 7 * 24 * 60:
                raise UserError("Voting can last from 0.1 minutes to a week (10080 minutes).")
            changes["vote_window_minutes"] = vote_minutes
        gs = (
            await self._update(interaction, **changes)
            if changes
            else await self.bot.guild_config(interaction.guild_id)
        )
        assert gs is not None
        self.bot.wake_watcher()  # a higher cap may let waiting songs start now
        await interaction.response.send_message(
            ("Saved. " if changes else "") + describe_settings(gs), ephemeral=True
        )

    @app_commands.command(name="daily-time", description="When the daily clip is posted.")
    @app_commands.describe(
        time="Time of day, HH:MM (24-hour clock)", timezone="A time zone such as Europe/Paris"
    )
    async def daily_time(
        self, interaction: discord.Interaction[JukeBot], time: str, timezone: str | None = None
    ) -> None:
        parse_daily_time(time)
        changes: dict[str, Any] = {"daily_time": time.strip()}
        if timezone is not None:
            changes["timezone"] = parse_timezone(timezone)
        gs = await self._update(interaction, **changes)
        await self._reschedule(gs)
        await interaction.response.send_message("Saved. " + describe_settings(gs), ephemeral=True)

    async def _reschedule(self, gs: GuildSettings) -> None:
        daily = self.bot.get_cog("Daily")
        if isinstance(daily, DailyCog):
            daily.schedule_guild(gs)

    @app_commands.command(
        name="playlist", description="This server's SoundCloud playlist: its link, or a new title."
    )
    @app_commands.describe(title="A new title for the playlist (up to 100 characters)")
    async def playlist(
        self,
        interaction: discord.Interaction[JukeBot],
        title: app_commands.Range[str, 1, TITLE_INPUT_MAX] | None = None,
    ) -> None:
        assert interaction.guild_id is not None
        await interaction.response.defer(ephemeral=True, thinking=True)
        name = interaction.guild.name if interaction.guild is not None else ""
        text = await playlist_answer(self.bot, interaction.guild_id, name, title)
        await interaction.followup.send(text, ephemeral=True)

    @app_commands.command(name="cancel", description="Cancel a job (any member's).")
    @app_commands.describe(job="The job number (see /queue)")
    async def cancel(self, interaction: discord.Interaction[JukeBot], job: int) -> None:
        await interaction.response.defer(ephemeral=True, thinking=True)
        found = await self.bot.to_thread(_job_here, self.bot.db, GuildScope(interaction.guild_id), job)
        if found is None:
            raise UserError(f"There is no job #{job} here. `/queue` lists the jobs in the studio.")
        if found.status not in ACTIVE_JOB or found.song_id is None:
            outcome = lifecycle.CancelOutcome.finished
        else:
            outcome = await self.bot.need(StatusBoard).cancel(found.song_id)  # the song stops with its job
        text = {
            lifecycle.CancelOutcome.cancelled: f"🛑 Job #{job} is cancelled.",
            lifecycle.CancelOutcome.requested: f"🛑 Job #{job} is stopping: its worker will stop within seconds.",
            lifecycle.CancelOutcome.finished: f"Job #{job} had already finished ({found.status}).",
        }[outcome]
        await interaction.followup.send(text, ephemeral=True)

    @app_commands.command(
        name="retry", description="Run a failed or cancelled job again (it resumes where it stopped)."
    )
    @app_commands.describe(job="The job number (from the failure message or /song)")
    async def retry(self, interaction: discord.Interaction[JukeBot], job: int) -> None:
        await interaction.response.defer(ephemeral=True, thinking=True)
        retried = await self.bot.to_thread(retry_job, self.bot.db, GuildScope(interaction.guild_id), job)
        self.bot.wake_watcher()
        if retried.song_id is not None:
            await self.bot.need(StatusBoard).refresh_status(retried.song_id, force=True)
        await interaction.followup.send(f"↻ Job #{job} is back in the queue.", ephemeral=True)


def _job_here(db: Database, scope: GuildScope, job_id: int) -> Job | None:
    with db.read() as s:
        return scope.job(s, job_id)
