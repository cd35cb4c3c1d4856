"""The client every feature works with: `JukeBot`, typed in handlers as `Interaction[JukeBot]`.

It holds what the features share (settings, database, storage, the model's names, the request
rate limiter, the per-song locks, the poster, the watcher, the scheduler) and loads the features
as extensions by name, so it imports none of them. A feature offers its service to the others
with `provide` and finds theirs with `need`; the watcher runs the step the pipeline registers.
"""

from __future__ import annotations

import asyncio
import importlib.util
import logging
from collections.abc import Callable
from typing import Any, TypeVar

import discord
import yarl
from discord import app_commands
from discord.ext import commands

from bot.config import GuildSettings, guild_settings
from bot.errors import explain
from bot.labels import Labels, load_labels
from bot.ratelimit import DraftBudget, RateLimiter
from db.database import Database
from db.settings import Settings
from db.storage import Storage

from .locks import SongLocks
from .posting import Poster
from .replies import reply
from .watcher import Watcher

log = logging.getLogger("jukebot.bot")
T = TypeVar("T")

# Loaded in this order: a feature's `need`s are met by those above it.
EXTENSIONS = (
    "bot.features.status",
    "bot.features.voting",
    "bot.features.requests",
    "bot.features.continuations",
    "bot.features.clips",
    "bot.features.moderation",
    "bot.features.info",
    "bot.features.pipeline",
)
OPTIONAL_EXTENSIONS = ("bot.features.lyrics",)  # first, so /generate can hand it its Use handler


def apply_discord_urls(settings: Settings) -> None:
    """Point discord.py at another Discord (a local fake in tests). Both are class attributes that
    every REST route and the first gateway connection read (research/discord.md §3.3)."""
    if settings.discord.api_base:
        discord.http.Route.BASE = settings.discord.api_base.rstrip("/")
    if settings.discord.gateway_url:
        discord.gateway.DiscordWebSocket.DEFAULT_GATEWAY = yarl.URL(settings.discord.gateway_url)


class JukeTree(app_commands.CommandTree["JukeBot"]):
    async def interaction_check(self, interaction: discord.Interaction[JukeBot]) -> bool:
        """Every command is guild_only (Discord hides them in DMs); this refuses a DM that gets
        through anyway, since the caps and budgets are counted per server."""
        if interaction.guild_id is None:
            raise app_commands.NoPrivateMessage("jukebot works in a server, not in direct messages.")
        return True

    async def on_error(
        self, interaction: discord.Interaction[JukeBot], error: app_commands.AppCommandError
    ) -> None:
        """Every slash-command failure ends in a plain answer; details go to the log with an id."""
        if isinstance(error, app_commands.CommandOnCooldown):
            message = f"Slow down a little: try again in {error.retry_after:.0f} s."
        elif isinstance(error, app_commands.CheckFailure) and not isinstance(
            error, app_commands.CommandInvokeError
        ):
            message = str(error) or "You may not use this command here."
        else:
            name = interaction.command.qualified_name if interaction.command else "a command"
            message = explain(error, where=f"/{name}")
        try:
            await reply(interaction, message)
        except discord.HTTPException:
            log.warning("could not tell the member about an error in an interaction")


class JukeBot(commands.Bot):
    def __init__(
        self,
        settings: Settings,
        db: Database,
        storage: Storage,
        *,
        sync_commands: bool = False,
        guild_ready_timeout: float = 2.0,
        scheduler_factory: Callable[[Settings, Database], Any] | None = None,
    ) -> None:
        apply_discord_urls(settings)
        super().__init__(
            command_prefix=commands.when_mentioned,
            intents=discord.Intents.default(),
            tree_cls=JukeTree,
            guild_ready_timeout=guild_ready_timeout,
            chunk_guilds_at_startup=False,
            help_command=None,
            allowed_mentions=discord.AllowedMentions(everyone=False, roles=False),
        )
        self.settings = settings
        self.db = db
        self.storage = storage
        self.sync_commands = sync_commands
        self.scheduler: Any = None
        self._scheduler_factory = scheduler_factory
        self.limiter = RateLimiter(settings.discord.request_rate_count, settings.discord.request_rate_seconds)
        self.lyric_budget = DraftBudget(
            settings.lyrics.drafts_per_member_hour, settings.lyrics.drafts_per_guild_day
        )
        self.locks = SongLocks()
        self.poster = Poster(self, db, settings)
        self.watcher = Watcher(self.wait_until_ready, settings.discord.bot_watch_seconds)
        self.http_session: Any = None
        self.worker_process: Any = None  # the local GPU worker `run_bot` started, if any
        self._labels: Labels | None = None
        self._services: dict[type, object] = {}

    # ------------------------------------------------------------------ shared services

    @property
    def labels(self) -> Labels:
        """The model's artist and genre names (bot/labels.py), also used by the lyrics cog."""
        if self._labels is None:
            self._labels = load_labels(self.settings.engine.model)
        return self._labels

    def provide(self, service: object) -> None:
        """Offer a feature's service to the other features (done in the feature's `setup`)."""
        self._services[type(service)] = service

    def need(self, kind: type[T]) -> T:
        """The service of a loaded feature."""
        service = self._services.get(kind)
        if not isinstance(service, kind):
            raise LookupError(f"the feature providing {kind.__name__} is not loaded")
        return service

    async def to_thread(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """Run blocking work (database, ffmpeg) in a thread."""
        return await asyncio.to_thread(fn, *args, **kwargs)

    async def guild_config(self, guild_id: int | None) -> GuildSettings | None:
        if guild_id is None:
            return None
        return await self.to_thread(guild_settings, self.db, self.settings, guild_id)

    def wake_watcher(self) -> None:
        self.watcher.wake()

    # ------------------------------------------------------------------ life cycle

    async def setup_hook(self) -> None:
        import aiohttp

        self.http_session = aiohttp.ClientSession()
        self.scheduler = self._build_scheduler()
        await asyncio.to_thread(lambda: self.labels)  # load the model's names once, off the loop
        for ext in OPTIONAL_EXTENSIONS:
            if importlib.util.find_spec(ext) is not None:
                await self.load_extension(ext)
        for ext in EXTENSIONS:
            await self.load_extension(ext)
        if self.sync_commands:
            await self.sync_app_commands()
        self.watcher.start()
        if self.scheduler is not None:
            self.scheduler.start()

    def _build_scheduler(self) -> Any:
        if self._scheduler_factory is not None:
            return self._scheduler_factory(self.settings, self.db)
        from publisher.scheduler import build_scheduler

        async def notify(text: str) -> None:  # the publisher reports upload failures to moderators
            await self.poster.notify_moderators(None, text)

        return build_scheduler(
            self.settings,
            self.db,
            storage=self.storage,
            notify=notify,
            notify_guild=self.poster.notify_moderators,  # a server's uploads and playlist: its moderators
        )

    async def sync_app_commands(self) -> None:
        """Register the slash commands with Discord: to one guild (instant) or globally."""
        if self.settings.discord.guild_id:
            guild = discord.Object(self.settings.discord.guild_id)
            self.tree.copy_global_to(guild=guild)
            synced = await self.tree.sync(guild=guild)
        else:
            synced = await self.tree.sync()
        log.info("synced %d application commands", len(synced))

    async def close(self) -> None:
        await self.watcher.stop()
        if self.scheduler is not None and getattr(self.scheduler, "running", False):
            self.scheduler.shutdown(wait=False)
        if self.http_session is not None:
            await self.http_session.close()
        await super().close()
