"""OAuth 2.x authorization code + PKCE (S256), for SoundCloud (OAuth 2.1) and X (OAuth 2.0 user context).

The one-time login: `authorize_url()` gives the page a person opens; the platform sends the browser
back to our redirect URI with `?code=…&state=…`; `wait_for_redirect()` (a tiny listener on the
loopback address) or a pasted URL gives us the code; `exchange_code()` turns it into tokens within
the platform's deadline (X: 30 s). `refresh()` trades a refresh token for new tokens: both platforms
rotate refresh tokens (single use), so the caller stores the answer before using it.
"""

from __future__ import annotations

import base64
import hashlib
import secrets
import threading
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, HTTPServer
from typing import Any
from urllib.parse import parse_qs, urlencode, urlsplit

import httpx

from publisher.errors import Outcome, PublishError
from publisher.http import error_message


@dataclass(frozen=True)
class Pkce:
    verifier: str
    challenge: str
    state: str


def make_pkce() -> Pkce:
    """A fresh code verifier (43+ unreserved characters), its S256 challenge, and an anti-CSRF state."""
    verifier = secrets.token_urlsafe(64)[:96]
    challenge = (
        base64.urlsafe_b64encode(hashlib.sha256(verifier.encode("ascii")).digest()).rstrip(b"=").decode()
    )
    return Pkce(verifier=verifier, challenge=challenge, state=secrets.token_urlsafe(24))


def authorize_url(endpoint: str, *, client_id: str, redirect_uri: str, pkce: Pkce, scope: str = "") -> str:
    params = {
        "client_id": client_id,
        "redirect_uri": redirect_uri,
        "response_type": "code",
        "code_challenge": pkce.challenge,
        "code_challenge_method": "S256",
        "state": pkce.state,
    }
    if scope:
        params["scope"] = scope
    return f"{endpoint}?{urlencode(params)}"


def code_from_redirect(url: str, expected_state: str) -> str:
    """The code in a redirect URL (as pasted by a person), checking the state matches."""
    query = parse_qs(urlsplit(url.strip()).query)
    if "error" in query:
        raise PublishError(f"The platform refused the authorisation: {query['error'][0]}", Outcome.auth)
    state = (query.get("state") or [""])[0]
    if state != expected_state:
        raise PublishError(
            "The redirect does not belong to this login (state mismatch); start again.", Outcome.auth
        )
    code = (query.get("code") or [""])[0]
    if not code:
        raise PublishError("The redirect URL has no code in it.", Outcome.auth)
    return code


def wait_for_redirect(redirect_uri: str, expected_state: str, timeout: float = 300.0) -> str:
    """Serve the redirect URI on the loopback address once and return the code it brings."""
    parts = urlsplit(redirect_uri)
    host, port = parts.hostname or "127.0.0.1", parts.port or 80
    if host not in ("127.0.0.1", "localhost", "::1"):
        raise ValueError(f"the redirect URI {redirect_uri} is not on this machine; paste the code instead")
    received: dict[str, str] = {}
    done = threading.Event()

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            if urlsplit(self.path).path != parts.path:
                self.send_error(404)
                return
            received["url"] = f"http://{host}:{port}{self.path}"
            body = b"<html><body><h1>jukebot is authorised.</h1>You can close this tab.</body></html>"
            self.send_response(200)
            self.send_header("Content-Type", "text/html; charset=utf-8")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)
            done.set()

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = HTTPServer((host, port), Handler)
    server.timeout = 0.5
    try:
        deadline = datetime.now(UTC) + timedelta(seconds=timeout)
        while not done.is_set():
            if datetime.now(UTC) > deadline:
                raise PublishError("No browser came back to the redirect URI in time.", Outcome.auth)
            server.handle_request()
    finally:
        server.server_close()
    return code_from_redirect(received["url"], expected_state)


@dataclass(frozen=True)
class TokenSet:
    access_token: str
    refresh_token: str | None
    expires_at: datetime | None
    scope: str = ""
    token_type: str = "bearer"

    @classmethod
    def from_response(cls, body: dict[str, Any], *, now: datetime | None = None) -> TokenSet:
        now = now or datetime.now(UTC)
        access = body.get("access_token")
        if not isinstance(access, str) or not access:
            raise PublishError("The token answer has no access token in it.", Outcome.auth)
        expires_in = body.get("expires_in")
        expires_at = now + timedelta(seconds=float(expires_in)) if expires_in else None
        scope = body.get("scope") or ""
        return cls(
            access_token=access,
            refresh_token=body.get("refresh_token") or None,
            expires_at=expires_at,
            scope=" ".join(scope) if isinstance(scope, list) else str(scope),
            token_type=str(body.get("token_type") or "bearer"),
        )


@dataclass(frozen=True)
class OAuthClient:
    """An app's credentials at one token endpoint. A secret means a confidential client (HTTP Basic)."""

    token_url: str
    client_id: str
    client_secret: str | None = None

    def _auth(self, form: dict[str, str]) -> tuple[dict[str, str], httpx.BasicAuth | None]:
        if self.client_secret:
            return form, httpx.BasicAuth(self.client_id, self.client_secret)
        return {**form, "client_id": self.client_id}, None

    async def _token_call(self, http: httpx.AsyncClient, form: dict[str, str], what: str) -> TokenSet:
        data, auth = self._auth(form)
        try:
            response = await http.post(
                self.token_url,
                data=data,
                auth=auth or httpx.USE_CLIENT_DEFAULT,
                headers={"Accept": "application/json"},
            )
        except httpx.TransportError as exc:
            raise PublishError(
                f"Could not reach the token endpoint for {what}: {type(exc).__name__}", Outcome.retry
            ) from exc
        if response.status_code >= 500:
            raise PublishError(
                f"The token endpoint failed ({response.status_code}) for {what}.",
                Outcome.retry,
                status=response.status_code,
            )
        if response.status_code >= 400:
            raise PublishError(
                f"The token endpoint refused {what}: {error_message(response)}",
                Outcome.auth,
                status=response.status_code,
            )
        return TokenSet.from_response(response.json())

    async def exchange_code(
        self, http: httpx.AsyncClient, *, code: str, redirect_uri: str, verifier: str
    ) -> TokenSet:
        form = {
            "grant_type": "authorization_code",
            "code": code,
            "redirect_uri": redirect_uri,
            "code_verifier": verifier,
        }
        return await self._token_call(http, form, "the login code")

    async def refresh(self, http: httpx.AsyncClient, refresh_token: str) -> TokenSet:
        form = {"grant_type": "refresh_token", "refresh_token": refresh_token}
        return await self._token_call(http, form, "the saved login (refresh token)")
