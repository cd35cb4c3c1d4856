"""Song family trees (issue #16 item 7): `db/family.py` on SQLite and PostgreSQL (parents and children
through continuations, rerolls and second clips; caps; one query per level; scoped to the server),
the family ranking, and `/song id:` / `/top by:family` through the fake Discord and the real bot."""

from __future__ import annotations

import re
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import timedelta
from typing import Any

from sqlalchemy import event, update
from sqlmodel import col

from bot.features.info.family import render_family
from db import family, repo
from db.database import Database
from db.models import Clip, Song, utcnow
from db.scope import GuildScope
from tests.bot_harness import Studio, seed_clip

pytest_plugins = ["tests.bot_fixtures"]

GUILD, OTHER = 1, 2


def song(
    db: Database,
    *,
    guild: int = GUILD,
    parent_clip: int | None = None,
    rerolls: int | None = None,
    clips: int = 1,
    artist: str = "bach",
) -> tuple[int, list[int]]:
    """A song of `guild` (continuing `parent_clip`, rerolling song `rerolls`) with `clips` clips, each
    from its own draft; returns its id and its clip ids."""
    user = repo.get_or_create_user(db, 100 + guild, "member")
    assert user.id is not None
    made = repo.create_song(
        db,
        user_id=user.id,
        artist=artist,
        genre="chorale",
        seconds=2,
        seed=7,
        guild_id=guild,
        channel_id=10,
        parent_clip_id=parent_clip,
    )
    assert made.id is not None
    if rerolls is not None:
        with db.write() as s:
            s.execute(update(Song).where(col(Song.id) == made.id).values(rerolled_from_song_id=rerolls))
    ids = []
    for i in range(clips):
        draft = repo.add_draft(db, made.id, i, f"s/{made.id}/d{i}.wav", f"s/{made.id}/d{i}.npy")
        clip = repo.add_clip(db, made.id, f"s/{made.id}/c{i}.wav", f"s/{made.id}/c{i}.npz", draft_id=draft.id)
        assert clip.id is not None
        ids.append(clip.id)
    return made.id, ids


def tree_of(db: Database, song_id: int, guild: int = GUILD) -> family.Family | None:
    with db.read() as s:
        return family.family_of(s, GuildScope(guild), song_id)


def ids(nodes: list[family.Node]) -> list[int | None]:
    return [n.song.id for n in nodes]


@contextmanager
def counted(db: Database) -> Iterator[list[str]]:
    statements: list[str] = []

    def on_execute(*args: Any) -> None:
        if str(args[2]).lstrip().upper().startswith("SELECT"):
            statements.append(str(args[2]))

    event.listen(db.engine, "before_cursor_execute", on_execute)
    try:
        yield statements
    finally:
        event.remove(db.engine, "before_cursor_execute", on_execute)


def test_parents_children_rerolls_and_second_clips(db: Database) -> None:
    a, (a1, a2) = song(db, clips=2)  # the winner's clip and a draft chosen again
    b, (b1,) = song(db, parent_clip=a1)  # continues A's first clip
    c, _ = song(db, parent_clip=a2, clips=0)  # continues A's second clip, still being made
    r, _ = song(db, rerolls=a, clips=0)  # a reroll of A
    d, (d1,) = song(db, parent_clip=b1)  # continues B
    e, _ = song(db, parent_clip=a1, rerolls=b, clips=0)  # a reroll of B: under B only, not under A
    song(db, guild=OTHER, parent_clip=a1)  # another server's song pointing here: never shown

    tree = tree_of(db, a)
    assert tree is not None and tree.ancestors == [] and not tree.more_ancestors
    root = tree.song
    assert [c_.id for c_ in root.clips] == [a1, a2]
    assert ids(root.children) == [b, c, r]
    assert [n.how for n in root.children] == [family.CONTINUATION, family.CONTINUATION, family.REROLL]
    (bn, cn, rn) = root.children
    assert ids(bn.children) == [d, e] and [n.how for n in bn.children] == [family.CONTINUATION, family.REROLL]
    assert cn.children == [] and rn.children == [] and cn.clips == []

    # From the bottom: D's parents are B, then A.
    tree_d = tree_of(db, d)
    assert tree_d is not None
    assert ids(tree_d.ancestors) == [b, a]
    assert [c_.id for c_ in tree_d.ancestors[0].clips] == [b1]
    assert [c_.id for c_ in tree_d.song.clips] == [d1]
    text = render_family(tree_d)
    assert text is not None
    assert text.index(f"Song #{a}") < text.index(f"Song #{b}") < text.index(f"**Song #{d}** (this song)")

    # Another server sees no such song, and its own song's tree stops at its server.
    assert tree_of(db, a, OTHER) is None
    assert tree_of(db, a, None) is None  # type: ignore[arg-type]


def test_a_song_alone_has_no_tree(db: Database) -> None:
    a, _ = song(db)
    tree = tree_of(db, a)
    assert tree is not None and render_family(tree) is None


def test_caps_and_one_query_per_level(db: Database) -> None:
    a, (a1,) = song(db)
    kids = [song(db, parent_clip=a1) for _ in range(family.MAX_WIDTH + 3)]
    grandkids = [song(db, parent_clip=kids[0][1][0]) for _ in range(3)]
    # A chain deeper than the tree shows below the song, and longer than it shows above.
    chain = [grandkids[0]]
    for _ in range(family.MAX_UP + 2):
        chain.append(song(db, parent_clip=chain[-1][1][0]))

    with counted(db) as statements:
        tree = tree_of(db, a)
    assert tree is not None
    root = tree.song
    assert len(root.children) == family.MAX_WIDTH and root.more_children == 3
    shown = [root, *family._walk(root)]
    assert len(shown) - 1 <= family.MAX_NODES
    # the scope's look-up, one query per level below (MAX_DOWN + 1: the last counts what is cut
    # off), and one for the clips of every song shown
    assert len(statements) <= 1 + (family.MAX_DOWN + 1) + 1, statements

    with counted(db) as statements:
        far = tree_of(db, chain[-1][0])
    assert far is not None
    assert len(far.ancestors) == family.MAX_UP and far.more_ancestors
    assert len(statements) <= 1 + family.MAX_UP + 1 + (family.MAX_DOWN + 1) + 1, statements


def test_top_families_ranks_a_root_with_everything_from_it(db: Database) -> None:
    a, (a1,) = song(db, artist="bach")
    b, _ = song(db, parent_clip=a1)
    r, _ = song(db, rerolls=b)
    lone, _ = song(db, artist="mozart")
    _, (o1,) = song(db, artist="handel")
    foreign, _ = song(db, guild=OTHER, parent_clip=a1)
    for voter in range(3):  # the lone song has the single best clip...
        repo.cast_vote(db, lone, 500 + voter, stage=repo.CLIP)
    for sid, voter in ((a, 600), (b, 601), (r, 602), (r, 603), (foreign, 604)):  # ...A's family more
        repo.cast_vote(db, sid, voter, stage=repo.CLIP)
    with db.write() as s:  # a family whose clip and votes are older than the period
        s.execute(update(Clip).where(col(Clip.id) == o1).values(created_at=utcnow() - timedelta(days=30)))

    since = utcnow() - timedelta(days=7)
    with db.read() as s:
        ranks = family.top_families(s, GUILD, since)
    assert [(f.root.id, f.songs, f.clips, f.votes) for f in ranks] == [(a, 3, 3, 4), (lone, 1, 1, 3)]
    with db.read() as s:
        assert [f.root.id for f in family.top_families(s, OTHER, since)] == []  # its root is not there


def continue_in_db(studio: Studio, parent_clip_id: int, member: str = "bob", seed: int = 9) -> int:
    """A continuation song of a clip, as `/continue` writes it (no worker needed to look it up)."""
    with studio.db.write() as s:
        user = repo.get_or_create_user(s, studio.members[member], member)
        assert user.id is not None
        child = repo.create_song(
            s,
            user_id=user.id,
            artist="abba",
            genre="pop",
            seconds=2,
            seed=seed,
            guild_id=studio.guild,
            channel_id=studio.channel,
            parent_clip_id=parent_clip_id,
        )
        assert child.id is not None
        return child.id


async def test_song_and_top_by_family_on_discord(studio: Studio) -> None:
    fake = studio.fake
    other = fake.add_guild("Elsewhere", channels=("general",))
    their_owner = int(fake.guilds[other]["owner_id"])
    await studio.start_bot()
    root = await studio.run_db(seed_clip, studio, "alice")
    parent_clip = await studio.until_db(
        lambda: (c := studio.clip(root)) is not None and c.message_id is not None and c, "the clip posted"
    )
    child = await studio.run_db(continue_in_db, studio, parent_clip.id)
    await studio.run_db(repo.cast_vote, studio.db, root, studio.members["carol"], None, repo.CLIP)

    ix = await studio.run("alice", "song", {"id": child})
    text = ix.text()
    assert "Recipe" in text and "seed `9`" in text and f"continues clip #{parent_clip.id}" in text, text
    assert "Family" in text and f"**Song #{child}** (this song)" in text, text
    jump = f"https://discord.com/channels/{studio.guild}/{parent_clip.channel_id}/{parent_clip.message_id}"
    assert f"[clip #{parent_clip.id}]({jump})" in text, text

    top = await studio.run("dave", "top", {"by": "family"})
    assert re.search(rf"1\. Song #{root} · abba · pop — 1 vote, 1 clip, 2 songs", top.text()), top.text()

    # A song of another server is not there, the same as a missing one.
    ix = await fake.settled(
        await fake.command(their_owner, fake.channel(other, "general"), "song", {"id": child}), timeout=20
    )
    assert f"There is no song #{child} here." in ix.text(), ix.text()
