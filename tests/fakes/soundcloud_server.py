"""A fake SoundCloud (API and auth server in one) that checks what the real one requires.

- OAuth 2.1: `/authorize` (response_type=code, S256 PKCE challenge, state) redirects back with a code;
  `/oauth/token` exchanges it (client id/secret by HTTP Basic or form, code_verifier checked against
  the challenge, redirect_uri must match) and refreshes with SINGLE-USE refresh tokens: a refresh token
  works once, after that `invalid_grant`, like SoundCloud's.
- Access tokens expire (`expires_in`, default 3599 s; `expire_access_tokens()` ends them now); the API
  wants `Authorization: OAuth <token>` (the `oauth_token` query parameter is being removed and a
  `Bearer` header is recorded as a violation).
- `POST /tracks`: multipart with `track[title]` and `track[asset_data]` (a file part), optional
  `track[description]`, `track[tag_list]`, `track[sharing]` (public|private); unknown `track[...]`
  names are recorded as violations; the asset must be audio ffprobe can read, else 422.
- `GET /me/tracks` (plain list, or `{"collection": …}` with linked_partitioning), `GET /me`; each
  user (access token) sees their own tracks.
- Playlists ("sets") as the real API has them: `POST /playlists` with a JSON body
  `{"playlist": {"title", "sharing", "tracks": [{"id": …}]}}` (201), `GET /playlists/{id}` (the track
  list unless `show_tracks=false`), `PUT /playlists/{id}` with `{"playlist": {…}}`, whose `tracks`
  REPLACES the list; ids may be numbers or `soundcloud:playlists:N` urns; only the owner may change
  one (403), an unknown one is 404. `delete_playlist()` is a person deleting it on the website.
"""

from __future__ import annotations

import base64
import hashlib
import itertools
import secrets
import tempfile
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from db.audio import AudioError, probe_streams
from tests.fakes.publish_http import FakeHTTPServer, Request, Response

TRACK_FIELDS = {
    "title",
    "asset_data",
    "sharing",
    "permalink",
    "embeddable_by",
    "purchase_url",
    "description",
    "genre",
    "tag_list",
    "label_name",
    "release",
    "release_date",
    "streamable",
    "downloadable",
    "license",
    "commentable",
    "reveal_stats",
    "reveal_comments",
    "isrc",
    "artwork_data",
}


@dataclass
class FakeTrack:
    id: int
    title: str
    description: str
    tag_list: str
    sharing: str
    filename: str
    data: bytes
    created_at: datetime
    account: str = "jukebot-test"  # the user who uploaded it (whose access token)

    def json(self) -> dict[str, Any]:
        return {
            "kind": "track",
            "id": self.id,
            "urn": f"soundcloud:tracks:{self.id}",
            "title": self.title,
            "description": self.description,
            "tag_list": self.tag_list,
            "sharing": self.sharing,
            "created_at": self.created_at.strftime("%Y/%m/%d %H:%M:%S +0000"),
            "permalink_url": f"https://soundcloud.com/{self.account}/track-{self.id}",
            "uri": f"https://api.soundcloud.com/tracks/{self.id}",
            "state": "processing",
        }


@dataclass
class FakePlaylist:
    id: int
    title: str
    sharing: str
    account: str
    track_ids: list[int]
    created_at: datetime
    description: str = ""

    def json(self, tracks: dict[int, FakeTrack], show_tracks: bool = True) -> dict[str, Any]:
        body: dict[str, Any] = {
            "kind": "playlist",
            "id": self.id,
            "urn": f"soundcloud:playlists:{self.id}",
            "title": self.title,
            "description": self.description,
            "sharing": self.sharing,
            "track_count": len(self.track_ids),
            "created_at": self.created_at.strftime("%Y/%m/%d %H:%M:%S +0000"),
            "permalink_url": f"https://soundcloud.com/{self.account}/sets/playlist-{self.id}",
            "uri": f"https://api.soundcloud.com/playlists/{self.id}",
            "user": {"username": self.account},
        }
        if show_tracks:
            body["tracks"] = [tracks[t].json() for t in self.track_ids if t in tracks]
        return body


class FakeSoundCloud(FakeHTTPServer):
    def __init__(
        self,
        *,
        client_id: str = "sc-client",
        client_secret: str = "sc-secret",
        token_lifetime: float = 3599.0,
        validate_audio: bool = True,
    ) -> None:
        super().__init__()
        self.client_id, self.client_secret = client_id, client_secret
        self.token_lifetime = token_lifetime
        self.validate_audio = validate_audio
        self.access_tokens: dict[str, float] = {}  # token -> expiry (epoch)
        self.accounts: dict[str, str] = {}  # access or refresh token -> the user it belongs to
        self.refresh_tokens: set[str] = set()  # currently valid (each works once)
        self.used_refresh_tokens: set[str] = set()
        self.codes: dict[str, dict[str, str]] = {}
        self.tracks: list[FakeTrack] = []
        self.playlists: dict[int, FakePlaylist] = {}
        self.refreshes = 0
        self._ids = itertools.count(900_000_001)

    # ------------------------------------------------------------------------------------------ auth

    def issue_tokens(self, lifetime: float | None = None, account: str = "jukebot-test") -> dict[str, Any]:
        """Tokens of the SoundCloud user `account` (several users may have logged in to one app)."""
        access, refresh = secrets.token_urlsafe(18), secrets.token_urlsafe(18)
        self.access_tokens[access] = time.time() + (self.token_lifetime if lifetime is None else lifetime)
        self.refresh_tokens.add(refresh)
        self.accounts[access] = self.accounts[refresh] = account
        return {
            "access_token": access,
            "token_type": "bearer",
            "expires_in": int(self.token_lifetime),
            "refresh_token": refresh,
            "scope": "",
        }

    def expire_access_tokens(self) -> None:
        for token in self.access_tokens:
            self.access_tokens[token] = 0.0

    def _client_ok(self, req: Request) -> bool:
        header = req.headers.get("authorization", "")
        if header.startswith("Basic "):
            cid, _, secret = base64.b64decode(header[6:]).decode().partition(":")
        else:
            cid, secret = req.form.get("client_id", ""), req.form.get("client_secret", "")
        return cid == self.client_id and secret == self.client_secret

    def _authorize(self, req: Request) -> Response:
        if (
            req.q("client_id") != self.client_id
            or req.q("response_type") != "code"
            or req.q("code_challenge_method") != "S256"
            or not req.q("code_challenge")
        ):
            return Response(400, {"error": "invalid_request"})
        code = secrets.token_urlsafe(12)
        self.codes[code] = {
            "challenge": req.q("code_challenge") or "",
            "redirect_uri": req.q("redirect_uri") or "",
        }
        return Response(
            302, None, {"Location": f"{req.q('redirect_uri')}?code={code}&state={req.q('state')}"}
        )

    def _token(self, req: Request) -> Response:
        if not self._client_ok(req):
            return Response(401, {"error": "invalid_client"})
        grant = req.form.get("grant_type")
        if grant == "authorization_code":
            pending = self.codes.pop(req.form.get("code", ""), None)
            verifier = req.form.get("code_verifier", "")
            challenge = (
                base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).rstrip(b"=").decode()
            )
            if pending is None:
                return Response(400, {"error": "invalid_grant", "error_description": "unknown or used code"})
            if pending["challenge"] != challenge:
                return Response(
                    400, {"error": "invalid_grant", "error_description": "PKCE verification failed"}
                )
            if pending["redirect_uri"] != req.form.get("redirect_uri"):
                return Response(400, {"error": "invalid_grant", "error_description": "redirect_uri mismatch"})
            return Response(200, self.issue_tokens())
        if grant == "refresh_token":
            token = req.form.get("refresh_token", "")
            if token not in self.refresh_tokens:
                if token in self.used_refresh_tokens:
                    self.violations.append("a refresh token was used twice")
                return Response(
                    400, {"error": "invalid_grant", "error_description": "refresh token is invalid"}
                )
            self.refresh_tokens.discard(token)
            self.used_refresh_tokens.add(token)
            self.refreshes += 1
            return Response(200, self.issue_tokens(account=self.accounts.get(token, "jukebot-test")))
        return Response(400, {"error": "unsupported_grant_type"})

    def _check_token(self, req: Request) -> Response | None:
        header = req.headers.get("authorization", "")
        if "oauth_token" in req.query:
            self.violations.append("token sent as the oauth_token query parameter")
        if header.startswith("Bearer "):
            self.violations.append("Bearer header instead of 'OAuth <token>'")
        if not header.startswith("OAuth "):
            return Response(
                401,
                {
                    "code": 401,
                    "message": "401 - Unauthorized",
                    "link": "https://developers.soundcloud.com/docs/api/explorer/open-api",
                    "status": "401 - Unauthorized",
                    "errors": [],
                    "error": None,
                },
            )
        expiry = self.access_tokens.get(header[6:])
        if expiry is None or expiry < time.time():
            return Response(
                401,
                {
                    "code": 401,
                    "message": "401 - Unauthorized",
                    "status": "401 - Unauthorized",
                    "errors": [],
                    "error": None,
                },
            )
        return None

    # ---------------------------------------------------------------------------------------- routes

    def user(self, req: Request) -> str:
        """The user whose access token the (authorised) request carries."""
        return self.accounts.get(req.headers.get("authorization", "")[6:], "jukebot-test")

    def handle(self, req: Request) -> Response:
        if req.method == "GET" and req.path == "/authorize":
            return self._authorize(req)
        if req.method == "POST" and req.path == "/oauth/token":
            return self._token(req)
        problem = self._check_token(req)
        if problem is not None:
            return problem
        if req.method == "POST" and req.path == "/tracks":
            return self._upload(req)
        if req.path == "/playlists" or req.path.startswith("/playlists/"):
            return self._playlists(req)
        if req.method == "GET" and req.path == "/me/playlists":
            show = req.q("show_tracks") != "false"
            lists = [p for p in self.playlists.values() if p.account == self.user(req)]
            items = [p.json(self._by_id(), show) for p in reversed(lists)][: int(req.q("limit") or 50)]
            if req.q("linked_partitioning") in ("true", "1"):
                return Response(200, {"collection": items, "next_href": None})
            return Response(200, items)
        if req.method == "GET" and req.path == "/me/tracks":
            mine = [t for t in self.tracks if t.account == self.user(req)]
            items = [t.json() for t in reversed(mine)][: int(req.q("limit") or 50)]
            if req.q("linked_partitioning") in ("true", "1"):
                return Response(200, {"collection": items, "next_href": None})
            return Response(200, items)
        if req.method == "GET" and req.path == "/me":
            return Response(
                200,
                {
                    "id": 4242,
                    "username": self.user(req),
                    "permalink_url": f"https://soundcloud.com/{self.user(req)}",
                },
            )
        return Response(404, {"code": 404, "message": "404 - Not Found"})

    # ------------------------------------------------------------------------------------ playlists

    def delete_playlist(self, playlist_id: int) -> None:
        """Someone deletes the playlist on soundcloud.com."""
        del self.playlists[playlist_id]

    def playlist_track_ids(self, playlist_id: int) -> list[int]:
        return list(self.playlists[playlist_id].track_ids)

    def _playlist_fields(self, req: Request) -> dict[str, Any] | Response:
        if not req.headers.get("content-type", "").startswith("application/json"):
            return self._unprocessable("expected a JSON body")
        try:
            body = req.json()
        except ValueError:
            return Response(400, {"code": 400, "message": "400 - Bad Request"})
        fields = body.get("playlist") if isinstance(body, dict) else None
        if not isinstance(fields, dict):
            return self._unprocessable("expected {'playlist': {...}}")
        for name in fields:
            if name not in ("title", "sharing", "tracks", "description", "tag_list", "genre"):
                self.violations.append(f"unknown playlist field {name!r}")
        return fields

    def _track_ids(self, fields: dict[str, Any]) -> list[int] | Response:
        tracks = fields.get("tracks", [])
        if not isinstance(tracks, list) or not all(isinstance(t, dict) and "id" in t for t in tracks):
            return self._unprocessable("tracks must be a list of {'id': …}")
        ids = [int(str(t["id"]).rsplit(":", 1)[-1]) for t in tracks]
        known = {t.id for t in self.tracks}
        for i in ids:
            if i not in known:
                self.violations.append(f"playlist names unknown track {i}")
        return ids

    def _playlists(self, req: Request) -> Response:
        if req.path == "/playlists":
            if req.method != "POST":
                return Response(405, {"code": 405, "message": "405 - Method Not Allowed"})
            fields = self._playlist_fields(req)
            if isinstance(fields, Response):
                return fields
            if not str(fields.get("title") or "").strip():
                return self._unprocessable("Title can't be blank")
            ids = self._track_ids(fields)
            if isinstance(ids, Response):
                return ids
            playlist = FakePlaylist(
                next(self._ids),
                str(fields["title"]).strip(),
                str(fields.get("sharing") or "public"),
                self.user(req),
                ids,
                datetime.now(UTC),
                str(fields.get("description") or ""),
            )
            self.playlists[playlist.id] = playlist
            return Response(201, playlist.json(self._by_id()))
        raw = req.path[len("/playlists/") :].rsplit(":", 1)[-1]
        found = self.playlists.get(int(raw)) if raw.isdigit() else None
        if found is None:
            return Response(404, {"code": 404, "message": "404 - Not Found", "errors": []})
        if req.method == "GET":
            return Response(200, found.json(self._by_id(), req.q("show_tracks") != "false"))
        if req.method == "PUT":
            if found.account != self.user(req):
                return Response(403, {"code": 403, "message": "403 - Forbidden"})
            fields = self._playlist_fields(req)
            if isinstance(fields, Response):
                return fields
            if "tracks" in fields:
                ids = self._track_ids(fields)
                if isinstance(ids, Response):
                    return ids
                found.track_ids = ids
            if "title" in fields:
                if not str(fields["title"] or "").strip():
                    return self._unprocessable("Title can't be blank")
                found.title = str(fields["title"]).strip()
            return Response(200, found.json(self._by_id()))
        return Response(405, {"code": 405, "message": "405 - Method Not Allowed"})

    def _by_id(self) -> dict[int, FakeTrack]:
        return {t.id: t for t in self.tracks}

    @staticmethod
    def _unprocessable(message: str) -> Response:
        return Response(422, {"code": 422, "message": message, "errors": [{"error_message": message}]})

    def _upload(self, req: Request) -> Response:
        if not req.headers.get("content-type", "").startswith("multipart/form-data"):
            return self._unprocessable("expected multipart/form-data")
        for name in req.multipart_names:
            inner = name[6:-1] if name.startswith("track[") and name.endswith("]") else None
            if inner not in TRACK_FIELDS:
                self.violations.append(f"unknown upload field {name!r}")
        title = req.form.get("track[title]", "").strip()
        asset = req.files.get("track[asset_data]")
        if not title:
            return self._unprocessable("Title can't be blank")
        if asset is None or not asset.data:
            return self._unprocessable("Asset data can't be blank")
        sharing = req.form.get("track[sharing]", "public")
        if sharing not in ("public", "private"):
            return self._unprocessable("Sharing must be public or private")
        if self.validate_audio and not self._is_audio(asset.data):
            return self._unprocessable("Unsupported audio format")
        track = FakeTrack(
            next(self._ids),
            title,
            req.form.get("track[description]", ""),
            req.form.get("track[tag_list]", ""),
            sharing,
            asset.filename or "",
            asset.data,
            datetime.now(UTC),
            self.user(req),
        )
        self.tracks.append(track)
        return Response(201, track.json())

    @staticmethod
    def _is_audio(data: bytes) -> bool:
        with tempfile.NamedTemporaryFile() as f:
            f.write(data)
            f.flush()
            try:
                info = probe_streams(f.name)
            except AudioError:
                return False
        return any(s.get("codec_type") == "audio" for s in info.get("streams", []))
