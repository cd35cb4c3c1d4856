"""How fast the bot answers (Discord wants an answer to every interaction within 3 seconds).

    .venv/bin/python bench/bot_latency.py [--model 1b_lyrics] [--songs 200]

1. Autocomplete over the model's artist list (1b_lyrics: about 7,900 names): per keystroke.
2. Checking a typed name ("did you mean" for a typo).
3. The real bot against the fake Discord on loopback: a member's `/generate` from the gateway
   event to the deferred answer, and to the status message in the channel.
4. One job-watcher pass with N songs waiting in the studio (SQLite).

Prints one line per measurement (median and worst of the repeats).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from pydantic import SecretStr  # noqa: E402

from bot.errors import UserError  # noqa: E402
from bot.labels import load_labels  # noqa: E402


def report(label: str, samples: list[float]) -> None:
    ms = sorted(s * 1000 for s in samples)
    print(f"{label:<52} median {statistics.median(ms):8.2f} ms   worst {ms[-1]:8.2f} ms   (n={len(ms)})")


def timed(fn: Callable[[], object], repeat: int) -> list[float]:
    out = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        out.append(time.perf_counter() - start)
    return out


def names(model: str) -> None:
    start = time.perf_counter()
    labels = load_labels(model)
    print(
        f"{'load the artist/genre lists of ' + model:<52} {1000 * (time.perf_counter() - start):8.2f} ms   "
        f"({len(labels.artists.names)} artists, {len(labels.genres.names)} genres)"
    )
    keystrokes = ["", "b", "be", "bea", "beat", "beatl", "the b", "zz", "qu", "queen", "mozar", "daft p"]
    samples: list[float] = []
    for typed in keystrokes:
        samples += timed(lambda typed=typed: labels.artists.complete(typed), 5)  # type: ignore[misc]
    report("autocomplete one keystroke (25 artists)", samples)

    def typo() -> None:
        with contextlib.suppress(UserError):
            labels.artists.resolve("the beatlez")

    report("check a typed artist with a typo (did you mean)", timed(typo, 20))
    report("check a known artist", timed(lambda: labels.artists.resolve("The Beatles"), 50))


def new_messages(fake: object, channel: int, before: set[int]) -> set[int]:
    return {int(m["id"]) for m in fake.channel_messages(channel)} - before  # type: ignore[attr-defined]


async def interaction(model: str, n_songs: int) -> None:
    from db.migrate import open_database
    from db.settings import Settings
    from db.storage import Storage
    from tests.bot_harness import Studio, _memory_scheduler
    from tests.fakes.discord import FakeDiscord

    with tempfile.TemporaryDirectory() as tmp:
        fake = await FakeDiscord().start()
        url = f"sqlite:///{tmp}/bench.db"
        settings = Settings(
            _env_file=None,
            database_url=url,
            storage_url=f"{tmp}/storage",  # type: ignore[call-arg]
            discord_token=SecretStr(fake.token),
            discord_api_base=fake.api_base,
            discord_gateway_url=fake.gateway_url,
            model=model,
            bot_watch_seconds=3600,
            request_rate_count=0,
            songs_per_day=100000,
            max_queued_per_member=100000,
            max_running_per_guild=1,
        )
        db = open_database(url)
        guild = fake.add_guild("Bench")
        channel = fake.channel(guild, "studio")
        alice = fake.add_user("alice")
        fake.add_member(guild, alice)
        studio = Studio(
            fake, settings, db, Storage(settings.storage.storage_url), guild, channel, {"alice": alice}, 0, {}
        )
        bot = await studio.start_bot(scheduler_factory=_memory_scheduler)
        await bot.watcher.stop()  # measured by hand below
        to_defer, to_status = [], []
        for _ in range(n_songs):
            before = {int(m["id"]) for m in fake.channel_messages(channel)}
            start = time.perf_counter()
            ix = await fake.command(alice, channel, "generate", {"artist": "the beatles", "genre": "rock"})
            await fake.wait_for(partial(lambda i: i.callbacks, ix), 10)
            to_defer.append(time.perf_counter() - start)
            await fake.wait_for(partial(new_messages, fake, channel, before), 10)
            to_status.append(time.perf_counter() - start)
        report("/generate: gateway event -> deferred answer", to_defer)
        report("/generate: gateway event -> status message posted", to_status)
        ticks = []
        for _ in range(5):
            start = time.perf_counter()
            await bot.watcher.tick()
            ticks.append(time.perf_counter() - start)
        report(f"job watcher pass, {n_songs} songs in the studio", ticks)
        await studio.stop_bot()
        await fake.stop()
        db.dispose()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--model", default="1b_lyrics")
    parser.add_argument("--songs", type=int, default=200)
    args = parser.parse_args()
    names(args.model)
    asyncio.run(interaction(args.model, args.songs))


if __name__ == "__main__":
    main()
