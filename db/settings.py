"""Settings for every jukebot process, in typed sections (db/settings_sections.py).

They are read from the environment and an optional .env under the names they always had: each field
keeps its flat name, `JUKEBOT_<FLAT NAME>` (JUKEBOT_LEASE_SECONDS sets `settings.queue.lease_seconds`).
`Settings(lease_seconds=5)` and `Settings(queue={"lease_seconds": 5})` both work, and so does
`settings.model_copy(update={"lease_seconds": 5})`. Secrets are SecretStr so they never show up in logs.
"""

from __future__ import annotations

from collections.abc import Mapping
from functools import lru_cache
from typing import Any, Self, get_origin

from pydantic import Field, ValidationError, create_model, model_validator
from pydantic_core import ErrorDetails
from pydantic_settings import (
    BaseSettings,
    DotEnvSettingsSource,
    EnvSettingsSource,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
)

from db.settings_sections import (
    DiscordSettings,
    EngineSettings,
    LimitsSettings,
    LyricsSettings,
    PublishSettings,
    QueueSettings,
    ScheduleSettings,
    Section,
    SoundCloudSettings,
    StorageSettings,
    XSettings,
)

ENV_PREFIX = "JUKEBOT_"

SECTIONS: dict[str, type[Section]] = {
    "storage": StorageSettings,
    "engine": EngineSettings,
    "queue": QueueSettings,
    "discord": DiscordSettings,
    "limits": LimitsSettings,
    "schedule": ScheduleSettings,
    "lyrics": LyricsSettings,
    "x": XSettings,
    "soundcloud": SoundCloudSettings,
    "publish": PublishSettings,
}

# flat name -> (section, field): the one table both the environment and flat kwargs go through.
FLAT_NAMES: dict[str, tuple[str, str]] = {
    flat: (section, field) for section, cls in SECTIONS.items() for flat, field in cls.flat_names().items()
}


def env_name(section: str, field: str) -> str:
    return ENV_PREFIX + SECTIONS[section].flat_name(field).upper()


def nest_flat_names(values: Mapping[str, Any]) -> dict[str, Any]:
    """{"lease_seconds": 5} -> {"queue": {"lease_seconds": 5}}; a flat name wins over its section's dict."""
    out: dict[str, Any] = {}
    flat: dict[str, dict[str, Any]] = {}
    for key, value in values.items():
        if key in FLAT_NAMES:
            section, field = FLAT_NAMES[key]
            flat.setdefault(section, {})[field] = value
        else:
            out[key] = value
    for section, changes in flat.items():
        given = out.get(section)
        if isinstance(given, Section):
            given = given.model_dump()
        out[section] = {**(given or {}), **changes}
    return out


def _flat_model(base: type[BaseSettings]) -> type[BaseSettings]:
    """A one-class model of the flat names, only to let pydantic-settings read them from env and .env.

    Lists and dicts keep their type (so their values are decoded as JSON, as before); everything else
    is read as text and validated by its section."""
    fields: dict[str, Any] = {}
    for flat, (section, field) in FLAT_NAMES.items():
        annotation = SECTIONS[section].model_fields[field].annotation
        kind: Any = annotation if get_origin(annotation) in (list, dict) else str
        fields[flat] = (kind | None, None)
    return create_model("FlatSettings", __base__=base, **fields)


class _FlatSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix=ENV_PREFIX, extra="ignore")


_FLAT = _flat_model(_FlatSettings)


class _NestedSource(PydanticBaseSettingsSource):
    """Reads the flat names through `inner` and hands them on grouped by section."""

    def __init__(self, settings_cls: type[BaseSettings], inner: PydanticBaseSettingsSource) -> None:
        super().__init__(settings_cls)
        self.inner = inner

    def get_field_value(self, field: Any, field_name: str) -> tuple[Any, str, bool]:
        raise NotImplementedError  # __call__ does the work

    def __call__(self) -> dict[str, Any]:
        return nest_flat_names(self.inner())


class SettingsError(ValueError):
    """A setting has a bad value; the message is one line that names its environment variable."""


def _describe(error: ErrorDetails) -> str:
    loc = error["loc"]
    message = (
        str(error["ctx"]["error"]) if error["type"] == "value_error" and "ctx" in error else error["msg"]
    )
    if len(loc) >= 2 and loc[0] in SECTIONS and loc[1] in SECTIONS[str(loc[0])].model_fields:
        # our own checks read as a sentence after the name; pydantic's own messages after a colon
        separator = " " if error["type"] == "value_error" else ": "
        return f"{env_name(str(loc[0]), str(loc[1]))}{separator}{message}"
    return f"{'.'.join(map(str, loc)) or 'settings'}: {message}"


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX, env_file=".env", extra="ignore", hide_input_in_errors=True
    )

    storage: StorageSettings = Field(default_factory=StorageSettings)
    engine: EngineSettings = Field(default_factory=EngineSettings)
    queue: QueueSettings = Field(default_factory=QueueSettings)
    discord: DiscordSettings = Field(default_factory=DiscordSettings)
    limits: LimitsSettings = Field(default_factory=LimitsSettings)
    schedule: ScheduleSettings = Field(default_factory=ScheduleSettings)
    lyrics: LyricsSettings = Field(default_factory=LyricsSettings)
    x: XSettings = Field(default_factory=XSettings)
    soundcloud: SoundCloudSettings = Field(default_factory=SoundCloudSettings)
    publish: PublishSettings = Field(default_factory=PublishSettings)

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        # Only the flat names are read (JUKEBOT_QUEUE etc. mean nothing), so old setups keep working.
        env_file = dotenv_settings.env_file if isinstance(dotenv_settings, DotEnvSettingsSource) else None
        return (
            init_settings,
            _NestedSource(settings_cls, EnvSettingsSource(_FLAT)),
            _NestedSource(settings_cls, DotEnvSettingsSource(_FLAT, env_file=env_file)),
            file_secret_settings,
        )

    @model_validator(mode="wrap")
    @classmethod
    def _sections_from_flat_names(cls, data: Any, handler: Any) -> Any:
        """Groups flat names into sections, and names the environment variable of any bad value."""
        if isinstance(data, Mapping):
            data = nest_flat_names(data)
        try:
            return handler(data)
        except ValidationError as e:
            raise ValueError("; ".join(_describe(err) for err in e.errors())) from None

    def model_copy(self, *, update: Mapping[str, Any] | None = None, deep: bool = False) -> Self:
        """A copy with changes, given by flat name or by section; changed sections are validated."""
        if not update:
            return super().model_copy(deep=deep)
        nested = nest_flat_names(update)
        for section, changes in list(nested.items()):
            if section in SECTIONS and isinstance(changes, Mapping):
                current = getattr(self, section).model_dump()
                nested[section] = SECTIONS[section].model_validate({**current, **changes})
        return super().model_copy(update=nested, deep=deep)


@lru_cache
def get_settings() -> Settings:
    try:
        return Settings()
    except ValidationError as e:
        reasons = "; ".join(str(err["ctx"]["error"]) if "ctx" in err else err["msg"] for err in e.errors())
        raise SettingsError(f"bad setting: {reasons}") from None
