"""`jukebot generate`, `jukebot worker`, `jukebot train` and `jukebot corpus`.

torch is imported inside the commands only: `jukebot --help` and the bot stay torch-free.

    jukebot generate --artist A --genre G [--lyrics TEXT | --lyrics-file F] [--seconds S]
                     [--drafts N] [--pick K] [--seed X] [--prime AUDIO_OR_CLIP --prime-seconds P]
                     [--temperature T] [--upsample-temperature U] [--threads N]
                     [--model M] [--device D] --out DIR [--json]

`generate` runs the whole pipeline without Discord: N level-2 drafts in one batch, then the
upsample of draft K through levels 1 and 0. It writes `draft-1.wav` … `draft-N.wav`, `final.wav`,
`final.mp3`, `codes.npz` (all levels: a later `--prime codes.npz` continues it) and `summary.json`.
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
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import typer

log = logging.getLogger("jukebot.generate")


def register(app: typer.Typer) -> None:
    app.command("generate", help="Make a song without Discord: drafts, then the upsample of one.")(
        generate_command
    )
    app.command("worker", help="Run a GPU worker: claims draft, upsample and continue jobs.")(worker_command)
    app.command("train", help="Train a VQ-VAE, top prior or upsampler from labelled audio.")(train_command)
    corpus = typer.Typer(
        no_args_is_help=True, help="The labelled training corpus rendered from public-domain scores."
    )
    corpus.command("build", help="Render the corpus (music21 scores -> FluidSynth audio + labels).")(
        corpus_build_command
    )
    corpus.command("pack", help="Pack a built corpus as small OGG files in one tar.")(corpus_pack_command)
    app.add_typer(corpus, name="corpus")


class GenerateError(Exception):
    """A problem with the command's input, said in words."""


def _fail(message: str, code: int = 2) -> typer.Exit:
    typer.secho(f"Error: {message}", err=True, fg=typer.colors.RED)
    return typer.Exit(code)


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


def _load_prompt(engine: Any, args: GenerateArgs, settings: Any) -> Any:
    """--prime: a codes.npz of an earlier run, a clip of the bot's database (`clip:12`), or audio."""
    from engine.audio import AudioError, human_seconds, load_audio, probe
    from engine.sampling.pipeline import PipelineError, Prompt

    spec = args.prime
    if spec is None:
        return None
    limit = float(settings.max_prime_seconds)
    if args.prime_seconds is not None and not 0 < args.prime_seconds <= limit:
        raise GenerateError(
            f"--prime-seconds must be between 0 and {human_seconds(limit)} (JUKEBOT_MAX_PRIME_SECONDS)"
        )
    path = Path(spec).expanduser()
    if spec.startswith("clip:") or (spec.isdigit() and not path.exists()):
        clip_id = int(spec.removeprefix("clip:"))
        from db import repo
        from db.database import open_database
        from db.storage import get_storage

        db = open_database(settings.database_url)
        clip = repo.clip_by_id(db, clip_id)
        if clip is None:
            raise GenerateError(f"there is no clip #{clip_id} in {db.masked_url}")
        data = get_storage(settings).read_bytes(clip.codes_key)
        return Prompt.from_clip_codes(engine, data, args.prime_seconds or limit, source=f"clip #{clip_id}")
    if not path.is_file():
        raise GenerateError(f"--prime {spec}: no such file")
    if path.suffix == ".npz":
        return Prompt.from_clip_codes(
            engine, path.read_bytes(), args.prime_seconds or limit, source=path.name
        )
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
            max_bytes=settings.max_upload_bytes,
            max_seconds=None if args.prime_seconds is not None else limit,
            duration=args.prime_seconds,
        )
    except AudioError as e:
        raise GenerateError(f"--prime {path.name}: {e}") from None
    try:
        return Prompt.from_audio(engine, audio, source=path.name)
    except PipelineError as e:
        raise GenerateError(f"--prime {path.name}: {e}") from None


class _Bars:
    """rich progress bars, one per level: tokens, tokens/s, ETA."""

    def __init__(self, enabled: bool) -> None:
        self.enabled = enabled
        self.tasks: dict[str, Any] = {}
        self.progress: Any = None
        if enabled:
            from rich.console import Console
            from rich.progress import (
                BarColumn,
                MofNCompleteColumn,
                Progress,
                TaskProgressColumn,
                TextColumn,
                TimeElapsedColumn,
                TimeRemainingColumn,
            )

            self.progress = Progress(
                TextColumn("{task.description:<20}"),
                BarColumn(),
                MofNCompleteColumn(),
                TextColumn("tokens"),
                TaskProgressColumn(),
                TextColumn("{task.fields[rate]:>8} tok/s"),
                TimeElapsedColumn(),
                TextColumn("ETA"),
                TimeRemainingColumn(),
                console=Console(stderr=True),
                transient=False,
            )

    def __enter__(self) -> _Bars:
        if self.progress is not None:
            self.progress.start()
        return self

    def __exit__(self, *exc: object) -> None:
        if self.progress is not None:
            self.progress.stop()

    def update(self, stage: str, level_done: int, level_total: int, rate: float) -> None:
        if self.progress is None:
            return
        if stage not in self.tasks:
            self.tasks[stage] = self.progress.add_task(stage, total=level_total, rate="-")
        self.progress.update(self.tasks[stage], completed=level_done, total=level_total, rate=f"{rate:.1f}")

    def note(self, text: str) -> None:
        if self.progress is not None:
            self.progress.console.print(text)
        else:
            print(text, file=sys.stderr)


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
    from engine.serving.worker import default_threads, resolve_device, resolve_dtype

    settings = get_settings()
    try:
        check_drafts(args.drafts, settings.max_drafts)
    except SongError as e:
        raise GenerateError(f"--drafts: {e}") from None
    if not 1 <= args.pick <= args.drafts:
        raise GenerateError(f"--pick must be between 1 and {args.drafts} (the draft to upsample)")
    if args.seconds <= 0:
        raise GenerateError("--seconds must be positive")
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
    out.mkdir(parents=True, exist_ok=True)
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
        previous = json.loads(run_file.read_text())
        if previous.get("id") != _digest(run_id):
            raise GenerateError(
                f"{out} holds a run of a different request; use another --out folder, "
                "or --fresh to start over there"
            )
    run_file.write_text(json.dumps({"id": _digest(run_id), **run_id}, indent=1, default=str))
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
        "temperatures": list(request.settings.temperatures),  # levels 0, 1, 2
        "threads": torch.get_num_threads(),
        "resumed": resumed,
        "out": str(out),
    }
    with _Bars(args.progress) as bars:
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
        try:
            timed("drafts")
            drafts = runner.drafts(request, args.drafts, max_drafts=settings.max_drafts, prompt=prompt)
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
        raise _fail("use --lyrics or --lyrics-file, not both")
    text = lyrics or ""
    if lyrics_file is not None:
        try:
            text = lyrics_file.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as e:
            raise _fail(f"cannot read --lyrics-file {lyrics_file}: {e}") from None
    args = GenerateArgs(
        out=out,
        artist=artist,
        genre=genre,
        lyrics=text,
        seconds=seconds,
        drafts=drafts,
        pick=pick,
        seed=seed,
        model=model or settings.model,
        device=device or settings.device,
        dtype=dtype,
        prime=prime,
        prime_seconds=prime_seconds,
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
        raise _fail(str(e)) from None
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


# ---------------------------------------------------------------------------------------------
# worker


def worker_command(
    device: str | None = typer.Option(
        None, "--device", help="auto | cpu | cuda | cuda:N (one worker per GPU)."
    ),
    model: str | None = typer.Option(
        None, "--model", "-m", help="Model to keep loaded (default JUKEBOT_MODEL)."
    ),
    once: bool = typer.Option(False, "--once", help="Run one job (if any) and exit."),
    kinds: str = typer.Option(
        "draft,upsample,continue", "--kinds", help="Job kinds to take, comma-separated."
    ),
    dtype: str = typer.Option("auto", "--dtype", help="auto | float32 | bfloat16 | float16 (priors)."),
    swap_levels: bool = typer.Option(False, "--swap-levels", help="Keep one prior in GPU memory at a time."),
    threads: int | None = typer.Option(
        None, "--threads", help="CPU threads for torch. Default: 1 on a CPU, torch's choice on a GPU."
    ),
    checkpoint_seconds: float = typer.Option(
        0.0, "--checkpoint-seconds", help="Checkpoint at most this often (0: after every window)."
    ),
    batch_jobs: int = typer.Option(
        1, "--batch-jobs", min=1, help="Run up to N jobs at once, their windows decoded in one batch."
    ),
    batch_memory_gb: float | None = typer.Option(
        None, "--batch-memory-gb", help="GPU memory for the batch's KV caches (default: 70% of what is free)."
    ),
) -> None:
    from db.database import DatabaseUnavailable
    from db.settings import get_settings
    from db.storage import StorageUnavailable
    from engine.model.checkpoints import CheckpointError as ModelFileError
    from engine.model.config import ConfigError
    from engine.serving.worker import ALL_KINDS, DeviceBusy, Worker, WorkerOptions

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    wanted = tuple(k.strip() for k in kinds.split(",") if k.strip())
    unknown = [k for k in wanted if k not in ALL_KINDS]
    if unknown or not wanted:
        raise _fail(
            f"--kinds: unknown job kind(s) {', '.join(unknown) or '(none)'}; use {', '.join(ALL_KINDS)}"
        )
    settings = get_settings()
    options = WorkerOptions(
        device=device or settings.device,
        model=model,
        kinds=wanted,
        once=once,
        dtype=dtype,
        swap_levels=swap_levels,
        threads=threads,
        checkpoint_seconds=checkpoint_seconds,
        batch_jobs=batch_jobs,
        batch_memory_gb=batch_memory_gb,
    )
    try:
        code = Worker(settings, options).run()
    except (DeviceBusy, ConfigError, ModelFileError, DatabaseUnavailable, StorageUnavailable) as e:
        raise _fail(str(e)) from None
    raise typer.Exit(code)


# ---------------------------------------------------------------------------------------------
# train and corpus (other modules; a clear message while they are not there)


def _not_available(what: str, module: str, e: ImportError) -> typer.Exit:
    return _fail(f"{what} is not available in this build yet ({module}: {e})")


def train_command(
    kind: str = typer.Argument(..., help="vqvae | prior | upsampler"),
    config: str = typer.Option(..., "--config", help="Model folder or model.json (or `demo`)."),
    data: Path = typer.Option(..., "--data", help="Folder of audio files with labels.csv or labels.json."),
    out: Path = typer.Option(
        ..., "--out", help="Model folder to write (checkpoints in the original format)."
    ),
    level: int | None = typer.Option(None, "--level", help="Upsampler level (1 or 0)."),
    steps: int | None = typer.Option(
        None, "--steps", help="Training steps (default: as many as fit in --max-minutes)."
    ),
    batch_size: int | None = typer.Option(
        None, "--batch-size", help="Examples per step (default 32 GPU, 4 CPU)."
    ),
    lr: float | None = typer.Option(
        None, "--lr", help="Learning rate (default: the part's; a third with --init-from)."
    ),
    device: str | None = typer.Option(
        None, "--device", help="cpu | cuda | cuda:N (default: a GPU if there is one)."
    ),
    max_minutes: float | None = typer.Option(None, "--max-minutes", help="Stop (resumably) after this long."),
    save_every: int | None = typer.Option(None, "--save-every", help="Steps between training checkpoints."),
    seed: int = typer.Option(0, "--seed", help="Random seed: the same seed and data give the same run."),
    init_from: str | None = typer.Option(None, "--init-from", help="Start from this model's weights."),
    vqvae: str | None = typer.Option(None, "--vqvae", help="Take the VQ-VAE (for priors) from this model."),
    fresh: bool = typer.Option(False, "--fresh", help="Ignore an unfinished run in --out and start over."),
    sample_seconds: float | None = typer.Option(
        None, "--sample-seconds", help="vqvae: seconds of audio per training example (default 1.5)."
    ),
    label_dropout: float = typer.Option(
        0.05,
        "--label-dropout",
        help="Priors: share of training windows whose artist and genre are hidden (learns 'unknown').",
    ),
    timing_jitter: float = typer.Option(
        0.0,
        "--timing-jitter",
        help="prior (top level): share of windows labelled with a random song length, so a small "
        "corpus is not learnt piece by piece from its lengths (the demo used 0.5).",
    ),
    val_every: int = typer.Option(
        250,
        "--val-every",
        help="Steps between held-out losses (needs a `test` split in the labels; taken at the "
        "--log-every steps; 0: never). The weights with the lowest one go to train/<part>/best.pth.tar.",
    ),
    log_every: int = typer.Option(
        50, "--log-every", help="Steps between loss records (log.jsonl, loss.png)."
    ),
    stop_after: int | None = typer.Option(
        None,
        "--stop-after",
        help="Save and stop after this step; the same command without it later resumes up to --steps.",
    ),
    encode: bool = typer.Option(
        False, "--encode", help="vqvae: when done, encode the data for the priors at once (cached)."
    ),
    workers: int | None = typer.Option(
        None, "--workers", help="Threads reading the audio files (default: up to 16)."
    ),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bar."),
    as_json: bool = typer.Option(False, "--json", help="The summary as one line of JSON (for scripts)."),
) -> None:
    try:
        from engine.training.train import TrainError, train
    except ImportError as e:
        raise _not_available("training", "engine.training.train", e) from None
    try:
        summary = train(
            kind,
            config,
            data,
            out,
            steps=steps,
            batch_size=batch_size,
            lr=lr,
            device=device,
            level=level,
            max_minutes=max_minutes,
            save_every=save_every,
            seed=seed,
            init_from=init_from,
            vqvae=vqvae,
            resume=not fresh,
            sample_seconds=sample_seconds,
            label_dropout=label_dropout,
            timing_jitter=timing_jitter,
            val_every=val_every,
            log_every=log_every,
            stop_after=stop_after,
            encode=encode,
            workers=workers,
            progress=not quiet,
        )
    except TrainError as e:
        raise _fail(str(e)) from None
    typer.echo(json.dumps(summary.to_dict(), indent=None if as_json else 1, default=str))


AUDIO_FORMATS = ("flac", "wav", "ogg")


def corpus_build_command(
    out: Path = typer.Option(..., "--out", help="Folder to write audio/, labels.csv and corpus.json into."),
    sample_rate: int = typer.Option(22050, "--sample-rate"),
    max_pieces: int | None = typer.Option(None, "--max-pieces", help="Render only this many pieces."),
    seconds_per_clip: float = typer.Option(20.0, "--seconds-per-clip"),
    seed: int = typer.Option(0, "--seed"),
    workers: int | None = typer.Option(None, "--workers"),
    audio_format: str = typer.Option("flac", "--format", help="flac | wav | ogg"),
) -> None:
    if audio_format not in AUDIO_FORMATS:
        raise _fail(f"--format must be one of {', '.join(AUDIO_FORMATS)}, not {audio_format!r}")
    try:
        from engine.training.corpus import CorpusError, build_corpus
    except ImportError as e:
        raise _not_available("the corpus builder", "engine.training.corpus", e) from None
    try:
        build_corpus(
            out,
            sample_rate=sample_rate,
            max_pieces=max_pieces,
            seconds_per_clip=seconds_per_clip,
            seed=seed,
            workers=workers,
            audio_format=audio_format,
        )
    except CorpusError as e:
        raise _fail(str(e)) from None


def corpus_pack_command(
    corpus: Path = typer.Option(..., "--corpus", help="A built corpus folder."),
    tar: Path = typer.Option(..., "--tar", help="The tar file to write."),
    quality: float = typer.Option(0.1, "--quality", help="Vorbis quality (-0.1 .. 1)."),
) -> None:
    try:
        from engine.training.corpus import CorpusError, pack_corpus
    except ImportError as e:
        raise _not_available("the corpus packer", "engine.training.corpus", e) from None
    try:
        info = pack_corpus(corpus, tar, quality=quality)
    except CorpusError as e:
        raise _fail(str(e)) from None
    typer.echo(f"{tar}: {info['clips']} clips, {info['bytes'] / 2**20:.1f} MiB")


def main() -> None:
    """`python -m engine.cli VERB ...`: the same commands as `jukebot VERB`, for machines that have
    the engine but not the bot (the GPU training box runs `python -m engine.cli train`)."""
    app = typer.Typer(no_args_is_help=True, pretty_exceptions_show_locals=False)
    register(app)
    app()


if __name__ == "__main__":
    main()
