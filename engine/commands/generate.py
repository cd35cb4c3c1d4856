"""`jukebot generate`: a song into a local folder, through the song runner (engine.sampling.song).

    jukebot generate --artist A --genre G [--lyrics TEXT | --lyrics-file F] [--seconds S]
                     [--drafts N] [--pick K] [--seed X] [--prime AUDIO_OR_CLIP --prime-seconds P]
                     [--prime-at T]
                     [--temperature T] [--upsample-temperature U] [--threads N]
                     [--model M] [--device D] --out DIR [--json]

`generate` runs the whole pipeline without Discord: N level-2 drafts in one batch, then the
upsample of draft K through levels 1 and 0. It writes the song runner's files (`draft-K.wav` and
`draft-K.npy` per draft, `drafts.npz`, `final.wav`, `final.mp3`, `codes.npz`: all levels, a later
`--prime codes.npz` continues it; the worker writes the same under `songs/<id>/`), `run.json` and
`summary.json`.
`--prime-at T` (`42`, `0:42`) is the moment of the prime where the new music starts: the song keeps
the prime up to T (at most its last `--prime-seconds`) and continues from there; without it, the new
music starts at the end of a clip or codes.npz, and after the first seconds of an audio file.
Checkpoints after every window live in the output folder: run the same command again after a crash
or Ctrl-C and it carries on where it stopped, with exactly the result an uninterrupted run gives.

Defaults that depend on the model and machine: the temperatures are the model's recommendation (a
model folder's `sampling.json`, else the original's 0.98 for the drafts and 0.99 for the
upsamplers) unless `--temperature` / `--upsample-temperature` say otherwise; on a CPU, torch runs
one thread unless `--threads` says otherwise (engine.serving.worker.default_threads says why).
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import typer

from engine.commands.output import fail
from engine.commands.progress_bars import ProgressBars

log = logging.getLogger("jukebot.generate")


class GenerateError(Exception):
    """A problem with the command's input, said in words."""


# ---------------------------------------------------------------------------------------------
# generate


@dataclass
class GenerateArgs:
    out: Path
    artist: str
    genre: str
    lyrics: str = ""
    seconds: float = 10.0
    drafts: int = 3
    pick: int = 1
    seed: int = 0
    model: str = "demo"
    device: str = "auto"
    dtype: str = "auto"
    prime: str | None = None
    prime_seconds: float | None = None
    prime_at: float | None = None  # the prime's moment where the new music starts; None: its end
    temperature: float | None = None  # drafts (level 2); None: the model's recommendation
    upsample_temperature: float | None = None  # levels 1 and 0; None: the model's recommendation
    top_k: int = 0
    top_p: float = 0.0
    fresh: bool = False
    threads: int | None = None  # None: engine.serving.worker.default_threads (1 on a CPU)
    swap_levels: bool = False
    progress: bool = True
    extra: dict[str, Any] = field(default_factory=dict)


def lyrics_not_sung(model: str) -> str:
    return (
        f"the model '{model}' does not sing words, so the lyrics are not used "
        "(the models that sing them: 1b_lyrics, 5b_lyrics)"
    )


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


def _load_prompt(engine: Any, args: GenerateArgs, settings: Any) -> Any:
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


MAX_SECONDS = 3600.0  # the longest song of a model that states no limit of its own


def _make_out_folder(out: Path) -> None:
    """--out, made now (before a model takes minutes to load) and proved writable."""
    if out.exists() and not out.is_dir():
        raise GenerateError(f"--out {out} is a file, not a folder")
    try:
        out.mkdir(parents=True, exist_ok=True)
        probe = out / ".jukebot-write-test"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as e:
        parent = next((p for p in out.parents if p.exists()), None)
        if parent is not None and not parent.is_dir():
            raise GenerateError(f"--out {out}: {parent} is a file, not a folder") from None
        raise GenerateError(f"--out {out}: cannot make or write this folder ({e.strerror or e})") from None


def _read_run_record(run_file: Path) -> dict[str, Any]:
    """run.json of an earlier run in the folder; a damaged one is said, not a traceback."""
    try:
        previous = json.loads(run_file.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError):
        previous = None
    if not isinstance(previous, dict):
        raise GenerateError(
            f"{run_file} is damaged (not a jukebot run record); use --fresh to start over in "
            f"{run_file.parent}, or another --out folder"
        )
    return previous


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


def _digest(d: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(d, sort_keys=True, default=str).encode()).hexdigest()[:16]


def generate(args: GenerateArgs) -> dict[str, Any]:
    """The whole song into `args.out` through the song runner; returns the summary (also written
    as summary.json)."""
    import torch

    from db.settings import get_settings
    from engine.model.checkpoints import CheckpointError as ModelFileError
    from engine.model.config import DEMO_DIR, ConfigError
    from engine.sampling.pipeline import Engine, PipelineError, stage_name
    from engine.sampling.resume import CheckpointError
    from engine.sampling.sample import Hooks, Progress
    from engine.sampling.song import (
        CODES,
        DRAFTS,
        DRAFTS_STAGE,
        FINAL_MP3,
        FINAL_WAV,
        FolderFiles,
        SongError,
        SongRunner,
        check_drafts,
        draft_audio,
        song_request,
        upsample_stage,
    )
    from engine.serving.device import default_threads, resolve_device, resolve_dtype

    settings = get_settings()
    try:
        check_drafts(args.drafts, settings.limits.max_drafts)
    except SongError as e:
        raise GenerateError(f"--drafts: {e}") from None
    if not 1 <= args.pick <= args.drafts:
        raise GenerateError(f"--pick must be between 1 and {args.drafts} (the draft to upsample)")
    if not (math.isfinite(args.seconds) and args.seconds > 0):
        raise GenerateError(f"--seconds must be a positive number of seconds, not {args.seconds}")
    for flag, value in (
        ("--temperature", args.temperature),
        ("--upsample-temperature", args.upsample_temperature),
    ):
        if value is not None and not 0 < value <= 5:
            raise GenerateError(
                f"{flag} must be above 0 and at most 5 (1 samples as the model learnt; lower is "
                "tamer and more repetitive, higher is wilder)"
            )
    if args.threads is not None and args.threads < 1:
        raise GenerateError("--threads must be at least 1")
    out = args.out
    _make_out_folder(out)
    timings: dict[str, float] = {}
    t0 = time.monotonic()
    device = resolve_device(args.device)
    dtype = resolve_dtype(args.dtype, device)
    threads = args.threads or default_threads(device)
    if threads:
        torch.set_num_threads(threads)

    t = time.monotonic()
    try:
        engine = Engine.load(
            args.model,
            device=device,
            dtype=dtype,
            swap_levels=args.swap_levels,
            settings=settings,
            progress=args.progress,
        )
    except (ConfigError, ModelFileError, FileNotFoundError) as e:
        if str(args.model) == "demo" and not (DEMO_DIR / "model.json").is_file():
            raise GenerateError(
                "the demo model is not installed in this build (engine/model/data/demo/ has no model yet). "
                "Pass --model with a released model (1b_lyrics, 5b_lyrics, 5b) or a model folder, "
                f"or train one with `jukebot train`. ({e})"
            ) from None
        raise GenerateError(f"cannot load model {args.model!r}: {e}") from None
    timings["load_model"] = time.monotonic() - t
    sr = engine.sample_rate
    # A bound before any arithmetic: 1e308 seconds would overflow the sample count.
    longest = engine.config.top.max_duration or MAX_SECONDS
    if args.seconds >= longest:
        raise GenerateError(
            f"--seconds must be below {longest:.0f} s: this model makes songs shorter than that"
        )
    try:
        prompt = _load_prompt(engine, args, settings)
    except PipelineError as e:
        raise GenerateError(str(e)) from None
    lyrics, notes_first = args.lyrics, []
    if lyrics.strip() and engine.config.top.lyrics == "none":
        # Said, not silently dropped: the person may expect to hear the words.
        notes_first.append(lyrics_not_sung(str(args.model)))
        lyrics = ""
    try:
        request = song_request(
            engine,
            artist=args.artist,
            genre=args.genre,
            lyrics=lyrics,
            seconds=args.seconds,
            seed=args.seed,
            temperature=args.temperature,
            upsample_temperature=args.upsample_temperature,
            top_k=args.top_k,
            top_p=args.top_p,
        )
    except SongError as e:
        raise GenerateError(str(e)) from None
    run_id = {
        "request": request.to_dict(),
        "drafts": args.drafts,
        "model": str(args.model),
        "prompt": None if prompt is None else prompt.source,
        "prompt_codes": None if prompt is None else _digest({"c": [c.tolist() for c in prompt.codes]}),
    }
    run_file = out / "run.json"
    if args.fresh:
        for f in out.glob(".checkpoint-*.npz"):
            f.unlink()
        for f in (out / DRAFTS, run_file):
            f.unlink(missing_ok=True)
    if run_file.exists():
        previous = _read_run_record(run_file)
        if previous.get("id") != _digest(run_id):
            raise GenerateError(
                f"{out} holds a run of a different request; use another --out folder, "
                "or --fresh to start over there"
            )
    try:
        run_file.write_text(json.dumps({"id": _digest(run_id), **run_id}, indent=1, default=str))
    except OSError as e:
        raise GenerateError(f"--out {out}: cannot write in this folder ({e.strerror or e})") from None
    resumed = any(out.glob(".checkpoint-*.npz")) or (out / DRAFTS).exists()

    summary: dict[str, Any] = {
        "model": str(args.model),
        "seed": args.seed,
        "device": device,
        "dtype": str(dtype).replace("torch.", ""),
        "sample_rate": sr,
        "artist": args.artist,
        "genre": args.genre,
        "drafts": args.drafts,
        "pick": args.pick,
        "prime": None if prompt is None else prompt.source,
        "prime_seconds": 0.0 if prompt is None else prompt.seconds(engine),
        "prime_at": args.prime_at,
        "temperatures": list(request.settings.temperatures),  # levels 0, 1, 2
        "threads": torch.get_num_threads(),
        "resumed": resumed,
        "out": str(out),
    }
    with ProgressBars(args.progress) as bars:
        for n in notes_first:
            bars.note(f"note: {n}")

        def hooks(primed: bool) -> Hooks:
            def on_tokens(p: Progress) -> None:
                bars.update(
                    stage_name(p.level, primed=primed), p.level_done, p.level_total, p.tokens_per_second
                )

            return Hooks(on_tokens=on_tokens, tokens_every=32)

        phase = {"name": "drafts"}
        clock: dict[str, Any] = {"key": None, "at": 0.0}

        def timed(key: str | None) -> None:  # ends the running timing, starts `key`'s
            now = time.monotonic()
            if clock["key"]:
                timings[clock["key"]] = timings.get(clock["key"], 0.0) + now - clock["at"]
            clock.update(key=key, at=now)

        def on_stage(name: str) -> None:
            drafts_phase = phase["name"] == "drafts"
            if name == "decoding":
                timed("decode_drafts" if drafts_phase else "decode_final")
            elif name == "saving":
                timed("decode_drafts" if drafts_phase else "write")
            else:
                timed(phase["name"])

        runner = SongRunner(engine, FolderFiles(out), hooks=hooks, on_stage=on_stage)
        runner.interleave_levels = settings.engine.interleave_levels  # JUKEBOT_INTERLEAVE_LEVELS
        try:
            timed("drafts")
            drafts = runner.drafts(request, args.drafts, max_drafts=settings.limits.max_drafts, prompt=prompt)
            runner.finished(DRAFTS_STAGE)  # drafts.npz is written: a re-run goes straight to the upsample
            for n in drafts.notes:
                bars.note(f"note: {n}")
            phase["name"] = "upsample"
            timed("upsample")
            final = runner.upsample(
                request,
                args.pick,
                prompt=prompt,
                meta={"model": str(args.model), "seed": args.seed, "pick": args.pick},
            )
            runner.finished(upsample_stage(args.pick))
            timed(None)
        except (SongError, CheckpointError) as e:
            raise GenerateError(str(e)) from None
        except OSError as e:  # the disk filled up, the folder went away, ...
            where = e.filename or out
            raise GenerateError(f"cannot write {where}: {e.strerror or e}") from None
    files = {f"draft-{i + 1}": str(out / draft_audio(i + 1)) for i in range(args.drafts)}
    files.update(
        {
            FINAL_WAV: str(out / FINAL_WAV),
            FINAL_MP3: str(out / FINAL_MP3),
            CODES: str(out / CODES),
            "summary.json": str(out / "summary.json"),
        }
    )
    timings["total"] = time.monotonic() - t0
    summary.update(
        {
            "seconds": final.seconds,
            "files": files,
            "notes": [*notes_first, *drafts.notes],
            "timings": {k: round(v, 3) for k, v in timings.items()},
        }
    )
    (out / "summary.json").write_text(json.dumps(summary, indent=1) + "\n")
    return summary


def generate_command(
    artist: str = typer.Option(..., "--artist", "-a", help="Artist to sound like (from the model's list)."),
    genre: str = typer.Option(..., "--genre", "-g", help="Genre (from the model's list)."),
    out: Path = typer.Option(
        ..., "--out", "-o", help="Output folder (re-run with the same folder to resume)."
    ),
    lyrics: str | None = typer.Option(None, "--lyrics", help="Lyrics to sing."),
    lyrics_file: Path | None = typer.Option(None, "--lyrics-file", help="A text file with the lyrics."),
    seconds: float = typer.Option(10.0, "--seconds", "-s", help="Seconds of new music."),
    drafts: int = typer.Option(3, "--drafts", "-n", help="Level-2 drafts sampled in one batch."),
    pick: int = typer.Option(1, "--pick", "-k", help="Which draft (1..N) to upsample."),
    seed: int = typer.Option(0, "--seed", help="Random seed: the same seed gives the same song."),
    model: str | None = typer.Option(
        None, "--model", "-m", help="demo | 1b_lyrics | 5b_lyrics | 5b | a model folder."
    ),
    device: str | None = typer.Option(None, "--device", help="auto | cpu | cuda | cuda:N."),
    dtype: str = typer.Option("auto", "--dtype", help="auto | float32 | bfloat16 | float16 (priors)."),
    prime: str | None = typer.Option(None, "--prime", help="Continue from audio, a codes.npz, or clip:ID."),
    prime_seconds: float | None = typer.Option(None, "--prime-seconds", help="Seconds of the prime to use."),
    prime_at: str | None = typer.Option(
        None,
        "--prime-at",
        help="The moment of the prime where the new music starts (42, 0:42, 1:02.5): the song keeps "
        "the prime up to it. Default: a clip's end, an audio file's first seconds.",
    ),
    temperature: float | None = typer.Option(
        None,
        "--temperature",
        help="Sampling temperature of the drafts (level 2): lower is tamer, higher wilder. "
        "Default: what the model recommends (its sampling.json; else 0.98, as in the original).",
    ),
    upsample_temperature: float | None = typer.Option(
        None,
        "--upsample-temperature",
        help="Sampling temperature of both upsamplers (levels 1 and 0). "
        "Default: what the model recommends (its sampling.json; else 0.99, as in the original).",
    ),
    top_k: int = typer.Option(0, "--top-k", help="Sample only from the k most likely codes (0: off)."),
    top_p: float = typer.Option(0.0, "--top-p", help="Nucleus sampling threshold (0: off)."),
    threads: int | None = typer.Option(
        None,
        "--threads",
        help="CPU threads for torch. Default: 1 on a CPU (sampling's one-token steps run fastest on "
        "one thread, and far faster when other programs share the CPU); torch's choice on a GPU.",
    ),
    swap_levels: bool = typer.Option(False, "--swap-levels", help="Keep one prior in memory at a time."),
    fresh: bool = typer.Option(False, "--fresh", help="Discard an unfinished run in --out and start over."),
    as_json: bool = typer.Option(False, "--json", help="Print the summary as JSON on stdout."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bars."),
) -> None:
    from db.settings import get_settings

    settings = get_settings()
    if lyrics is not None and lyrics_file is not None:
        raise fail("use --lyrics or --lyrics-file, not both")
    text = lyrics or ""
    at = None
    if prime_at is not None:
        from db.audio.moments import MomentError, parse_moment

        if prime is None:
            raise fail("--prime-at needs --prime (the clip, codes.npz or audio file to continue)")
        try:
            at = parse_moment(prime_at, what="the prime")
        except MomentError as e:
            raise fail(f"--prime-at: {e}") from None
    if lyrics_file is not None:
        try:
            text = lyrics_file.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as e:
            raise fail(f"cannot read --lyrics-file {lyrics_file}: {e}") from None
    args = GenerateArgs(
        out=out,
        artist=artist,
        genre=genre,
        lyrics=text,
        seconds=seconds,
        drafts=drafts,
        pick=pick,
        seed=seed,
        model=model or settings.engine.model,
        device=device or settings.engine.device,
        dtype=dtype,
        prime=prime,
        prime_seconds=prime_seconds,
        prime_at=at,
        temperature=temperature,
        upsample_temperature=upsample_temperature,
        top_k=top_k,
        top_p=top_p,
        fresh=fresh,
        threads=threads,
        swap_levels=swap_levels,
        progress=not quiet,
    )
    try:
        summary = generate(args)
    except GenerateError as e:
        raise fail(str(e)) from None
    except KeyboardInterrupt:
        typer.secho(
            f"Stopped. Run the same command again to carry on from the last window in {out}.", err=True
        )
        raise typer.Exit(130) from None
    if as_json:
        typer.echo(json.dumps(summary, indent=1))
    else:
        typer.echo(
            f"{summary['seconds']:.1f} s song in {out} ({summary['timings']['total']:.1f} s): "
            f"final.wav, final.mp3, " + ", ".join(f"draft-{i + 1}.wav" for i in range(drafts))
        )
