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
one thread unless `--threads` says otherwise (engine.serving.device.default_threads says why).

This module is the command's flags and its report; the run is engine/commands/generate_run.py, with
its arguments (generate_args.py), its prime (generate_prime.py) and its folder (generate_folder.py).
"""

from __future__ import annotations

import json
from pathlib import Path

import typer

from engine.commands.generate_args import GenerateArgs, GenerateError
from engine.commands.generate_run import generate
from engine.commands.output import fail


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
