"""Slash commands registered with one guild (`JUKEBOT_DISCORD_GUILD_ID`: instant, for a test server)
instead of globally, and used from there."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.bot_harness import Studio, make_studio


async def test_commands_synced_to_one_guild(
    sqlite_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    async for studio in make_studio(sqlite_url, tmp_path, monkeypatch, {}):
        await _check(studio)


async def _check(studio: Studio) -> None:
    studio.settings.discord.guild_id = studio.guild
    await studio.start_bot()
    fake = studio.fake
    assert fake.global_commands == []
    names = {c["name"] for c in fake.guild_commands[studio.guild]}
    assert {"generate", "continue", "mod", "Continue this clip"} <= names
    assert all(c["guild_id"] == str(studio.guild) for c in fake.guild_commands[studio.guild])
    ix = await studio.run("alice", "help")
    assert "/generate artist genre" in ix.text()
    assert any(
        c.method == "PUT" and c.path == f"/applications/{fake.app_id}/guilds/{studio.guild}/commands"
        for c in fake.calls
    )
