"""`jukebot worker`: the GPU worker (engine.serving.worker) from the command line."""

from __future__ import annotations

import logging

import typer

from engine.commands.output import fail, naming
from engine.serving.alive import ENV as ALIVE_ENV

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
    health_file: str | None = typer.Option(
        None,
        "--health-file",
        envvar=ALIVE_ENV,
        help="Touch this file while the worker is alive, for `jukebot worker-health` (a container healthcheck).",
    ),
) -> None:
    from db.database import DatabaseUnavailable
    from db.settings import get_settings
    from db.storage import StorageUnavailable
    from engine.model.checkpoints import CheckpointError as ModelFileError
    from engine.model.config import ConfigError
    from engine.serving.device import DeviceBusy
    from engine.serving.options import ALL_KINDS, WorkerOptions
    from engine.serving.worker import Worker

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    wanted = tuple(k.strip() for k in kinds.split(",") if k.strip())
    unknown = [k for k in wanted if k not in ALL_KINDS]
    if unknown or not wanted:
        raise fail(
            f"--kinds: unknown job kind(s) {', '.join(unknown) or '(none)'}; use {', '.join(ALL_KINDS)}"
        )
    settings = get_settings()
    options = WorkerOptions(
        device=device or settings.engine.device,
        model=model,
        kinds=wanted,
        once=once,
        dtype=dtype,
        swap_levels=swap_levels,
        threads=threads,
        checkpoint_seconds=checkpoint_seconds,
        batch_jobs=batch_jobs,
        batch_memory_gb=batch_memory_gb,
        health_file=health_file,
    )
    try:
        code = Worker(settings, options).run()
    except DatabaseUnavailable as e:
        raise fail(naming(str(e), "JUKEBOT_DATABASE_URL")) from None
    except StorageUnavailable as e:
        raise fail(naming(str(e), "JUKEBOT_STORAGE_URL")) from None
    except (DeviceBusy, ConfigError, ModelFileError) as e:
        raise fail(str(e)) from None
    raise typer.Exit(code)


def worker_health_command(
    health_file: str = typer.Option(
        ..., "--file", envvar=ALIVE_ENV, help="The file the worker touches (its --health-file)."
    ),
    max_age: float = typer.Option(
        180.0, "--max-age", min=0.0, help="Unhealthy when the file is older than this many seconds."
    ),
) -> None:
    """Exit 0 when the worker touched its health file recently; otherwise one line and exit 1."""
    from engine.serving.alive import staleness

    why = staleness(health_file, max_age)
    if why is not None:
        raise fail(why, code=1)
