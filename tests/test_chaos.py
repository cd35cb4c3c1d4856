"""Chaos: two Discord servers (one fake Discord serves both), 3 members each, 12 songs (6 requests,
draft votes, then 6 continuations of each other's clips), made by REAL processes: the bot
(`jukebot bot`), a worker (`jukebot worker`, the tiny random-weight model on the CPU) and the
publisher (`jukebot publish run`, again and again, to the fake SoundCloud). While songs are
in the making, each of the three is SIGKILLed at random moments (one killer each, all at once) and started
again (the worker while a job runs, the publisher while an upload is in flight), up to KILLS_EACH
times each.

The moments come from a seeded random generator: the seed is printed (and named in every failure);
run again with JUKEBOT_CHAOS_SEED=<seed> to replay the same choices (the timing of the machine still
varies). Members act like people: an interaction nobody answered (the bot was down) is tried again,
but only after looking whether the first one made its song (the song is keyed by the interaction).

At the end: every song is `done`, its drafts and its clip posted exactly once, in its own server;
no job or song is left in flight; every clip went out once, each post carrying the marker of its
own publication and no other; every member has used exactly their 2 songs of the day, nothing is
in flight for them, and a third request is refused. On SQLite (a file: several processes) and
PostgreSQL. Nothing is mocked. Caption moderation is switched off (it would need a text-model
server; tests/test_bot_trust.py covers it), uploads are due at once (no upload hour), and only
SoundCloud is set up: X takes no video under 0.5 s, and songs that long take too much CPU here (X's
crash recovery has its own tests in tests/test_publish_crash.py).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import re
import signal
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import pytest
from cryptography.fernet import Fernet
from sqlmodel import col, func, select

from db.database import Database
from db.models import Clip, Job, Publication, Song, User
from db.settings import get_settings
from db.storage import Storage
from tests.fakes.discord import FakeDiscord, FakeDiscordError, FakeInteraction, custom_ids
from tests.fakes.soundcloud_server import FakeSoundCloud
from tests.publish_fixtures import login_soundcloud

pytest_plugins = ["tests.bot_fixtures", "tests.conftest_publish"]

ROOT = Path(__file__).resolve().parents[1]
JUKEBOT = [sys.executable, "-m", "bot.cli"]
SONGS_PER_MEMBER = 2
CHAOS_SECONDS = 360.0  # kills stop after this (or when all is done); then everything must settle
SETTLE_SECONDS = 120.0
KILLS_EACH = 3  # at most this many kills of each process (a worker's restart costs ~15 s here)
IN_FLIGHT_SONGS = {"queued", "drafting", "voting", "upsampling"}
IN_FLIGHT_JOBS = {"queued", "running"}


@dataclass
class Proc:
    """One of the product's processes, started again after each kill."""

    name: str
    argv: list[str]
    env: dict[str, str]
    logs: Path
    proc: subprocess.Popen[bytes] | None = None
    starts: int = 0
    kills: int = 0

    def start(self) -> None:
        self.starts += 1
        log = (self.logs / f"{self.name}-{self.starts}.log").open("wb")
        self.proc = subprocess.Popen(self.argv, cwd=self.logs, env=self.env, stdout=log, stderr=log)
        log.close()

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(10)
            self.kills += 1

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


@dataclass
class Member:
    name: str
    user_id: int
    guild: int
    channel: int
    songs: list[int] = field(default_factory=list)


@dataclass
class World:
    fake: FakeDiscord
    db: Database
    seed: int
    rng: random.Random
    bot: Proc
    worker: Proc
    publisher: Proc
    sc: FakeSoundCloud
    owners: dict[int, int]  # guild -> its owner (a moderator)
    members: list[Member]
    log: list[str] = field(default_factory=list)
    bot_generation: int = 0
    calm: asyncio.Event = field(default_factory=asyncio.Event)  # set: no more kills

    def note(self, text: str) -> None:
        line = f"{time.monotonic():.1f} {text}"
        self.log.append(line)
        print(line, flush=True)

    def why(self) -> str:
        tail = "\n".join(self.log[-40:])
        return f"(JUKEBOT_CHAOS_SEED={self.seed}; replay with it)\n{tail}"

    async def q(self, fn: Callable[..., Any], *args: Any) -> Any:
        return await asyncio.to_thread(fn, *args)


def _env(database_url: str, tmp_path: Path, fake: FakeDiscord, model: Path) -> dict[str, str]:
    """The environment of the bot, the worker and the publisher: short songs, votes and leases."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("JUKEBOT_")}
    env.update(
        {
            "PYTHONPATH": str(ROOT),
            "OMP_NUM_THREADS": "1",
            "JUKEBOT_DATABASE_URL": database_url,
            "JUKEBOT_STORAGE_URL": str(tmp_path / "storage"),
            "JUKEBOT_DISCORD_TOKEN": fake.token,
            "JUKEBOT_DISCORD_API_BASE": fake.api_base,
            "JUKEBOT_DISCORD_GATEWAY_URL": fake.gateway_url,
            "JUKEBOT_MODEL": str(model),
            "JUKEBOT_DEVICE": "cpu",
            "JUKEBOT_MIN_SECONDS": "0.1",
            "JUKEBOT_DEFAULT_SECONDS": "0.1",
            "JUKEBOT_DEFAULT_DRAFTS": "2",
            "JUKEBOT_SONGS_PER_DAY": str(SONGS_PER_MEMBER),
            "JUKEBOT_REQUEST_RATE_COUNT": "50",
            "JUKEBOT_VOTE_WINDOW_MINUTES": "0.25",
            "JUKEBOT_POLL_SECONDS": "0.2",
            "JUKEBOT_BOT_WATCH_SECONDS": "0.3",
            "JUKEBOT_STATUS_EDIT_SECONDS": "1",
            "JUKEBOT_POST_RETRY_SECONDS": "2",
            "JUKEBOT_LEASE_SECONDS": "6",  # a killed worker's job is taken again this soon
            "JUKEBOT_HEARTBEAT_SECONDS": "0.5",
        }
    )
    return env


def _publishing_env(sc: FakeSoundCloud, guilds: list[int], token_key: str) -> dict[str, str]:
    """Both servers may publish to the fake SoundCloud, at once, retried and checked soon."""
    return {
        "JUKEBOT_PUBLISH_GUILDS": str(guilds),
        "JUKEBOT_PUBLISH_TIMES": "{}",  # no upload hour: due at once
        "JUKEBOT_PUBLISH_CAPTION_MODERATION": "false",
        "JUKEBOT_PUBLISH_LEASE_SECONDS": "5",
        "JUKEBOT_PUBLISH_HEARTBEAT_SECONDS": "1",
        "JUKEBOT_PUBLISH_RECONCILE_SECONDS": "1",
        "JUKEBOT_PUBLISH_RETRY_SECONDS": "1",
        "JUKEBOT_PUBLISH_MAX_ATTEMPTS": "10",
        "JUKEBOT_PUBLISH_HTTP_TIMEOUT": "10",
        "JUKEBOT_PUBLISH_RATE_LIMIT_WAIT": "3",
        "JUKEBOT_TOKEN_KEY": token_key,
        "JUKEBOT_SOUNDCLOUD_API_BASE": sc.base_url,
        "JUKEBOT_SOUNDCLOUD_AUTH_BASE": sc.base_url,
        "JUKEBOT_SOUNDCLOUD_CLIENT_ID": sc.client_id,
        "JUKEBOT_SOUNDCLOUD_CLIENT_SECRET": sc.client_secret,
    }


# ---------------------------------------------------------------- the database, read in threads


def _songs(db: Database) -> list[Song]:
    with db.read() as s:
        return list(s.execute(select(Song).order_by(col(Song.id))).scalars())


def _song_for(db: Database, keys: list[str]) -> list[int]:
    with db.read() as s:
        return [
            int(i) for i in s.execute(select(col(Song.id)).where(col(Song.request_key).in_(keys))).scalars()
        ]


def _clips(db: Database) -> dict[int, Clip]:
    with db.read() as s:
        return {c.song_id: c for c in s.execute(select(Clip)).scalars()}


def _jobs(db: Database) -> list[Job]:
    with db.read() as s:
        return list(s.execute(select(Job)).scalars())


def _publications(db: Database) -> list[Publication]:
    with db.read() as s:
        return list(s.execute(select(Publication).order_by(col(Publication.id))).scalars())


def _songs_of(db: Database, discord_id: int) -> int:
    with db.read() as s:
        return int(
            s.execute(
                select(func.count())
                .select_from(Song)
                .join(User, col(User.id) == col(Song.user_id))
                .where(col(User.discord_id) == discord_id)
            ).scalar_one()
        )


# ---------------------------------------------------------------- members, acting like people


def _posts(fake: FakeDiscord, guild: int | None, prefix: str, *, exact: bool = False) -> list[dict[str, Any]]:
    """The bot's live messages with a button whose custom id starts with prefix (is it, when
    exact), in the guild (None: in any)."""
    found = []
    for cid, gid in fake.channel_guild.items():
        if guild is not None and gid != guild:
            continue
        for m in fake.channel_messages(cid):
            if m["author"]["id"] == str(fake.app_id) and any(
                c == prefix if exact else c.startswith(prefix) for c in custom_ids(m)
            ):
                found.append(m)
    return found


async def _answer(w: World, act: Callable[[], Awaitable[FakeInteraction]]) -> FakeInteraction | None:
    """Send an interaction once the bot is connected; None when nobody answered it (the bot died,
    or was not ready and Discord's 3-second deadline passed)."""
    await w.fake.wait_for(lambda: w.fake.connected, 120, "the bot to connect")
    generation = w.bot_generation
    try:
        ix = await act()
    except FakeDiscordError:  # the bot went away between the two lines above
        return None
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        with contextlib.suppress(TimeoutError):
            return await w.fake.settled(ix, 0.5)
        if w.bot_generation != generation or (not ix.callbacks and time.monotonic() > deadline - 25):
            break  # its bot is gone, or 5 s without even an acknowledgement: Discord says it failed
    with contextlib.suppress(TimeoutError):  # a late answer still counts
        return await w.fake.settled(ix, 0.5)
    return None


async def _request(w: World, m: Member, act: Callable[[], Awaitable[FakeInteraction]], what: str) -> int:
    """A request until it made a song: a member whose request got no answer tries again, but a
    song made by an unanswered try is that request's song (keyed by the interaction)."""
    tries: list[FakeInteraction] = []

    async def sent() -> FakeInteraction:
        ix = await act()
        tries.append(ix)
        return ix

    for attempt in range(30):
        answered = await _answer(w, sent)
        keys = [str(ix.id) for ix in tries]
        made = await w.q(_song_for, w.db, keys)
        if answered is not None and not made:
            text = answered.text()
            found = re.search(r"Song #(\d+)", text)
            assert found, f"{m.name}'s {what} was refused: {text!r} {w.why()}"
            made = [int(found[1])]
        assert len(made) <= 1, f"{m.name}'s one {what} made songs {made} {w.why()}"
        if made:
            w.note(f"{m.name}: {what} -> song {made[0]} (try {attempt + 1})")
            m.songs.append(made[0])
            return made[0]
        w.note(f"{m.name}: {what} not answered; trying again")
        await asyncio.sleep(w.rng.uniform(0.2, 1.0))
    raise AssertionError(f"{m.name}'s {what} never went through {w.why()}")


async def _continue_from_the_end(w: World, m: Member, clip_id: int, msg: dict[str, Any]) -> FakeInteraction:
    """Continue, then "From the end" on the offer: the second press is the request (its key)."""
    first = await _answer(w, partial(w.fake.click, m.user_id, int(msg["id"]), f"jb:continue:{clip_id}"))
    if first is None or not first.followups:
        raise FakeDiscordError("the Continue offer was not answered")  # _answer: unanswered, try again
    offer = first.followups[-1]
    return await w.fake.click(m.user_id, int(offer["id"]), f"jb:continue-end:{clip_id}", seen=offer)


async def _vote(w: World, voters: list[Member], song_id: int, message: dict[str, Any]) -> None:
    """Each member of the server votes once for a draft (best effort: the window is short)."""
    ids = [c for c in custom_ids(message) if c.startswith(f"jb:vote:{song_id}:")]
    for m in voters:
        choice = w.rng.choice(ids)
        with contextlib.suppress(FakeDiscordError):
            ix = await _answer(w, partial(w.fake.click, m.user_id, int(message["id"]), choice))
            w.note(f"{m.name} votes {choice} on song {song_id}: {ix.text()[:60] if ix else 'no answer'}")


async def _publish(w: World, guild: int, clip_id: int, message: dict[str, Any]) -> None:
    """The server's owner presses Publish until the publications exist (the press is idempotent)."""
    for _ in range(30):
        with contextlib.suppress(FakeDiscordError):
            await _answer(
                w, lambda: w.fake.click(w.owners[guild], int(message["id"]), f"jb:publish:{clip_id}")
            )
        pubs = [p for p in await w.q(_publications, w.db) if p.clip_id == clip_id]
        if len(pubs) == 1:
            w.note(f"clip {clip_id} scheduled for {[p.platform for p in pubs]}")
            return
        await asyncio.sleep(0.5)
    raise AssertionError(f"clip {clip_id} could not be scheduled for publishing {w.why()}")


async def _drive_server(w: World, guild: int) -> None:
    """One server's members: a song each, their votes, then each continues a neighbour's clip."""
    members = [m for m in w.members if m.guild == guild]
    voted: set[int] = set()
    published: set[int] = set()
    tasks: list[asyncio.Task[None]] = []

    async def requests() -> None:
        await asyncio.gather(
            *(
                _request(
                    w,
                    m,
                    partial(
                        w.fake.command,
                        m.user_id,
                        m.channel,
                        "generate",
                        {"artist": "bach", "genre": "chorale", "seconds": 0.1, "drafts": 2},
                    ),
                    "/generate",
                )
                for m in members
            )
        )

    def clip_message(song_id: int) -> tuple[int, dict[str, Any]] | None:
        for msg in _posts(w.fake, guild, "jb:continue:"):
            if f"Song #{song_id} is finished" in msg["content"]:
                cid = next(c for c in custom_ids(msg) if c.startswith("jb:continue:"))
                return int(cid.rsplit(":", 1)[1]), msg
        return None

    async def follow() -> None:
        """Vote on drafts as they come, press Publish on clips as they come."""
        while True:
            for song_id in [s for m in members for s in m.songs]:
                if song_id not in voted:
                    drafts = _posts(w.fake, guild, f"jb:vote:{song_id}:")
                    if drafts:
                        voted.add(song_id)
                        tasks.append(asyncio.create_task(_vote(w, members, song_id, drafts[0])))
                if song_id not in published and (found := clip_message(song_id)):
                    published.add(song_id)
                    tasks.append(asyncio.create_task(_publish(w, guild, *found)))
            await asyncio.sleep(0.3)

    follower = asyncio.create_task(follow())
    try:
        await requests()
        firsts = [m.songs[0] for m in members]
        await w.fake.wait_for(
            lambda: all(clip_message(s) for s in firsts), 240, f"the first clips of guild {guild}"
        )
        conts = []
        for i, m in enumerate(members):
            clip_id, msg = clip_message(firsts[(i + 1) % len(members)]) or (0, {})
            conts.append(
                _request(
                    w, m, partial(_continue_from_the_end, w, m, clip_id, msg), f"Continue on clip {clip_id}"
                )
            )
        await asyncio.gather(*conts)
        await w.fake.wait_for(
            lambda: all(clip_message(s) for m in members for s in m.songs), 240, f"all clips of guild {guild}"
        )
        await w.fake.wait_for(lambda: len(published) == len(members) * SONGS_PER_MEMBER, 30, "the presses")
        await asyncio.gather(*tasks)
    finally:
        follower.cancel()
        for t in tasks:
            t.cancel()


# ---------------------------------------------------------------- the chaos


async def _publisher_loop(w: World) -> None:
    """`jukebot publish run` again and again, as cron or a systemd timer would run it."""
    while True:
        if not w.publisher.alive():
            w.publisher.start()
        while w.publisher.alive():
            await asyncio.sleep(0.2)
        await asyncio.sleep(0.5)


def _busy(db: Database, victim: str) -> bool:
    """Whether the worker has a job running, or the publisher a publication in flight."""
    if victim == "worker":
        return any(j.status == "running" for j in _jobs(db))
    return any(p.state == "publishing" for p in _publications(db))


async def _chaos(w: World, done: Callable[[], Awaitable[bool]]) -> None:
    """Each of the three has its own killer, all at once: a SIGKILL at a random moment, a start
    again a moment later, up to KILLS_EACH times or until all is done. One killer each (not one
    after the other) so the first kill of each lands within the first ~30 s, before a fast
    machine can finish the 12 songs. The worker and the publisher are killed while they work (a
    job running, an upload in flight: up to 20 s of waiting for that), at a random point."""
    try:
        await asyncio.gather(
            *(
                _killer(w, victim, done, random.Random(f"{w.seed}:{victim.name}"))
                for victim in (w.bot, w.worker, w.publisher)
            )
        )
    finally:
        w.calm.set()
    w.note(f"CHAOS over: kills bot {w.bot.kills}, worker {w.worker.kills}, publisher {w.publisher.kills}")


async def _killer(w: World, victim: Proc, done: Callable[[], Awaitable[bool]], rng: random.Random) -> None:
    started = time.monotonic()
    while victim.kills < KILLS_EACH and time.monotonic() - started < CHAOS_SECONDS and not await done():
        await asyncio.sleep(rng.uniform(3.0, 10.0) if victim.kills == 0 else rng.uniform(5.0, 25.0))
        if victim is not w.bot:
            busy_by = time.monotonic() + 20
            while time.monotonic() < busy_by and not await w.q(_busy, w.db, victim.name):
                await asyncio.sleep(0.1)
            await asyncio.sleep(rng.uniform(0.0, 1.5 if victim is w.publisher else 4.0))
        if not victim.alive() or await done():
            continue
        victim.kill()
        w.note(f"CHAOS: SIGKILL {victim.name} (kill {victim.kills})")
        await asyncio.sleep(rng.uniform(0.1, 2.0))
        if victim is w.bot:
            w.bot_generation += 1
            victim.start()
            await w.fake.wait_for(lambda: w.fake.connected, 120, "the bot to connect again")
        elif victim is w.worker:
            victim.start()
        # the publisher loop starts the next run by itself


def _everything_settled(db: Database, total: int) -> bool:
    songs = _songs(db)
    if len(songs) < total or any(s.status != "done" for s in songs):
        return False
    clips = _clips(db)
    if any(clips.get(s.id) is None or clips[s.id].message_id is None for s in songs if s.id):
        return False
    if any(j.status in IN_FLIGHT_JOBS for j in _jobs(db)):
        return False
    pubs = _publications(db)
    return len(pubs) == total and all(p.state == "published" for p in pubs)


@pytest.fixture
def chaos_seed() -> int:
    seed = int(os.environ.get("JUKEBOT_CHAOS_SEED") or random.SystemRandom().randrange(2**31))
    print(f"JUKEBOT_CHAOS_SEED={seed}", flush=True)
    return seed


@pytest.mark.slow
@pytest.mark.timeout(900)
async def test_chaos_two_servers_and_killed_processes(
    database_url: str,
    tmp_path: Path,
    tiny_model: Path,
    fake_sc: FakeSoundCloud,
    chaos_seed: int,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    fake = await FakeDiscord().start()
    names = {"North": ("ada", "ben", "cy"), "South": ("dot", "eve", "fay")}
    members: list[Member] = []
    owners: dict[int, int] = {}
    for gname, people in names.items():
        gid = fake.add_guild(gname, channels=("studio",))
        owners[gid] = int(fake.guilds[gid]["owner_id"])
        for who in people:
            uid = fake.add_user(who)
            fake.add_member(gid, uid)
            members.append(Member(who, uid, gid, fake.channel(gid, "studio")))
    guilds = list(owners)
    token_key = Fernet.generate_key().decode()
    env = _env(database_url, tmp_path, fake, tiny_model) | _publishing_env(fake_sc, guilds, token_key)
    monkeypatch.setenv("JUKEBOT_TOKEN_KEY", token_key)  # this process stores the SoundCloud login
    get_settings.cache_clear()
    logs = tmp_path / "logs"
    logs.mkdir()
    db = Database(database_url)
    login_soundcloud(db, fake_sc)
    w = World(
        fake,
        db,
        chaos_seed,
        random.Random(chaos_seed),
        Proc("bot", [*JUKEBOT, "bot", "--sync", "--no-worker"], env, logs),
        Proc("worker", [*JUKEBOT, "worker", "--device", "cpu", "--threads", "1"], env, logs),
        Proc("publisher", [*JUKEBOT, "publish", "run"], env, logs),
        fake_sc,
        owners,
        members,
    )
    total = len(members) * SONGS_PER_MEMBER
    background: list[asyncio.Task[None]] = []
    try:
        w.bot.start()
        w.worker.start()
        await fake.wait_for(lambda: fake.global_commands and fake.connected, 120, "the bot to start")
        background.append(asyncio.create_task(_publisher_loop(w)))
        background.append(asyncio.create_task(_chaos(w, lambda: w.q(_everything_settled, db, total))))
        await asyncio.gather(*(_drive_server(w, g) for g in guilds))
        w.note("all 12 songs are out; waiting for the rest to settle")
        calm_at: float | None = None
        while not (w.calm.is_set() and await w.q(_everything_settled, db, total)):
            if calm_at is None and w.calm.is_set():
                calm_at = time.monotonic()
            for task in background:
                if task.done():
                    task.result()  # a harness failure (the bot never came back, say) ends the test
            ended = [s.id for s in await w.q(_songs, db) if s.status in ("failed", "cancelled")]
            gave_up = [p.id for p in await w.q(_publications, db) if p.state == "failed"]
            assert not ended and not gave_up, (
                f"songs {ended}, publications {gave_up} failed: {await _state(w)} {w.why()}"
            )
            assert calm_at is None or time.monotonic() < calm_at + SETTLE_SECONDS, (
                f"nothing settled: {await _state(w)} {w.why()}"
            )
            await asyncio.sleep(0.5)
        await _check(w, total)
    finally:
        for t in background:
            t.cancel()
        for p in (w.bot, w.worker, w.publisher):
            p.stop()
        await fake.stop()
        db.dispose()
        get_settings.cache_clear()


async def _state(w: World) -> str:
    songs = await w.q(_songs, w.db)
    jobs = await w.q(_jobs, w.db)
    pubs = await w.q(_publications, w.db)
    return (
        f"songs {[(s.id, s.status) for s in songs]}; jobs in flight "
        f"{[(j.id, j.kind, j.status) for j in jobs if j.status in IN_FLIGHT_JOBS]}; "
        f"publications {[(p.id, p.clip_id, p.platform, p.state, p.last_error) for p in pubs]}"
    )


async def _check(w: World, total: int) -> None:
    fake, db = w.fake, w.db
    why = w.why()
    kills = {p.name: p.kills for p in (w.bot, w.worker, w.publisher)}
    assert min(kills.values()) >= 1, f"all was done before the chaos killed each process once: {kills} {why}"
    songs = await w.q(_songs, db)
    assert len(songs) == total, f"{[(s.id, s.request_key) for s in songs]} {why}"
    assert sorted(s for m in w.members for s in m.songs) == [s.id for s in songs], why
    clips = await w.q(_clips, db)
    by_song = {s.id: s for s in songs}
    for song in songs:
        assert song.status == "done", (song.id, song.status, song.error, why)
        # drafts and clip: one post each, in the song's own server
        drafts = _posts(fake, None, f"jb:vote:{song.id}:")
        assert len(drafts) == 1, f"song {song.id}: {len(drafts)} drafts posts {why}"
        clip = clips[song.id]
        posts = _posts(fake, None, f"jb:continue:{clip.id}", exact=True)
        assert len(posts) == 1, f"clip {clip.id}: {len(posts)} posts {why}"
        for post in (*drafts, *posts):
            assert fake.channel_guild[int(post["channel_id"])] == song.guild_id, why
        assert int(posts[0]["id"]) == clip.message_id, why
    continued = [s for s in songs if s.parent_clip_id is not None]
    assert len(continued) == total // 2, why
    for s in continued:
        parent = next(c for c in clips.values() if c.id == s.parent_clip_id)
        assert by_song[parent.song_id].guild_id == s.guild_id, why

    jobs = await w.q(_jobs, db)
    assert not [j for j in jobs if j.status in IN_FLIGHT_JOBS], why
    assert not [s for s in songs if s.status in IN_FLIGHT_SONGS], why

    # every clip once per platform, each post carrying its own publication's marker and no other
    pubs = await w.q(_publications, db)
    assert sorted((p.clip_id, p.platform) for p in pubs) == sorted(
        (c.id, "soundcloud") for c in clips.values()
    ), why
    markers = {p.marker for p in pubs}
    assert len(markers) == len(pubs) and None not in markers, why
    posted = {
        "soundcloud": {str(t.id): t.description for t in w.sc.tracks},
    }
    for platform, remote in posted.items():
        mine = [p for p in pubs if p.platform == platform]
        assert len(remote) == len(mine), f"{platform}: {len(remote)} posts for {len(mine)} clips {why}"
        for p in mine:
            assert p.state == "published" and p.remote_id in remote, (p.id, p.state, why)
            words = remote[p.remote_id].split()
            assert p.marker in words, (p.id, remote[p.remote_id], why)
            assert not (markers - {p.marker}) & set(words), (p.id, remote[p.remote_id], why)

    # quotas: 2 songs each, nothing in flight, and a third request is refused
    for m in w.members:
        assert await w.q(_songs_of, db, m.user_id) == SONGS_PER_MEMBER, (m.name, why)
        ix = await _answer(
            w,
            partial(
                fake.command,
                m.user_id,
                m.channel,
                "generate",
                {"artist": "bach", "genre": "chorale", "seconds": 0.2},
            ),
        )
        assert ix is not None, (m.name, why)
        assert f"You have made {SONGS_PER_MEMBER} songs" in ix.text(), (m.name, ix.text(), why)
    assert len(await w.q(_songs, db)) == total, why


# ---------------------------------------------------------------- the worst moment, on purpose


async def test_a_bot_killed_right_after_discord_took_a_post_posts_it_once(
    database_url: str, tmp_path: Path, tiny_model: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Found by the chaos test: a bot SIGKILLed after Discord took the drafts (or the clip) post
    but before the database recorded it posted it again on restart. Each such post now carries an
    enforced nonce, so Discord hands back the first message. The fake kills the bot at that moment."""
    from tests.bot_harness import Studio, finish_drafts, seed_clip, studio_settings

    fake = await FakeDiscord().start()
    gid = fake.add_guild("Studio", channels=("studio",))
    alice = fake.add_user("alice")
    fake.add_member(gid, alice)
    channel = fake.channel(gid, "studio")
    settings = studio_settings(database_url, str(tmp_path / "storage"), fake, model=str(tiny_model))
    env = _env(database_url, tmp_path, fake, tiny_model)
    for k, v in env.items():
        if k.startswith("JUKEBOT_"):
            monkeypatch.setenv(k, v)
    get_settings.cache_clear()
    db = Database(database_url)
    studio = Studio(
        fake, settings, db, Storage(str(tmp_path / "storage")), gid, channel, {"alice": alice}, 0, env
    )
    logs = tmp_path / "logs"
    logs.mkdir()
    bot = Proc("bot", [*JUKEBOT, "bot", "--sync", "--no-worker"], env, logs)
    killed: list[str] = []

    def kill_after(marker: str) -> Callable[[dict[str, Any]], None]:
        def hook(msg: dict[str, Any]) -> None:
            if not killed and any(c.startswith(marker) for c in custom_ids(msg)):
                killed.append(msg["id"])
                assert bot.proc is not None
                os.kill(bot.proc.pid, signal.SIGKILL)  # before Discord's answer reaches the bot

        return hook

    async def crash_and_restart() -> None:
        await fake.wait_for(lambda: killed and not bot.alive(), 60, "the bot to be killed mid-post")
        fake.after_post = None
        bot.start()

    try:
        bot.start()
        await fake.wait_for(lambda: fake.global_commands and fake.connected, 120, "the bot to start")
        ix = await fake.settled(
            await fake.command(
                alice, channel, "generate", {"artist": "bach", "genre": "chorale", "seconds": 0.1}
            ),
            30,
        )
        song_id = int(re.search(r"Song #(\d+)", ix.text())[1])  # type: ignore[index]
        fake.after_post = kill_after(f"jb:vote:{song_id}:")
        await asyncio.to_thread(finish_drafts, studio, song_id)
        await crash_and_restart()
        await studio.until_db(
            lambda: all(d.message_id for d in studio.drafts(song_id)), "the drafts post recorded", 60
        )
        assert [m["id"] for m in _posts(fake, gid, f"jb:vote:{song_id}:")] == killed

        killed.clear()
        fake.after_post = kill_after("jb:continue:")
        clip_song = await asyncio.to_thread(seed_clip, studio, "alice", artist="bach", genre="chorale")
        await crash_and_restart()
        await studio.until_db(lambda: studio.song(clip_song).status == "done", "the clip post recorded", 60)
        assert [m["id"] for m in _posts(fake, gid, "jb:continue:")] == killed
    finally:
        fake.after_post = None
        bot.stop()
        await fake.stop()
        db.dispose()
        get_settings.cache_clear()
