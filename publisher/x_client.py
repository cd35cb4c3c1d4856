"""A thin X API v2 client: chunked media upload, create a post with the video, find our own recent posts.

Endpoints (X's OpenAPI; research/publish_queue.md §1.3):
  POST /2/media/upload/initialize          JSON {media_type, total_bytes, media_category} -> data.id
  POST /2/media/upload/{id}/append         multipart: media (bytes), segment_index (0..999)
  POST /2/media/upload/{id}/finalize       -> data.processing_info {state, check_after_secs}
  GET  /2/media/upload?command=STATUS&media_id=…   poll after check_after_secs until succeeded/failed
  POST /2/tweets                           JSON {text, media: {media_ids: [...]}}
  GET  /2/users/me, GET /2/users/{id}/tweets        for reconciling an unclear post

Auth: OAuth 1.0a user context (HMAC-SHA1, signed by oauthlib; these tokens do not expire) when the four
keys are set, else an OAuth 2.0 user token from our database, refreshed (single-use refresh tokens)
through `publisher.tokens`. Media upload steps are safe to repeat; only `POST /2/tweets` creates
something, so only its unclear failures become `unclear`.
"""

from __future__ import annotations

import asyncio
import math
import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Protocol
from urllib.parse import urlencode

import httpx
from oauthlib.oauth1 import SIGNATURE_HMAC_SHA1, SIGNATURE_TYPE_AUTH_HEADER
from oauthlib.oauth1 import Client as OAuth1Client

from publisher.captions import carries_marker
from publisher.errors import NotConfigured, Outcome, PublishError
from publisher.http import RateLimiter, Sleep, raise_for_status, send
from publisher.tokens import TokenManager

X_SCOPES = "tweet.read tweet.write users.read media.write offline.access"
MAX_SEGMENTS = 1000  # segment_index is 0..999


class XAuth(Protocol):
    async def prepare(self) -> None: ...

    def headers(self, method: str, url: str) -> dict[str, str]: ...

    async def after_unauthorized(self) -> bool:
        """Called on a 401; True when a retry with new credentials makes sense."""
        ...


class OAuth1UserAuth:
    """OAuth 1.0a user context: consumer key/secret + access token/secret; signs every request.

    Only the query string is signed besides the oauth_* parameters: JSON and multipart bodies are not
    part of the OAuth 1.0a signature base string (RFC 5849 §3.4.1.3).
    """

    def __init__(self, consumer_key: str, consumer_secret: str, token: str, token_secret: str) -> None:
        self._client = OAuth1Client(
            consumer_key,
            client_secret=consumer_secret,
            resource_owner_key=token,
            resource_owner_secret=token_secret,
            signature_method=SIGNATURE_HMAC_SHA1,
            signature_type=SIGNATURE_TYPE_AUTH_HEADER,
        )

    async def prepare(self) -> None:
        return None

    def headers(self, method: str, url: str) -> dict[str, str]:
        _, headers, _ = self._client.sign(url, http_method=method)
        return {"Authorization": headers["Authorization"]}

    async def after_unauthorized(self) -> bool:
        return False  # these keys do not expire: a 401 means they were revoked or are wrong


class OAuth2UserAuth:
    """OAuth 2.0 user token (authorization code + PKCE), kept fresh by a TokenManager."""

    def __init__(self, tokens: TokenManager) -> None:
        self.tokens = tokens
        self._token: str | None = None

    async def prepare(self) -> None:
        self._token = await self.tokens.access_token()

    def headers(self, method: str, url: str) -> dict[str, str]:
        assert self._token is not None, "prepare() first"
        return {"Authorization": f"Bearer {self._token}"}

    async def after_unauthorized(self) -> bool:
        self._token = await self.tokens.access_token(force_refresh=True, rejected=self._token)
        return True


@dataclass(frozen=True)
class XPost:
    id: str
    text: str
    url: str
    created_at: datetime | None = None


@dataclass(frozen=True)
class XUser:
    id: str
    username: str


def _parse_time(value: Any) -> datetime | None:
    if not isinstance(value, str):
        return None
    try:
        return datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None


class XClient:
    def __init__(
        self,
        api_base: str,
        auth: XAuth,
        http: httpx.AsyncClient,
        *,
        chunk_bytes: int = 4 * 1024 * 1024,
        rate_limit_max_wait: float = 60.0,
        max_processing_seconds: float = 600.0,
        sleep: Sleep = asyncio.sleep,
    ) -> None:
        if chunk_bytes <= 0:
            raise ValueError("chunk_bytes must be positive")
        self.api_base = api_base.rstrip("/")
        self.auth = auth
        self.http = http
        self.chunk_bytes = chunk_bytes
        self.max_processing_seconds = max_processing_seconds
        self.sleep = sleep
        self.limiter = RateLimiter("X", max_wait=rate_limit_max_wait, sleep=sleep)
        self._me: XUser | None = None

    async def _call(
        self,
        method: str,
        path: str,
        *,
        key: str,
        step: str,
        creates: bool = False,
        params: dict[str, str] | None = None,
        json: Any = None,
        files: dict[str, Any] | None = None,
        data: dict[str, str] | None = None,
    ) -> httpx.Response:
        url = f"{self.api_base}{path}" + (f"?{urlencode(params)}" if params else "")

        def build() -> httpx.Request:
            headers = self.auth.headers(method, url)
            return self.http.build_request(method, url, headers=headers, json=json, files=files, data=data)

        await self.auth.prepare()
        response = await send(self.http, build, limiter=self.limiter, key=key, creates=creates)
        if response.status_code == 401 and await self.auth.after_unauthorized():
            response = await send(self.http, build, limiter=self.limiter, key=key, creates=creates)
        if response.status_code == 401:
            raise PublishError(
                f"X refused our credentials for {step} (401); check the X keys or run "
                "`jukebot publish auth x`.",
                Outcome.auth,
                status=401,
            )
        raise_for_status(response, platform="X", creates=creates, step=step)
        return response

    # ----------------------------------------------------------------------------------------- media

    async def upload_media(
        self, data: bytes, *, media_type: str = "video/mp4", media_category: str = "amplify_video"
    ) -> str:
        """Chunked upload; returns the media id once X has processed the file (state succeeded)."""
        if not data:
            raise PublishError("The media file is empty.", Outcome.permanent)
        segments = math.ceil(len(data) / self.chunk_bytes)
        if segments > MAX_SEGMENTS:
            raise PublishError(
                f"The media needs {segments} chunks; X takes at most {MAX_SEGMENTS}.", Outcome.permanent
            )
        init = await self._call(
            "POST",
            "/2/media/upload/initialize",
            key="POST /2/media/upload/initialize",
            step="media initialize",
            json={"media_type": media_type, "total_bytes": len(data), "media_category": media_category},
        )
        media_id = str(_data(init).get("id") or "")
        if not media_id:
            raise PublishError("X's media initialize answer has no media id.", Outcome.retry)
        for index in range(segments):
            chunk = data[index * self.chunk_bytes : (index + 1) * self.chunk_bytes]
            await self._call(
                "POST",
                f"/2/media/upload/{media_id}/append",
                key="POST /2/media/upload/:id/append",
                step=f"media append (segment {index})",
                files={"media": ("blob", chunk, "application/octet-stream")},
                data={"segment_index": str(index)},
            )
        final = await self._call(
            "POST",
            f"/2/media/upload/{media_id}/finalize",
            key="POST /2/media/upload/:id/finalize",
            step="media finalize",
        )
        await self._wait_processed(media_id, _data(final).get("processing_info"))
        return media_id

    async def _wait_processed(self, media_id: str, info: Any) -> None:
        deadline = time.monotonic() + self.max_processing_seconds
        while isinstance(info, dict):
            state = info.get("state")
            if state == "succeeded":
                return
            if state == "failed":
                error = info.get("error") or {}
                reason = error.get("message") or error.get("name") or "no reason given"
                raise PublishError(f"X could not process the video: {reason}", Outcome.permanent)
            if time.monotonic() > deadline:
                raise PublishError(
                    f"X was still processing the video after {self.max_processing_seconds:.0f} s.",
                    Outcome.retry,
                )
            await self.sleep(max(0.0, float(info.get("check_after_secs") or 1)))
            status = await self._call(
                "GET",
                "/2/media/upload",
                key="GET /2/media/upload",
                step="media status",
                params={"command": "STATUS", "media_id": media_id},
            )
            info = _data(status).get("processing_info")
        # No processing_info: the media needs no processing and is ready.

    # ----------------------------------------------------------------------------------------- posts

    async def create_post(self, text: str, media_ids: list[str] | None = None) -> XPost:
        body: dict[str, Any] = {"text": text}
        if media_ids:
            body["media"] = {"media_ids": media_ids}
        try:
            response = await self._call(
                "POST", "/2/tweets", key="POST /2/tweets", step="post", creates=True, json=body
            )
        except PublishError as exc:
            if exc.status == 403 and "duplicate" in exc.message.lower():
                # X refuses identical text: our earlier attempt may have landed after all. Look before retrying.
                raise PublishError(exc.message, Outcome.unclear, status=403) from exc
            raise
        post = _data(response)
        post_id = str(post.get("id") or "")
        if not post_id:
            raise PublishError("X accepted the post but sent no id back.", Outcome.unclear)
        return XPost(id=post_id, text=str(post.get("text") or text), url=await self.post_url(post_id))

    async def me(self) -> XUser:
        if self._me is None:
            response = await self._call("GET", "/2/users/me", key="GET /2/users/me", step="account lookup")
            user = _data(response)
            self._me = XUser(id=str(user.get("id")), username=str(user.get("username") or ""))
        return self._me

    async def post_url(self, post_id: str) -> str:
        try:
            username = (await self.me()).username
        except PublishError:
            username = ""
        return (
            f"https://x.com/{username}/status/{post_id}"
            if username
            else f"https://x.com/i/web/status/{post_id}"
        )

    async def recent_posts(self, since: datetime, limit: int = 100) -> list[XPost]:
        me = await self.me()
        params = {
            "max_results": str(max(5, min(100, limit))),
            "start_time": since.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
            "tweet.fields": "created_at,text",
        }
        response = await self._call(
            "GET",
            f"/2/users/{me.id}/tweets",
            key="GET /2/users/:id/tweets",
            step="recent posts lookup",
            params=params,
        )
        body = response.json()
        posts = []
        for item in body.get("data") or []:  # X leaves out "data" when there are no posts
            post_id = str(item.get("id"))
            posts.append(
                XPost(
                    id=post_id,
                    text=str(item.get("text") or ""),
                    created_at=_parse_time(item.get("created_at")),
                    url=f"https://x.com/{me.username}/status/{post_id}",
                )
            )
        return posts

    async def find_post(self, marker: str, since: datetime) -> XPost | None:
        """Our post carrying this publication's marker, made after `since` (with clock slack). A post
        with the same words but another marker (or none) is not ours, whatever its text."""
        for post in await self.recent_posts(since - timedelta(minutes=5)):
            if carries_marker(post.text, marker):
                return post
        return None


def _data(response: httpx.Response) -> dict[str, Any]:
    try:
        body = response.json()
    except ValueError:
        return {}
    data = body.get("data") if isinstance(body, dict) else None
    return data if isinstance(data, dict) else {}


def x_auth_from_settings(settings: Any, tokens: TokenManager | None) -> XAuth:
    """OAuth 1.0a when all four keys are set; else OAuth 2.0 with the stored user token."""
    keys = (
        settings.x.consumer_key,
        settings.x.consumer_secret,
        settings.x.access_token,
        settings.x.access_token_secret,
    )
    if all(k is not None and k.get_secret_value() for k in keys):
        ck, cs, at, ats = (k.get_secret_value() for k in keys)
        return OAuth1UserAuth(ck, cs, at, ats)
    if settings.x.client_id is not None and tokens is not None:
        return OAuth2UserAuth(tokens)
    raise NotConfigured(
        "X is not configured: set JUKEBOT_X_CONSUMER_KEY/SECRET and JUKEBOT_X_ACCESS_TOKEN/SECRET, "
        "or JUKEBOT_X_CLIENT_ID and run `jukebot publish auth x`."
    )
