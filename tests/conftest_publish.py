"""Fixtures of the publisher tests (loaded with `pytest_plugins = ["tests.conftest_publish"]`): the fake X
and SoundCloud servers, and the renders of the 2 s test clip made once per session."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from publisher import render
from tests.fakes.soundcloud_server import FakeSoundCloud
from tests.fakes.x_server import FakeX
from tests.publish_fixtures import tone_wav


@pytest.fixture(scope="session")
def prerendered() -> dict[str, bytes]:
    """The renders of a 2 s test clip, made once: most publishing tests are about the bookkeeping, and
    rendering has its own tests (tests/test_render.py)."""
    wav = tone_wav(2.0)
    card = render.TitleCard("Harbour Rain", "Frank Sinatra", "jazz", "alice", "#jukebot")
    return {
        "x": render.render_x_video(wav, card, size=(320, 180)),
        "soundcloud": render.render_audio(wav, "flac").data,
    }


@pytest.fixture
def fake_x() -> Iterator[FakeX]:
    with FakeX(check_after_secs=0, processing_polls=1) as server:
        assert isinstance(server, FakeX)
        yield server


@pytest.fixture
def fake_sc() -> Iterator[FakeSoundCloud]:
    with FakeSoundCloud() as server:
        assert isinstance(server, FakeSoundCloud)
        yield server
