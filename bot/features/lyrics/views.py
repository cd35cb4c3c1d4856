"""Discord UI for lyric drafts: the draft card, Use / Regenerate / Edit buttons and the edit modal.

A thin adapter: the rules live in `lyrics.session` (who may press, how often, what Use returns) and
the wording in `lyrics.present`. `present_draft` is the one call a command needs:

    await present_draft(interaction, request, settings=bot.settings, on_use=start_song)

`on_use(interaction, lyrics)` is called with the Use button's interaction NOT yet responded to; it
must respond (send a message or defer) within Discord's 3 seconds. Without it, Use answers with the
lyrics ready to paste into /generate.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Awaitable, Callable
from typing import Any

import discord

from bot.errors import explain
from bot.ratelimit import DraftBudget
from db.settings import Settings
from lyrics.draft import LyricsDraft
from lyrics.errors import LyricsError
from lyrics.present import DRAFTING, draft_card, fit_for_message, generate_hint
from lyrics.request import LyricsRequest
from lyrics.session import DraftSession, stream_with_previews

log = logging.getLogger("jukebot.bot.lyrics")

OnUse = Callable[[discord.Interaction[Any], str], Awaitable[None]]

VIEW_TIMEOUT = 14 * 60  # the interaction token that edits an ephemeral draft lasts 15 minutes
MODAL_MAX_CHARS = 4000  # Discord's limit for a text input


def card_embed(draft: LyricsDraft) -> discord.Embed:
    card = draft_card(draft)
    embed = discord.Embed(
        title=card.title[:256], description=card.body[:4096], colour=discord.Colour.blurple()
    )
    if card.changes:
        embed.add_field(
            name="What I changed so the model can sing it", value=card.changes[:1024], inline=False
        )
    embed.set_footer(text=card.footer[:2048])
    return embed


class LyricsEditModal(discord.ui.Modal):
    def __init__(self, view: LyricsDraftView) -> None:
        super().__init__(title="Edit the lyrics", timeout=VIEW_TIMEOUT)
        self.draft_view = view
        self.text: discord.ui.TextInput[LyricsEditModal] = discord.ui.TextInput(
            label="Lyrics (a blank line starts a new section)",
            style=discord.TextStyle.paragraph,
            default=view.session.draft.lyrics[:MODAL_MAX_CHARS],
            max_length=MODAL_MAX_CHARS,
            required=True,
        )
        self.add_item(self.text)

    async def on_submit(self, interaction: discord.Interaction) -> None:
        await self.draft_view.apply_edit(interaction, self.text.value)


class LyricsDraftView(discord.ui.View):
    """The draft card's buttons. Every later change of the card goes through `edit_original`: the
    token of the command that showed the draft (set by `present_draft`), which edits that message
    for 15 minutes whatever a button's own interaction was answered with."""

    def __init__(self, session: DraftSession, *, settings: Settings, on_use: OnUse | None = None) -> None:
        super().__init__(timeout=VIEW_TIMEOUT)
        self.session = session
        self.settings = settings
        self.on_use = on_use
        self.edit_original: Callable[..., Awaitable[object]] | None = None

    def _enable(self, enabled: bool) -> None:
        for item in self.children:
            if isinstance(item, discord.ui.Button):
                item.disabled = not enabled

    async def _edit_card(self, interaction: discord.Interaction, **fields: Any) -> None:
        if self.edit_original is not None:
            await self.edit_original(**fields)
        else:  # a view shown by other code: the button's interaction must have deferred or updated
            await interaction.edit_original_response(**fields)

    async def interaction_check(self, interaction: discord.Interaction) -> bool:
        why = self.session.refuse(interaction.user.id)
        if why:
            await interaction.response.send_message(why, ephemeral=True)
            return False
        return True

    async def on_error(
        self, interaction: discord.Interaction, error: Exception, item: discord.ui.Item[LyricsDraftView]
    ) -> None:
        message = (
            str(error) if isinstance(error, LyricsError) else explain(error, where="lyrics draft button")
        )
        await _tell(interaction, message)

    async def on_timeout(self) -> None:
        self._enable(False)
        if self.edit_original is not None:
            with contextlib.suppress(discord.HTTPException):  # message gone or token expired
                await self.edit_original(view=self)

    @discord.ui.button(label="Use", style=discord.ButtonStyle.success, emoji="✅")
    async def use(self, interaction: discord.Interaction, button: discord.ui.Button[LyricsDraftView]) -> None:
        lyrics = self.session.use()
        draft = self.session.draft
        self._enable(False)
        if self.on_use is None:
            self.stop()
            await interaction.response.edit_message(view=self)
            hint = generate_hint(
                lyrics, artist=draft.request.artist, genre=draft.request.genre, seconds=draft.request.seconds
            )
            await interaction.followup.send(fit_for_message(hint), ephemeral=True)
            return
        try:
            await self.on_use(interaction, lyrics)
        except Exception:
            self.session.used = False  # nothing was started: let the member try again
            self._enable(True)
            raise
        self.stop()
        try:
            if interaction.response.is_done():
                await self._edit_card(interaction, view=self)
            else:
                await interaction.response.edit_message(view=self)
        except discord.HTTPException:
            log.info("could not disable the buttons of a used lyrics draft", exc_info=True)

    @discord.ui.button(label="Regenerate", style=discord.ButtonStyle.secondary, emoji="🔁")
    async def regenerate(
        self, interaction: discord.Interaction, button: discord.ui.Button[LyricsDraftView]
    ) -> None:
        why = self.session.refuse_regenerate() or take_draft_budget(interaction)
        if why:
            await interaction.response.send_message(why, ephemeral=True)
            return
        self.session.start()
        self._enable(False)
        await interaction.response.edit_message(content=DRAFTING, embed=None, view=self)

        async def show(text: str) -> None:
            await self._edit_card(interaction, content=fit_for_message(text))

        new: LyricsDraft | None = None
        problem: str | None = None
        try:
            new = await stream_with_previews(self.session.draft.request, settings=self.settings, show=show)
        except LyricsError as exc:
            problem = f"{exc} (your previous draft is still here)"
        except Exception as exc:
            problem = explain(exc, where="lyrics regenerate")
        self.session.regenerated(new)
        self._enable(True)
        await self._edit_card(interaction, content=None, embed=card_embed(self.session.draft), view=self)
        if problem:
            await interaction.followup.send(problem, ephemeral=True)

    @discord.ui.button(label="Edit", style=discord.ButtonStyle.secondary, emoji="✏️")
    async def edit(
        self, interaction: discord.Interaction, button: discord.ui.Button[LyricsDraftView]
    ) -> None:
        await interaction.response.send_modal(LyricsEditModal(self))

    async def apply_edit(self, interaction: discord.Interaction, text: str) -> None:
        why = self.session.refuse(interaction.user.id)
        if why:
            await interaction.response.send_message(why, ephemeral=True)
            return
        await interaction.response.defer()  # moderation may take longer than Discord's 3 seconds
        try:
            draft = await self.session.edit(text, settings=self.settings)
        except LyricsError as exc:
            await interaction.followup.send(f"{exc} (the draft was not changed)", ephemeral=True)
            return
        await self._edit_card(interaction, content=None, embed=card_embed(draft), view=self)


def take_draft_budget(interaction: discord.Interaction) -> str | None:
    """Count one call to the text model against the member's and the server's budgets (the bot's
    `lyric_budget`); the reason it is refused otherwise."""
    budget: DraftBudget | None = getattr(interaction.client, "lyric_budget", None)
    return budget.take(interaction.user.id, interaction.guild_id) if budget is not None else None


async def _tell(interaction: discord.Interaction, message: str) -> None:
    try:
        if interaction.response.is_done():
            await interaction.followup.send(message, ephemeral=True)
        else:
            await interaction.response.send_message(message, ephemeral=True)
    except discord.HTTPException:
        log.info("could not tell a member about a lyrics problem", exc_info=True)


async def present_draft(
    interaction: discord.Interaction,
    request: LyricsRequest,
    *,
    settings: Settings,
    on_use: OnUse | None = None,
    ephemeral: bool = True,
) -> LyricsDraftView | None:
    """Answer `interaction` (a slash command, not yet responded to) with a streamed draft, then the
    draft card with its buttons. Problems are told to the member; returns None then."""
    refused = take_draft_budget(interaction)
    if refused:
        await interaction.response.send_message(refused, ephemeral=True)
        return None
    await interaction.response.send_message(DRAFTING, ephemeral=ephemeral)

    async def show(text: str) -> None:
        await interaction.edit_original_response(content=fit_for_message(text))

    try:
        draft = await stream_with_previews(request, settings=settings, show=show)
    except LyricsError as exc:
        await interaction.edit_original_response(content=str(exc))
        return None
    except Exception as exc:
        await interaction.edit_original_response(content=explain(exc, where="lyrics draft"))
        return None
    view = LyricsDraftView(
        DraftSession(draft, author_id=interaction.user.id), settings=settings, on_use=on_use
    )
    view.edit_original = interaction.edit_original_response
    await interaction.edit_original_response(content=None, embed=card_embed(draft), view=view)
    return view
