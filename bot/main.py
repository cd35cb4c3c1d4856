"""The bot process: `JukeBot` and `run_bot` (what `jukebot bot` runs).

One process holds the Discord connection, the job watcher and the scheduler (voting windows are
closed by the watcher from `vote_closes_at`; the daily clip and the uploads by APScheduler). On a
single machine (SQLite) it also starts a GPU worker as a child process, so one command gives the
whole product. The bot never imports torch: the worker is a separate process.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib.util
import logging
import signal
from collections.abc import Callable
from typing import Any

import discord
import yarl
from discord import app_commands
from discord.ext import commands

from db.database import Database
from db.settings import Settings
from db.storage import Storage

from .errors import explain
from .studio import Studio
from .views.buttons import ALL_ITEMS, reply
from .watcher import Watcher

log = logging.getLogger("jukebot.bot")

EXTENSIONS = (
    "bot.cogs.generate",
    "bot.cogs.continue_",
    "bot.cogs.info",
    "bot.cogs.mod",
    "bot.cogs.daily",
)
OPTIONAL_EXTENSIONS = ("bot.cogs.lyrics",)  # the lyrics helper's cog (/lyrics draft)


def apply_discord_urls(settings: Settings) -> None:
    """Point discord.py at another Discord (a local fake in tests). Both are class attributes that
    every REST route and the first gateway connection read (research/discord.md §3.3)."""
    if settings.discord_api_base:
        discord.http.Route.BASE = settings.discord_api_base.rstrip("/")
    if settings.discord_gateway_url:
        discord.gateway.DiscordWebSocket.DEFAULT_GATEWAY = yarl.URL(settings.discord_gateway_url)


class JukeTree(app_commands.CommandTree["JukeBot"]):
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
        self.studio = Studio(self)
        self.watcher = Watcher(self.studio, settings.bot_watch_seconds)
        self.http_session: Any = None

    @property
    def labels(self) -> Any:
        """The model's artist and genre names (bot/labels.py), also used by the lyrics cog."""
        return self.studio.labels

    def wake_watcher(self) -> None:
        self.watcher.wake()

    async def setup_hook(self) -> None:
        import aiohttp

        self.http_session = aiohttp.ClientSession()
        self.scheduler = self._build_scheduler()
        await asyncio.to_thread(lambda: self.studio.labels)  # load the model's names once, off the loop
        for ext in OPTIONAL_EXTENSIONS:  # first, so /generate can hand it its Use handler
            if importlib.util.find_spec(ext) is not None:
                await self.load_extension(ext)
        for ext in EXTENSIONS:
            await self.load_extension(ext)
        self.add_dynamic_items(*ALL_ITEMS)
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
            await self.studio.notify_moderators(None, text)

        return build_scheduler(self.settings, self.db, storage=self.storage, notify=notify)

    async def sync_app_commands(self) -> None:
        """Register the slash commands with Discord: to one guild (instant) or globally."""
        if self.settings.discord_guild_id:
            guild = discord.Object(self.settings.discord_guild_id)
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


def setup_logging() -> None:
    discord.utils.setup_logging(level=logging.INFO, root=True)
    logging.getLogger("discord.http").setLevel(logging.WARNING)
    logging.getLogger("apscheduler").setLevel(logging.WARNING)
    logging.getLogger("alembic").setLevel(logging.WARNING)


async def serve(bot: JukeBot, token: str) -> None:
    """Run until the connection ends or SIGTERM/SIGINT asks for a clean stop."""
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        with contextlib.suppress(NotImplementedError, RuntimeError):  # not the main thread, or Windows
            loop.add_signal_handler(sig, stop.set)
    async with bot:
        runner = asyncio.create_task(bot.start(token))
        stopper = asyncio.create_task(stop.wait())
        done, _ = await asyncio.wait({runner, stopper}, return_when=asyncio.FIRST_COMPLETED)
        if stopper in done:
            log.info("stopping: closing the Discord connection")
            await bot.close()
        stopper.cancel()
        await runner


def run_bot(start_worker: bool, sync_commands: bool) -> int:
    """`jukebot bot`: migrate the database, start a local worker on SQLite, run the bot. Exit code."""
    from db.database import DatabaseUnavailable
    from db.migrate import open_database
    from db.settings import get_settings
    from db.storage import StorageUnavailable, get_storage

    from .labels import load_labels
    from .worker_process import WorkerProcess

    setup_logging()
    settings = get_settings()
    if settings.discord_token is None or not settings.discord_token.get_secret_value().strip():
        log.error(
            "No Discord bot token: set JUKEBOT_DISCORD_TOKEN (Discord developer portal → your app → Bot)."
        )
        return 2
    try:
        load_labels(settings.model)  # the artist/genre lists the commands offer (no weights, no torch)
    except (OSError, ValueError) as exc:
        log.error(
            "Cannot read the artist and genre lists of the model %r: %s. Check JUKEBOT_MODEL "
            "(demo, 1b_lyrics, 5b_lyrics, 5b, or a model folder with model.json).",
            settings.model,
            exc,
        )
        return 2
    try:
        db = open_database(settings.database_url, upgrade=True)
        storage = get_storage(settings)
    except (DatabaseUnavailable, StorageUnavailable) as exc:
        log.error("%s", exc)
        return 2
    worker: WorkerProcess | None = None
    if start_worker and settings.start_worker and db.dialect == "sqlite":
        worker = WorkerProcess()
        worker.start()
    bot = JukeBot(settings, db, storage, sync_commands=sync_commands)
    if worker is not None:
        bot.worker_process = worker  # type: ignore[attr-defined]
    code = 0
    try:
        asyncio.run(serve(bot, settings.discord_token.get_secret_value()))
    except discord.LoginFailure:
        log.error(
            "Discord refused the bot token. Check JUKEBOT_DISCORD_TOKEN (reset it in the developer portal)."
        )
        code = 1
    except discord.PrivilegedIntentsRequired as exc:
        log.error("%s", exc)
        code = 1
    except KeyboardInterrupt:
        pass
    finally:
        if worker is not None:
            worker.stop()
        db.dispose()
    return code
