"""The `jukebot` command line. Each feature owns its commands in its own package's cli module;
this file only assembles them. Heavy imports (torch, discord) stay inside the commands, so
`jukebot db upgrade` or `jukebot doctor` start fast and the bot never loads torch.
"""

from __future__ import annotations

import typer

from db.cli import app as db_app
from db.cli import doctor
from db.settings import SettingsError
from engine.cli import register as register_engine
from lyrics.cli import register as register_lyrics
from publisher.cli import app as publish_app

app = typer.Typer(
    name="jukebot",
    help="A Discord music studio on OpenAI's Jukebox.",
    no_args_is_help=True,
    pretty_exceptions_show_locals=False,
)
app.add_typer(db_app, name="db", help="Database schema.")
app.add_typer(publish_app, name="publish", help="Publishing to X and SoundCloud.")
app.command("doctor", help="Check the database, storage, ffmpeg, GPU and credentials.")(doctor)
register_engine(app)
register_lyrics(app)


@app.command("bot", help="Run the Discord bot with its scheduler (and a local worker on SQLite).")
def bot_command(
    no_worker: bool = typer.Option(False, "--no-worker", help="Do not start a local worker process."),
    sync_commands: bool = typer.Option(False, "--sync", help="Sync slash commands with Discord."),
) -> None:
    import aiohttp

    from bot.main import run_bot

    try:
        code = run_bot(start_worker=not no_worker, sync_commands=sync_commands)
    except (aiohttp.ClientConnectionError, TimeoutError) as e:
        # Discord (or JUKEBOT_DISCORD_API_BASE) cannot be reached: a reason, not a traceback.
        why = " ".join(str(e).split()) or type(e).__name__
        typer.echo(
            f"jukebot: Cannot reach Discord ({why}). Check the network, or JUKEBOT_DISCORD_API_BASE "
            "if it is set; nothing was lost, start the bot again when Discord can be reached.",
            err=True,
        )
        code = 1
    raise typer.Exit(code)


def main() -> None:
    """The `jukebot` command: a bad setting is one line on stderr, not a traceback."""
    try:
        app()
    except SettingsError as e:
        typer.echo(f"jukebot: {e}", err=True)
        raise SystemExit(2) from None


if __name__ == "__main__":
    main()
