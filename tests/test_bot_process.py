"""`jukebot bot --sync` as its own process: it migrates a fresh SQLite database, starts a local worker
child (`jukebot worker`, rendering with a tiny random-weight model on the CPU), syncs the commands
and connects to Discord (the fake, over loopback), makes a song with that child, and on SIGTERM
closes cleanly and stops the child."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
from pathlib import Path

from sqlmodel import col, select

from db.database import Database
from db.models import Job
from tests.fakes.discord import FakeDiscord, custom_ids
from tests.test_bot_e2e import song_id_from

ROOT = Path(__file__).resolve().parents[1]
JUKEBOT_BOT = [sys.executable, "-m", "bot.cli", "bot", "--sync"]

pytest_plugins = ["tests.bot_fixtures"]


def _env(tmp_path: Path, fake: FakeDiscord, model: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("JUKEBOT_")}
    env.update(
        {
            "PYTHONPATH": str(ROOT),
            "JUKEBOT_DATABASE_URL": f"sqlite:///{tmp_path / 'fresh' / 'jukebot.db'}",
            "JUKEBOT_STORAGE_URL": str(tmp_path / "storage"),
            "JUKEBOT_DISCORD_API_BASE": fake.api_base,
            "JUKEBOT_DISCORD_GATEWAY_URL": fake.gateway_url,
            "JUKEBOT_MODEL": str(model),
            "JUKEBOT_DEVICE": "cpu",
            "OMP_NUM_THREADS": "1",  # the tiny model is fastest on one thread on a shared 2-core machine
            "JUKEBOT_MIN_SECONDS": "0.1",
            "JUKEBOT_POLL_SECONDS": "0.1",
            "JUKEBOT_BOT_WATCH_SECONDS": "0.2",
            "JUKEBOT_STATUS_EDIT_SECONDS": "0",
            **extra,
        }
    )
    return env


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


async def test_one_command_runs_the_whole_product(tmp_path: Path, tiny_model: Path) -> None:
    fake = await FakeDiscord().start()
    guild = fake.add_guild("Studio")
    channel = fake.channel(guild, "studio")
    alice = fake.add_user("alice")
    fake.add_member(guild, alice)
    env = _env(tmp_path, fake, tiny_model, JUKEBOT_DISCORD_TOKEN=fake.token)
    proc = subprocess.Popen(JUKEBOT_BOT, cwd=tmp_path, env=env)
    try:
        await fake.wait_for(
            lambda: fake.global_commands and fake.connected, 60, "the bot to sync and connect"
        )
        names = {c["name"] for c in fake.global_commands}
        assert {
            "generate",
            "continue",
            "queue",
            "song",
            "top",
            "me",
            "help",
            "mod",
            "lyrics",
            "Continue this clip",
        } <= names
        ix = await fake.settled(
            await fake.command(
                alice,
                channel,
                "generate",
                {"artist": "bach", "genre": "chorale", "seconds": 0.2, "drafts": 2},
            ),
            30,
        )
        song_id = song_id_from(ix.text())
        await fake.wait_for(
            lambda: any(
                f"jb:vote:{song_id}:" in " ".join(custom_ids(m)) for m in fake.channel_messages(channel)
            ),
            120,
            "drafts from the child worker",
        )
        db = Database(env["JUKEBOT_DATABASE_URL"])
        with db.read() as s:
            owner = s.execute(select(col(Job.lease_owner)).where(col(Job.song_id) == song_id)).scalar()
        db.dispose()
        assert owner is not None
        worker_pid = int(owner.rsplit(":", 1)[1])
        assert _alive(worker_pid)

        proc.send_signal(signal.SIGTERM)
        assert await asyncio.to_thread(proc.wait, 60) == 0  # the loop keeps serving the fake meanwhile
        assert not _alive(worker_pid)  # the child was stopped (and reaped) with the bot
        await fake.wait_for(lambda: not fake.connected, 10, "the gateway connection to close")
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        await fake.stop()


async def _launch(env: dict[str, str], cwd: Path) -> tuple[int, str]:
    # Not subprocess.run: the fake Discord lives on this event loop and must keep answering.
    proc = await asyncio.create_subprocess_exec(
        *JUKEBOT_BOT, cwd=cwd, env=env, stderr=asyncio.subprocess.PIPE
    )
    _, err = await asyncio.wait_for(proc.communicate(), 60)
    return int(proc.returncode or 0), err.decode()


async def test_bad_settings_are_said_in_words(tmp_path: Path, tiny_model: Path) -> None:
    fake = await FakeDiscord().start()
    try:
        code, err = await _launch(_env(tmp_path, fake, tiny_model), tmp_path)
        assert code == 2 and "JUKEBOT_DISCORD_TOKEN" in err and "Traceback" not in err
        code, err = await _launch(
            _env(tmp_path, fake, tiny_model, JUKEBOT_DISCORD_TOKEN="wrong-token"), tmp_path
        )
        assert code == 1 and "refused the bot token" in err and "Traceback" not in err, err[-2000:]
        code, err = await _launch(
            _env(tmp_path, fake, tmp_path / "no-such-model", JUKEBOT_DISCORD_TOKEN=fake.token), tmp_path
        )
        assert code == 2 and "Check JUKEBOT_MODEL" in err and "Traceback" not in err, err[-2000:]
    finally:
        await fake.stop()
