"""`jukebot db upgrade|current` and `jukebot doctor` (db/cli.py)."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import typer
from typer.testing import CliRunner

from db import cli
from db.migrate import head_revision
from db.settings import Settings, get_settings

runner = CliRunner()
SECRET = "discord-token-that-must-never-show-up-1234567890"


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[None]:
    """No .env and no JUKEBOT_* from the developer's shell leak into these tests."""
    monkeypatch.chdir(tmp_path)  # also proves nothing relies on an alembic.ini in the cwd
    for name in list(__import__("os").environ):
        if name.startswith("JUKEBOT_"):
            monkeypatch.delenv(name)
    get_settings.cache_clear()
    yield
    get_settings.cache_clear()


def doctor_app() -> typer.Typer:
    app = typer.Typer()
    app.command("doctor")(cli.doctor)
    app.command("unused")(lambda: None)  # two commands: typer keeps "doctor" as a subcommand
    return app


def test_upgrade_then_current(empty_database_url: str) -> None:
    result = runner.invoke(cli.app, ["current", "--database-url", empty_database_url])
    assert result.exit_code == 0, result.output
    assert "at revision none (empty)" in result.output and "behind: run `jukebot db upgrade`" in result.output
    result = runner.invoke(cli.app, ["upgrade", "--database-url", empty_database_url])
    assert result.exit_code == 0, result.output
    assert f"is at revision {head_revision()} (head is {head_revision()})" in result.output
    result = runner.invoke(cli.app, ["upgrade", "--database-url", empty_database_url])  # again: harmless
    assert result.exit_code == 0, result.output
    result = runner.invoke(cli.app, ["current", "--database-url", empty_database_url])
    assert f"at revision {head_revision()}; head is {head_revision()} (up to date)" in result.output


def test_upgrade_reads_the_url_from_the_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("JUKEBOT_DATABASE_URL", f"sqlite:///{tmp_path}/env/jukebot.db")
    result = runner.invoke(cli.app, ["upgrade"])
    assert result.exit_code == 0, result.output
    assert (tmp_path / "env" / "jukebot.db").exists()


def test_upgrade_of_an_unreachable_database_is_a_clear_error() -> None:
    result = runner.invoke(
        cli.app, ["upgrade", "--database-url", "postgresql://me:hunter2@127.0.0.1:1/jukebot"]
    )
    assert result.exit_code == 1
    assert "Cannot reach the database at postgresql+psycopg://me:***@127.0.0.1:1/jukebot" in result.output
    assert "hunter2" not in result.output


def _settings(database_url: str, tmp_path: Path, **extra: Any) -> Settings:
    return Settings(database_url=database_url, storage_url=str(tmp_path / "store"), _env_file=None, **extra)  # type: ignore[call-arg]


def by_name(checks: list[cli.Check]) -> dict[str, cli.Check]:
    return {c.name: c for c in checks}


def test_checks_on_a_ready_machine(database_url: str, tmp_path: Path) -> None:
    checks = by_name(cli.run_checks(_settings(database_url, tmp_path, discord_token=SECRET)))
    assert checks["database"].status is cli.Status.ok and head_revision() in checks["database"].detail
    assert checks["storage"].status is cli.Status.ok
    assert list((tmp_path / "store").rglob("probe-*")) == []  # the probe was cleaned up
    assert checks["ffmpeg"].status is cli.Status.ok and "ffmpeg version" in checks["ffmpeg"].detail
    assert checks["ffprobe"].status in (cli.Status.ok, cli.Status.off)
    assert checks["discord"].status is cli.Status.ok
    assert (
        checks["lyrics"].status is cli.Status.off
        and "members can still paste their own lyrics" in checks["lyrics"].detail
    )
    assert checks["x"].status is cli.Status.off and checks["soundcloud"].status is cli.Status.off
    assert all(SECRET not in c.detail + c.fix for c in checks.values())


def test_doctor_prints_a_table_and_never_the_secrets(
    monkeypatch: pytest.MonkeyPatch, sqlite_url: str, tmp_path: Path
) -> None:
    monkeypatch.setenv("JUKEBOT_DATABASE_URL", sqlite_url)
    monkeypatch.setenv("JUKEBOT_STORAGE_URL", str(tmp_path / "store"))
    monkeypatch.setenv("JUKEBOT_DISCORD_TOKEN", SECRET)
    monkeypatch.setenv("JUKEBOT_OPENAI_API_KEY", "sk-also-secret-0987654321")
    result = runner.invoke(doctor_app(), ["doctor"])
    assert result.exit_code == 0, result.output
    assert "jukebot doctor" in result.output and "Ready." in result.output
    assert "lyrics drafting on" in result.output
    assert SECRET not in result.output and "sk-also-secret" not in result.output


def test_doctor_says_what_is_broken_and_exits_1(
    monkeypatch: pytest.MonkeyPatch, empty_database_url: str, tmp_path: Path
) -> None:
    empty_bin = tmp_path / "bin"
    empty_bin.mkdir()
    monkeypatch.setenv("PATH", str(empty_bin))  # no ffmpeg here
    monkeypatch.setenv("JUKEBOT_DATABASE_URL", empty_database_url)  # never upgraded
    blocker = tmp_path / "a-file"
    blocker.write_text("x")
    monkeypatch.setenv("JUKEBOT_STORAGE_URL", str(blocker / "store"))

    checks = by_name(cli.run_checks())
    assert checks["database"].status is cli.Status.fail
    assert (
        "run `jukebot db upgrade`" in checks["database"].detail
        and checks["database"].fix == "Run `jukebot db upgrade`."
    )
    assert (
        checks["storage"].status is cli.Status.fail
        and "Cannot create the storage folder" in checks["storage"].detail
    )
    # no ffmpeg on PATH: the wheel's serves, and files are probed through it
    assert checks["ffmpeg"].status is cli.Status.ok and "bundled by imageio-ffmpeg" in checks["ffmpeg"].detail
    assert checks["ffprobe"].status is cli.Status.off and "through ffmpeg" in checks["ffprobe"].detail
    assert (
        checks["discord"].status is cli.Status.fail
        and "JUKEBOT_DISCORD_TOKEN is not set" in checks["discord"].detail
    )

    result = runner.invoke(doctor_app(), ["doctor"])
    assert result.exit_code == 1
    assert "Not ready: fix database, storage, discord" in result.output.replace("\n", " ")


def test_doctor_on_an_unreachable_database(tmp_path: Path) -> None:
    check = cli.check_database(_settings("postgresql://u:pw@127.0.0.1:1/x", tmp_path))
    assert check.status is cli.Status.fail and "Cannot reach the database" in check.detail
    assert "start the server" in check.fix


def test_gpu_check_on_this_machine() -> None:
    check = cli.check_gpu()
    if importlib.util.find_spec("torch") is None:
        assert check.status is cli.Status.off
    else:
        import torch

        assert check.status is (cli.Status.ok if torch.cuda.is_available() else cli.Status.warn)
        assert f"torch {torch.__version__}" in check.detail


def test_gpu_check_without_the_engine_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    # A boundary we cannot reach otherwise: torch is installed in this venv, so we make the
    # import system say it is not (as on a bot-only install).
    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name == "torch" else real(name, *a)
    )
    check = cli.check_gpu()
    assert check.status is cli.Status.off
    assert "engine extra is not installed" in check.detail and "bot-only machine" in check.detail


def test_optional_credentials_switch_features_on(tmp_path: Path) -> None:
    settings = _settings(
        "sqlite://",
        tmp_path,
        discord_token="d",
        openai_base_url="http://127.0.0.1:9/v1",
        x_consumer_key="a",
        x_consumer_secret="b",
        x_access_token="c",
        x_access_token_secret="d",
        soundcloud_client_id="e",
        soundcloud_client_secret="f",
    )
    checks = by_name(cli.check_credentials(settings))
    assert {n: c.status for n, c in checks.items()} == {
        n: cli.Status.ok for n in ("discord", "lyrics", "x", "soundcloud")
    }
    assert "http://127.0.0.1:9/v1" in checks["lyrics"].detail
    half_x = _settings("sqlite://", tmp_path, x_consumer_key="a")
    assert by_name(cli.check_credentials(half_x))["x"].status is cli.Status.off


def test_the_db_cli_does_not_import_torch() -> None:
    code = "import sys, db.cli, db.queue, db.repo, db.storage; assert 'torch' not in sys.modules, 'torch imported'"
    subprocess.run([sys.executable, "-c", code], check=True, cwd=Path(__file__).resolve().parents[1])
