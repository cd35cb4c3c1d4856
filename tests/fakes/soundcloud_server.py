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
- `GET /me/tracks` (plain list, or `{"collection": …}` with linked_partitioning), `GET /me`.
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
            "permalink_url": f"https://soundcloud.com/jukebot-test/track-{self.id}",
            "uri": f"https://api.soundcloud.com/tracks/{self.id}",
            "state": "processing",
        }


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
        self.refresh_tokens: set[str] = set()  # currently valid (each works once)
        self.used_refresh_tokens: set[str] = set()
        self.codes: dict[str, dict[str, str]] = {}
        self.tracks: list[FakeTrack] = []
        self.refreshes = 0
        self._ids = itertools.count(900_000_001)

    # ------------------------------------------------------------------------------------------ auth

    def issue_tokens(self, lifetime: float | None = None) -> dict[str, Any]:
        access, refresh = secrets.token_urlsafe(18), secrets.token_urlsafe(18)
        self.access_tokens[access] = time.time() + (self.token_lifetime if lifetime is None else lifetime)
        self.refresh_tokens.add(refresh)
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
            return Response(200, self.issue_tokens())
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
        if req.method == "GET" and req.path == "/me/tracks":
            items = [t.json() for t in reversed(self.tracks)][: int(req.q("limit") or 50)]
            if req.q("linked_partitioning") in ("true", "1"):
                return Response(200, {"collection": items, "next_href": None})
            return Response(200, items)
        if req.method == "GET" and req.path == "/me":
            return Response(
                200,
                {
                    "id": 4242,
                    "username": "jukebot-test",
                    "permalink_url": "https://soundcloud.com/jukebot-test",
                },
            )
        return Response(404, {"code": 404, "message": "404 - Not Found"})

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
