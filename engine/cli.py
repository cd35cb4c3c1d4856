"""The engine's verbs on one typer app: `register` adds `generate`, `worker`, `train` and `corpus`
to `jukebot` (bot/cli.py); `python -m engine.cli VERB` runs the same commands where the bot is not
installed. Each verb lives in engine/commands/; torch is imported inside the commands only, so
`jukebot --help` and the bot stay torch-free."""

from __future__ import annotations

import typer

from engine.commands.generate import generate_command
from engine.commands.train import corpus_build_command, corpus_pack_command, train_command
from engine.commands.worker import worker_command, worker_health_command


def register(app: typer.Typer) -> None:
    app.command("generate", help="Make a song without Discord: drafts, then the upsample of one.")(
        generate_command
    )
    app.command("worker", help="Run a GPU worker: claims draft, upsample and continue jobs.")(worker_command)
    app.command("worker-health", help="Healthcheck: is the worker's health file fresh?")(
        worker_health_command
    )
    app.command("train", help="Train a VQ-VAE, top prior or upsampler from labelled audio.")(train_command)
    corpus = typer.Typer(
        no_args_is_help=True, help="The labelled training corpus rendered from public-domain scores."
    )
    corpus.command("build", help="Render the corpus (music21 scores -> FluidSynth audio + labels).")(
        corpus_build_command
    )
    corpus.command("pack", help="Pack a built corpus as small OGG files in one tar.")(corpus_pack_command)
    app.add_typer(corpus, name="corpus")


def main() -> None:
    """`python -m engine.cli VERB ...`: the same commands as `jukebot VERB`, for machines that have
    the engine but not the bot (the GPU training box runs `python -m engine.cli train`)."""
    app = typer.Typer(no_args_is_help=True, pretty_exceptions_show_locals=False)
    register(app)
    app()


if __name__ == "__main__":
    main()
