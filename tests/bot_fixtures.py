"""Pytest fixtures for the bot's end-to-end tests (load with `pytest_plugins = ["tests.bot_fixtures"]`):
`studio` (over SQLite and PostgreSQL), `sqlite_studio`, and `studio_overrides` (override it in a test
module to change settings). The harness itself is tests/bot_harness.py."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio

from tests.bot_harness import Studio, make_studio, write_tiny_model


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny random-weight model folder for the real worker (`jukebot worker`)."""
    return write_tiny_model(tmp_path_factory.mktemp("models") / "tiny")


@pytest.fixture
def studio_overrides() -> dict[str, Any]:
    """Override in a test module to change the studio's settings."""
    return {}


@pytest_asyncio.fixture
async def studio(
    database_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, studio_overrides: dict[str, Any]
) -> AsyncIterator[Studio]:
    """Over SQLite and PostgreSQL (the `database_url` fixture)."""
    async for s in make_studio(database_url, tmp_path, monkeypatch, studio_overrides):
        yield s


@pytest_asyncio.fixture
async def sqlite_studio(
    sqlite_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, studio_overrides: dict[str, Any]
) -> AsyncIterator[Studio]:
    async for s in make_studio(sqlite_url, tmp_path, monkeypatch, studio_overrides):
        yield s
