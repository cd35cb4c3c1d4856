"""The family tree of `/song id:` and the family ranking of `/top by:family`, as text (synchronous:
the cog runs them in threads). The queries are db/family.py's, bounded and scoped to the server."""

from __future__ import annotations

from datetime import datetime

from bot.core.text import message_url
from db import family
from db.database import Database
from db.models import Song
from db.scope import GuildScope

HOW = {family.REROLL: "🎲", family.CONTINUATION: "➕", None: "🌱"}
MAX_CHARS = 4000  # an embed's description holds 4096


def _link(text: str, guild_id: int | None, channel_id: int | None, message_id: int | None) -> str:
    if channel_id and message_id:
        return f"[{text}]({message_url(guild_id, channel_id, message_id)})"
    return text


def node_label(node: family.Node, *, this: bool = False) -> str:
    song = node.song
    name = f"Song #{song.id}"
    head = (
        f"**{name}** (this song)"
        if this
        else _link(name, song.guild_id, song.channel_id, song.status_message_id)
    )
    out = f"{HOW[node.how]} {head} · {song.artist} · {song.genre}"
    if node.clips:
        out += " — " + ", ".join(
            _link(f"clip #{c.id}", song.guild_id, c.channel_id, c.message_id) for c in node.clips
        )
    elif song.status != "done":
        out += f" — {song.status}"
    return out


def _below(node: family.Node, prefix: str, out: list[str]) -> None:
    for i, kid in enumerate(node.children):
        last = i == len(node.children) - 1 and not node.more_children
        out.append(f"{prefix}{'└' if last else '├'}─ {node_label(kid)}")
        _below(kid, prefix + ("   " if last else "│  "), out)
    if node.more_children:
        out.append(f"{prefix}└─ …and {node.more_children} more")


def render_family(tree: family.Family) -> str | None:
    """The tree as lines (ancestors from the oldest down, then the song and what came from it);
    None for a song with no relatives."""
    if not tree.ancestors and not tree.song.children and not tree.song.more_children:
        return None
    out: list[str] = []
    if tree.more_ancestors:
        out.append("⋮ (older songs)")
    for a in reversed(tree.ancestors):
        out.append(f"↑ {node_label(a)}")
    out.append(node_label(tree.song, this=True))
    _below(tree.song, "", out)
    text = ""
    for line in out:
        if len(text) + len(line) + 2 > MAX_CHARS:
            return text + "…"
        text += line + "\n"
    return text.rstrip()


def family_text(db: Database, scope: GuildScope, song_id: int) -> str | None:
    with db.read() as s:
        tree = family.family_of(s, scope, song_id)
    return render_family(tree) if tree is not None else None


def top_families_text(db: Database, guild_id: int | None, since: datetime, title: str) -> str:
    if guild_id is None:
        return "Families are ranked inside a server."
    with db.read() as s:
        ranks = family.top_families(s, guild_id, since, limit=10)
    if not ranks:
        return "No song families with clips or votes yet here. Press **Continue** or **Remix** on a clip to start one!"
    out = [
        f"**Top song families {title}** (clip votes, then clips, across a song and everything made from it)"
    ]
    for rank, f in enumerate(ranks, 1):
        root: Song = f.root
        out.append(
            f"{rank}. Song #{root.id} · {root.artist} · {root.genre} — {f.votes} vote{'s' if f.votes != 1 else ''}, "
            f"{f.clips} clip{'s' if f.clips != 1 else ''}, {f.songs} song{'s' if f.songs != 1 else ''} in the family"
        )
    return "\n".join(out)
