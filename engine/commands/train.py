"""`jukebot train` and `jukebot corpus build|pack`: training and its corpus from the command line."""

from __future__ import annotations

import json
from pathlib import Path

import typer

from engine.commands.output import fail

# ---------------------------------------------------------------------------------------------
# train and corpus (other modules; a clear message while they are not there)


def _not_available(what: str, module: str, e: ImportError) -> typer.Exit:
    return fail(f"{what} is not available in this build yet ({module}: {e})")


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
        from engine.training.errors import TrainError
        from engine.training.train import train
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
        raise fail(str(e)) from None
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
        raise fail(f"--format must be one of {', '.join(AUDIO_FORMATS)}, not {audio_format!r}")
    try:
        from engine.training.corpus import build_corpus
        from engine.training.sources import CorpusError
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
        raise fail(str(e)) from None


def corpus_pack_command(
    corpus: Path = typer.Option(..., "--corpus", help="A built corpus folder."),
    tar: Path = typer.Option(..., "--tar", help="The tar file to write."),
    quality: float = typer.Option(0.1, "--quality", help="Vorbis quality (0 .. 1; 0 is about 28 kbit/s)."),
) -> None:
    try:
        from engine.training.corpus_pack import pack_corpus
        from engine.training.sources import CorpusError
    except ImportError as e:
        raise _not_available("the corpus packer", "engine.training.corpus_pack", e) from None
    try:
        info = pack_corpus(corpus, tar, quality=quality)
    except CorpusError as e:
        raise fail(str(e)) from None
    typer.echo(f"{tar}: {info['clips']} clips, {info['bytes'] / 2**20:.1f} MiB")
