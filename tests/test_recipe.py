"""Recipe cards and Remix (issue #16 item 5). The clip post and `/song` show how a song was made (the
temperatures the worker really used: the model's sampling.json here); Remix opens a form with the
recipe and makes a new request through `/generate`'s path (quota, one song per form). The same
recipe with the same seed gives the same drafts (codes equal) through the real worker
(`jukebot worker`, a tiny random-weight model on the CPU), a new seed other drafts. Fake Discord,
the real bot, SQLite and PostgreSQL, a restart of the bot before Remix is pressed."""

from __future__ import annotations

import io
import json
import re
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from bot.errors import UserError
from bot.features.recipes import card, logic
from db import repo
from db.database import Database
from db.models import JobStatus
from db.scope import GuildScope
from tests.bot_harness import Studio, real_worker_overrides
from tests.fakes.discord import custom_ids

pytest_plugins = ["tests.bot_fixtures"]

TEMPERATURES = [0.9, 0.95, 0.97]  # levels 0, 1, 2: not the original's, so the card must read them


@pytest.fixture(scope="module")
def tuned_model(tiny_model: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny model with its own recommended temperatures (sampling.json)."""
    folder = tmp_path_factory.mktemp("tuned") / "tiny"
    shutil.copytree(tiny_model, folder)
    (folder / "sampling.json").write_text(json.dumps({"temperatures": TEMPERATURES, "why": "test"}))
    return folder


@pytest.fixture
def studio_overrides(tuned_model: Path) -> dict[str, Any]:
    return real_worker_overrides(tuned_model)


def song_id_from(text: str) -> int:
    m = re.search(r"Song #(\d+)", text)
    assert m, text
    return int(m[1])


def form_fields(modal: dict[str, Any]) -> dict[str, str]:
    return logic.form_values(
        {
            "components": [
                {**row, "components": [{**c, "value": c.get("value", "")} for c in row.get("components", [])]}
                for row in modal["components"]
            ]
        }
    )


def draft_codes(studio: Studio, song_id: int) -> list[np.ndarray]:
    return [np.load(io.BytesIO(studio.storage.read_bytes(d.codes_key))) for d in studio.drafts(song_id)]


async def drafts_made(studio: Studio, song_id: int) -> list[np.ndarray]:
    await studio.until_db(
        lambda: any(j.kind == "draft" and j.status == JobStatus.succeeded for j in studio.jobs(song_id)),
        f"song {song_id}'s drafts",
        timeout=180,
    )
    return await studio.run_db(draft_codes, studio, song_id)


async def test_recipe_card_and_remix_with_the_real_worker(studio: Studio) -> None:
    fake = studio.fake
    alice = studio.members["alice"]
    # The day limit is what this test counts: remixes still in their vote must not hit the running one.
    studio.settings.limits.max_queued_per_member = 5
    studio.start_real_worker()
    await studio.start_bot()
    await studio.run("owner", "mod limits", {"songs_per_day": 3})
    ix = await studio.run(
        "alice", "generate", {"artist": "bach", "genre": "chorale", "seconds": 0.2, "drafts": 2}
    )
    song_id = song_id_from(ix.text())
    drafts_msg = await studio.until(lambda: studio.message_with(f"jb:vote:{song_id}:"), "the drafts", 120)
    await studio.click("alice", drafts_msg, f"jb:close:{song_id}")
    clip = await studio.until_db(
        lambda: (c := studio.clip(song_id)) is not None and c.message_id is not None and c,
        "the clip posted",
        timeout=180,
    )
    seed = studio.song(song_id).seed

    # The card on the clip post: the temperatures the worker used (the model's sampling.json).
    post = fake.messages[clip.message_id]
    content = post["content"]
    assert f"model `{studio.settings.engine.model}` · seed `{seed}` · 0.2 s · 2 drafts" in content, content
    assert "Artist **bach** · genre *chorale* · lyrics: instrumental" in content, content
    assert "drafts 0.97 (the model's recommendation) · upsampling 0.95 / 0.9 (its sampling.json)" in content
    assert f"jb:remix:{clip.id}" in custom_ids(post)
    shown = await studio.run("bob", "song", {"id": song_id})
    assert f"seed `{seed}`" in shown.text() and "upsampling 0.95 / 0.9" in shown.text(), shown.text()

    # A restart: a form opened before it is still answered, and the Remix button on the old post
    # still opens the form, filled with the recipe.
    before = await studio.click("alice", post, f"jb:remix:{clip.id}")
    assert before.modal is not None, before.text()
    await studio.stop_bot()
    await studio.start_bot(sync=False)
    answer = await fake.settled(await fake.submit_modal(alice, before, {"seed": "x"}), timeout=20)
    assert "The seed must be a whole number" in answer.text(), answer.text()
    opened = await studio.click("alice", post, f"jb:remix:{clip.id}")
    assert opened.modal is not None, opened.text()
    assert form_fields(opened.modal) == {
        "artist": "bach",
        "genre": "chorale",
        "lyrics": "",
        "seed": str(seed),
        "seconds": "0.2",
    }

    # Junk in the form: a clear line each, nothing written.
    for junk, says in (
        ({"seed": "twelve"}, "The seed must be a whole number from 0 to"),
        ({"seed": "99999999999"}, "is too large"),
        ({"seconds": "-3"}, "A song can be"),
        ({"seconds": "long"}, "The length must be a number of seconds"),
        ({"artist": "zzqx nobody"}, "artist"),
    ):
        answer = await fake.settled(await fake.submit_modal(alice, opened, junk), timeout=20)
        assert says in answer.text() and "Traceback" not in answer.text(), (junk, answer.text())
    assert len(studio.songs()) == 1

    # The same recipe, sent unchanged: a new song with the same seed, and the same drafts.
    same = await fake.settled(await fake.submit_modal(alice, opened, {}), timeout=20)
    assert f"Remix of song #{song_id} — changed: nothing" in same.text(), same.text()
    same_id = song_id_from(same.text())
    remix = studio.song(same_id)
    assert same_id != song_id and remix.seed == seed and remix.request_key == str(same.id)
    assert (remix.artist, remix.genre, remix.lyrics, remix.seconds, remix.n_drafts) == (
        "bach",
        "chorale",
        "",
        0.2,
        2,
    )
    original, again = await drafts_made(studio, song_id), await drafts_made(studio, same_id)
    assert len(original) == len(again) == 2
    for a, b in zip(original, again, strict=True):
        np.testing.assert_array_equal(a, b)

    # Change one field (the seed): other drafts.
    other = await fake.settled(await fake.submit_modal(alice, opened, {"seed": str(seed + 1)}), timeout=20)
    assert "changed: seed" in other.text(), other.text()
    other_id = song_id_from(other.text())
    assert studio.song(other_id).seed == seed + 1
    changed = await drafts_made(studio, other_id)
    assert not np.array_equal(changed[0], original[0])

    # Remixes count against the member's songs of the day like /generate: the fourth is refused.
    over = await fake.settled(await fake.submit_modal(alice, opened, {}), timeout=20)
    assert "this server allows 3 a day" in over.text(), over.text()
    assert len(studio.songs()) == 3


def test_remix_of_another_servers_clip_is_not_found(db: Database) -> None:
    user = repo.get_or_create_user(db, 7, "alice")
    assert user.id is not None
    song = repo.create_song(
        db, user_id=user.id, artist="bach", genre="chorale", seconds=2, seed=5, guild_id=1
    )
    assert song.id is not None
    clip = repo.add_clip(db, song.id, "a.wav", "a.npz")
    assert clip.id is not None
    assert logic.remix_source(db, GuildScope(1), clip.id).recipe.seed == 5
    for scope in (GuildScope(2), GuildScope(None)):
        with pytest.raises(UserError, match=rf"There is no clip #{clip.id} here to remix"):
            logic.remix_source(db, scope, clip.id)
    with pytest.raises(UserError, match="There is no clip #99999999999 here"):
        logic.remix_source(db, GuildScope(1), 99999999999)


def test_the_card_names_what_a_song_comes_from(db: Database) -> None:
    user = repo.get_or_create_user(db, 7, "alice")
    assert user.id is not None
    parent = repo.create_song(
        db, user_id=user.id, artist="bach", genre="chorale", seconds=2, seed=1, guild_id=1
    )
    assert parent.id is not None
    pclip = repo.add_clip(db, parent.id, "p.wav", "p.npz")
    child = repo.create_song(
        db,
        user_id=user.id,
        artist="bach",
        genre="chorale",
        seconds=2,
        seed=2,
        lyrics="la la\nlo",
        temperature=1.1,
        model="1b_lyrics",  # a released model: the original's temperatures
        guild_id=1,
        parent_clip_id=pclip.id,
    )
    text = card.recipe_text(card.recipe_for(db, child))
    assert "lyrics: “la la / lo”" in text
    assert "drafts 1.1 (chosen)" in text and "upsampling 0.99 / 0.99 (the original Jukebox defaults)" in text
    assert f"continues clip #{pclip.id} (song #{parent.id}) from its end" in text


@pytest.mark.parametrize(
    ("text", "seed"), [("", None), (" 42 ", 42), ("1,234", 1234), ("2147483647", 2**31 - 1)]
)
def test_seed_parsing(text: str, seed: int | None) -> None:
    assert logic.parse_seed(text) == seed


@pytest.mark.parametrize("text", ["-1", "1.5", "2147483648", "abc", "1e9"])
def test_bad_seeds(text: str) -> None:
    with pytest.raises(UserError, match="seed"):
        logic.parse_seed(text)
