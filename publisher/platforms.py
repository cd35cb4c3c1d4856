"""One adapter per platform: what to render, what text to send, how to post, how to find a post again.

The runner (publisher/runner.py) only knows this interface:
    caption(info) -> str              the text fixed on the row at the first attempt
    publish(clip, info, caption)      render (cached in storage) + upload + post -> Remote
    find(marker, since)               our post on the platform (it carries the marker), or None
"""

from __future__ import annotations

import asyncio
import os
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol

import httpx

from db.database import Database
from db.models import Clip
from db.settings import Settings
from db.storage import Storage
from publisher import render
from publisher.captions import CaptionInfo, soundcloud_text, x_caption
from publisher.errors import NotConfigured
from publisher.http import Sleep
from publisher.oauth import OAuthClient
from publisher.soundcloud_client import SoundCloudClient, soundcloud_oauth
from publisher.tokens import SHARED, TokenManager
from publisher.x_client import OAuth2UserAuth, XClient, x_auth_from_settings

PLATFORMS = ("x", "soundcloud")
LABELS = {"x": "X", "soundcloud": "SoundCloud", "discord": "Discord"}


@dataclass(frozen=True)
class Remote:
    id: str
    url: str


class Platform(Protocol):
    name: str

    def caption(self, info: CaptionInfo) -> str: ...

    async def publish(self, clip: Clip, info: CaptionInfo, caption: str) -> Remote: ...

    async def find(self, marker: str, since: datetime) -> Remote | None: ...


def _clip_source(storage: Storage, clip: Clip) -> render.AudioSource:
    local = storage.local_path(clip.audio_key)
    if local is not None and local.is_file():
        return os.fspath(local)
    return storage.read_bytes(clip.audio_key)


async def _cached_render(storage: Storage, key: str, make: Any) -> bytes:
    """Render once per clip and setting; a retry reuses the stored file."""
    if await asyncio.to_thread(storage.exists, key):
        return await asyncio.to_thread(storage.read_bytes, key)
    data: bytes = await asyncio.to_thread(make)
    await asyncio.to_thread(storage.write_bytes, key, data)
    return data


def x_render_key(settings: Settings, clip_id: int | None) -> str:
    return f"publications/clip-{clip_id}/x-{settings.x.video_size}-{settings.x.video_style}.mp4"


def soundcloud_render_key(settings: Settings, clip_id: int | None) -> str:
    return f"publications/clip-{clip_id}/soundcloud.{render.AUDIO_EXTENSIONS[settings.soundcloud.format]}"


def x_configured(settings: Settings) -> bool:
    keys = (
        settings.x.consumer_key,
        settings.x.consumer_secret,
        settings.x.access_token,
        settings.x.access_token_secret,
    )
    return all(k is not None and k.get_secret_value() for k in keys) or settings.x.client_id is not None


def soundcloud_configured(settings: Settings) -> bool:
    return settings.soundcloud.client_id is not None


def enabled_platforms(settings: Settings) -> list[str]:
    """Platforms with credentials configured (a stored login is checked only when posting)."""
    checks = {"x": x_configured, "soundcloud": soundcloud_configured}
    return [p for p in PLATFORMS if checks[p](settings)]


def x_oauth(settings: Settings) -> OAuthClient:
    if settings.x.client_id is None:
        raise NotConfigured("X OAuth 2.0 needs JUKEBOT_X_CLIENT_ID.")
    secret = settings.x.client_secret
    return OAuthClient(
        token_url=f"{settings.x.api_base.rstrip('/')}/2/oauth2/token",
        client_id=settings.x.client_id.get_secret_value(),
        client_secret=secret.get_secret_value() if secret is not None else None,
    )


class XPlatform:
    name = "x"

    def __init__(
        self,
        settings: Settings,
        db: Database,
        storage: Storage,
        http: httpx.AsyncClient,
        *,
        sleep: Sleep = asyncio.sleep,
        account: int = SHARED,
    ) -> None:
        tokens = (
            TokenManager(db, "x", x_oauth(settings), http, label="X", guild_id=account)
            if settings.x.client_id
            else None
        )
        # A server's own account is its OAuth 2.0 login; the shared one may be the 1.0a keys instead.
        if account != SHARED and tokens is None:
            raise NotConfigured("a server's own X account needs JUKEBOT_X_CLIENT_ID (OAuth 2.0).")
        auth = (
            OAuth2UserAuth(tokens) if account != SHARED and tokens else x_auth_from_settings(settings, tokens)
        )
        self.client = XClient(
            settings.x.api_base,
            auth,
            http,
            chunk_bytes=settings.x.upload_chunk_bytes,
            rate_limit_max_wait=settings.publish.rate_limit_wait,
            sleep=sleep,
        )
        self.settings = settings
        self.storage = storage

    def caption(self, info: CaptionInfo) -> str:
        return x_caption(info, self.settings.publish.caption_templates)

    def _render(self, clip: Clip, info: CaptionInfo) -> bytes:
        footer = " · ".join(p for p in (info.channel_tag, info.licence) if p)
        card = render.TitleCard(
            title=info.title or "Untitled",
            artist=info.artist_name,
            genre=info.genre,
            requester=info.requester,
            footer=footer,
        )
        return render.render_x_video(
            _clip_source(self.storage, clip),
            card,
            style=self.settings.x.video_style,
            size=self.settings.x.video_size,
        )

    async def publish(self, clip: Clip, info: CaptionInfo, caption: str) -> Remote:
        video = await _cached_render(
            self.storage, x_render_key(self.settings, clip.id), lambda: self._render(clip, info)
        )
        media_id = await self.client.upload_media(
            video, media_type="video/mp4", media_category="amplify_video"
        )
        post = await self.client.create_post(caption, [media_id])
        return Remote(post.id, post.url)

    async def find(self, marker: str, since: datetime) -> Remote | None:
        post = await self.client.find_post(marker, since)
        return Remote(post.id, post.url) if post else None


class SoundCloudPlatform:
    name = "soundcloud"

    def __init__(
        self,
        settings: Settings,
        db: Database,
        storage: Storage,
        http: httpx.AsyncClient,
        *,
        sleep: Sleep = asyncio.sleep,
        account: int = SHARED,
    ) -> None:
        tokens = TokenManager(
            db, "soundcloud", soundcloud_oauth(settings), http, label="SoundCloud", guild_id=account
        )
        self.client = SoundCloudClient(
            settings.soundcloud.api_base,
            tokens,
            http,
            rate_limit_max_wait=settings.publish.rate_limit_wait,
            sleep=sleep,
        )
        self.settings = settings
        self.storage = storage

    def caption(self, info: CaptionInfo) -> str:
        return soundcloud_text(info, self.settings.publish.caption_templates).title

    async def publish(self, clip: Clip, info: CaptionInfo, caption: str) -> Remote:
        fmt = self.settings.soundcloud.format
        tags = {"title": info.title, "artist": "jukebot", "comment": info.style}

        def make() -> bytes:
            return render.render_audio(_clip_source(self.storage, clip), fmt, tags=tags).data

        audio = await _cached_render(self.storage, soundcloud_render_key(self.settings, clip.id), make)
        text = soundcloud_text(info, self.settings.publish.caption_templates)
        track = await self.client.upload_track(
            audio=audio,
            filename=f"jukebot-clip-{clip.id}.{render.AUDIO_EXTENSIONS[fmt]}",
            mime=render.AUDIO_MIME[fmt],
            title=caption,
            description=text.description,
            tag_list=text.tag_list,
            sharing=self.settings.soundcloud.sharing,
        )
        return Remote(track.id, track.url)

    async def find(self, marker: str, since: datetime) -> Remote | None:
        track = await self.client.find_track(marker, since)
        return Remote(track.id, track.url) if track else None


def make_platform(
    name: str,
    settings: Settings,
    db: Database,
    storage: Storage,
    http: httpx.AsyncClient,
    *,
    sleep: Sleep = asyncio.sleep,
    account: int = SHARED,
) -> Platform:
    """The platform, posting with `account`'s login (oauth_tokens.guild_id: SHARED or a server's)."""
    if name == "x":
        return XPlatform(settings, db, storage, http, sleep=sleep, account=account)
    if name == "soundcloud":
        return SoundCloudPlatform(settings, db, storage, http, sleep=sleep, account=account)
    raise NotConfigured(f"jukebot cannot publish to {name!r}; it knows {', '.join(PLATFORMS)}.")
