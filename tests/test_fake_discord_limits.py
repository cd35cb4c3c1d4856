"""The fake Discord enforces Discord's limits (tests/fakes/discord_limits.py, issue #14 defect 16),
checked with the real discord.py client: rate-limit buckets with 429 and the headers discord.py
paces itself with, the 3-second interaction deadline, message size limits, and interaction payloads
complete enough for a channel the client has not cached."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import discord
import pytest
import pytest_asyncio
import yarl

from tests.fakes.discord import DiscordLimits, FakeDiscord, FakeInteraction, RouteLimit

pytestmark = pytest.mark.asyncio


@dataclass
class Client:
    fake: FakeDiscord
    bot: discord.Client
    guild: int
    channel: int
    member: int
    on_interaction: list[Callable[[discord.Interaction[Any]], Awaitable[None]]]
    task: asyncio.Task[None]


async def start(limits: DiscordLimits | None = None) -> Client:
    fake = await FakeDiscord(limits=limits).start()
    discord.http.Route.BASE = fake.api_base
    discord.gateway.DiscordWebSocket.DEFAULT_GATEWAY = yarl.URL(fake.gateway_url)
    guild = fake.add_guild("Lab", channels=("lab",))
    member = fake.add_user("ada")
    fake.add_member(guild, member)
    bot = discord.Client(intents=discord.Intents.default(), guild_ready_timeout=0.05)
    handlers: list[Callable[[discord.Interaction[Any]], Awaitable[None]]] = []

    @bot.event
    async def on_interaction(interaction: discord.Interaction[Any]) -> None:
        for handler in handlers:
            await handler(interaction)

    task = asyncio.create_task(bot.start(fake.token))
    await asyncio.wait_for(bot.wait_until_ready(), 10)
    return Client(fake, bot, guild, fake.channel(guild, "lab"), member, handlers, task)


@pytest_asyncio.fixture
async def lab() -> AsyncIterator[Client]:
    c = await start()
    yield c
    await c.bot.close()
    await c.fake.stop()


async def test_a_burst_of_edits_stays_within_the_bucket_and_every_edit_gets_through() -> None:
    # A short window keeps the test fast; the rule has the shape of Discord's 5 per 5 s.
    c = await start(DiscordLimits(message_edit=RouteLimit(2, 0.5)))
    try:
        channel = c.bot.get_channel(c.channel)
        assert isinstance(channel, discord.TextChannel)
        message = await channel.send("0%")
        began = time.monotonic()
        await asyncio.gather(*(message.edit(content=f"{i * 10}%") for i in range(1, 7)))
        took = time.monotonic() - began
        assert len(c.fake.edits[message.id]) == 7  # none lost
        assert took >= 0.9  # 6 edits at 2 per 0.5 s need two more windows after the first
        accepted = [x.at for x in c.fake.calls if x.method == "PATCH" and x not in c.fake.rate_limited_calls]
        assert max(sum(1 for u in accepted if t <= u < t + 0.5) for t in accepted) <= 2
    finally:
        await c.bot.close()
        await c.fake.stop()


async def test_discord_py_waits_out_a_429_and_its_edit_succeeds() -> None:
    import aiohttp

    c = await start(DiscordLimits(message_edit=RouteLimit(3, 1.0)))
    try:
        channel = c.bot.get_channel(c.channel)
        assert isinstance(channel, discord.TextChannel)
        message = await channel.send("0%")
        # Another client (another process of the bot) uses up the channel's bucket first.
        url = f"{c.fake.api_base}/channels/{c.channel}/messages/{message.id}"
        async with aiohttp.ClientSession() as http:
            for i in range(3):
                async with http.patch(url, json={"content": f"{i}"}, headers=_auth(c)) as r:
                    assert r.status == 200
        began = time.monotonic()
        edited = await message.edit(content="100%")
        assert edited.content == "100%"
        assert c.fake.rate_limited == 1  # it met the 429 once, waited retry_after, and retried
        assert time.monotonic() - began >= 0.5
        assert c.fake.messages[message.id]["content"] == "100%"
    finally:
        await c.bot.close()
        await c.fake.stop()


async def test_the_fake_answers_429_with_retry_after_and_the_headers(lab: Client) -> None:
    c = lab
    channel = c.bot.get_channel(c.channel)
    assert isinstance(channel, discord.TextChannel)
    message = await channel.send("status")
    # Bypass discord.py's own pacing: a client that ignores the headers gets 429s.
    import aiohttp

    url = f"{c.fake.api_base}/channels/{c.channel}/messages/{message.id}"
    statuses = []
    async with aiohttp.ClientSession() as http:
        for i in range(6):
            async with http.patch(url, json={"content": str(i)}, headers=_auth(c)) as r:
                statuses.append(r.status)
                last = (dict(r.headers), await r.json())
    assert statuses == [200] * 5 + [429]
    got_headers, body = last
    assert body["global"] is False and 0 < body["retry_after"] <= 5.0
    for h in ("X-RateLimit-Limit", "X-RateLimit-Remaining", "X-RateLimit-Reset-After", "X-RateLimit-Bucket"):
        assert h in got_headers
    assert got_headers["X-RateLimit-Remaining"] == "0" and got_headers["Via"]
    assert c.fake.rate_limited == 1


async def test_the_global_limit_answers_429_with_global_true() -> None:
    import aiohttp

    c = await start(DiscordLimits(global_per_second=3))
    try:
        await asyncio.sleep(1.0)  # the client's own start-up requests leave the window
        statuses, body = [], {}
        async with aiohttp.ClientSession() as http:
            for _ in range(4):
                async with http.get(f"{c.fake.api_base}/users/@me", headers=_auth(c)) as r:
                    statuses.append(r.status)
                    body = await r.json()
                    headers = dict(r.headers)
        assert statuses == [200, 200, 200, 429]
        assert body["global"] is True and headers["X-RateLimit-Global"] == "true"
    finally:
        await c.bot.close()
        await c.fake.stop()


async def test_a_used_up_bucket_is_counted(lab: Client) -> None:
    c = lab
    channel = c.bot.get_partial_messageable(c.channel)
    for i in range(5):
        await channel.send(str(i))
    assert c.fake.buckets_exhausted == 1 and c.fake.rate_limited == 0


async def test_buckets_are_per_channel(lab: Client) -> None:
    c = lab
    other = c.fake.add_channel(c.guild, "other")
    for cid in (c.channel, other):
        ch = c.bot.get_partial_messageable(cid)
        for i in range(5):
            await ch.send(str(i))
    assert c.fake.rate_limited == 0


async def test_a_callback_after_the_deadline_gets_10062_but_followups_work_for_an_answered_one() -> None:
    c = await start(DiscordLimits(interaction_deadline=0.3))
    try:
        errors: list[BaseException] = []

        async def slow(interaction: discord.Interaction[Any]) -> None:
            if interaction.data and interaction.data.get("custom_id") == "late":
                await asyncio.sleep(0.5)
            try:
                await interaction.response.defer()
                await interaction.followup.send("done")
            except discord.HTTPException as e:
                errors.append(e)

        c.on_interaction.append(slow)
        post = c.fake.post_buttons(c.channel, ("late", "quick"))
        late = await c.fake.click(c.member, post, "late")
        await c.fake.wait_for(lambda: errors, 5, "the late defer to fail")
        assert isinstance(errors[0], discord.NotFound) and errors[0].code == 10062
        assert late.callbacks == [] and late in c.fake.late_callbacks
        quick = await c.fake.click(c.member, post, "quick")
        await c.fake.wait_for(lambda: quick.followups, 5, "a followup")
        assert [m["content"] for m in quick.followups] == ["done"]
    finally:
        await c.bot.close()
        await c.fake.stop()


async def test_followups_stop_working_when_the_token_expires() -> None:
    c = await start(DiscordLimits(interaction_token_seconds=0.5))
    try:
        results: list[Any] = []

        async def answer_then_follow_up_late(interaction: discord.Interaction[Any]) -> None:
            await interaction.response.defer()
            await interaction.followup.send("in time")
            await asyncio.sleep(0.6)
            try:
                await interaction.followup.send("too late")
            except discord.HTTPException as e:
                results.append(e)

        c.on_interaction.append(answer_then_follow_up_late)
        post = c.fake.post_buttons(c.channel, ("go",))
        ix = await c.fake.click(c.member, post, "go")
        await c.fake.wait_for(lambda: results, 5, "the late followup to fail")
        assert results[0].status == 401 and results[0].code == 50027
        assert [m["content"] for m in ix.followups] == ["in time"]
    finally:
        await c.bot.close()
        await c.fake.stop()


async def test_long_content_gets_50035_on_send_edit_and_followup(lab: Client) -> None:
    c = lab
    channel = c.bot.get_channel(c.channel)
    assert isinstance(channel, discord.TextChannel)
    with pytest.raises(discord.HTTPException) as sent:
        await channel.send("x" * 2001)
    assert sent.value.code == 50035 and "content" in str(sent.value)
    message = await channel.send("x" * 2000)  # exactly the limit is fine
    with pytest.raises(discord.HTTPException) as edited:
        await message.edit(content="y" * 2001)
    assert edited.value.code == 50035

    failures: list[discord.HTTPException] = []

    async def long_followup(interaction: discord.Interaction[Any]) -> None:
        await interaction.response.defer()
        try:
            await interaction.followup.send("z" * 2001)
        except discord.HTTPException as e:
            failures.append(e)

    c.on_interaction.append(long_followup)
    post = c.fake.post_buttons(c.channel, ("go",))
    await c.fake.click(c.member, post, "go")
    await c.fake.wait_for(lambda: failures, 5, "the followup to be refused")
    assert failures[0].code == 50035


async def test_attachments_over_the_guild_limit_are_refused_on_edits_and_followups(lab: Client) -> None:
    c = lab
    c.fake.set_upload_limit(c.guild, 1000)
    channel = c.bot.get_channel(c.channel)
    assert isinstance(channel, discord.TextChannel)
    message = await channel.send("clip")
    with pytest.raises(discord.HTTPException) as edited:
        await message.edit(attachments=[discord.File(_bytes(1001), "big.wav")])
    assert edited.value.status == 413 and edited.value.code == 40005

    failures: list[discord.HTTPException] = []

    async def big_followup(interaction: discord.Interaction[Any]) -> None:
        await interaction.response.defer()
        try:
            await interaction.followup.send(file=discord.File(_bytes(1001), "big.wav"))
        except discord.HTTPException as e:
            failures.append(e)

    c.on_interaction.append(big_followup)
    post = c.fake.post_buttons(c.channel, ("go",))
    await c.fake.click(c.member, post, "go")
    await c.fake.wait_for(lambda: failures, 5, "the followup to be refused")
    assert failures[0].code == 40005


async def test_an_interaction_in_a_channel_the_client_has_not_cached_works(lab: Client) -> None:
    c = lab
    new = c.fake.add_channel(c.guild, "new")  # created after READY: not in discord.py's cache
    assert c.bot.get_channel(new) is None
    seen: list[Any] = []

    async def answer(interaction: discord.Interaction[Any]) -> None:
        seen.append(interaction.channel)
        await interaction.response.send_message(f"in #{getattr(interaction.channel, 'name', '?')}")

    c.on_interaction.append(answer)
    post = c.fake.post_buttons(new, ("go",))
    ix: FakeInteraction = await c.fake.click(c.member, post, "go")
    await c.fake.settled(ix)
    assert isinstance(seen[0], discord.TextChannel) and seen[0].name == "new"
    assert "in #new" in ix.text()
    payload = ix.payload
    for key in ("app_permissions", "entitlements", "locale", "guild_locale", "attachment_size_limit"):
        assert key in payload
    assert {"id", "type", "guild_id", "name", "position", "permissions"} <= set(payload["channel"])


def _auth(c: Client) -> dict[str, str]:
    return {"Authorization": f"Bot {c.fake.token}"}


def _bytes(n: int) -> Any:
    import io

    return io.BytesIO(b"\0" * n)


async def test_no_rate_limits_lets_a_burst_through_but_keeps_the_size_rules() -> None:
    c = await start(DiscordLimits.no_rate_limits())
    try:
        channel = c.bot.get_partial_messageable(c.channel)
        await asyncio.gather(*(channel.send(str(i)) for i in range(12)))
        assert c.fake.rate_limited == 0 and c.fake.buckets_exhausted == 0
        with pytest.raises(discord.HTTPException) as sent:
            await channel.send("x" * 2001)
        assert sent.value.code == 50035
    finally:
        await c.bot.close()
        await c.fake.stop()
