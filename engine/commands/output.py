"""How every engine command says a problem: one red line on stderr and exit status 2."""

from __future__ import annotations

import typer


def fail(message: str, code: int = 2) -> typer.Exit:
    typer.secho(f"Error: {message}", err=True, fg=typer.colors.RED)
    return typer.Exit(code)


def naming(message: str, setting: str) -> str:
    """The message, with the setting that points at the thing it is about when it does not say it."""
    return message if setting in message else f"{message} (set by {setting})"
