"""A thin SoundCloud API client: upload a track (multipart), find our recent tracks, keep a playlist.

SoundCloud (research/publish_queue.md §2): user token from OAuth 2.1 authorization code + PKCE (client
credentials cannot upload), sent as `Authorization: OAuth <token>`; tokens last about an hour and the
refresh tokens are single use (see publisher/tokens.py). `POST /tracks` takes multipart fields
`track[title]`, `track[asset_data]`, `track[description]`, `track[tag_list]`, `track[sharing]`.
Timeouts and 5xx answers have been seen after the file was accepted, so they are `unclear` and the
caller looks in `GET /me/tracks` before any retry.

Playlists ("sets"): `POST /playlists` with `{"playlist": {"title", "sharing", "description", "tracks":
[{"id": …}]}}`; `GET /playlists/{id}` lists its tracks; `PUT /playlists/{id}` with `tracks` REPLACES
the list (so adding is read, append, write: see publisher/playlists.py); a deleted one is 404.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx

from publisher.captions import carries_marker
from publisher.errors import Outcome, PublishError
from publisher.http import RateLimiter, Sleep, raise_for_status, send
from publisher.oauth import OAuthClient
from publisher.tokens import TokenManager

SHARING = ("public", "private")


@dataclass(frozen=True)
class Track:
    id: str
    title: str
    url: str
    created_at: datetime | None = None
    description: str | None = None  # None when the answer left it out


def parse_soundcloud_time(value: Any) -> datetime | None:
    """SoundCloud writes '2024/05/01 12:34:56 +0000'; newer answers use ISO 8601."""
    if not isinstance(value, str) or not value:
        return None
    for fmt in ("%Y/%m/%d %H:%M:%S %z",):
        try:
            return datetime.strptime(value, fmt).astimezone(UTC)
        except ValueError:
            pass
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def _track(body: dict[str, Any]) -> Track:
    return Track(
        id=str(body.get("id") or body.get("urn") or ""),
        title=str(body.get("title") or ""),
        url=str(body.get("permalink_url") or body.get("uri") or ""),
        created_at=parse_soundcloud_time(body.get("created_at")),
        description=body["description"] if isinstance(body.get("description"), str) else None,
    )


@dataclass(frozen=True)
class Playlist:
    id: str
    title: str
    url: str
    description: str | None
    track_ids: tuple[str, ...]  # in order; empty when the answer left the tracks out


def _playlist(body: Any) -> Playlist:
    if not isinstance(body, dict) or not (body.get("id") or body.get("urn")):
        raise PublishError("SoundCloud's playlist answer was unreadable.", Outcome.retry)
    tracks = body["tracks"] if isinstance(body.get("tracks"), list) else []
    return Playlist(
        id=str(body.get("id") or body.get("urn")),
        title=str(body.get("title") or ""),
        url=str(body.get("permalink_url") or body.get("uri") or ""),
        description=body["description"] if isinstance(body.get("description"), str) else None,
        track_ids=tuple(str(t.get("id")) for t in tracks if isinstance(t, dict) and t.get("id")),
    )


def _tracks_field(track_ids: list[str]) -> list[dict[str, Any]]:
    return [{"id": int(t) if t.isdigit() else t} for t in track_ids]


def soundcloud_oauth(settings: Any) -> OAuthClient:
    if settings.soundcloud.client_id is None:
        raise PublishError(
            "SoundCloud is not configured: set JUKEBOT_SOUNDCLOUD_CLIENT_ID and "
            "JUKEBOT_SOUNDCLOUD_CLIENT_SECRET, then run `jukebot publish auth soundcloud`.",
            Outcome.auth,
        )
    secret = settings.soundcloud.client_secret
    return OAuthClient(
        token_url=f"{settings.soundcloud.auth_base.rstrip('/')}/oauth/token",
        client_id=settings.soundcloud.client_id.get_secret_value(),
        client_secret=secret.get_secret_value() if secret is not None else None,
    )


class SoundCloudClient:
    def __init__(
        self,
        api_base: str,
        tokens: TokenManager,
        http: httpx.AsyncClient,
        *,
        rate_limit_max_wait: float = 60.0,
        sleep: Sleep = asyncio.sleep,
    ) -> None:
        self.api_base = api_base.rstrip("/")
        self.tokens = tokens
        self.http = http
        self.limiter = RateLimiter("SoundCloud", max_wait=rate_limit_max_wait, sleep=sleep)

    async def _call(
        self,
        method: str,
        path: str,
        *,
        step: str,
        creates: bool = False,
        params: dict[str, str] | None = None,
        data: dict[str, str] | None = None,
        files: dict[str, Any] | None = None,
        json: Any = None,
    ) -> httpx.Response:
        url = f"{self.api_base}{path}"
        token = await self.tokens.access_token()

        def build() -> httpx.Request:
            return self.http.build_request(
                method,
                url,
                params=params,
                data=data,
                files=files,
                json=json,
                headers={"Authorization": f"OAuth {token}", "Accept": "application/json"},
            )

        response = await send(self.http, build, limiter=self.limiter, key=f"{method} {path}", creates=creates)
        if response.status_code == 401:
            # Expired or revoked access token: refresh (storing the new single-use refresh token) and
            # try once more. A 401 is a refusal, so the upload did not happen and repeating it is safe.
            token = await self.tokens.access_token(force_refresh=True, rejected=token)
            response = await send(
                self.http, build, limiter=self.limiter, key=f"{method} {path}", creates=creates
            )
        if response.status_code == 401:
            raise PublishError(
                f"SoundCloud refused our login for {step} (401): {self.tokens.reauth_hint}.",
                Outcome.auth,
                status=401,
            )
        raise_for_status(response, platform="SoundCloud", creates=creates, step=step)
        return response

    async def me(self) -> dict[str, Any]:
        body = (await self._call("GET", "/me", step="account lookup")).json()
        return body if isinstance(body, dict) else {}

    async def upload_track(
        self,
        *,
        audio: bytes,
        filename: str,
        mime: str,
        title: str,
        description: str = "",
        tag_list: str = "",
        sharing: str = "public",
    ) -> Track:
        if sharing not in SHARING:
            raise ValueError(f"sharing must be one of {SHARING}")
        if not audio:
            raise PublishError("The audio file is empty.", Outcome.permanent)
        fields = {
            "track[title]": title,
            "track[description]": description,
            "track[tag_list]": tag_list,
            "track[sharing]": sharing,
        }
        response = await self._call(
            "POST",
            "/tracks",
            step="track upload",
            creates=True,
            data=fields,
            files={"track[asset_data]": (filename, audio, mime)},
        )
        try:
            track = _track(response.json())
        except ValueError as exc:
            raise PublishError(
                "SoundCloud accepted the upload but its answer was unreadable.", Outcome.unclear
            ) from exc
        if not track.id:
            raise PublishError("SoundCloud accepted the upload but sent no track id.", Outcome.unclear)
        return track

    async def get_playlist(self, playlist_id: str) -> Playlist | None:
        """The playlist with its tracks, or None when it is gone (deleted on SoundCloud)."""
        try:
            response = await self._call(
                "GET", f"/playlists/{playlist_id}", step="playlist lookup", params={"show_tracks": "true"}
            )
        except PublishError as exc:
            if exc.status == 404:
                return None
            raise
        return _playlist(response.json())

    async def create_playlist(
        self, *, title: str, description: str, track_ids: list[str], sharing: str = "public"
    ) -> Playlist:
        fields = {
            "title": title,
            "description": description,
            "sharing": sharing,
            "tracks": _tracks_field(track_ids),
        }
        response = await self._call(
            "POST", "/playlists", step="playlist creation", creates=True, json={"playlist": fields}
        )
        return _playlist(response.json())

    async def update_playlist(
        self, playlist_id: str, *, title: str | None = None, track_ids: list[str] | None = None
    ) -> Playlist | None:
        """Change the title and/or REPLACE the track list; None when the playlist is gone."""
        fields: dict[str, Any] = {}
        if title is not None:
            fields["title"] = title
        if track_ids is not None:
            fields["tracks"] = _tracks_field(track_ids)
        try:
            response = await self._call(
                "PUT", f"/playlists/{playlist_id}", step="playlist update", json={"playlist": fields}
            )
        except PublishError as exc:
            if exc.status == 404:
                return None
            raise
        return _playlist(response.json())

    async def my_playlists(self, limit: int = 50) -> list[Playlist]:
        body = (
            await self._call(
                "GET",
                "/me/playlists",
                step="playlists lookup",
                params={"limit": str(limit), "linked_partitioning": "true", "show_tracks": "false"},
            )
        ).json()
        items = body.get("collection", []) if isinstance(body, dict) else body
        return [_playlist(item) for item in items if isinstance(item, dict)]

    async def recent_tracks(self, limit: int = 50) -> list[Track]:
        body = (
            await self._call(
                "GET",
                "/me/tracks",
                step="recent tracks lookup",
                params={"limit": str(limit), "linked_partitioning": "true"},
            )
        ).json()
        items = body.get("collection", []) if isinstance(body, dict) else body
        return [_track(item) for item in items if isinstance(item, dict)]

    async def find_track(self, marker: str, since: datetime) -> Track | None:
        """Our track carrying this publication's marker in its description, uploaded after `since`
        (with clock slack). Two clips may share a title and every other word: only the marker counts."""
        earliest = since - timedelta(minutes=10)
        for track in await self.recent_tracks():
            if track.created_at is not None and track.created_at < earliest:
                continue
            if carries_marker(track.description, marker):
                return track
        return None
