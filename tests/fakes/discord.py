"""A fake Discord that the real discord.py 2.7 client connects to over loopback.

It speaks the parts of the real protocol the bot uses (research/discord.md §3.4):
REST under ``/api/v10`` (every JSON reply carries exactly ``Content-Type: application/json``,
because discord.py compares the header with ``==``) and a gateway websocket at ``/`` that sends
plain TEXT frames (discord.py only decompresses binary frames).

The test drives it the way people drive Discord: members run slash commands (with autocomplete),
press buttons, use context menus and submit modals. Each of those becomes an INTERACTION_CREATE
dispatched to the connected bot; the fake records every REST call and keeps the messages, so a test
can wait on what a member would see. Attachments the bot uploads are kept and served back from
``/attachments/...``; a test can also host attachments (e.g. an upload that claims 200 MB) and check
whether the bot ever downloaded them.

It enforces Discord's limits (tests/fakes/discord_limits.py; pass ``limits=`` to change them):
rate-limit buckets per route answered with 429, the 3-second interaction deadline, message sizes.
``fake.rate_limited`` counts the 429s it answered, ``fake.buckets_exhausted`` the answers that used
a bucket's last request (discord.py then holds that route's next requests back).

Modules: this one (server, world, REST routes, gateway), discord_members.py (members acting:
commands, clicks, modals), discord_model.py (constants, recorded calls and interactions, message
helpers), discord_limits.py (the rules).

One fake per test: discord.py's base URLs are module-global class attributes, set by the bot from
its settings (``discord_api_base`` / ``discord_gateway_url``).
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import time
from collections.abc import Callable
from typing import Any

from aiohttp import WSMsgType, web

from tests.fakes.discord_limits import (
    DiscordLimits,
    RateBuckets,
    RouteLimit,
    Verdict,
    is_interaction_endpoint,
    message_problem,
    rate_limited_body,
    route_of,
)
from tests.fakes.discord_members import MembersActing
from tests.fakes.discord_model import (
    ADMINISTRATOR,
    CB_DEFER,
    CB_MESSAGE,
    CB_UPDATE,
    DEFAULT_SIZE_LIMIT,
    DISCORD_EPOCH_MS,
    EPHEMERAL,
    EVERYONE_PERMISSIONS,
    FakeDiscordError,
    FakeInteraction,
    HostedFile,
    RestCall,
    _error,
    _guess_type,
    _json_response,
    _now_iso,
    _with_component_ids,
    buttons,
    custom_ids,
)

__all__ = [
    "DiscordLimits",
    "FakeDiscord",
    "FakeDiscordError",
    "FakeInteraction",
    "RouteLimit",
    "buttons",
    "custom_ids",
]

NONCE_SECONDS = 300.0  # how long Discord remembers an enforced nonce ("a few minutes")


class FakeDiscord(MembersActing):
    def __init__(self, *, token: str = "fake-bot-token", limits: DiscordLimits | None = None) -> None:
        self.token = token
        self.limits = limits or DiscordLimits()
        self.buckets = RateBuckets()
        self.rate_limited = 0  # 429s answered: a test can assert the bot never hit one
        self.rate_limited_calls: list[RestCall] = []
        # Answers that used a bucket's last request (Remaining: 0): discord.py then holds the
        # route's next requests back until the reset, so the bot's later edits queue up.
        self.buckets_exhausted = 0
        self.exhausted_calls: list[RestCall] = []
        self._ids = itertools.count(1)
        self.app_id = self.snowflake()
        self.bot_user = {
            "id": str(self.app_id),
            "username": "jukebot",
            "discriminator": "0",
            "global_name": "jukebot",
            "avatar": None,
            "bot": True,
            "public_flags": 0,
            "flags": 0,
        }
        self.users: dict[int, dict[str, Any]] = {self.app_id: self.bot_user}
        self.guilds: dict[int, dict[str, Any]] = {}
        self.channel_guild: dict[int, int] = {}
        self.messages: dict[int, dict[str, Any]] = {}
        self.deleted: set[int] = set()
        self.edits: dict[int, list[dict[str, Any]]] = {}  # every version of each message, in order
        self.calls: list[RestCall] = []
        self.global_commands: list[dict[str, Any]] = []
        self.guild_commands: dict[int, list[dict[str, Any]]] = {}
        self.interactions: dict[int, FakeInteraction] = {}
        self._by_token: dict[str, FakeInteraction] = {}
        self.files: dict[str, HostedFile] = {}
        self.identifies = 0
        self.late_callbacks: list[FakeInteraction] = []  # answered 10062: past the 3 s deadline
        self.fail_next: list[tuple[Callable[[str, str], bool], int, int, str]] = []
        # Messages sent with an enforced nonce, by (channel, nonce): Discord answers a second send
        # with the same nonce within a few minutes with the first message instead of a new one.
        self.nonces: dict[tuple[int, str], tuple[int, float]] = {}
        # Called with each message the bot posts, after Discord took it and before it answers
        # (a test can SIGKILL the bot there: the post is made, the bot never hears of it).
        self.after_post: Callable[[dict[str, Any]], None] | None = None
        self._ws: web.WebSocketResponse | None = None
        self._seq = 0
        self._changed = asyncio.Condition()
        self._runner: web.AppRunner | None = None
        self.port = 0

    # ---------------------------------------------------------------- lifecycle

    async def start(self) -> FakeDiscord:
        app = web.Application(client_max_size=64 * 1024 * 1024)
        app.router.add_route("GET", "/", self._gateway)
        app.router.add_route("GET", "/attachments/{key:.+}", self._serve_attachment)
        app.router.add_route("*", "/api/v10/{path:.*}", self._rest)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        server = site._server
        assert server is not None
        self.port = server.sockets[0].getsockname()[1]  # type: ignore[attr-defined]
        return self

    async def stop(self) -> None:
        if self._ws is not None and not self._ws.closed:
            await self._ws.close()
        if self._runner is not None:
            await self._runner.cleanup()

    @property
    def api_base(self) -> str:
        return f"http://127.0.0.1:{self.port}/api/v10"

    @property
    def gateway_url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/"

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def snowflake(self) -> int:
        ms = int(time.time() * 1000) - DISCORD_EPOCH_MS
        return (ms << 22) | (next(self._ids) & 0x3FFFFF)

    async def _notify(self) -> None:
        async with self._changed:
            self._changed.notify_all()

    async def wait_for(self, predicate: Callable[[], Any], timeout: float = 10.0, what: str = "") -> Any:
        """Wait until predicate() is truthy (re-checked on every change and every 50 ms)."""
        deadline = time.monotonic() + timeout
        while True:
            value = predicate()
            if value:
                return value
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError(f"timed out waiting for {what or predicate}")
            async with self._changed:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._changed.wait(), min(left, 0.05))

    # ---------------------------------------------------------------- world building

    def add_user(self, name: str) -> int:
        uid = self.snowflake()
        self.users[uid] = {
            "id": str(uid),
            "username": name,
            "discriminator": "0",
            "global_name": name.title(),
            "avatar": None,
            "public_flags": 0,
            "flags": 0,
        }
        return uid

    def add_guild(
        self, name: str = "Studio", *, premium_tier: int = 0, channels: tuple[str, ...] = ("studio",)
    ) -> int:
        gid = self.snowflake()
        owner = self.add_user(f"{name.lower()}-owner")
        self.guilds[gid] = {
            "id": gid,
            "name": name,
            "owner_id": owner,
            "premium_tier": premium_tier,
            "roles": {gid: {"name": "@everyone", "permissions": EVERYONE_PERMISSIONS}},
            "channels": {},
            "members": {},
            "attachment_size_limit": DEFAULT_SIZE_LIMIT,
        }
        self.add_member(gid, owner)
        self.add_member(gid, self.app_id)
        for ch in channels:
            self.add_channel(gid, ch)
        return gid

    def add_channel(self, guild_id: int, name: str) -> int:
        """A text channel. Added after the bot connected, the bot has not cached it (no
        CHANNEL_CREATE is sent): interactions there must carry all it needs."""
        cid = self.snowflake()
        self.guilds[guild_id]["channels"][cid] = {"name": name}
        self.channel_guild[cid] = guild_id
        return cid

    def channel_payload(self, channel_id: int) -> dict[str, Any]:
        """A guild text channel as Discord sends it (in GUILD_CREATE, GET and interactions)."""
        gid = self.channel_guild[channel_id]
        channels = self.guilds[gid]["channels"]
        return {
            "id": str(channel_id),
            "type": 0,
            "guild_id": str(gid),
            "name": channels[channel_id]["name"],
            "position": list(channels).index(channel_id),
            "permission_overwrites": [],
            "nsfw": False,
            "parent_id": None,
            "topic": None,
            "last_message_id": None,
            "rate_limit_per_user": 0,
            "flags": 0,
        }

    def channel(self, guild_id: int, name: str) -> int:
        for cid, ch in self.guilds[guild_id]["channels"].items():
            if ch["name"] == name:
                return int(cid)
        raise KeyError(name)

    def add_role(self, guild_id: int, name: str, permissions: int = 0) -> int:
        rid = self.snowflake()
        self.guilds[guild_id]["roles"][rid] = {"name": name, "permissions": permissions}
        return rid

    def add_member(self, guild_id: int, user_id: int, roles: tuple[int, ...] = ()) -> None:
        self.guilds[guild_id]["members"][user_id] = {"roles": list(roles), "joined_at": _now_iso()}

    def give_role(self, guild_id: int, user_id: int, role_id: int) -> None:
        self.guilds[guild_id]["members"][user_id]["roles"].append(role_id)

    def member_permissions(self, guild_id: int, user_id: int) -> int:
        g = self.guilds[guild_id]
        if user_id == g["owner_id"]:
            return (1 << 53) - 1
        perms = g["roles"][guild_id]["permissions"]
        for rid in g["members"][user_id]["roles"]:
            perms |= g["roles"][rid]["permissions"]
        if perms & ADMINISTRATOR:
            return (1 << 53) - 1
        return int(perms)

    def _member_payload(
        self, guild_id: int, user_id: int, *, with_permissions: bool = False
    ) -> dict[str, Any]:
        m = self.guilds[guild_id]["members"][user_id]
        out: dict[str, Any] = {
            "user": self.users[user_id],
            "roles": [str(r) for r in m["roles"]],
            "joined_at": m["joined_at"],
            "deaf": False,
            "mute": False,
            "flags": 0,  # required: discord.py raises KeyError('flags') without it
            "nick": None,
            "avatar": None,
            "premium_since": None,
            "pending": False,
            "communication_disabled_until": None,
        }
        if with_permissions:
            out["permissions"] = str(self.member_permissions(guild_id, user_id))
        return out

    def _role_payload(self, role_id: int) -> dict[str, Any]:
        for g in self.guilds.values():
            if role_id in g["roles"]:
                r = g["roles"][role_id]
                return {
                    "id": str(role_id),
                    "name": r["name"],
                    "permissions": str(r["permissions"]),
                    "position": 1,
                    "color": 0,
                    "colors": {"primary_color": 0, "secondary_color": None, "tertiary_color": None},
                    "hoist": False,
                    "managed": False,
                    "mentionable": False,
                    "flags": 0,
                }
        raise FakeDiscordError(f"no role {role_id}")

    def _guild_payload(self, gid: int) -> dict[str, Any]:
        g = self.guilds[gid]
        return {
            "id": str(gid),
            "name": g["name"],
            "icon": None,
            "owner_id": str(g["owner_id"]),
            "roles": [self._role_payload(rid) for rid in g["roles"]],
            "channels": [self.channel_payload(cid) for cid in g["channels"]],
            "members": [self._member_payload(gid, uid) for uid in g["members"]],
            "emojis": [],
            "stickers": [],
            "features": [],
            "member_count": len(g["members"]),
            "threads": [],
            "voice_states": [],
            "presences": [],
            "unavailable": False,
            "large": False,
            "premium_tier": g["premium_tier"],
            "joined_at": _now_iso(),
        }

    # ---------------------------------------------------------------- hosted files

    def host_file(
        self,
        filename: str,
        data: bytes | None,
        *,
        content_type: str = "application/octet-stream",
        size: int | None = None,
    ) -> dict[str, Any]:
        """Host a file a member uploaded; returns its attachment object.

        ``data=None`` with a ``size`` makes an attachment that claims that size and is never served
        (a download attempt is recorded and answered 500), so a test can prove the bot did not try."""
        aid = self.snowflake()
        key = f"{aid}/{filename}"
        self.files[key] = HostedFile(data=data, content_type=content_type)
        url = f"{self.base_url}/attachments/{key}"
        return {
            "id": str(aid),
            "filename": filename,
            "size": size if size is not None else len(data or b""),
            "url": url,
            "proxy_url": url,
            "content_type": content_type,
        }

    def downloads(self, attachment: dict[str, Any]) -> int:
        key = attachment["url"].split("/attachments/", 1)[1]
        return self.files[key].downloads

    async def _serve_attachment(self, request: web.Request) -> web.StreamResponse:
        key = request.match_info["key"]
        f = self.files.get(key)
        if f is None:
            return web.Response(status=404)
        f.downloads += 1
        await self._notify()
        if f.data is None:
            return web.Response(status=500, text="this file must never be downloaded")
        return web.Response(body=f.data, headers={"Content-Type": f.content_type})

    def attachment_bytes(self, attachment: dict[str, Any]) -> bytes:
        key = attachment["url"].split("/attachments/", 1)[1]
        data = self.files[key].data
        assert data is not None
        return data

    # ---------------------------------------------------------------- gateway

    async def _gateway(self, request: web.Request) -> web.StreamResponse:
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        if self._ws is not None and not self._ws.closed:
            await self._ws.close()
        self._ws = ws
        await ws.send_str(json.dumps({"op": 10, "d": {"heartbeat_interval": 45000}, "s": None, "t": None}))
        async for msg in ws:
            if msg.type != WSMsgType.TEXT:
                continue
            frame = json.loads(msg.data)
            op = frame.get("op")
            if op == 1:
                await ws.send_str(json.dumps({"op": 11, "d": None, "s": None, "t": None}))
            elif op == 2:
                if frame["d"].get("token") != self.token:
                    await ws.close(code=4004, message=b"Authentication failed.")
                    break
                self.identifies += 1
                await self._identify(ws)
            elif op == 6:
                # No resume support: tell the client to identify again.
                await ws.send_str(json.dumps({"op": 9, "d": False, "s": None, "t": None}))
        if self._ws is ws:
            self._ws = None
        await self._notify()
        return ws

    async def _dispatch_on(self, ws: web.WebSocketResponse, event: str, data: dict[str, Any]) -> None:
        self._seq += 1
        await ws.send_str(json.dumps({"op": 0, "s": self._seq, "t": event, "d": data}))

    async def _identify(self, ws: web.WebSocketResponse) -> None:
        await self._dispatch_on(
            ws,
            "READY",
            {
                "v": 10,
                "user": self.bot_user,
                "guilds": [{"id": str(gid), "unavailable": True} for gid in self.guilds],
                "session_id": f"session-{self.identifies}",
                "resume_gateway_url": self.gateway_url,
                "application": {"id": str(self.app_id), "flags": 0},
                "shard": [0, 1],  # required by AutoShardedBot
                "private_channels": [],
            },
        )
        for gid in self.guilds:
            await self._dispatch_on(ws, "GUILD_CREATE", self._guild_payload(gid))
        await self._notify()

    @property
    def connected(self) -> bool:
        return self._ws is not None and not self._ws.closed

    async def dispatch(self, event: str, data: dict[str, Any]) -> None:
        if self._ws is None or self._ws.closed:
            raise FakeDiscordError("the bot is not connected to the gateway")
        await self._dispatch_on(self._ws, event, data)

    # ---------------------------------------------------------------- what members see

    def channel_messages(self, channel_id: int) -> list[dict[str, Any]]:
        return [
            m
            for mid, m in self.messages.items()
            if int(m["channel_id"]) == channel_id and mid not in self.deleted
        ]

    def post_buttons(self, channel_id: int, ids: tuple[str, ...], content: str = "") -> int:
        """A message from the bot with one button per custom id, as if the bot had posted it
        (for tests of the fake and of one interaction at a time)."""
        row = {"type": 1, "components": [{"type": 2, "style": 1, "label": i, "custom_id": i} for i in ids]}
        msg = self._message(channel_id, {"content": content, "components": [row]}, [])
        self.messages[int(msg["id"])] = msg
        self.edits[int(msg["id"])] = [msg]
        return int(msg["id"])

    def delete_message(self, message_id: int) -> None:
        """A moderator deletes a message in the client."""
        self.deleted.add(message_id)

    def set_upload_limit(self, guild_id: int, attachment_size_limit: int) -> None:
        """What Discord accepts per file in this guild (and reports in interactions), whatever
        discord.py computes from the boost tier."""
        self.guilds[guild_id]["attachment_size_limit"] = attachment_size_limit

    # ---------------------------------------------------------------- REST

    def _message(
        self,
        channel_id: int,
        body: dict[str, Any],
        files: list[tuple[str, bytes]],
        *,
        author: dict[str, Any] | None = None,
        interaction: FakeInteraction | None = None,
        message_id: int | None = None,
    ) -> dict[str, Any]:
        mid = message_id or self.snowflake()
        attachments = self._attachments(mid, body, files, [])
        msg: dict[str, Any] = {
            "id": str(mid),
            "channel_id": str(channel_id),
            "author": author or self.bot_user,
            "content": body.get("content") or "",
            "timestamp": _now_iso(),
            "edited_timestamp": None,
            "tts": bool(body.get("tts")),
            "mention_everyone": False,
            "mentions": [],
            "mention_roles": [],
            "attachments": attachments,
            "embeds": body.get("embeds") or [],
            "type": 0 if interaction is None else 20,
            "pinned": False,
            "flags": int(body.get("flags") or 0),
            "components": _with_component_ids(body.get("components") or []),
        }
        gid = self.channel_guild.get(channel_id)
        if gid is not None:
            msg["guild_id"] = str(gid)
        if interaction is not None:
            msg["webhook_id"] = str(self.app_id)
            msg["application_id"] = str(self.app_id)
            msg["interaction_metadata"] = {
                "id": str(interaction.id),
                "type": interaction.type,
                "user": self.users[interaction.user_id],
                "authorizing_integration_owners": {},
            }
        return msg

    def _attachments(
        self, mid: int, body: dict[str, Any], files: list[tuple[str, bytes]], existing: list[dict[str, Any]]
    ) -> list[dict[str, Any]]:
        """Attachments of a created/edited message: kept ones (by id) plus uploaded files."""
        declared = body.get("attachments")
        out: list[dict[str, Any]] = []
        if declared is None:
            declared = [{"id": i} for i in range(len(files))]
            out = list(existing)
        by_id = {str(a["id"]): a for a in existing}
        for a in declared:
            aid = str(a.get("id"))
            if aid in by_id:
                out.append(by_id[aid])
                continue
            index = int(aid)
            if index >= len(files):
                continue
            filename, data = files[index]
            filename = a.get("filename", filename)
            att_id = self.snowflake()
            key = f"{att_id}/{filename}"
            self.files[key] = HostedFile(data=data, content_type=_guess_type(filename))
            url = f"{self.base_url}/attachments/{key}"
            out.append(
                {
                    "id": str(att_id),
                    "filename": filename,
                    "size": len(data),
                    "url": url,
                    "proxy_url": url,
                    "content_type": _guess_type(filename),
                    "description": a.get("description"),
                }
            )
        return out

    async def _read_body(self, request: web.Request) -> tuple[Any, list[tuple[str, bytes]]]:
        ctype = request.headers.get("Content-Type", "")
        if ctype.startswith("multipart/"):
            payload: Any = None
            files: list[tuple[str, bytes]] = []
            reader = await request.multipart()
            while True:
                part = await reader.next()
                if part is None:
                    break
                name = part.name or ""  # type: ignore[union-attr]
                data = await part.read()  # type: ignore[union-attr]
                if name == "payload_json":
                    payload = json.loads(data)
                elif name.startswith("files["):
                    files.append((part.filename or name, bytes(data)))  # type: ignore[union-attr]
            return payload or {}, files
        raw = await request.read()
        return (json.loads(raw) if raw else None), []

    async def _rest(self, request: web.Request) -> web.Response:
        path = "/" + request.match_info["path"]
        body, files = await self._read_body(request)
        call = RestCall(
            request.method, path, dict(request.query), body, files, request.headers.get("Authorization")
        )
        self.calls.append(call)
        try:
            verdict = self._rate_limit(request.method, path)
            if verdict is not None and not verdict.allowed:
                self.rate_limited += 1
                self.rate_limited_calls.append(call)
                response = _json_response(
                    rate_limited_body(verdict.retry_after, is_global=verdict.is_global), 429
                )
            else:
                response = self._failure(request.method, path) or await self._route(
                    request.method, path, body, files, call
                )
            if verdict is not None:
                response.headers.update(verdict.headers)
                if verdict.allowed and verdict.headers.get("X-RateLimit-Remaining") == "0":
                    self.buckets_exhausted += 1
                    self.exhausted_calls.append(call)
            # discord.py treats a 429 without Via as a Cloudflare ban; Discord's answers carry it.
            response.headers["Via"] = "1.1 google"
            return response
        finally:
            await self._notify()

    def _failure(self, method: str, path: str) -> web.Response | None:
        for i, (match, status, code, message) in enumerate(self.fail_next):
            if match(method, path):
                del self.fail_next[i]
                return _error(status, code, message)
        return None

    def _rate_limit(self, method: str, path: str) -> Verdict | None:
        """The bucket's verdict for this request (None: a route the fake does not limit)."""
        seg = path.strip("/").split("/")
        if not is_interaction_endpoint(seg):
            per_second = RouteLimit(self.limits.global_per_second, 1.0)
            overall = self.buckets.take("global", "bot", per_second)
            if not overall.allowed:
                headers = {"X-RateLimit-Global": "true", "X-RateLimit-Scope": "global"}
                headers["Retry-After"] = overall.headers["Retry-After"]
                return Verdict(False, headers, overall.retry_after, is_global=True)
        route = route_of(method, seg, self.limits)
        if route is None:
            return None
        return self.buckets.take(*route)

    def _file_limit(self, channel_id: int) -> int:
        return int(self.guilds[self.channel_guild[channel_id]]["attachment_size_limit"])

    def _refuse_message(
        self, channel_id: int, body: Any, files: list[tuple[str, bytes]]
    ) -> web.Response | None:
        problem = message_problem(body, files, self.limits, self._file_limit(channel_id))
        return None if problem is None else _json_response(problem[1], problem[0])

    def _bot_auth(self, call: RestCall) -> bool:
        return call.auth == f"Bot {self.token}"

    async def _route(
        self, method: str, path: str, body: Any, files: list[tuple[str, bytes]], call: RestCall
    ) -> web.Response:
        seg = path.strip("/").split("/")
        # Interaction callbacks and webhooks authenticate with the interaction token in the URL.
        if seg[0] == "interactions" and len(seg) == 4 and seg[3] == "callback" and method == "POST":
            return self._callback(int(seg[1]), seg[2], body, files)
        if seg[0] == "webhooks" and len(seg) >= 3:
            return self._webhook(method, seg, body, files)
        if not self._bot_auth(call):
            return _error(401, 0, "401: Unauthorized")
        if path == "/users/@me" and method == "GET":
            return _json_response(self.bot_user)
        if path == "/oauth2/applications/@me" and method == "GET":
            return _json_response(
                {
                    "id": str(self.app_id),
                    "name": "jukebot",
                    "description": "",
                    "icon": None,
                    "bot_public": True,
                    "bot_require_code_grant": False,
                    "owner": self.bot_user,
                    "verify_key": "00",
                    "flags": 0,
                    "team": None,
                }
            )
        if path in ("/gateway/bot", "/gateway") and method == "GET":
            return _json_response(
                {
                    "url": self.gateway_url,
                    "shards": 1,
                    "session_start_limit": {
                        "total": 1000,
                        "remaining": 999,
                        "reset_after": 0,
                        "max_concurrency": 1,
                    },
                }
            )
        if seg[0] == "applications" and seg[-1] == "commands":
            return self._commands(method, seg, body)
        if seg[0] == "channels" and len(seg) >= 3 and seg[2] == "messages":
            return self._channel_messages(method, int(seg[1]), seg[3:], body, files)
        if seg[0] == "channels" and len(seg) == 2 and method == "GET":
            cid = int(seg[1])
            gid = self.channel_guild.get(cid)
            if gid is None:
                return _error(404, 10003, "Unknown Channel")
            return _json_response(self.channel_payload(cid))
        return _error(404, 0, f"404: Not Found ({method} {path} is not in the fake)")

    def _commands(self, method: str, seg: list[str], body: Any) -> web.Response:
        guild_id = int(seg[3]) if len(seg) == 5 and seg[2] == "guilds" else None
        if method == "PUT":
            out = []
            for cmd in body or []:
                c = dict(cmd)
                c.setdefault("type", 1)
                c.setdefault("description", "")  # Discord stores "" for context menus
                c.setdefault("default_member_permissions", None)
                c.setdefault("nsfw", False)
                c["id"] = str(self.snowflake())
                c["application_id"] = str(self.app_id)
                c["version"] = str(self.snowflake())
                if guild_id is not None:
                    c["guild_id"] = str(guild_id)
                out.append(c)
            if guild_id is None:
                self.global_commands = out
            else:
                self.guild_commands[guild_id] = out
            return _json_response(out)
        if method == "GET":
            return _json_response(
                self.global_commands if guild_id is None else self.guild_commands.get(guild_id, [])
            )
        return _error(405, 0, "method not allowed")

    def _channel_messages(
        self, method: str, channel_id: int, rest: list[str], body: Any, files: list[tuple[str, bytes]]
    ) -> web.Response:
        if channel_id not in self.channel_guild:
            return _error(404, 10003, "Unknown Channel")
        if not rest:
            if method == "POST":
                refused = self._refuse_message(channel_id, body, files)
                if refused is not None:
                    return refused
                nonce = str((body or {}).get("nonce") or "")
                earlier = self.nonces.get((channel_id, nonce)) if (body or {}).get("enforce_nonce") else None
                if earlier is not None and time.monotonic() - earlier[1] < NONCE_SECONDS:
                    return _json_response(self.messages[earlier[0]])
                msg = self._message(channel_id, body or {}, files)
                if nonce:
                    msg["nonce"] = nonce
                    self.nonces[(channel_id, nonce)] = (int(msg["id"]), time.monotonic())
                self.messages[int(msg["id"])] = msg
                self.edits[int(msg["id"])] = [msg]
                if self.after_post is not None:
                    self.after_post(msg)
                return _json_response(msg)
            if method == "GET":
                msgs = sorted(self.channel_messages(channel_id), key=lambda m: int(m["id"]), reverse=True)
                return _json_response(msgs[:50])
            return _error(405, 0, "method not allowed")
        mid = int(rest[0])
        found = self.messages.get(mid)
        if found is None or mid in self.deleted or int(found["channel_id"]) != channel_id:
            return _error(404, 10008, "Unknown Message")
        if method == "GET":
            return _json_response(found)
        if method == "DELETE":
            self.deleted.add(mid)
            return web.Response(status=204)
        if method == "PATCH":
            if found["author"]["id"] != self.bot_user["id"]:
                return _error(403, 50005, "Cannot edit a message authored by another user")
            refused = self._refuse_message(channel_id, body, files)
            if refused is not None:
                return refused
            return _json_response(self._edit(mid, body or {}, files))
        return _error(405, 0, "method not allowed")

    def _edit(self, mid: int, body: dict[str, Any], files: list[tuple[str, bytes]]) -> dict[str, Any]:
        msg = dict(self.messages[mid])
        if "content" in body:
            msg["content"] = body["content"] or ""
        if "embeds" in body:
            msg["embeds"] = body["embeds"] or []
        if "components" in body:
            msg["components"] = _with_component_ids(body["components"] or [])
        if "flags" in body and body["flags"] is not None:
            msg["flags"] = int(body["flags"])
        if "attachments" in body or files:
            msg["attachments"] = self._attachments(mid, body, files, msg["attachments"])
        msg["edited_timestamp"] = _now_iso()
        self.messages[mid] = msg
        self.edits.setdefault(mid, []).append(msg)
        return msg

    def _callback(self, iid: int, token: str, body: Any, files: list[tuple[str, bytes]]) -> web.Response:
        ix = self.interactions.get(iid)
        if ix is None or ix.token != token:
            return _error(404, 10062, "Unknown interaction")
        if ix.callbacks:
            return _error(400, 40060, "Interaction has already been acknowledged.")
        if time.monotonic() - ix.created_at > self.limits.interaction_deadline:
            # Past the 3 s deadline Discord has already told the member "the application did
            # not respond" and invalidated the token.
            self.late_callbacks.append(ix)
            return _error(404, 10062, "Unknown interaction")
        ctype = body["type"]
        data = body.get("data") or {}
        if ctype in (CB_MESSAGE, CB_UPDATE):
            refused = self._refuse_message(ix.channel_id, data, files)
            if refused is not None:
                return refused
        ix.callbacks.append(body)
        result: dict[str, Any] = {"interaction": {"id": str(iid), "type": ix.type}}
        if ctype in (CB_MESSAGE, CB_DEFER):
            msg = self._message(
                ix.channel_id,
                data if ctype == CB_MESSAGE else {"flags": data.get("flags", 0)},
                files,
                interaction=ix,
            )
            ix.original = msg
            if not int(msg["flags"]) & EPHEMERAL:
                self.messages[int(msg["id"])] = msg
                self.edits[int(msg["id"])] = [msg]
            result["interaction"].update(
                {
                    "response_message_id": msg["id"],
                    "response_message_loading": ctype == CB_DEFER,
                    "response_message_ephemeral": bool(int(msg["flags"]) & EPHEMERAL),
                }
            )
            result["resource"] = {"type": ctype, "message": msg}
        elif ctype == CB_UPDATE:
            target = int(ix.payload["message"]["id"])
            if target in self.messages and target not in self.deleted:
                self._edit(target, data, files)
            result["resource"] = {"type": ctype}
        else:
            result["resource"] = {"type": ctype}
        return _json_response(result)

    def _webhook(
        self, method: str, seg: list[str], body: Any, files: list[tuple[str, bytes]]
    ) -> web.Response:
        ix = self._by_token.get(seg[2])
        if ix is None or seg[1] != str(self.app_id):
            return _error(401, 50027, "Invalid Webhook Token")
        age = time.monotonic() - ix.created_at
        if age > self.limits.interaction_token_seconds:
            return _error(401, 50027, "Invalid Webhook Token")
        if not ix.callbacks:
            # Followups and edits need an acknowledged interaction; an unanswered one past its
            # deadline has no webhook at all.
            return _error(404, 10015, "Unknown Webhook")
        if method in ("POST", "PATCH"):
            refused = self._refuse_message(ix.channel_id, body, files)
            if refused is not None:
                return refused
        if len(seg) == 3 and method == "POST":
            msg = self._message(ix.channel_id, body or {}, files, interaction=ix)
            ix.followups.append(msg)
            if not int(msg["flags"]) & EPHEMERAL:
                self.messages[int(msg["id"])] = msg
                self.edits[int(msg["id"])] = [msg]
            return _json_response(msg)
        if len(seg) == 5 and seg[3] == "messages":
            which = seg[4]
            target: dict[str, Any] | None
            if which == "@original":
                target = ix.original
            else:
                target = next((m for m in ix.followups if m["id"] == which), None)
            if target is None:
                return _error(404, 10008, "Unknown Message")
            if method == "GET":
                return _json_response(target)
            if method == "DELETE":
                self.deleted.add(int(target["id"]))
                return web.Response(status=204)
            if method == "PATCH":
                mid = int(target["id"])
                if mid not in self.messages:
                    self.messages[mid] = target  # ephemeral originals are kept here only to edit them
                edited = self._edit(mid, body or {}, files)
                if int(target["flags"]) & EPHEMERAL:
                    del self.messages[mid]
                if which == "@original":
                    ix.original = edited
                else:
                    ix.followups = [edited if m["id"] == which else m for m in ix.followups]
                return _json_response(edited)
        return _error(404, 0, "404: Not Found")
