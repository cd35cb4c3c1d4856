"""A song's family: the songs it comes from and the songs that come from it, inside one server.

A song's parent is the song it rerolls (`rerolled_from_song_id`), else the song of the clip it
continues (`parent_clip_id`); a reroll of a continuation keeps the clip too, but hangs under the song
it rerolls so it is shown once. A song's clips (the vote's winner, then drafts chosen again) are
part of its node.

Bounded: at most `MAX_UP` ancestors, `MAX_DOWN` levels of children, `MAX_WIDTH` children per song
and `MAX_NODES` songs below; each level is one query (plus one for that level's clips), never one
per song. Every query is filtered by the server (`GuildScope.guild_id`): a lineage never leads into
another server's songs.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime

from sqlalchemy import func, literal, or_, select
from sqlmodel import Session, col

from db.models import Clip, Song, Vote
from db.scope import GuildScope

MAX_UP = 5
MAX_DOWN = 3
MAX_WIDTH = 5
MAX_NODES = 15
MAX_DEPTH = 50  # the deepest lineage a family ranking follows (ids only grow: no cycles, but bounded)

REROLL = "reroll"
CONTINUATION = "continuation"


@dataclass
class Node:
    song: Song
    how: str | None  # how it comes from its parent: REROLL | CONTINUATION | None (the root, or cut off)
    clips: list[Clip] = field(default_factory=list)
    children: list[Node] = field(default_factory=list)
    more_children: int = 0  # children not shown (width or size caps)


@dataclass
class Family:
    song: Node  # the song asked about, with its children below
    ancestors: list[Node]  # its parent first, then the parent's parent...
    more_ancestors: bool  # the lineage goes further up than shown


def _how(song: Song) -> str | None:
    if song.rerolled_from_song_id is not None:
        return REROLL
    if song.parent_clip_id is not None:
        return CONTINUATION
    return None


def _clips_of(s: Session, song_ids: Iterable[int]) -> dict[int, list[Clip]]:
    ids = list(song_ids)
    out: dict[int, list[Clip]] = {i: [] for i in ids}
    if ids:
        for clip in s.execute(
            select(Clip).where(col(Clip.song_id).in_(ids)).order_by(col(Clip.id))
        ).scalars():
            out[clip.song_id].append(clip)
    return out


def _parent(s: Session, guild_id: int, song: Song) -> Song | None:
    """The song this one comes from, in the same server (one query)."""
    if song.rerolled_from_song_id is not None:
        stmt = select(Song).where(col(Song.id) == song.rerolled_from_song_id)
    elif song.parent_clip_id is not None:
        stmt = (
            select(Song)
            .join(Clip, col(Clip.song_id) == col(Song.id))
            .where(col(Clip.id) == song.parent_clip_id)
        )
    else:
        return None
    return s.execute(stmt.where(col(Song.guild_id) == guild_id)).scalar_one_or_none()


def _children(s: Session, guild_id: int, parent_ids: list[int]) -> list[tuple[Song, int]]:
    """The songs coming straight from any of these songs, each with its parent's id (one query for
    the whole level)."""
    parent = func.coalesce(col(Song.rerolled_from_song_id), col(Clip.song_id))
    rows = s.execute(
        select(Song, parent)
        .outerjoin(Clip, col(Clip.id) == col(Song.parent_clip_id))
        .where(col(Song.guild_id) == guild_id, parent.in_(parent_ids))
        .order_by(col(Song.id))
    ).all()
    return [(song, int(pid)) for song, pid in rows]


def family_of(s: Session, scope: GuildScope, song_id: int) -> Family | None:
    """The song's family tree in its server, or None when there is no such song here."""
    song = scope.song(s, song_id)
    if song is None or scope.guild_id is None:
        return None
    guild = scope.guild_id
    ancestors: list[Song] = []
    current = song
    while len(ancestors) < MAX_UP:
        parent = _parent(s, guild, current)
        if parent is None:
            break
        ancestors.append(parent)
        current = parent
    more_up = len(ancestors) == MAX_UP and _parent(s, guild, current) is not None

    root = Node(song, _how(song))
    level, shown = [root], 0
    for depth in range(MAX_DOWN + 1):
        by_id = {n.song.id: n for n in level}
        found = _children(s, guild, [i for i in by_id if i is not None])
        next_level: list[Node] = []
        for child, parent_id in found:
            node = by_id[parent_id]
            if depth == MAX_DOWN or len(node.children) >= MAX_WIDTH or shown >= MAX_NODES:
                node.more_children += 1  # counted, not shown
                continue
            kid = Node(child, _how(child))
            node.children.append(kid)
            next_level.append(kid)
            shown += 1
        if not next_level:
            break
        level = next_level

    nodes = [root, *_walk(root)]
    up = [Node(a, _how(a)) for a in ancestors]
    clips = _clips_of(s, {n.song.id for n in nodes + up if n.song.id is not None})
    for n in nodes + up:
        n.clips = clips.get(n.song.id or 0, [])
    return Family(root, up, more_up)


def _walk(node: Node) -> list[Node]:
    out: list[Node] = []
    for kid in node.children:
        out.append(kid)
        out.extend(_walk(kid))
    return out


# --- ranking families -------------------------------------------------------------------------------


@dataclass(frozen=True)
class FamilyRank:
    root: Song
    songs: int  # songs in the family
    clips: int  # clips made in the period
    votes: int  # clip votes cast in the period


def top_families(s: Session, guild_id: int, since: datetime, *, limit: int = 10) -> list[FamilyRank]:
    """The server's families (a root song and every song coming from it), most clip votes cast since
    `since` first, then most clips made since then. One recursive query maps each song to its root."""
    parent_song = func.coalesce(col(Song.rerolled_from_song_id), col(Clip.song_id))
    edges = (
        select(col(Song.id).label("child"), parent_song.label("parent"))
        .outerjoin(Clip, col(Clip.id) == col(Song.parent_clip_id))
        .where(col(Song.guild_id) == guild_id)
        .subquery("edges")
    )
    roots = (
        select(col(Song.id).label("song_id"), col(Song.id).label("root"), literal(0).label("depth"))
        .where(
            col(Song.guild_id) == guild_id,
            col(Song.rerolled_from_song_id).is_(None),
            col(Song.parent_clip_id).is_(None),
        )
        .cte("tree", recursive=True)
    )
    tree = roots.union_all(
        select(edges.c.child, roots.c.root, roots.c.depth + 1)
        .join(roots, edges.c.parent == roots.c.song_id)
        .where(roots.c.depth < MAX_DEPTH)
    )
    clips = (
        select(col(Clip.song_id).label("song_id"), func.count().label("n"))
        .where(col(Clip.created_at) >= since)
        .group_by(col(Clip.song_id))
        .subquery("period_clips")
    )
    votes = (
        select(col(Vote.song_id).label("song_id"), func.count().label("n"))
        .where(col(Vote.stage) == "clip", col(Vote.created_at) >= since)
        .group_by(col(Vote.song_id))
        .subquery("period_votes")
    )
    n_clips = func.coalesce(func.sum(clips.c.n), 0)
    n_votes = func.coalesce(func.sum(votes.c.n), 0)
    stmt = (
        select(tree.c.root, func.count(tree.c.song_id), n_clips, n_votes)
        .outerjoin(clips, clips.c.song_id == tree.c.song_id)
        .outerjoin(votes, votes.c.song_id == tree.c.song_id)
        .group_by(tree.c.root)
        .having(or_(n_clips > 0, n_votes > 0))
        .order_by(n_votes.desc(), n_clips.desc(), tree.c.root)
        .limit(limit)
    )
    rows = s.execute(stmt).all()
    songs = {
        song.id: song
        for song in s.execute(select(Song).where(col(Song.id).in_([r[0] for r in rows]))).scalars()
    }
    return [FamilyRank(songs[root], int(n), int(c), int(v)) for root, n, c, v in rows if root in songs]
