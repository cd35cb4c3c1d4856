"""`generate(args)`: one song into a local folder through the song runner (engine.sampling.song):
the drafts in one batch, then the upsample of the chosen one; resumed from the folder's checkpoints
when run again, and summed up in summary.json (settings, files, notes, timings)."""

from __future__ import annotations

import json
import time
from typing import Any

from engine.commands.generate_args import GenerateArgs, GenerateError, check_args, lyrics_not_sung
from engine.commands.generate_folder import make_out_folder, record_run, run_digest
from engine.commands.generate_prime import load_prompt
from engine.commands.progress_bars import ProgressBars

MAX_SECONDS = 3600.0  # the longest song of a model that states no limit of its own


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
        DRAFTS_STAGE,
        FINAL_MP3,
        FINAL_WAV,
        FolderFiles,
        SongError,
        SongRunner,
        draft_audio,
        song_request,
        upsample_stage,
    )
    from engine.serving.device import default_threads, resolve_device, resolve_dtype

    settings = get_settings()
    check_args(args, settings.limits.max_drafts)
    out = args.out
    make_out_folder(out)
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
        prompt = load_prompt(engine, args, settings)
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
        "prompt_codes": None if prompt is None else run_digest({"c": [c.tolist() for c in prompt.codes]}),
    }
    resumed = record_run(out, run_id, fresh=args.fresh)

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

        runner = SongRunner(
            engine,
            FolderFiles(out),
            hooks=hooks,
            on_stage=on_stage,
            interleave_levels=settings.engine.interleave_levels,  # JUKEBOT_INTERLEAVE_LEVELS
        )
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
