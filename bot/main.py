"""The bot process: `run_bot` (what `jukebot bot` runs) around `JukeBot` (bot/core/bot.py).

One process holds the Discord connection, the job watcher and the scheduler (voting windows are
closed by the watcher from `vote_closes_at`; the daily clip and the uploads by APScheduler). On a
single machine (SQLite) it also starts a GPU worker as a child process, so one command gives the
whole product. The bot never imports torch: the worker is a separate process.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal

import discord

from .core.bot import JukeBot

__all__ = ["JukeBot", "run_bot", "serve"]

log = logging.getLogger("jukebot.bot")


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
    if settings.discord.token is None or not settings.discord.token.get_secret_value().strip():
        log.error(
            "No Discord bot token: set JUKEBOT_DISCORD_TOKEN (Discord developer portal → your app → Bot)."
        )
        return 2
    try:
        load_labels(settings.engine.model)  # the artist/genre lists the commands offer (no weights, no torch)
    except (OSError, ValueError) as exc:
        log.error(
            "Cannot read the artist and genre lists of the model %r: %s. Check JUKEBOT_MODEL "
            "(demo, 1b_lyrics, 5b_lyrics, 5b, or a model folder with model.json).",
            settings.engine.model,
            exc,
        )
        return 2
    try:
        db = open_database(settings.storage.database_url, upgrade=True)
        storage = get_storage(settings)
    except (DatabaseUnavailable, StorageUnavailable) as exc:
        log.error("%s", exc)
        return 2
    worker: WorkerProcess | None = None
    if start_worker and settings.discord.start_worker and db.dialect == "sqlite":
        worker = WorkerProcess()
        worker.start()
    bot = JukeBot(settings, db, storage, sync_commands=sync_commands)
    bot.worker_process = worker
    code = 0
    try:
        asyncio.run(serve(bot, settings.discord.token.get_secret_value()))
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
