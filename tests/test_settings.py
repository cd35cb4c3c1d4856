"""Settings in sections: the old flat env names, .env, flat and nested kwargs, and validated choices."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import SecretStr, ValidationError

from db.settings import FLAT_NAMES, SECTIONS, Settings, env_name
from db.settings_sections import VideoSize


def _sample(section: str, field: str) -> tuple[str, object]:
    """A text value for the field's env variable and what the field should then hold."""
    if (section, field) == ("x", "video_size"):
        return "640x360", VideoSize(640, 360)
    if (section, field) == ("x", "video_style"):
        return "spectrum", "spectrum"
    if (section, field) == ("soundcloud", "sharing"):
        return "private", "private"
    if (section, field) == ("soundcloud", "format"):
        return "opus", "opus"
    if (section, field) == ("schedule", "daily_time"):
        return "07:15", "07:15"
    annotation = str(SECTIONS[section].model_fields[field].annotation)
    if "list[int]" in annotation:
        return "[1, 2]", [1, 2]
    if "list" in annotation:
        return '["one", "two"]', ["one", "two"]
    if "dict" in annotation:
        return '{"x": "08:00"}', {"x": "08:00"}
    if "SecretStr" in annotation:
        return "s3cret", "s3cret"
    if "Path" in annotation:
        return "/tmp/models", Path("/tmp/models")
    if "bool" in annotation:
        default = SECTIONS[section].model_fields[field].default
        return ("false" if default else "true"), not default
    if "int" in annotation and "float" not in annotation:
        return "7", 7
    if "float" in annotation:
        return "7.5", 7.5
    return "cuda:1", "cuda:1"


def _read(settings: Settings, section: str, field: str) -> object:
    value = getattr(getattr(settings, section), field)
    return value.get_secret_value() if isinstance(value, SecretStr) else value


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> pytest.MonkeyPatch:
    import os

    for name in list(os.environ):
        if name.startswith("JUKEBOT_"):
            monkeypatch.delenv(name)
    monkeypatch.chdir(tmp_path)  # no stray .env
    return monkeypatch


@pytest.mark.parametrize("flat", sorted(FLAT_NAMES))
def test_each_old_env_name_still_sets_its_field(clean_env: pytest.MonkeyPatch, flat: str) -> None:
    section, field = FLAT_NAMES[flat]
    text, expected = _sample(section, field)
    assert _read(Settings(_env_file=None), section, field) != expected  # type: ignore[call-arg]
    clean_env.setenv(f"JUKEBOT_{flat.upper()}", text)
    assert _read(Settings(_env_file=None), section, field) == expected  # type: ignore[call-arg]


def test_old_names_are_the_ones_the_flat_class_had() -> None:
    assert env_name("queue", "lease_seconds") == "JUKEBOT_LEASE_SECONDS"
    assert env_name("x", "video_size") == "JUKEBOT_X_VIDEO_SIZE"
    assert env_name("discord", "token") == "JUKEBOT_DISCORD_TOKEN"
    assert env_name("lyrics", "openai_api_key") == "JUKEBOT_OPENAI_API_KEY"
    assert env_name("lyrics", "model") == "JUKEBOT_LYRICS_MODEL"
    assert env_name("publish", "times") == "JUKEBOT_PUBLISH_TIMES"
    assert env_name("publish", "token_key") == "JUKEBOT_TOKEN_KEY"
    # every field of the old flat class (73), none lost, the 7 the trust work added and
    # JUKEBOT_INTERLEAVE_LEVELS (speed round 3)
    assert len(FLAT_NAMES) == 73 + 7 + 1
    assert env_name("engine", "interleave_levels") == "JUKEBOT_INTERLEAVE_LEVELS"


def test_every_field_has_its_own_env_name() -> None:
    names = [env_name(section, field) for section, cls in SECTIONS.items() for field in cls.model_fields]
    assert len(names) == len(set(names))
    assert len(names) == len(FLAT_NAMES)


def test_dotenv_file_is_read_and_environment_wins(clean_env: pytest.MonkeyPatch, tmp_path: Path) -> None:
    env_file = tmp_path / "jukebot.env"
    env_file.write_text(
        'JUKEBOT_LEASE_SECONDS=11\nJUKEBOT_X_VIDEO_SIZE=320x180\nJUKEBOT_LYRICS_BLOCKLIST=["a"]\n'
    )
    s = Settings(_env_file=env_file)  # type: ignore[call-arg]
    assert (s.queue.lease_seconds, s.x.video_size, s.lyrics.blocklist) == (11.0, VideoSize(320, 180), ["a"])
    clean_env.setenv("JUKEBOT_LEASE_SECONDS", "12")
    assert Settings(_env_file=env_file).queue.lease_seconds == 12.0  # type: ignore[call-arg]


def test_default_dotenv_in_the_working_folder(clean_env: pytest.MonkeyPatch, tmp_path: Path) -> None:
    (tmp_path / ".env").write_text("JUKEBOT_DISCORD_TOKEN=abc\nJUKEBOT_MODEL=1b_lyrics\n")
    s = Settings()
    assert s.discord.token is not None and s.discord.token.get_secret_value() == "abc"
    assert s.engine.model == "1b_lyrics"


def test_flat_and_nested_kwargs(clean_env: pytest.MonkeyPatch) -> None:
    flat = Settings(lease_seconds=5, x_video_size="100x50", discord_token="tok-9731", _env_file=None)  # type: ignore[call-arg]
    assert flat.queue.lease_seconds == 5.0 and flat.x.video_size == VideoSize(100, 50)
    assert isinstance(flat.discord.token, SecretStr) and "tok-9731" not in repr(flat)
    nested = Settings(queue={"lease_seconds": 6, "poll_seconds": 0.5}, _env_file=None)  # type: ignore[call-arg, arg-type]
    assert (nested.queue.lease_seconds, nested.queue.poll_seconds, nested.queue.max_attempts) == (6.0, 0.5, 3)
    clean_env.setenv("JUKEBOT_LEASE_SECONDS", "99")
    clean_env.setenv("JUKEBOT_HEARTBEAT_SECONDS", "9")
    both = Settings(queue={"lease_seconds": 6}, _env_file=None)  # type: ignore[call-arg, arg-type]
    assert (both.queue.lease_seconds, both.queue.heartbeat_seconds) == (6.0, 9.0)  # kwargs beat env
    assert Settings(lease_seconds=4, _env_file=None).queue.lease_seconds == 4.0  # type: ignore[call-arg]


def test_model_copy_takes_flat_names_and_validates(clean_env: pytest.MonkeyPatch) -> None:
    s = Settings(_env_file=None)  # type: ignore[call-arg]
    c = s.model_copy(update={"x_video_size": "64x32", "timezone": "Europe/Paris", "poll_seconds": 0.1})
    assert (c.x.video_size, c.schedule.timezone, c.queue.poll_seconds) == (
        VideoSize(64, 32),
        "Europe/Paris",
        0.1,
    )
    assert s.x.video_size == VideoSize(1280, 720)  # the original is untouched
    with pytest.raises(ValidationError):
        s.model_copy(update={"x_video_style": "bars"})


def test_video_size_parses_and_writes_back() -> None:
    s = Settings(x_video_size=" 1920X1080 ", _env_file=None)  # type: ignore[call-arg]
    assert (s.x.video_size.width, s.x.video_size.height) == (1920, 1080)
    assert str(s.x.video_size) == "1920x1080"


@pytest.mark.parametrize(
    ("name", "junk", "says"),
    [
        ("JUKEBOT_X_VIDEO_SIZE", "big", "JUKEBOT_X_VIDEO_SIZE must look like 1280x720"),
        ("JUKEBOT_X_VIDEO_SIZE", "0x720", "JUKEBOT_X_VIDEO_SIZE must look like 1280x720"),
        ("JUKEBOT_X_VIDEO_STYLE", "bars", "JUKEBOT_X_VIDEO_STYLE: Input should be 'waves' or 'spectrum'"),
        ("JUKEBOT_DEVICE", "gpu", "JUKEBOT_DEVICE must be auto, cpu, cuda or cuda:N"),
        ("JUKEBOT_DEVICE", "cuda:x", "JUKEBOT_DEVICE must be auto, cpu, cuda or cuda:N"),
        (
            "JUKEBOT_SOUNDCLOUD_SHARING",
            "friends",
            "JUKEBOT_SOUNDCLOUD_SHARING: Input should be 'public' or 'private'",
        ),
        (
            "JUKEBOT_SOUNDCLOUD_FORMAT",
            "aac",
            "JUKEBOT_SOUNDCLOUD_FORMAT: Input should be 'flac', 'mp3', 'opus' or 'wav'",
        ),
        ("JUKEBOT_LEASE_SECONDS", "soon", "JUKEBOT_LEASE_SECONDS: Input should be a valid number"),
    ],
)
def test_junk_is_refused_naming_the_variable(
    clean_env: pytest.MonkeyPatch, name: str, junk: str, says: str
) -> None:
    clean_env.setenv(name, junk)
    with pytest.raises(ValidationError) as e:
        Settings(_env_file=None)  # type: ignore[call-arg]
    assert says in str(e.value)
    flat = name.removeprefix("JUKEBOT_").lower()
    clean_env.delenv(name)
    with pytest.raises(ValidationError, match=name):  # the same from a kwarg
        Settings(**{flat: junk}, _env_file=None)  # type: ignore[arg-type]


def test_secrets_never_show_in_errors(clean_env: pytest.MonkeyPatch) -> None:
    clean_env.setenv("JUKEBOT_DISCORD_TOKEN", "very-secret-token")
    clean_env.setenv("JUKEBOT_X_VIDEO_SIZE", "huge")
    with pytest.raises(ValidationError) as e:
        Settings(_env_file=None)  # type: ignore[call-arg]
    assert "very-secret-token" not in str(e.value)


def test_valid_devices_pass() -> None:
    for device in ("auto", "cpu", "cuda", "cuda:0", "cuda:12"):
        assert Settings(device=device, _env_file=None).engine.device == device  # type: ignore[call-arg]


def test_cli_reports_a_bad_setting_in_one_line(clean_env: pytest.MonkeyPatch, tmp_path: Path) -> None:
    import subprocess
    import sys

    repo = Path(__file__).resolve().parents[1]
    clean_env.setenv("JUKEBOT_X_VIDEO_SIZE", "big")
    clean_env.setenv("JUKEBOT_DATABASE_URL", f"sqlite:///{tmp_path / 'j.db'}")
    clean_env.setenv("PYTHONPATH", str(repo))
    done = subprocess.run(
        [sys.executable, "-m", "bot.cli", "db", "upgrade"], capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 2
    assert done.stderr.strip().splitlines() == [
        "jukebot: bad setting: JUKEBOT_X_VIDEO_SIZE must look like 1280x720 (WIDTHxHEIGHT in pixels), not 'big'"
    ]
