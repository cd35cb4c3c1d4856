"""A server whose model sings no words (the demo): `/generate lyrics:` still queues the song, and
the reply says the words will not be sung instead of ignoring them silently; the song row leaves
the temperature to the model's recommendation. Against the fake Discord with the real bot."""

from __future__ import annotations

from typing import Any

import pytest

from tests.bot_harness import Studio
from tests.test_bot_e2e import song_id_from

pytest_plugins = ["tests.bot_fixtures"]


@pytest.fixture
def studio_overrides() -> dict[str, Any]:
    return {"model": "demo"}


async def test_lyrics_for_a_model_that_sings_no_words_get_a_note(sqlite_studio: Studio) -> None:
    studio = sqlite_studio
    await studio.start_bot()
    ix = await studio.run(
        "alice", "generate", {"artist": "bach", "genre": "chorale", "seconds": 2, "lyrics": "Wachet auf"}
    )
    text = ix.text()
    assert "is in the studio" in text and "does not sing words" in text and "`demo`" in text, text
    song = studio.song(song_id_from(text))
    assert song.lyrics == "Wachet auf"  # kept with the song
    assert song.temperature == 0.0  # not chosen: the worker uses the model's recommendation

    ix = await studio.run("bob", "generate", {"artist": "bach", "genre": "chorale", "seconds": 2})
    assert "is in the studio" in ix.text() and "does not sing" not in ix.text(), ix.text()
