"""The watcher loop: every few seconds (or when woken) the bot runs one step of work read from the
database. What a step does is the pipeline feature's business (bot/features/pipeline.py); this
loop only keeps it going, quietly through a database outage."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable

from bot.errors import is_database_down, new_error_id

log = logging.getLogger("jukebot.bot.watcher")

Step = Callable[[], Awaitable[None]]


class Watcher:
    def __init__(self, wait_ready: Callable[[], Awaitable[None]], interval: float) -> None:
        self.interval = interval
        self._wait_ready = wait_ready
        self._step: Step | None = None
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._db_down = False
        self.ticks = 0

    def run_each_tick(self, step: Step) -> None:
        self._step = step

    def start(self) -> None:
        if self._task is None or self._task.done():
            self._task = asyncio.create_task(self._loop(), name="jukebot-job-watcher")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    def wake(self) -> None:
        self._wake.set()

    async def tick(self) -> None:
        if self._step is not None:
            await self._step()
        self.ticks += 1

    async def _loop(self) -> None:
        await self._wait_ready()
        while True:
            try:
                await self.tick()
                if self._db_down:
                    log.warning("the database is back; the job watcher carries on")
                self._db_down = False
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                if is_database_down(exc):
                    if not self._db_down:
                        log.warning(
                            "the database is unavailable; the job watcher retries every %.0f s: %s",
                            self.interval,
                            exc,
                        )
                    self._db_down = True
                else:
                    log.exception("error %s in the job watcher", new_error_id())
            self._wake.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), self.interval)
