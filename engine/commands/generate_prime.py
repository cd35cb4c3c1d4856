"""`jukebot generate --prime`: the prompt a song continues, from a codes.npz of an earlier run, a clip of
the bot's database (`clip:12`) or an audio file; `--prime-at` picks the moment where the new music
starts, `--prime-seconds` how much of the prime before it is kept."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from engine.commands.generate_args import GenerateArgs, GenerateError


def _clip_codes(clip_id: int, settings: Any) -> bytes:
    """The stored codes of clip `clip_id` of the bot's database; an unreachable database or storage
    is one line, not a traceback."""
    from db import repo
    from db.database import DatabaseUnavailable
    from db.migrate import open_database
    from db.storage import StorageUnavailable, get_storage

    try:
        db = open_database(settings.storage.database_url)
        # ids past PostgreSQL's integer range name no clip (and would be a database error)
        clip = repo.clip_by_id(db, clip_id) if clip_id < 2**31 else None
        if clip is None:
            raise GenerateError(f"there is no clip #{clip_id} in {db.masked_url}")
        return get_storage(settings).read_bytes(clip.codes_key)
    except (DatabaseUnavailable, StorageUnavailable) as e:
        raise GenerateError(" ".join(f"--prime clip:{clip_id}: {e}".split())) from None
    except FileNotFoundError:
        raise GenerateError(
            f"--prime clip:{clip_id}: the clip's codes are missing from the storage"
        ) from None


def load_prompt(engine: Any, args: GenerateArgs, settings: Any) -> Any:
    """--prime: a codes.npz of an earlier run, a clip of the bot's database (`clip:12`), or audio."""
    from engine.audio import AudioError, human_seconds, load_audio, probe
    from engine.sampling.pipeline import PipelineError, Prompt

    spec = args.prime
    if spec is None:
        return None
    limit = float(settings.limits.max_prime_seconds)
    if args.prime_seconds is not None and not 0 < args.prime_seconds <= limit:
        raise GenerateError(
            f"--prime-seconds must be between 0 and {human_seconds(limit)} (JUKEBOT_MAX_PRIME_SECONDS)"
        )
    path = Path(spec).expanduser()
    if spec.startswith("clip:") or (spec.isdigit() and not path.exists()):
        number = spec.removeprefix("clip:")
        if not number.isdigit():
            raise GenerateError(f"--prime {spec}: a clip is named by its number, e.g. clip:12")
        clip_id = int(number)
        data = _clip_codes(clip_id, settings)
        return _codes_prompt(engine, args, data, limit, f"clip #{clip_id}")
    if not path.is_file():
        raise GenerateError(f"--prime {spec}: no such file")
    if path.suffix == ".npz":
        return _codes_prompt(engine, args, path.read_bytes(), limit, path.name)
    if args.prime_at is not None:
        return _audio_prompt_at(engine, args, path, settings)
    try:
        if args.prime_seconds is None:
            info = probe(path)
            if info.duration is not None and info.duration > limit + 0.05:
                raise AudioError(
                    f"this file is {human_seconds(info.duration)} long; the prime can be at most "
                    f"{human_seconds(limit)} (use --prime-seconds to take its first seconds)"
                )
        audio = load_audio(
            path,
            engine.sample_rate,
            max_bytes=settings.limits.max_upload_bytes,
            max_seconds=None if args.prime_seconds is not None else limit,
            duration=args.prime_seconds,
        )
    except AudioError as e:
        raise GenerateError(f"--prime {path.name}: {e}") from None
    try:
        return Prompt.from_audio(engine, audio, source=path.name)
    except PipelineError as e:
        raise GenerateError(f"--prime {path.name}: {e}") from None


def _codes_prompt(engine: Any, args: GenerateArgs, data: bytes, limit: float, source: str) -> Any:
    """A clip's codes up to --prime-at (default its end), their last --prime-seconds."""
    from engine.sampling.pipeline import PipelineError, Prompt

    try:
        return Prompt.from_clip_codes(
            engine, data, args.prime_seconds or limit, source=source, at=args.prime_at
        )
    except PipelineError as e:
        raise GenerateError(f"--prime {source}: {e}") from None


def _audio_prompt_at(engine: Any, args: GenerateArgs, path: Path, settings: Any) -> Any:
    """The part of an audio file that ends at --prime-at: at most --prime-seconds (or the limit)
    long; only that part is decoded."""
    from db.audio.moments import clock
    from engine.audio import AudioError, load_audio, probe
    from engine.sampling.pipeline import PipelineError, Prompt

    at, limit = float(args.prime_at or 0.0), float(settings.limits.max_prime_seconds)
    try:
        info = probe(path)
        if info.duration is not None and at > info.duration + 0.05:
            raise GenerateError(
                f"--prime-at {clock(at)} is past the end of {path.name} ({clock(info.duration)} long)"
            )
        start = max(0.0, at - (args.prime_seconds or limit))
        if at - start <= 0:
            raise GenerateError(
                f"--prime-at {clock(at)}: there is no music before it in {path.name} to continue"
            )
        audio = load_audio(
            path,
            engine.sample_rate,
            max_bytes=settings.limits.max_upload_bytes,
            duration=at - start,
            start=start,
        )
        return Prompt.from_audio(engine, audio, source=f"{path.name} ({clock(start)}-{clock(at)})")
    except (AudioError, PipelineError) as e:
        raise GenerateError(f"--prime {path.name}: {e}") from None
