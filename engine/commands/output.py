"""How every engine command says a problem: one red line on stderr and exit status 2."""

from __future__ import annotations

import typer


def fail(message: str, code: int = 2) -> typer.Exit:
    typer.secho(f"Error: {message}", err=True, fg=typer.colors.RED)
    return typer.Exit(code)
