"""Each server's SoundCloud playlist: every clip it publishes to SoundCloud is added to it, once.

The playlist is made on first use, in the account the server publishes with (publisher/accounts.py),
titled by its moderators (`/mod playlist title:`) or "<server name> - jukebot". Its description carries
a marker (`jb-set-<server id>`), so a playlist made just before a crash is found again, not made twice.

Adding is read, append, write (SoundCloud's PUT replaces the track list), done by one runner at a
time per server (a lease on the `soundcloud_playlists` row, taken with one conditional UPDATE):
1. a publication that is published but not recorded in this playlist is "pending";
2. the playlist's tracks are read; only pending tracks not already in it are appended;
3. then the publications are recorded (`publications.playlist_id`).
A crash between 2 and 3 leaves the track in the playlist and the row pending: the next sync sees the
track there and only records it. So nothing is added twice, and nothing published is left out.

A playlist deleted on SoundCloud is made again with all the server's clips, and the moderators are
told. The sync runs after each SoundCloud upload and at every publisher sweep (catching up after a
crash or a failed call).
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import Select, or_, select, update
from sqlmodel import col

from db.database import Database
from db.models import Clip, Publication, PublicationState, Song, SoundCloudPlaylist, utcnow
from db.settings import Settings
from publisher.accounts import account_for
from publisher.captions import carries_marker
from publisher.soundcloud_client import Playlist, SoundCloudClient

log = logging.getLogger(__name__)

TITLE_MAX = 100  # SoundCloud's web uploader's limit for titles
LEASE = timedelta(minutes=5)

ClientFor = Callable[[int], SoundCloudClient]  # account (oauth_tokens.guild_id) -> a client logged in to it
Tell = Callable[[int | None, str], Awaitable[None]]  # (server, text) to its moderators


def playlist_marker(guild_id: int) -> str:
    return f"jb-set-{guild_id}"


def default_title(guild_name: str, guild_id: int) -> str:
    return clean_title(f"{guild_name.strip() or f'Discord server {guild_id}'} - jukebot")


def clean_title(title: str) -> str:
    """One line, at most TITLE_MAX characters ('' for blank)."""
    text = " ".join(title.split())
    return text if len(text) <= TITLE_MAX else text[: TITLE_MAX - 1].rstrip() + "…"


@dataclass(frozen=True)
class PlaylistInfo:
    guild_id: int
    title: str  # the title it has (or will have when it is made)
    playlist_id: str | None
    url: str | None
    clips: int  # clips of the server published to SoundCloud and recorded in it


# ---------------------------------------------------------------------------------- the database


def _ensure_row(db: Database, guild_id: int, guild_name: str | None = None) -> None:
    with db.write() as s:
        row = s.get(SoundCloudPlaylist, guild_id, with_for_update=True)
        if row is None:
            s.add(SoundCloudPlaylist(guild_id=guild_id, guild_name=guild_name or ""))
        elif guild_name and row.guild_name != guild_name:
            row.guild_name, row.updated_at = guild_name, utcnow()
            s.add(row)


def remember_guild_name(db: Database, guild_id: int, guild_name: str) -> None:
    """The server's name, for the playlist's default title (the publisher never sees Discord)."""
    _ensure_row(db, guild_id, guild_name)


def set_title(db: Database, guild_id: int, title: str, guild_name: str | None = None) -> str:
    """Store the moderators' title (the caller renames it on SoundCloud); returns it cleaned."""
    title = clean_title(title)
    if not title:
        raise ValueError("the playlist title is empty")
    _ensure_row(db, guild_id, guild_name)
    with db.write() as s:
        s.execute(
            update(SoundCloudPlaylist)
            .where(col(SoundCloudPlaylist.guild_id) == guild_id)
            .values(title=title, updated_at=utcnow())
        )
    return title


def _title(row: SoundCloudPlaylist) -> str:
    return row.title or default_title(row.guild_name, row.guild_id)


def _published_here(guild_id: int) -> Select[tuple[Publication]]:
    """Published SoundCloud publications of clips made in this server."""
    return (
        select(Publication)
        .join(Clip, col(Clip.id) == col(Publication.clip_id))
        .join(Song, col(Song.id) == col(Clip.song_id))
        .where(
            col(Song.guild_id) == guild_id,
            col(Publication.platform) == "soundcloud",
            col(Publication.state) == PublicationState.published.value,
            col(Publication.remote_id).is_not(None),
        )
        .order_by(col(Publication.published_at), col(Publication.id))
    )


def playlist_info(db: Database, guild_id: int) -> PlaylistInfo:
    with db.read() as s:
        row = s.get(SoundCloudPlaylist, guild_id) or SoundCloudPlaylist(guild_id=guild_id)
        published = list(s.execute(_published_here(guild_id)).scalars())
    recorded = [p for p in published if row.playlist_id and p.playlist_id == row.playlist_id]
    return PlaylistInfo(guild_id, _title(row), row.playlist_id, row.url, len(recorded))


def guilds_pending(db: Database) -> list[int]:
    """Servers with a clip published to SoundCloud and not yet recorded in their current playlist."""
    with db.read() as s:
        rows = s.execute(
            select(col(Song.guild_id))
            .join(Clip, col(Clip.song_id) == col(Song.id))
            .join(Publication, col(Publication.clip_id) == col(Clip.id))
            .outerjoin(SoundCloudPlaylist, col(SoundCloudPlaylist.guild_id) == col(Song.guild_id))
            .where(
                col(Song.guild_id).is_not(None),
                col(Publication.platform) == "soundcloud",
                col(Publication.state) == PublicationState.published.value,
                or_(
                    col(Publication.playlist_id).is_(None),
                    col(SoundCloudPlaylist.playlist_id).is_(None),
                    col(Publication.playlist_id) != col(SoundCloudPlaylist.playlist_id),
                ),
            )
            .distinct()
        ).scalars()
        return sorted(int(g) for g in rows)


def _take(db: Database, guild_id: int, owner: str, now: datetime) -> SoundCloudPlaylist | None:
    """Lease the server's playlist for this runner (None: another runner has it)."""
    _ensure_row(db, guild_id)
    with db.write() as s:
        done = s.execute(
            update(SoundCloudPlaylist)
            .where(
                col(SoundCloudPlaylist.guild_id) == guild_id,
                or_(
                    col(SoundCloudPlaylist.lease_expires_at).is_(None),
                    col(SoundCloudPlaylist.lease_expires_at) < now,
                ),
            )
            .values(lease_owner=owner, lease_expires_at=now + LEASE)
        )
        if done.rowcount != 1:  # type: ignore[attr-defined]
            return None
        return s.get(SoundCloudPlaylist, guild_id)


def _release(db: Database, guild_id: int, owner: str) -> None:
    with db.write() as s:
        s.execute(
            update(SoundCloudPlaylist)
            .where(col(SoundCloudPlaylist.guild_id) == guild_id, col(SoundCloudPlaylist.lease_owner) == owner)
            .values(lease_owner=None, lease_expires_at=None)
        )


def _record_playlist(
    db: Database, guild_id: int, owner: str, playlist: Playlist | None, account: int
) -> None:
    with db.write() as s:
        s.execute(
            update(SoundCloudPlaylist)
            .where(col(SoundCloudPlaylist.guild_id) == guild_id, col(SoundCloudPlaylist.lease_owner) == owner)
            .values(
                playlist_id=playlist.id if playlist else None,
                url=playlist.url if playlist else None,
                account_guild_id=account,
                updated_at=utcnow(),
            )
        )


def _record_added(db: Database, publication_ids: list[int], playlist_id: str) -> None:
    if not publication_ids:
        return
    with db.write() as s:
        s.execute(
            update(Publication)
            .where(col(Publication.id).in_(publication_ids))
            .values(playlist_id=playlist_id, updated_at=utcnow())
        )


def _published(db: Database, guild_id: int) -> list[Publication]:
    with db.read() as s:
        return list(s.execute(_published_here(guild_id)).scalars())


# ------------------------------------------------------------------------------------ SoundCloud


class PlaylistKeeper:
    """Keeps servers' playlists in step with what they published. `client_for(account)` gives a
    SoundCloud client logged in to that account; `tell(server, text)` reaches its moderators."""

    def __init__(
        self, db: Database, settings: Settings, client_for: ClientFor, tell: Tell, owner: str
    ) -> None:
        self.db, self.settings = db, settings
        self.client_for, self.tell, self.owner = client_for, tell, owner

    async def sync(self, guild_id: int) -> PlaylistInfo | None:
        """Add the server's published clips that are not in its playlist yet (making or remaking the
        playlist as needed) and give it the moderators' title. None when the server cannot publish to
        SoundCloud now, or another runner is at it (the title is applied at its next sync). Raises
        PublishError on a failed call: nothing is recorded that did not happen; the next sweep retries."""
        account = await asyncio.to_thread(account_for, self.db, self.settings, "soundcloud", guild_id)
        if account is None:
            return None
        row = await asyncio.to_thread(_take, self.db, guild_id, self.owner, utcnow())
        if row is None:
            return None
        try:
            await self._sync_held(row, account.guild_id)
        finally:
            await asyncio.to_thread(_release, self.db, guild_id, self.owner)
        return await asyncio.to_thread(playlist_info, self.db, guild_id)

    async def _sync_held(self, row: SoundCloudPlaylist, account: int) -> None:
        guild_id, title = row.guild_id, _title(row)
        client = self.client_for(account)
        published = await asyncio.to_thread(_published, self.db, guild_id)
        playlist: Playlist | None = None
        lost = False
        if row.playlist_id and row.account_guild_id == account:
            playlist = await client.get_playlist(row.playlist_id)
            lost = playlist is None
        if playlist is None:
            if not published and not lost:
                return  # made on first use: nothing to put in it yet
            playlist = await self._find_or_make(client, guild_id, title, published)
            await asyncio.to_thread(_record_playlist, self.db, guild_id, self.owner, playlist, account)
            if lost:
                await self.tell(
                    guild_id,
                    f"⚠️ This server's SoundCloud playlist “{title}” was deleted on SoundCloud. I made it "
                    f"again with all {len(published)} of this server's SoundCloud clips: {playlist.url}",
                )
        have = set(playlist.track_ids)
        missing = list(
            dict.fromkeys(p.remote_id for p in published if p.remote_id and p.remote_id not in have)
        )
        if missing or playlist.title != title:
            updated = await client.update_playlist(
                playlist.id,
                title=title if playlist.title != title else None,
                track_ids=[*playlist.track_ids, *missing] if missing else None,
            )
            if updated is None:  # deleted between our look and our write: made again at the next sync
                await asyncio.to_thread(_record_playlist, self.db, guild_id, self.owner, None, account)
                return
            playlist = updated
        in_it = set(playlist.track_ids)
        done = [int(p.id) for p in published if p.id is not None and p.remote_id in in_it]
        await asyncio.to_thread(_record_added, self.db, done, playlist.id)

    async def _find_or_make(
        self, client: SoundCloudClient, guild_id: int, title: str, published: list[Publication]
    ) -> Playlist:
        """The server's playlist made before a crash (found by its marker), else a new one."""
        marker = playlist_marker(guild_id)
        for candidate in await client.my_playlists():
            if carries_marker(candidate.description, marker):
                found = await client.get_playlist(candidate.id)
                if found is not None:
                    return found
        description = f"Songs made with jukebot, chosen by this Discord server's members.\n{marker}"
        return await client.create_playlist(
            title=title,
            description=description,
            track_ids=list(dict.fromkeys(p.remote_id for p in published if p.remote_id)),
            sharing=self.settings.soundcloud.sharing,
        )


async def sync_now(db: Database, settings: Settings, guild_id: int, tell: Tell) -> PlaylistInfo | None:
    """One server's playlist brought in step now (the bot's `/mod playlist title:`); see `sync`."""
    import httpx

    from publisher.soundcloud_client import soundcloud_oauth
    from publisher.tokens import TokenManager

    timeout = httpx.Timeout(settings.publish.http_timeout, connect=min(10.0, settings.publish.http_timeout))
    async with httpx.AsyncClient(timeout=timeout, follow_redirects=False) as http:

        def client_for(account: int) -> SoundCloudClient:
            tokens = TokenManager(
                db, "soundcloud", soundcloud_oauth(settings), http, label="SoundCloud", guild_id=account
            )
            return SoundCloudClient(
                settings.soundcloud.api_base,
                tokens,
                http,
                rate_limit_max_wait=settings.publish.rate_limit_wait,
            )

        owner = f"playlist:{guild_id}:{uuid.uuid4().hex[:12]}"
        return await PlaylistKeeper(db, settings, client_for, tell, owner).sync(guild_id)
