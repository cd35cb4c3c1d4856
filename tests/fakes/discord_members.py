"""Members acting in the fake Discord (tests/fakes/discord.py): slash commands with autocomplete,
button clicks, context menus and modals, each dispatched to the bot as an INTERACTION_CREATE whose
payload is complete as Discord sends it (so a channel the bot has not cached does not crash it)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from tests.fakes.discord_model import (
    APPLICATION_COMMAND,
    AUTOCOMPLETE,
    CB_AUTOCOMPLETE,
    CB_MESSAGE,
    CB_MODAL,
    CB_UPDATE,
    MESSAGE_COMPONENT,
    MODAL_SUBMIT,
    OPT_ATTACHMENT,
    OPT_CHANNEL,
    OPT_GROUP,
    OPT_INTEGER,
    OPT_NUMBER,
    OPT_ROLE,
    OPT_STRING,
    OPT_SUB,
    FakeDiscordError,
    FakeInteraction,
    _message_text,
    buttons,
    custom_ids,
)

if TYPE_CHECKING:
    from tests.fakes.discord import FakeDiscord

    _Base = FakeDiscord
else:
    _Base = object


class MembersActing(_Base):
    """Mixed into FakeDiscord: what a member can do in the client."""

    # ---------------------------------------------------------------- members acting

    def _interaction_base(
        self, itype: int, user_id: int, channel_id: int, data: dict[str, Any]
    ) -> FakeInteraction:
        gid = self.channel_guild[channel_id]
        g = self.guilds[gid]
        if user_id not in g["members"]:
            raise FakeDiscordError("the user is not a member of this guild")
        iid = self.snowflake()
        token = f"itoken-{iid}"
        payload = {
            "id": str(iid),
            "application_id": str(self.app_id),
            "type": itype,
            "data": data,
            "token": token,
            "version": 1,
            "guild_id": str(gid),
            "channel_id": str(channel_id),
            # Complete, as Discord sends it: discord.py builds the channel from it when the
            # channel is not in its cache (TextChannel needs 'position').
            "channel": {**self.channel_payload(channel_id), "permissions": str((1 << 53) - 1)},
            "member": self._member_payload(gid, user_id, with_permissions=True),
            "app_permissions": str((1 << 53) - 1),
            "locale": "en-US",
            "guild_locale": "en-US",
            "entitlements": [],
            "authorizing_integration_owners": {"0": str(gid)},
            "context": 0,
            "attachment_size_limit": g["attachment_size_limit"],  # required since discord.py 2.6
        }
        ix = FakeInteraction(
            id=iid,
            token=token,
            type=itype,
            user_id=user_id,
            channel_id=channel_id,
            guild_id=gid,
            payload=payload,
        )
        self.interactions[iid] = ix
        self._by_token[token] = ix
        return ix

    def _find_command(self, name: str, guild_id: int, ctype: int = 1) -> dict[str, Any]:
        for cmd in [*self.guild_commands.get(guild_id, []), *self.global_commands]:
            if cmd["name"] == name and cmd.get("type", 1) == ctype:
                return cmd
        raise FakeDiscordError(f"no synced command {name!r} (type {ctype})")

    def _build_options(
        self,
        definition: dict[str, Any],
        path: list[str],
        values: dict[str, Any],
        focused: str | None,
        resolved: dict[str, Any],
    ) -> list[dict[str, Any]]:
        if path:
            sub = next((o for o in definition.get("options", []) if o["name"] == path[0]), None)
            if sub is None or sub["type"] not in (OPT_SUB, OPT_GROUP):
                raise FakeDiscordError(f"no subcommand {path[0]!r}")
            return [
                {
                    "type": sub["type"],
                    "name": sub["name"],
                    "options": self._build_options(sub, path[1:], values, focused, resolved),
                }
            ]
        opts = {o["name"]: o for o in definition.get("options", [])}
        for name in values:
            if name not in opts:
                raise FakeDiscordError(f"the command has no option {name!r}")
        if focused is None:
            for o in opts.values():
                if o.get("required") and o["name"] not in values:
                    raise FakeDiscordError(f"Discord requires option {o['name']!r}")
        out: list[dict[str, Any]] = []
        for name, value in values.items():
            o = opts[name]
            t = o["type"]
            entry: dict[str, Any] = {"name": name, "type": t}
            if t == OPT_ATTACHMENT:
                resolved.setdefault("attachments", {})[value["id"]] = value
                entry["value"] = value["id"]
            elif t == OPT_CHANNEL:
                gid = self.channel_guild[int(value)]
                resolved.setdefault("channels", {})[str(value)] = {
                    "id": str(value),
                    "type": 0,
                    "name": self.guilds[gid]["channels"][int(value)]["name"],
                    "permissions": str((1 << 53) - 1),
                    "guild_id": str(gid),
                    "parent_id": None,
                }
                entry["value"] = str(value)
            elif t == OPT_ROLE:
                role = self._role_payload(int(value))
                resolved.setdefault("roles", {})[str(value)] = role
                entry["value"] = str(value)
            elif name == focused:
                entry["value"] = str(value)  # autocomplete sends the partial text as typed
                entry["focused"] = True
            else:
                # Discord's client enforces types and min/max (client-side only).
                if t == OPT_INTEGER:
                    value = int(value)
                elif t == OPT_NUMBER:
                    value = float(value)
                elif t == OPT_STRING:
                    value = str(value)
                    if "max_length" in o and len(value) > o["max_length"]:
                        raise FakeDiscordError(f"Discord's client caps {name!r} at {o['max_length']} chars")
                if t in (OPT_INTEGER, OPT_NUMBER):
                    if "min_value" in o and value < o["min_value"]:
                        raise FakeDiscordError(f"Discord's client refuses {name}={value} < {o['min_value']}")
                    if "max_value" in o and value > o["max_value"]:
                        raise FakeDiscordError(f"Discord's client refuses {name}={value} > {o['max_value']}")
                entry["value"] = value
            out.append(entry)
        return out

    async def command(
        self,
        user_id: int,
        channel_id: int,
        name: str,
        options: dict[str, Any] | None = None,
        *,
        focused: str | None = None,
    ) -> FakeInteraction:
        """A member runs a slash command (``name`` may be 'mod channels' for a subcommand).

        With ``focused`` it is an autocomplete request for that option instead."""
        parts = name.split()
        gid = self.channel_guild[channel_id]
        cmd = self._find_command(parts[0], gid)
        resolved: dict[str, Any] = {}
        data: dict[str, Any] = {
            "id": cmd["id"],
            "name": cmd["name"],
            "type": 1,
            "options": self._build_options(cmd, parts[1:], options or {}, focused, resolved),
        }
        if cmd.get("guild_id"):
            data["guild_id"] = cmd["guild_id"]
        if resolved:
            data["resolved"] = resolved
        ix = self._interaction_base(
            AUTOCOMPLETE if focused else APPLICATION_COMMAND, user_id, channel_id, data
        )
        await self.dispatch("INTERACTION_CREATE", ix.payload)
        return ix

    async def autocomplete(
        self,
        user_id: int,
        channel_id: int,
        name: str,
        options: dict[str, Any],
        focused: str,
        timeout: float = 5.0,
    ) -> list[dict[str, Any]]:
        ix = await self.command(user_id, channel_id, name, options, focused=focused)
        await self.wait_for(lambda: CB_AUTOCOMPLETE in ix.callback_types, timeout, "autocomplete answer")
        return ix.choices

    async def message_command(self, user_id: int, message_id: int, name: str) -> FakeInteraction:
        """A member uses a message context-menu command on a message."""
        msg = self.messages[message_id]
        channel_id = int(msg["channel_id"])
        gid = self.channel_guild[channel_id]
        cmd = self._find_command(name, gid, ctype=3)
        data = {
            "id": cmd["id"],
            "name": name,
            "type": 3,
            "target_id": str(message_id),
            "resolved": {"messages": {str(message_id): msg}},
        }
        ix = self._interaction_base(APPLICATION_COMMAND, user_id, channel_id, data)
        await self.dispatch("INTERACTION_CREATE", ix.payload)
        return ix

    async def click(
        self, user_id: int, message_id: int, custom_id: str, *, seen: dict[str, Any] | None = None
    ) -> FakeInteraction:
        """A member presses a button on a message. `seen`: the version of the message the member's
        client still shows (a client that has not caught up with an edit yet)."""
        if message_id in self.deleted:
            raise FakeDiscordError("the message was deleted")
        msg = seen or self.messages[message_id]
        if custom_id not in custom_ids(msg):
            raise FakeDiscordError(f"no component {custom_id!r} on message {message_id}: {custom_ids(msg)}")
        button = next(b for b in buttons(msg) if b.get("custom_id") == custom_id)
        if button.get("disabled"):
            raise FakeDiscordError(f"button {custom_id!r} is disabled; Discord would not send the click")
        data = {"custom_id": custom_id, "component_type": 2}
        ix = self._interaction_base(MESSAGE_COMPONENT, user_id, int(msg["channel_id"]), data)
        ix.payload["message"] = msg
        await self.dispatch("INTERACTION_CREATE", ix.payload)
        return ix

    async def submit_modal(
        self, user_id: int, opened_by: FakeInteraction, values: dict[str, str]
    ) -> FakeInteraction:
        """A member fills in the modal the bot opened in answer to ``opened_by`` and submits it."""
        modal = opened_by.modal
        if modal is None:
            raise FakeDiscordError("no modal was opened")
        rows = []
        for row in modal["components"]:
            comps = []
            for c in row.get("components", [row.get("component")] if row.get("component") else []):
                if c is None:
                    continue
                comps.append(
                    {
                        "type": c["type"],
                        "custom_id": c["custom_id"],
                        "value": values.get(c["custom_id"], c.get("value", "")),
                    }
                )
            if row.get("type") == 18:  # label component (components v2 modals)
                rows.append({"type": 18, "component": comps[0]})
            else:
                rows.append({"type": 1, "components": comps})
        data = {"custom_id": modal["custom_id"], "components": rows}
        ix = self._interaction_base(MODAL_SUBMIT, user_id, opened_by.channel_id, data)
        if opened_by.type == MESSAGE_COMPONENT:
            ix.payload["message"] = opened_by.payload["message"]
        await self.dispatch("INTERACTION_CREATE", ix.payload)
        return ix

    async def answered(self, ix: FakeInteraction, timeout: float = 5.0) -> FakeInteraction:
        """Wait until the bot sent the first response to an interaction."""
        await self.wait_for(lambda: ix.callbacks, timeout, f"a response to interaction {ix.id}")
        return ix

    async def settled(self, ix: FakeInteraction, timeout: float = 10.0) -> FakeInteraction:
        """Wait until the interaction has a visible answer: a message, an edited deferred
        response, a followup, a modal or an autocomplete result."""

        def done() -> bool:
            types = ix.callback_types
            if any(t in (CB_MESSAGE, CB_UPDATE, CB_MODAL, CB_AUTOCOMPLETE) for t in types):
                return True
            if ix.followups:
                return True
            return ix.original is not None and bool(
                _message_text(ix.original) or ix.original.get("attachments")
            )

        await self.wait_for(done, timeout, f"an answer to interaction {ix.id}")
        return ix
