"""`jukebot db …` (schema) and `jukebot doctor` (is this machine ready, and if not, what to do)."""

from __future__ import annotations

import importlib.util
import json
import shutil
import subprocess
import sys
import uuid
from dataclasses import dataclass
from enum import StrEnum
from typing import TYPE_CHECKING

import typer
from rich.console import Console
from rich.table import Table

if TYPE_CHECKING:
    from pydantic import SecretStr

    from db.settings import Settings

app = typer.Typer(no_args_is_help=True, pretty_exceptions_show_locals=False)

_URL_OPTION = typer.Option(None, "--database-url", help="Database URL (default: JUKEBOT_DATABASE_URL).")


def _fail(message: str) -> typer.Exit:
    typer.secho(f"Error: {message}", err=True, fg=typer.colors.RED)  # plain: never wrapped mid-URL
    return typer.Exit(1)


@app.command("upgrade")
def upgrade_command(
    revision: str = typer.Argument("head", help="Revision to reach (default: the newest)."),
    database_url: str | None = _URL_OPTION,
) -> None:
    """Create or update the database tables (safe to run again)."""
    from db import migrate
    from db.database import Database, DatabaseUnavailable

    try:
        db = Database(database_url or _settings().storage.database_url)
        try:
            db.ping()
            reached = migrate.upgrade(db, revision)
        finally:
            db.dispose()
    except DatabaseUnavailable as exc:
        raise _fail(str(exc)) from None
    typer.echo(f"Database {db.masked_url} is at revision {reached} (head is {migrate.head_revision()}).")


@app.command("current")
def current_command(database_url: str | None = _URL_OPTION) -> None:
    """Show the revision the database is at, and whether it is the newest."""
    from db import migrate
    from db.database import Database, DatabaseUnavailable

    try:
        db = Database(database_url or _settings().storage.database_url)
        try:
            db.ping()
            current = migrate.current_revision(db)
        finally:
            db.dispose()
    except DatabaseUnavailable as exc:
        raise _fail(str(exc)) from None
    head = migrate.head_revision()
    state = "up to date" if current == head else "behind: run `jukebot db upgrade`"
    typer.echo(
        f"Database {db.masked_url} is at revision {current or 'none (empty)'}; head is {head} ({state})."
    )


@app.command("revision", hidden=True)
def revision_command(message: str = typer.Argument(..., help="What the migration changes.")) -> None:
    """(Developers) Write a new migration from the changes in db/models.py."""
    from db.migrate import new_revision

    typer.echo(f"Wrote {new_revision(message)}; read it, then run the migration tests.")


def _settings() -> Settings:
    from db.settings import get_settings

    return get_settings()


# --- doctor ----------------------------------------------------------------------------------------


class Status(StrEnum):
    ok = "ok"
    warn = "warn"  # works, but something is off or limited
    off = "off"  # an optional feature is switched off
    fail = "FAIL"  # required and broken: doctor exits with 1


@dataclass(frozen=True)
class Check:
    name: str
    status: Status
    detail: str
    fix: str = ""


def check_database(settings: Settings) -> Check:
    from db.database import DatabaseUnavailable, mask_url
    from db.migrate import head_revision, open_database

    try:
        db = open_database(settings.storage.database_url, upgrade=False)
    except DatabaseUnavailable as exc:
        fix = (
            "Run `jukebot db upgrade`."
            if "upgrade" in str(exc)
            else "Fix JUKEBOT_DATABASE_URL or start the server."
        )
        return Check("database", Status.fail, str(exc), fix)
    db.dispose()
    return Check(
        "database",
        Status.ok,
        f"{mask_url(settings.storage.database_url)} at revision {head_revision()} (newest)",
    )


def check_storage(settings: Settings) -> Check:
    from db.storage import StorageUnavailable, get_storage

    try:
        storage = get_storage(settings)
        key = f".doctor/probe-{uuid.uuid4().hex}"
        payload = uuid.uuid4().bytes
        storage.write_bytes(key, payload)
        try:
            if storage.read_bytes(key) != payload:
                return Check(
                    "storage",
                    Status.fail,
                    f"{settings.storage.storage_url}: a file read back differently.",
                    "Check the storage.",
                )
        finally:
            storage.delete(key)
    except StorageUnavailable as exc:
        return Check("storage", Status.fail, str(exc), "Fix JUKEBOT_STORAGE_URL.")
    except OSError as exc:
        return Check(
            "storage",
            Status.fail,
            f"{settings.storage.storage_url}: writing a test file failed: {exc}",
            "Check permissions and free space.",
        )
    return Check("storage", Status.ok, f"{storage.url} (write, read and delete work)")


def check_ffmpeg() -> Check:
    """ffmpeg from the system, else the one bundled with the imageio-ffmpeg wheel (see db.audio)."""
    from db.audio import AudioError, ffmpeg

    fix = "Install it: `pip install imageio-ffmpeg` or `apt-get install ffmpeg` (Debian/Ubuntu)."
    try:
        path = ffmpeg()
    except AudioError as exc:
        return Check(
            "ffmpeg", Status.fail, f"{exc}; clips cannot be converted for Discord, X or SoundCloud.", fix
        )
    try:
        out = subprocess.run(
            [path, "-version"], capture_output=True, text=True, timeout=20, check=True
        ).stdout
    except (OSError, subprocess.SubprocessError) as exc:
        return Check("ffmpeg", Status.fail, f"{path} does not run: {exc}", fix)
    first = out.splitlines()[0] if out else "unknown version"
    where = "" if shutil.which("ffmpeg") == path else " (bundled by imageio-ffmpeg: no ffmpeg on PATH)"
    return Check("ffmpeg", Status.ok, f"{path}: {first}{where}")


def check_ffprobe() -> Check:
    path = shutil.which("ffprobe")
    if path is None:
        return Check(
            "ffprobe", Status.off, "ffprobe is not on PATH; files are probed through ffmpeg instead."
        )
    return Check("ffprobe", Status.ok, path)


def check_gpu() -> Check:
    if importlib.util.find_spec("torch") is None:
        return Check(
            "gpu",
            Status.off,
            "The engine extra is not installed (no torch): fine for a bot-only machine; this machine cannot render.",
            "To render here: pip install 'jukebot[engine]'.",
        )
    # Asked in a child process: db (and the bot that runs doctor) never imports torch itself.
    probe = (
        "import json, torch; c = torch.cuda.is_available(); print(json.dumps([torch.__version__, "
        "[torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())] if c else []]))"
    )
    try:
        done = subprocess.run(
            [sys.executable, "-c", probe], capture_output=True, text=True, timeout=120, check=True
        )
        version, gpus = json.loads(done.stdout.strip().splitlines()[-1])
    except (subprocess.SubprocessError, OSError, ValueError, IndexError) as exc:
        detail = getattr(exc, "stderr", "") or str(exc)
        return Check(
            "gpu",
            Status.warn,
            f"torch is installed but does not import: {str(detail).strip().splitlines()[-1:]}",
            "Reinstall: pip install 'jukebot[engine]'.",
        )
    if gpus:
        return Check("gpu", Status.ok, f"torch {version}, CUDA GPU(s): {', '.join(gpus)}")
    return Check(
        "gpu",
        Status.warn,
        f"torch {version} sees no CUDA GPU: the worker runs on the CPU (fine for the demo model, far too slow for OpenAI's models).",
        "Install a CUDA build of torch and the NVIDIA driver on GPU workers.",
    )


def _present(*secrets: SecretStr | None) -> bool:
    return all(s is not None and s.get_secret_value().strip() for s in secrets)


def check_credentials(settings: Settings) -> list[Check]:
    """Which credentials are set (never their values) and which features that turns on or off."""
    checks = []
    if _present(settings.discord.token):
        checks.append(Check("discord", Status.ok, "JUKEBOT_DISCORD_TOKEN is set"))
    else:
        checks.append(
            Check(
                "discord",
                Status.fail,
                "JUKEBOT_DISCORD_TOKEN is not set: the bot cannot log in.",
                "Create a bot at https://discord.com/developers/applications and set JUKEBOT_DISCORD_TOKEN.",
            )
        )
    if _present(settings.lyrics.openai_api_key) or settings.lyrics.openai_base_url:
        where = settings.lyrics.openai_base_url or "api.openai.com"
        checks.append(Check("lyrics", Status.ok, f"lyrics drafting on ({where})"))
    else:
        checks.append(
            Check(
                "lyrics",
                Status.off,
                "lyrics drafting is off (members can still paste their own lyrics)",
                "Set JUKEBOT_OPENAI_API_KEY (or JUKEBOT_OPENAI_BASE_URL for a local server).",
            )
        )
    x_oauth1 = _present(
        settings.x.consumer_key,
        settings.x.consumer_secret,
        settings.x.access_token,
        settings.x.access_token_secret,
    )
    if x_oauth1 or _present(settings.x.client_id):
        checks.append(
            Check(
                "x",
                Status.ok,
                "X uploads on (" + ("OAuth 1.0a keys set" if x_oauth1 else "OAuth 2.0 client id set") + ")",
            )
        )
    else:
        checks.append(
            Check(
                "x",
                Status.off,
                "X uploads are off",
                "Set JUKEBOT_X_CONSUMER_KEY/SECRET and JUKEBOT_X_ACCESS_TOKEN/SECRET (or JUKEBOT_X_CLIENT_ID and run `jukebot publish auth x`).",
            )
        )
    if _present(settings.soundcloud.client_id, settings.soundcloud.client_secret):
        checks.append(
            Check(
                "soundcloud",
                Status.ok,
                "SoundCloud uploads on (client id and secret set; `jukebot publish auth soundcloud` links the account)",
            )
        )
    else:
        checks.append(
            Check(
                "soundcloud",
                Status.off,
                "SoundCloud uploads are off",
                "Set JUKEBOT_SOUNDCLOUD_CLIENT_ID and JUKEBOT_SOUNDCLOUD_CLIENT_SECRET, then run `jukebot publish auth soundcloud`.",
            )
        )
    return checks


def check_private_files(settings: Settings) -> Check:
    """Where the token key comes from, and any data file other users of the machine may read."""
    from pathlib import Path

    from sqlalchemy.engine import make_url

    from db.private_files import loose_modes
    from db.secrets import SecretsError, key_file_for, token_cipher

    url = make_url(settings.storage.database_url) if "://" in settings.storage.database_url else None
    db_file = (
        Path(url.database).expanduser().resolve()
        if url is not None
        and url.get_backend_name() == "sqlite"
        and url.database not in (None, "", ":memory:")
        else None
    )
    paths: list[Path] = []
    if db_file is not None:
        paths += [db_file.parent, db_file, *(db_file.with_name(db_file.name + s) for s in ("-wal", "-shm"))]
    if "://" not in settings.storage.storage_url:
        paths.append(Path(settings.storage.storage_url).expanduser().resolve())
    key = settings.publish.token_key
    if key is None:
        paths.append(key_file_for(db_file))
    loose = loose_modes(paths)
    try:
        source = token_cipher(db_file, key.get_secret_value() if key is not None else None).source
    except SecretsError as exc:
        return Check("private files", Status.fail, str(exc), "Set JUKEBOT_TOKEN_KEY to a Fernet key.")
    detail = f"X/SoundCloud logins are encrypted with {source.description}"
    fix = ""
    if source.generated is not None:
        detail += " (generated by jukebot: back it up with the database)"
        if db_file is None:
            fix = "Set JUKEBOT_TOKEN_KEY (the same on every machine sharing the database). "
    if loose:
        return Check(
            "private files",
            Status.warn,
            detail + "; other users can read: " + ", ".join(loose),
            fix + "chmod 700 the folders and 600 the files (`chmod -R go-rwx` on the data folder).",
        )
    return Check("private files", Status.warn if fix else Status.ok, detail + "; modes are private", fix)


def run_checks(settings: Settings | None = None) -> list[Check]:
    settings = settings or _settings()
    return [
        check_database(settings),
        check_storage(settings),
        check_private_files(settings),
        check_ffmpeg(),
        check_ffprobe(),
        check_gpu(),
        *check_credentials(settings),
    ]


_STYLE = {Status.ok: "green", Status.warn: "yellow", Status.off: "dim", Status.fail: "bold red"}


def doctor() -> None:
    """Check the database, storage, ffmpeg, GPU and credentials, and say what to fix."""
    checks = run_checks()
    table = Table(title="jukebot doctor", show_lines=False)
    for column in ("check", "status", "details", "how to fix"):
        table.add_column(column, overflow="fold")
    for c in checks:
        table.add_row(c.name, f"[{_STYLE[c.status]}]{c.status.value}[/]", c.detail, c.fix)
    console = Console(width=160)
    console.print(table)
    broken = [c.name for c in checks if c.status is Status.fail]
    if broken:
        console.print(f"[bold red]Not ready:[/] fix {', '.join(broken)} (see 'how to fix').", highlight=False)
        raise typer.Exit(1)
    console.print("[green]Ready.[/]")
