"""A fake X API v2 that checks what the real one requires.

- Auth: OAuth 1.0a HMAC-SHA1 verified here independently of oauthlib (RFC 5849 §3.4: base string from
  the method, the base URI and the sorted, percent-encoded oauth_* + query parameters; key = consumer
  secret & token secret), timestamp within 5 minutes, nonces never reused; or an OAuth 2.0 Bearer
  token issued by this fake's token endpoint (single-use refresh tokens, like X's).
- Media: initialize (media_type / media_category from X's enums, total_bytes), append (multipart
  fields `media` and `segment_index`, segments in order from 0, each ≤ `max_chunk_bytes`), finalize
  (the byte count must equal total_bytes), STATUS polling that must wait `check_after_secs`, and X's
  own video checks by ffprobe (H.264 High, yuv420p, AAC-LC, ≤ 140 s, ≤ 1280x1024) ending in a
  `failed` processing state with X's "InvalidMedia" error when they fail.
- Posts: `POST /2/tweets` needs processed media ids, ≤ 280 characters, and refuses duplicate text
  (403) like X; the stored text gets the media's t.co link appended, as X does.
- Rate-limit headers (`x-rate-limit-limit/remaining/reset`) on every answer.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import itertools
import json
import secrets
import tempfile
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any
from urllib.parse import quote, unquote

from db.audio import AudioError, probe_streams
from tests.fakes.publish_http import FakeHTTPServer, Request, Response

MEDIA_TYPES = {
    "video/mp4",
    "video/webm",
    "video/mp2t",
    "video/quicktime",
    "text/srt",
    "text/vtt",
    "image/jpeg",
    "image/gif",
    "image/bmp",
    "image/png",
    "image/webp",
    "image/pjpeg",
    "image/tiff",
    "model/gltf-binary",
    "model/vnd.usdz+zip",
}
MEDIA_CATEGORIES = {
    "amplify_video",
    "tweet_gif",
    "tweet_image",
    "tweet_video",
    "dm_gif",
    "dm_image",
    "dm_video",
    "subtitles",
}


def _enc(value: str) -> str:
    return quote(value, safe="~-._")  # RFC 3986 unreserved characters only


@dataclass
class Media:
    id: str
    media_type: str
    category: str
    total_bytes: int
    chunks: dict[int, bytes] = field(default_factory=dict)
    state: str = "initialized"  # initialized -> pending/in_progress -> succeeded | failed
    polls_left: int = 0
    next_check: float = 0.0
    error: str | None = None


@dataclass
class Tweet:
    id: str
    text: str
    media_ids: list[str]
    created_at: datetime


class FakeX(FakeHTTPServer):
    def __init__(
        self,
        *,
        consumer_key: str = "ck",
        consumer_secret: str = "cs",
        access_token: str = "at",
        access_token_secret: str = "ats",
        client_id: str = "x-client",
        max_chunk_bytes: int = 5 * 1024 * 1024,
        check_after_secs: int = 1,
        processing_polls: int = 1,
        validate_video: bool = True,
    ) -> None:
        super().__init__()
        self.consumer_key, self.consumer_secret = consumer_key, consumer_secret
        self.access_token, self.access_token_secret = access_token, access_token_secret
        self.client_id = client_id
        self.max_chunk_bytes = max_chunk_bytes
        self.check_after_secs = check_after_secs
        self.processing_polls = processing_polls
        self.validate_video = validate_video
        self.user = {"id": "1001", "username": "jukebot_test", "name": "jukebot"}
        self.media: dict[str, Media] = {}
        self.tweets: list[Tweet] = []
        self.nonces: set[str] = set()
        self.bearer_tokens: dict[str, float] = {}  # token -> expiry (epoch)
        self.refresh_tokens: set[str] = set()
        self.codes: dict[str, dict[str, str]] = {}
        self._ids = itertools.count(1_800_000_000_000_000_000)
        self._limits: dict[str, list[float]] = {}  # key -> [limit, remaining, reset]
        self.uploaded: bytes | None = None  # the last finalized media file

    # ------------------------------------------------------------------------------------------ auth

    def issue_bearer(self, lifetime: float = 7200.0) -> tuple[str, str]:
        access, refresh = secrets.token_urlsafe(16), secrets.token_urlsafe(16)
        self.bearer_tokens[access] = time.time() + lifetime
        self.refresh_tokens.add(refresh)
        return access, refresh

    def expire_bearer_tokens(self) -> None:
        for token in self.bearer_tokens:
            self.bearer_tokens[token] = 0.0

    def _check_auth(self, req: Request) -> Response | None:
        header = req.headers.get("authorization", "")
        if header.startswith("Bearer "):
            expiry = self.bearer_tokens.get(header[7:])
            if expiry is None or expiry < time.time():
                return Response(
                    401,
                    {"title": "Unauthorized", "type": "about:blank", "status": 401, "detail": "Unauthorized"},
                )
            return None
        if header.startswith("OAuth "):
            problem = self._verify_oauth1(req, header[6:])
            if problem is None:
                return None
            self.violations.append(f"oauth1: {problem}")
            return Response(
                401,
                {
                    "title": "Unauthorized",
                    "status": 401,
                    "detail": problem,
                    "errors": [{"message": "Could not authenticate you", "code": 32}],
                },
            )
        return Response(401, {"title": "Unauthorized", "status": 401, "detail": "Unauthorized"})

    def _verify_oauth1(self, req: Request, header: str) -> str | None:
        params: dict[str, str] = {}
        for item in header.split(","):
            key, _, value = item.strip().partition("=")
            params[unquote(key)] = unquote(value.strip('"'))
        required = (
            "oauth_consumer_key",
            "oauth_nonce",
            "oauth_signature",
            "oauth_signature_method",
            "oauth_timestamp",
            "oauth_token",
        )
        missing = [k for k in required if k not in params]
        if missing:
            return f"missing {missing}"
        if params["oauth_signature_method"] != "HMAC-SHA1":
            return "signature method is not HMAC-SHA1"
        if params["oauth_consumer_key"] != self.consumer_key or params["oauth_token"] != self.access_token:
            return "unknown consumer key or token"
        if abs(time.time() - int(params["oauth_timestamp"])) > 300:
            return "timestamp out of range"
        if params["oauth_nonce"] in self.nonces:
            return "nonce reused"
        self.nonces.add(params["oauth_nonce"])
        signed: list[tuple[str, str]] = [
            (k, v) for k, v in params.items() if k not in ("oauth_signature", "realm")
        ]
        for key, values in req.query.items():
            signed += [(key, v) for v in values]
        if req.headers.get("content-type", "").startswith("application/x-www-form-urlencoded"):
            signed += list(req.form.items())
        normalized = "&".join(f"{k}={v}" for k, v in sorted((_enc(k), _enc(v)) for k, v in signed))
        base_uri = f"http://{req.host.lower()}{req.path}"
        base = "&".join([req.method.upper(), _enc(base_uri), _enc(normalized)])
        secret = f"{_enc(self.consumer_secret)}&{_enc(self.access_token_secret)}".encode()
        expected = base64.b64encode(hmac.new(secret, base.encode(), hashlib.sha1).digest()).decode()
        if not hmac.compare_digest(expected, params["oauth_signature"]):
            return "signature does not match"
        return None

    # ----------------------------------------------------------------------------------- rate limits

    def set_rate_limit(self, key: str, limit: int, remaining: int, reset_in: float) -> None:
        self._limits[key] = [limit, remaining, time.time() + reset_in]

    def _rate(self, key: str, limit: int) -> tuple[Response | None, dict[str, str]]:
        now = time.time()
        bucket = self._limits.setdefault(key, [limit, limit, now + 900])
        if bucket[2] <= now:
            bucket[1], bucket[2] = bucket[0], now + 900
        headers = {"x-rate-limit-limit": str(int(bucket[0])), "x-rate-limit-reset": str(int(bucket[2]) + 1)}
        if bucket[1] <= 0:
            headers["x-rate-limit-remaining"] = "0"
            self.violations.append(f"called {key} with its rate limit used up")
            return Response(
                429,
                {
                    "title": "Too Many Requests",
                    "detail": "Too Many Requests",
                    "type": "about:blank",
                    "status": 429,
                },
                headers,
            ), headers
        bucket[1] -= 1
        headers["x-rate-limit-remaining"] = str(int(bucket[1]))
        return None, headers

    # -------------------------------------------------------------------------------------- routing

    def handle(self, req: Request) -> Response:
        if req.path == "/2/oauth2/token" and req.method == "POST":
            return self._token(req)
        if req.path == "/i/oauth2/authorize" and req.method == "GET":
            return self._authorize(req)
        problem = self._check_auth(req)
        if problem is not None:
            return problem
        route, limit = self._route(req)
        if route is None:
            return Response(
                404, {"title": "Not Found Error", "status": 404, "detail": f"no route {req.path}"}
            )
        limited, headers = self._rate(f"{req.method} {route}", limit)
        if limited is not None:
            return limited
        resp = self._serve(req, route)
        resp.headers.update(headers)
        return resp

    def _route(self, req: Request) -> tuple[str | None, int]:
        p = req.path
        if req.method == "POST" and p == "/2/media/upload/initialize":
            return "/2/media/upload/initialize", 1875
        if req.method == "POST" and p.startswith("/2/media/upload/") and p.endswith("/append"):
            return "/2/media/upload/:id/append", 1875
        if req.method == "POST" and p.startswith("/2/media/upload/") and p.endswith("/finalize"):
            return "/2/media/upload/:id/finalize", 1875
        if req.method == "GET" and p == "/2/media/upload":
            return "/2/media/upload", 1000
        if req.method == "POST" and p == "/2/tweets":
            return "/2/tweets", 100
        if req.method == "GET" and p == "/2/users/me":
            return "/2/users/me", 75
        if req.method == "GET" and p.startswith("/2/users/") and p.endswith("/tweets"):
            return "/2/users/:id/tweets", 900
        return None, 0

    def _serve(self, req: Request, route: str) -> Response:
        if route == "/2/media/upload/initialize":
            return self._initialize(req)
        if route == "/2/media/upload/:id/append":
            return self._append(req, req.path.split("/")[4])
        if route == "/2/media/upload/:id/finalize":
            return self._finalize(req.path.split("/")[4])
        if route == "/2/media/upload":
            return self._status(req)
        if route == "/2/tweets":
            return self._tweet(req)
        if route == "/2/users/me":
            return Response(200, {"data": self.user})
        return self._timeline(req)

    # ----------------------------------------------------------------------------------------- media

    @staticmethod
    def _invalid(detail: str) -> Response:
        return Response(
            400,
            {
                "title": "Invalid Request",
                "detail": detail,
                "type": "https://api.twitter.com/2/problems/invalid-request",
                "status": 400,
                "errors": [{"message": detail}],
            },
        )

    def _initialize(self, req: Request) -> Response:
        try:
            body = req.json()
        except json.JSONDecodeError:
            return self._invalid("body is not JSON")
        if not isinstance(body, dict) or body.get("media_type") not in MEDIA_TYPES:
            return self._invalid(
                f"media_type {body.get('media_type') if isinstance(body, dict) else None!r} is not allowed"
            )
        if body.get("media_category") not in MEDIA_CATEGORIES:
            return self._invalid(f"media_category {body.get('media_category')!r} is not allowed")
        total = body.get("total_bytes")
        if not isinstance(total, int) or total <= 0 or total > 512 * 1024 * 1024:
            return self._invalid("total_bytes must be a positive integer no larger than 512 MB")
        media_id = str(next(self._ids))
        self.media[media_id] = Media(media_id, body["media_type"], body["media_category"], total)
        return Response(
            200, {"data": {"id": media_id, "media_key": f"7_{media_id}", "expires_after_secs": 86399}}
        )

    def _append(self, req: Request, media_id: str) -> Response:
        media = self.media.get(media_id)
        if media is None:
            return self._invalid("unknown media id")
        if "media" not in req.files or "segment_index" not in req.form:
            self.violations.append(f"append without media/segment_index fields: {req.multipart_names}")
            return self._invalid("media and segment_index are required (multipart)")
        index = int(req.form["segment_index"])
        chunk = req.files["media"].data
        if not 0 <= index <= 999:
            return self._invalid("segment_index must be 0-999")
        if index != len(media.chunks):
            self.violations.append(f"segment {index} sent when {len(media.chunks)} was expected")
            return self._invalid("segments out of order")
        if len(chunk) > self.max_chunk_bytes or not chunk:
            self.violations.append(f"segment of {len(chunk)} bytes")
            return self._invalid("segment size is invalid")
        media.chunks[index] = chunk
        return Response(200, {"data": {"expires_at": int(time.time()) + 86399}})

    def _finalize(self, media_id: str) -> Response:
        media = self.media.get(media_id)
        if media is None:
            return self._invalid("unknown media id")
        data = b"".join(media.chunks[i] for i in sorted(media.chunks))
        if len(data) != media.total_bytes:
            self.violations.append(f"finalize with {len(data)} of {media.total_bytes} bytes")
            return self._invalid(f"File size mismatch: received {len(data)} of {media.total_bytes} bytes")
        media.error = (
            self._check_video(data) if self.validate_video and media.media_type == "video/mp4" else None
        )
        media.state = "pending"
        media.polls_left = self.processing_polls
        media.next_check = time.time() + self.check_after_secs
        self.uploaded = data
        return Response(
            200,
            {
                "data": {
                    "id": media_id,
                    "media_key": f"7_{media_id}",
                    "size": len(data),
                    "expires_after_secs": 86399,
                    "processing_info": {"state": "pending", "check_after_secs": self.check_after_secs},
                }
            },
        )

    def _status(self, req: Request) -> Response:
        if req.q("command") != "STATUS":
            return self._invalid("command must be STATUS")
        media = self.media.get(req.q("media_id") or "")
        if media is None:
            return self._invalid("unknown media id")
        if time.time() + 0.05 < media.next_check:
            self.violations.append("STATUS polled before check_after_secs")
        if media.polls_left > 0:
            media.polls_left -= 1
            media.state = "in_progress"
            media.next_check = time.time() + self.check_after_secs
            info: dict[str, Any] = {
                "state": "in_progress",
                "check_after_secs": self.check_after_secs,
                "progress_percent": 50,
            }
        elif media.error:
            media.state = "failed"
            info = {
                "state": "failed",
                "progress_percent": 100,
                "error": {
                    "code": 1,
                    "name": "InvalidMedia",
                    "message": f"Invalid or Unsupported media, Reason: {media.error}",
                },
            }
        else:
            media.state = "succeeded"
            info = {"state": "succeeded", "progress_percent": 100}
        return Response(
            200, {"data": {"id": media.id, "media_key": f"7_{media.id}", "processing_info": info}}
        )

    @staticmethod
    def _check_video(data: bytes) -> str | None:
        """X's own idea of an acceptable video, asked of ffprobe (not of the publisher's checker)."""
        with tempfile.NamedTemporaryFile(suffix=".mp4") as f:
            f.write(data)
            f.flush()
            try:
                info = probe_streams(f.name)
            except AudioError:
                return "UnsupportedMedia."
        video = [s for s in info["streams"] if s["codec_type"] == "video"]
        audio = [s for s in info["streams"] if s["codec_type"] == "audio"]
        if len(video) != 1 or video[0].get("codec_name") != "h264" or video[0].get("profile") != "High":
            return "UnsupportedMedia (video codec)."
        if video[0].get("pix_fmt") != "yuv420p":
            return "UnsupportedMedia (pixel format)."
        if not (32 <= video[0]["width"] <= 1280 and 32 <= video[0]["height"] <= 1024):
            return "InvalidMedia (dimensions)."
        if len(audio) > 1 or (
            audio and (audio[0].get("codec_name") != "aac" or audio[0].get("profile") != "LC")
        ):
            return "UnsupportedMedia (audio codec)."
        if not 0.5 <= float(info["format"]["duration"]) <= 140:
            return "InvalidMedia (duration)."
        return None

    # ----------------------------------------------------------------------------------------- posts

    def _tweet(self, req: Request) -> Response:
        body = req.json()
        text = body.get("text") if isinstance(body, dict) else None
        if not isinstance(text, str) or not text:
            return self._invalid("text is required")
        if len(text) > 280:
            return Response(
                400, {"title": "Invalid Request", "status": 400, "detail": "Your Tweet text is too long."}
            )
        media_ids = list((body.get("media") or {}).get("media_ids") or [])
        for media_id in media_ids:
            media = self.media.get(media_id)
            if media is None or media.state != "succeeded":
                self.violations.append(
                    f"posted with media {media_id} in state {media.state if media else None}"
                )
                return self._invalid("Your media IDs are invalid.")
        if any(t.text.split(" https://t.co/")[0] == text for t in self.tweets):
            return Response(
                403,
                {
                    "title": "Forbidden",
                    "status": 403,
                    "type": "about:blank",
                    "detail": "You are not allowed to create a Tweet with duplicate content.",
                },
            )
        tweet_id = str(next(self._ids))
        stored = text + "".join(f" https://t.co/{m[-6:]}" for m in media_ids)
        self.tweets.append(Tweet(tweet_id, stored, media_ids, datetime.now(UTC)))
        return Response(201, {"data": {"id": tweet_id, "text": stored, "edit_history_tweet_ids": [tweet_id]}})

    def _timeline(self, req: Request) -> Response:
        if req.path.split("/")[3] != self.user["id"]:
            return Response(404, {"title": "Not Found Error", "status": 404, "detail": "user not found"})
        start = req.q("start_time")
        since = datetime.fromisoformat(start.replace("Z", "+00:00")) if start else None
        max_results = int(req.q("max_results") or 10)
        if not 5 <= max_results <= 100:
            return self._invalid("max_results must be 5-100")
        found = [t for t in reversed(self.tweets) if since is None or t.created_at >= since][:max_results]
        if not found:
            return Response(200, {"meta": {"result_count": 0}})
        return Response(
            200,
            {
                "data": [
                    {
                        "id": t.id,
                        "text": t.text,
                        "created_at": t.created_at.isoformat().replace("+00:00", "Z"),
                        "edit_history_tweet_ids": [t.id],
                    }
                    for t in found
                ],
                "meta": {"result_count": len(found), "newest_id": found[0].id, "oldest_id": found[-1].id},
            },
        )

    # ------------------------------------------------------------------------------- OAuth 2.0 login

    def _authorize(self, req: Request) -> Response:
        if req.q("client_id") != self.client_id or req.q("code_challenge_method") != "S256":
            return Response(400, {"error": "invalid_request"})
        code = secrets.token_urlsafe(12)
        self.codes[code] = {
            "challenge": req.q("code_challenge") or "",
            "redirect_uri": req.q("redirect_uri") or "",
        }
        sep = "&" if "?" in (req.q("redirect_uri") or "") else "?"
        return Response(
            302, None, {"Location": f"{req.q('redirect_uri')}{sep}code={code}&state={req.q('state')}"}
        )

    def _token(self, req: Request) -> Response:
        grant = req.form.get("grant_type")
        if req.form.get("client_id") != self.client_id:
            return Response(401, {"error": "invalid_client"})
        if grant == "authorization_code":
            pending = self.codes.pop(req.form.get("code", ""), None)
            verifier = req.form.get("code_verifier", "")
            challenge = (
                base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).rstrip(b"=").decode()
            )
            if (
                pending is None
                or pending["challenge"] != challenge
                or pending["redirect_uri"] != req.form.get("redirect_uri")
            ):
                return Response(
                    400,
                    {
                        "error": "invalid_request",
                        "error_description": "Value passed for the authorization code was invalid.",
                    },
                )
        elif grant == "refresh_token":
            token = req.form.get("refresh_token", "")
            if token not in self.refresh_tokens:
                return Response(
                    400,
                    {
                        "error": "invalid_request",
                        "error_description": "Value passed for the token was invalid.",
                    },
                )
            self.refresh_tokens.discard(token)  # single use
        else:
            return Response(400, {"error": "unsupported_grant_type"})
        access, refresh = self.issue_bearer()
        return Response(
            200,
            {
                "token_type": "bearer",
                "expires_in": 7200,
                "access_token": access,
                "scope": "tweet.read tweet.write users.read media.write offline.access",
                "refresh_token": refresh,
            },
        )
