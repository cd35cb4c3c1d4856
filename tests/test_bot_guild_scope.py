"""Two servers on one bot: an id typed in one server never reaches another server's song, clip or
job (the reliability issue's defects 1 and 14), on SQLite and PostgreSQL, through the real bot
against the fake Discord."""

from __future__ import annotations

from db.models import JobStatus, SongStatus
from tests.bot_harness import Studio, finish_drafts, seed_clip
from tests.test_bot_e2e import song_id_from
from tests.test_bot_requests import GOOD

pytest_plugins = ["tests.bot_fixtures"]


async def test_another_servers_ids_are_not_found_here(studio: Studio) -> None:
    fake = studio.fake
    other = fake.add_guild("Elsewhere", channels=("general",))
    elsewhere = fake.channel(other, "general")
    their_owner = int(fake.guilds[other]["owner_id"])  # a moderator there (owner), nobody here
    await studio.start_bot()

    sid = song_id_from((await studio.run("alice", "generate", GOOD)).text())
    job_id = studio.jobs(sid)[0].id
    clip_song = await studio.run_db(seed_clip, studio, "bob")
    clip = await studio.until(lambda: studio.clip(clip_song), "the seeded clip")

    async def there(command: str, options: dict[str, object]) -> str:
        ix = await fake.settled(await fake.command(their_owner, elsewhere, command, options), timeout=20)
        return ix.text()

    assert f"There is no job #{job_id} here" in await there("mod cancel", {"job": job_id})
    assert studio.jobs(sid)[0].status == JobStatus.queued and studio.song(sid).status == SongStatus.queued
    assert f"There is no song #{sid} here" in await there("song", {"id": sid})
    assert f"There is no clip #{clip.id} here" in await there("continue", {"clip": clip.id})
    assert len(studio.songs()) == 2  # nothing was made for the other server

    # A failed job of this server cannot be retried from the other one either (quota skipping).
    await studio.run_db(finish_drafts, studio, sid)
    assert f"There is no job #{job_id} here" in await there("mod retry", {"job": job_id})

    # The same ids work here.
    assert f"Song #{sid}" in (await studio.run("alice", "song", {"id": sid})).text()


async def test_ids_out_of_the_database_range_are_simply_not_there(studio: Studio) -> None:
    await studio.start_bot()
    for big in (3_000_000_000, 2**40):
        text = (await studio.run("alice", "song", {"id": big})).text()
        assert f"There is no song #{big} here" in text, text
        text = (await studio.run("owner", "mod cancel", {"job": big})).text()
        assert f"There is no job #{big} here" in text, text
        text = (await studio.run("alice", "continue", {"clip": big})).text()
        assert f"There is no clip #{big} here" in text, text
