"""The bot's end-to-end harness (fixtures in tests/bot_fixtures.py): a fake Discord (tests/fakes/discord.py), the real bot (discord.py
as the client) in the test's event loop, a database and storage, and worker processes.

Everything is waited for by condition with a timeout (`Studio.until`), never by guessed sleeps.
"""

from __future__ import annotations

import asyncio
import io
import os
import signal
import subprocess
import sys
import warnings
import wave
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from sqlmodel import col, select

from bot.main import JukeBot
from db.database import Database
from db.models import Clip, Draft, Job, Song
from db.settings import Settings, get_settings
from db.storage import Storage
from tests.fakes.discord import FakeDiscord, FakeInteraction, custom_ids

ROOT = Path(__file__).resolve().parents[1]
MODEL = "5b_lyrics"  # the bot only reads the model's artist/genre lists (no weights needed)


@dataclass
class Studio:
    fake: FakeDiscord
    settings: Settings
    db: Database
    storage: Storage
    guild: int
    channel: int
    members: dict[str, int]
    mod_role: int
    env: dict[str, str]
    bot: JukeBot | None = None
    task: asyncio.Task[None] | None = None
    bot_db_url: str | None = None  # the bot's own database URL (e.g. through a proxy that can fail)
    bot_db: Database | None = None
    workers: list[subprocess.Popen[bytes]] = field(default_factory=list)

    # ---------------------------------------------------------------- the bot

    async def start_bot(
        self, *, sync: bool = True, scheduler_factory: Callable[..., Any] | bool | None = None
    ) -> JukeBot:
        """Start the bot on this loop. scheduler_factory: None for an in-memory APScheduler, False
        for the product's (publisher/scheduler.py, jobs kept in the database)."""
        db = self.db
        if self.bot_db_url is not None:
            self.bot_db = db = Database(self.bot_db_url)
        bot = JukeBot(
            self.settings,
            db,
            self.storage,
            sync_commands=sync,
            guild_ready_timeout=0.05,
            scheduler_factory=None
            if scheduler_factory is False
            else (scheduler_factory or _memory_scheduler),
        )  # type: ignore[arg-type]
        assert self.settings.discord.token is not None
        self.bot = bot
        self.task = asyncio.create_task(bot.start(self.settings.discord.token.get_secret_value()))
        ready = asyncio.create_task(bot.wait_until_ready())
        done, _ = await asyncio.wait({ready, self.task}, timeout=20, return_when=asyncio.FIRST_COMPLETED)
        if self.task in done:
            ready.cancel()
            self.task.result()  # raises what stopped the bot
        assert ready in done, "the bot did not get ready"
        return bot

    async def stop_bot(self) -> None:
        if self.bot is not None:
            await self.bot.close()
        if self.task is not None:
            await asyncio.wait_for(self.task, 10)
        self.bot = None
        self.task = None
        if self.bot_db is not None:
            self.bot_db.dispose()
            self.bot_db = None

    # ---------------------------------------------------------------- workers

    def start_real_worker(self) -> subprocess.Popen[bytes]:
        """The product's GPU worker (`jukebot worker`, engine/serving/worker.py) on the CPU, rendering with
        the tiny random-weight model the studio was set up with (`settings.engine.model`)."""
        env = {**self.env, "JUKEBOT_DEVICE": "cpu"}
        cmd = [sys.executable, "-m", "bot.cli", "worker", "--device", "cpu", "--threads", "1"]
        proc = subprocess.Popen(cmd, cwd=ROOT, env=env)
        self.workers.append(proc)
        return proc

    def kill_worker(self, proc: subprocess.Popen[bytes]) -> None:
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)

    def stop_workers(self) -> None:
        for proc in self.workers:
            if proc.poll() is None:
                proc.terminate()
        for proc in self.workers:
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()

    # ---------------------------------------------------------------- waiting and looking

    async def until(self, predicate: Callable[[], Any], what: str, timeout: float = 20.0) -> Any:
        return await self.fake.wait_for(predicate, timeout, what)

    async def until_db(self, fn: Callable[[], Any], what: str, timeout: float = 20.0) -> Any:
        """Wait for a database condition (checked in a thread every 50 ms)."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            value = await asyncio.to_thread(fn)
            if value:
                return value
            if loop.time() > deadline:
                raise TimeoutError(f"timed out waiting for {what}")
            await asyncio.sleep(0.05)

    async def run_db(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        """Run blocking database work off the event loop (the bot shares the loop)."""
        return await asyncio.to_thread(fn, *args, **kwargs)

    def bot_messages(self, channel: int | None = None) -> list[dict[str, Any]]:
        return [
            m
            for m in self.fake.channel_messages(channel or self.channel)
            if m["author"]["id"] == str(self.fake.app_id) and m.get("type", 0) == 0
        ]

    def message_with(self, prefix: str, channel: int | None = None) -> dict[str, Any] | None:
        """The bot's message in the channel having a button whose custom id starts with prefix."""
        for m in self.bot_messages(channel):
            if any(c.startswith(prefix) for c in custom_ids(m)):
                return m
        return None

    def song(self, song_id: int) -> Song:
        with self.db.read() as s:
            song = s.get(Song, song_id)
        assert song is not None
        return song

    def songs(self) -> list[Song]:
        with self.db.read() as s:
            return list(s.execute(select(Song).order_by(col(Song.id))).scalars())

    def drafts(self, song_id: int) -> list[Draft]:
        with self.db.read() as s:
            return list(
                s.execute(
                    select(Draft).where(col(Draft.song_id) == song_id).order_by(col(Draft.index))
                ).scalars()
            )

    def clip(self, song_id: int) -> Clip | None:
        with self.db.read() as s:
            return s.execute(select(Clip).where(col(Clip.song_id) == song_id)).scalar_one_or_none()

    def jobs(self, song_id: int) -> list[Job]:
        with self.db.read() as s:
            return list(
                s.execute(select(Job).where(col(Job.song_id) == song_id).order_by(col(Job.id))).scalars()
            )

    async def run(
        self, member: str, command: str, options: dict[str, Any] | None = None, channel: int | None = None
    ) -> FakeInteraction:
        ix = await self.fake.command(self.members[member], channel or self.channel, command, options)
        return await self.fake.settled(ix, timeout=20)

    async def click(self, member: str, message: dict[str, Any], custom_id: str) -> FakeInteraction:
        ix = await self.fake.click(self.members[member], int(message["id"]), custom_id)
        return await self.fake.settled(ix, timeout=20)


def _memory_scheduler(settings: Settings, db: Database) -> Any:
    """An APScheduler with the in-memory store for tests (the product uses publisher/scheduler.py)."""
    from apscheduler.schedulers.asyncio import AsyncIOScheduler

    return AsyncIOScheduler()


RATE = 22050


def tone_wav(freq: float, seconds: float, rate: int = RATE) -> bytes:
    """A real WAV file (a sine tone), for uploads and seeded clips."""
    t = np.arange(int(seconds * rate)) / rate
    wave_ = 0.3 * np.sin(2 * np.pi * freq * t) * (0.6 + 0.4 * np.sin(2 * np.pi * 0.5 * t))
    pcm = (wave_ * 32767).astype("<i2").tobytes()
    buf = io.BytesIO()
    with wave.open(buf, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes(pcm)
    return buf.getvalue()


def codes_npy(n: int, seed: int) -> bytes:
    buf = io.BytesIO()
    np.save(buf, np.random.default_rng(seed).integers(0, 2048, size=n, dtype=np.int64))
    return buf.getvalue()


def write_tiny_model(folder: Path) -> Path:
    """The engine-pipeline tests' tiny random-weight model (artists: bach; genres: chorale), written
    in a child process so this one stays free of torch."""
    code = (
        "import sys; from pathlib import Path; from tests.pipeline_fixtures import write_tiny_model; "
        "write_tiny_model(Path(sys.argv[1]))"
    )
    subprocess.run([sys.executable, "-c", code, str(folder)], cwd=ROOT, check=True, timeout=300)
    return folder


def real_worker_overrides(model_dir: Path, **more: Any) -> dict[str, Any]:
    """Settings for a studio whose songs are made by the real worker with the tiny model on a CPU:
    very short songs (a fifth of a second renders in seconds)."""
    return {
        "model": str(model_dir),
        "min_seconds": 0.1,
        "default_seconds": 0.2,
        "heartbeat_seconds": 0.2,
        "device": "cpu",
        **more,
    }


def studio_settings(database_url: str, storage_root: str, fake: FakeDiscord, **overrides: Any) -> Settings:
    values: dict[str, Any] = {
        "database_url": database_url,
        "storage_url": storage_root,
        "discord_token": fake.token,
        "discord_api_base": fake.api_base,
        "discord_gateway_url": fake.gateway_url,
        "model": MODEL,
        "poll_seconds": 0.05,
        "bot_watch_seconds": 0.1,
        "status_edit_seconds": 0.0,
        "lease_seconds": 30.0,
        "heartbeat_seconds": 0.2,
        "vote_window_minutes": 10.0,
        "default_seconds": 3.0,
        "request_rate_count": 20,
    }
    values.update(overrides)
    return Settings(_env_file=None, **values)  # type: ignore[call-arg]


def env_for(settings: Settings) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("JUKEBOT_")}
    env.update(
        {
            "JUKEBOT_DATABASE_URL": settings.storage.database_url,
            "JUKEBOT_STORAGE_URL": settings.storage.storage_url,
            "JUKEBOT_LEASE_SECONDS": str(settings.queue.lease_seconds),
            "JUKEBOT_HEARTBEAT_SECONDS": str(settings.queue.heartbeat_seconds),
            "JUKEBOT_POLL_SECONDS": str(settings.queue.poll_seconds),
            "JUKEBOT_MODEL": settings.engine.model,
            "JUKEBOT_MIN_SECONDS": str(settings.limits.min_seconds),
            "JUKEBOT_MAX_SECONDS": str(settings.limits.max_seconds),
            "PYTHONPATH": str(ROOT),
        }
    )
    return env


async def make_studio(
    database_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, overrides: dict[str, Any]
) -> AsyncIterator[Studio]:
    overrides = dict(overrides)
    # "fake_limits": DiscordLimits for the fake (a looser rule while the bot is known to break it).
    fake = await FakeDiscord(limits=overrides.pop("fake_limits", None)).start()
    settings = studio_settings(database_url, str(tmp_path / "storage"), fake, **overrides)
    env = env_for(settings)
    # The queue reads a few settings through get_settings() (env): keep this process in step.
    for k, v in env.items():
        if k.startswith("JUKEBOT_"):
            monkeypatch.setenv(k, v)
    monkeypatch.chdir(tmp_path)  # no stray .env
    get_settings.cache_clear()
    guild = fake.add_guild("Studio", channels=("studio", "drafts", "clips", "daily", "mods"))
    channel = fake.channel(guild, "studio")
    mod_role = fake.add_role(guild, "Music Mods")
    members: dict[str, int] = {}
    for name in ("alice", "bob", "carol", "dave", "mia"):
        members[name] = fake.add_user(name)
        fake.add_member(guild, members[name], roles=(mod_role,) if name == "mia" else ())
    members["owner"] = int(fake.guilds[guild]["owner_id"])
    db = Database(database_url)
    storage = Storage(settings.storage.storage_url)
    studio = Studio(fake, settings, db, storage, guild, channel, members, mod_role, env)
    try:
        yield studio
    finally:
        studio.stop_workers()
        await studio.stop_bot()
        await fake.stop()
        if fake.rate_limited:
            # Not a failure (discord.py waits and retries), but the bot broke Discord's rate limits.
            routes = sorted({f"{c.method} {c.path}" for c in fake.rate_limited_calls})
            warnings.warn(f"the fake Discord answered {fake.rate_limited} 429s: {routes}", stacklevel=1)
        if fake.buckets_exhausted:
            routes = sorted({f"{c.method} {c.path}" for c in fake.exhausted_calls})
            warnings.warn(
                f"the bot used up {fake.buckets_exhausted} rate-limit buckets: {routes}", stacklevel=1
            )
        db.dispose()
        get_settings.cache_clear()


def seed_clip(
    studio: Studio, member: str = "alice", *, artist: str = "abba", genre: str = "pop", seconds: float = 2.0
) -> int:
    """A song whose vote is over and whose upsample job just finished (done here, in-process, the
    way a worker would: claim, write the files, a fenced Clip row + complete). The bot then posts
    the clip on its own. Returns the song id."""
    from db import queue, repo
    from db.models import JobKind, SongStatus

    with studio.db.write() as s:
        user = repo.get_or_create_user(s, studio.members[member], member)
        assert user.id is not None
        song = repo.create_song(
            s,
            user_id=user.id,
            artist=artist,
            genre=genre,
            seconds=seconds,
            seed=7,
            title=f"{artist} · {genre}",
            guild_id=studio.guild,
            channel_id=studio.channel,
        )
        assert song.id is not None
        song_id = song.id
        studio.storage.write_bytes(f"songs/{song_id}/draft-0.wav", tone_wav(200.0, seconds))
        draft = repo.add_draft(s, song_id, 0, f"songs/{song_id}/draft-0.wav", f"songs/{song_id}/draft-0.npy")
        song.status = SongStatus.upsampling.value
        song.winner_draft_id = draft.id
        s.add(song)
    queue.enqueue(
        studio.db,
        JobKind.upsample,
        {"song_id": song_id, "draft_id": draft.id},
        song_id=song_id,
        idempotency_key=f"song:{song_id}:upsample",
    )
    lease = queue.claim(studio.db, [JobKind.upsample], "seed", 60)
    assert lease is not None and lease.song_id == song_id
    studio.storage.write_bytes(f"songs/{song_id}/clip.wav", tone_wav(300.0 + song_id, seconds))
    studio.storage.write_bytes(f"songs/{song_id}/clip.npz", codes_npy(16, song_id))
    with queue.fenced(studio.db, lease) as s:
        clip = repo.add_clip(
            s, song_id, f"songs/{song_id}/clip.wav", f"songs/{song_id}/clip.npz", seconds=seconds
        )
        queue.complete(studio.db, lease, {"clip_id": clip.id}, session=s)
    return song_id


def finish_drafts(studio: Studio, song_id: int, *, seconds: float = 1.0) -> list[int]:
    """Do a queued song's draft job here, in-process, the way a worker would (claim, write the
    files, a fenced transaction with the Draft rows and the completion); the bot then posts the
    drafts and opens the vote on its own. Returns the draft ids."""
    from db import queue, repo
    from db.models import JobKind

    song = repo.song_by_id(studio.db, song_id)
    assert song is not None
    lease = queue.claim(studio.db, [JobKind.draft], "in-test", 60)
    assert lease is not None and lease.song_id == song_id
    for i in range(song.n_drafts):
        studio.storage.write_bytes(f"songs/{song_id}/d{i}.wav", tone_wav(220.0 * (i + 1), seconds))
    with queue.fenced(studio.db, lease) as s:
        ids = [
            int(
                repo.add_draft(s, song_id, i, f"songs/{song_id}/d{i}.wav", f"songs/{song_id}/d{i}.npy").id
                or 0
            )
            for i in range(song.n_drafts)
        ]
        queue.complete(studio.db, lease, {"draft_ids": ids}, session=s)
    return ids
