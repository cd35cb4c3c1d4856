"""`jukebot publish …`: the one-time logins, the publications table, and running due uploads now.

    jukebot publish auth soundcloud [--guild ID] [--code URL_OR_CODE | --no-listen]
    jukebot publish auth x [--oauth2] [--guild ID]   (1.0a keys come from the settings; this checks them)
    jukebot publish logout soundcloud|x --guild ID   (a server's own account; it falls back to the shared one)

`--guild ID` logs in a server's OWN account: that server's clips go there instead of to the
operator's shared account (publisher/accounts.py).
    jukebot publish status [--limit N]
    jukebot publish run [--platform x]
    jukebot publish retry ID                (a failed publication, with fresh attempts)

Heavy imports stay inside the commands so `jukebot --help` stays fast.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

import typer

from engine.commands.output import naming

if TYPE_CHECKING:
    from db.database import Database
    from db.settings import Settings
    from publisher.oauth import OAuthClient

app = typer.Typer(
    no_args_is_help=True, pretty_exceptions_show_locals=False, help="Publishing to X and SoundCloud."
)
auth_app = typer.Typer(
    no_args_is_help=True,
    pretty_exceptions_show_locals=False,
    help="One-time logins to X and SoundCloud (tokens are stored in the database).",
)
app.add_typer(auth_app, name="auth")

_CODE = typer.Option(None, "--code", help="The redirect URL (or just the code) the browser landed on.")
_GUILD = typer.Option(
    None,
    "--guild",
    help="A Discord server's id: log in that server's own account (its clips go there, not to yours).",
)
_NO_LISTEN = typer.Option(
    False, "--no-listen", help="Do not listen on the redirect URI; ask for the URL instead."
)


def _fail(message: str) -> typer.Exit:
    typer.secho(f"Error: {message}", fg=typer.colors.RED, err=True)
    return typer.Exit(1)


def _open() -> tuple[Settings, Database]:
    from db.database import DatabaseUnavailable
    from db.migrate import open_database
    from db.settings import get_settings

    settings = get_settings()
    try:
        return settings, open_database(settings.storage.database_url)
    except DatabaseUnavailable as exc:
        raise _fail(naming(str(exc), "JUKEBOT_DATABASE_URL")) from None


def _login(
    settings: Settings,
    db: Database,
    provider: str,
    oauth: OAuthClient,
    authorize_endpoint: str,
    scope: str,
    code: str | None,
    no_listen: bool,
    guild: int | None = None,
) -> None:
    """Authorization code + PKCE: print the URL, get the code back, exchange it, store the tokens
    (under the server `guild` when given: its own account)."""
    import httpx

    from publisher.errors import PublishError
    from publisher.oauth import authorize_url, code_from_redirect, make_pkce, wait_for_redirect
    from publisher.tokens import SHARED, save_token

    pkce = make_pkce()
    redirect = settings.publish.oauth_redirect_uri
    url = authorize_url(
        authorize_endpoint, client_id=oauth.client_id, redirect_uri=redirect, pkce=pkce, scope=scope
    )
    typer.echo(f"Open this address in a browser and allow jukebot:\n\n  {url}\n")
    try:
        if code:
            got = code_from_redirect(code, pkce.state) if "?" in code else code.strip()
        elif no_listen:
            pasted = typer.prompt("Paste the address the browser was sent to")
            got = code_from_redirect(pasted, pkce.state)
        else:
            typer.echo(f"Waiting for the browser at {redirect} …")
            got = wait_for_redirect(redirect, pkce.state)

        async def exchange() -> None:
            async with httpx.AsyncClient(timeout=30) as http:
                tokens = await oauth.exchange_code(
                    http, code=got, redirect_uri=redirect, verifier=pkce.verifier
                )
            await asyncio.to_thread(save_token, db, provider, tokens, guild_id=guild or SHARED)

        asyncio.run(exchange())
    except PublishError as exc:
        raise _fail(exc.message) from None
    except (OSError, ValueError) as exc:  # the redirect port is taken, or not on this machine
        raise _fail(
            f"cannot wait for the browser at {redirect} ({exc}); use --no-listen and paste the address."
        ) from None
    whose = f"server {guild}'s own account" if guild else "the shared account"
    typer.echo(f"{provider}: logged in ({whose}); the tokens are stored, encrypted, in the database.")


def _check_guild(guild: int | None) -> None:
    if guild is not None and guild <= 0:
        raise _fail(f"--guild {guild} is not a Discord server id (a positive number).")


@auth_app.command("soundcloud")
def auth_soundcloud(
    code: str | None = _CODE, no_listen: bool = _NO_LISTEN, guild: int | None = _GUILD
) -> None:
    """Log jukebot in to SoundCloud (OAuth 2.1 with PKCE); needed once, refreshed automatically."""
    from publisher.errors import PublishError
    from publisher.soundcloud_client import soundcloud_oauth

    _check_guild(guild)
    settings, db = _open()
    try:
        oauth = soundcloud_oauth(settings)
    except PublishError as exc:
        raise _fail(exc.message) from None
    try:
        _login(
            settings,
            db,
            "soundcloud",
            oauth,
            f"{settings.soundcloud.auth_base.rstrip('/')}/authorize",
            "",
            code,
            no_listen,
            guild,
        )
    finally:
        db.dispose()


@auth_app.command("x")
def auth_x(
    oauth2: bool = typer.Option(False, "--oauth2", help="Log in with OAuth 2.0 (PKCE) instead of 1.0a keys."),
    code: str | None = _CODE,
    no_listen: bool = _NO_LISTEN,
    guild: int | None = _GUILD,
) -> None:
    """Check the X OAuth 1.0a keys (they never expire), or log in with OAuth 2.0 + PKCE (--oauth2;
    always for a server's own account, --guild)."""
    import httpx

    from publisher.errors import PublishError
    from publisher.platforms import x_oauth
    from publisher.tokens import SHARED, TokenManager
    from publisher.x_client import X_SCOPES, OAuth2UserAuth, XAuth, XClient, x_auth_from_settings

    _check_guild(guild)
    settings, db = _open()
    try:
        if oauth2 or guild:
            try:
                oauth = x_oauth(settings)
            except PublishError as exc:
                raise _fail(exc.message) from None
            _login(settings, db, "x", oauth, settings.x.authorize_url, X_SCOPES, code, no_listen, guild)

        async def whoami() -> str:
            async with httpx.AsyncClient(timeout=30) as http:
                tokens = (
                    TokenManager(db, "x", x_oauth(settings), http, label="X", guild_id=guild or SHARED)
                    if settings.x.client_id
                    else None
                )
                auth: XAuth = (
                    OAuth2UserAuth(tokens) if guild and tokens else x_auth_from_settings(settings, tokens)
                )
                client = XClient(settings.x.api_base, auth, http)
                return (await client.me()).username

        try:
            username = asyncio.run(whoami())
        except PublishError as exc:
            raise _fail(exc.message) from None
        typer.echo(f"X: posting as @{username}.")
    finally:
        db.dispose()


@app.command("logout")
def logout_command(
    provider: str = typer.Argument(..., help="soundcloud or x"),
    guild: int = typer.Option(..., "--guild", help="The server whose own account to forget."),
) -> None:
    """Forget a server's own login: its clips go to the shared account again (if the owner allows)."""
    from publisher.tokens import delete_token

    if provider not in ("soundcloud", "x"):
        raise _fail(f"{provider!r} is not a platform jukebot publishes to (soundcloud or x).")
    _check_guild(guild)
    _, db = _open()
    try:
        gone = delete_token(db, provider, guild)
    finally:
        db.dispose()
    if not gone:
        raise _fail(f"server {guild} has no {provider} account of its own.")
    typer.echo(f"{provider}: server {guild}'s own login is forgotten.")


@app.command("status")
def status_command(limit: int = typer.Option(30, "--limit", "-n", help="How many recent rows.")) -> None:
    """The most recent publications and where each stands."""
    from rich.console import Console
    from rich.table import Table

    from publisher.runner import publication_table

    _settings, db = _open()
    try:
        rows = publication_table(db, limit)
    finally:
        db.dispose()
    table = Table("id", "clip", "title", "platform", "state", "tries", "when (UTC)", "link or last error")
    for pub, title in rows:
        when = pub.published_at or pub.scheduled_for
        detail = pub.remote_url or pub.last_error or ""
        table.add_row(
            str(pub.id),
            str(pub.clip_id),
            title[:40],
            pub.platform,
            pub.state,
            f"{pub.attempts}/{pub.max_attempts}",
            f"{when:%Y-%m-%d %H:%M}",
            detail[:80],
        )
    Console().print(table if rows else "No publications yet.")


@app.command("run")
def run_command(
    platform: list[str] = typer.Option(None, "--platform", "-p", help="Only this platform (repeatable)."),
) -> None:
    """Run the publications that are due now (uploads, retries, checks of unclear ones)."""
    from db.storage import StorageUnavailable, get_storage
    from publisher.runner import run_due_publications

    settings, db = _open()

    async def echo(message: str) -> None:
        typer.echo(message, err=True)

    try:
        try:
            storage = get_storage(settings)
        except StorageUnavailable as exc:
            raise _fail(naming(str(exc), "JUKEBOT_STORAGE_URL")) from None
        results = asyncio.run(run_due_publications(db, storage, settings, echo, platforms=platform or None))
    finally:
        db.dispose()
    for r in results:
        typer.echo(
            f"#{r.publication_id} clip {r.clip_id} {r.platform}: {r.state} — {r.remote_url or r.message}"
        )
    if not results:
        typer.echo("Nothing was due.")


@app.command("retry")
def retry_command(
    publication_id: int = typer.Argument(..., help="The publication's id (see `status`)."),
) -> None:
    """Schedule a failed publication again, now, with fresh attempts."""
    from publisher.state import retry_failed

    _, db = _open()
    try:
        ok = retry_failed(db, publication_id)
    finally:
        db.dispose()
    if not ok:
        raise _fail(
            f"publication {publication_id} is not in the failed state (see `jukebot publish status`)."
        )
    typer.echo(f"Publication {publication_id} is scheduled again; it goes out at the next run or sweep.")
