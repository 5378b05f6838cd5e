"""What every command shares: reading its settings, failing with one clear line."""

from __future__ import annotations

from typing import NoReturn, TypeVar

import typer
from pydantic import ValidationError
from pydantic_settings import BaseSettings

S = TypeVar("S", bound=BaseSettings)


def read_settings(kind: type[S]) -> S:
    """Read settings, or exit 2 naming what is missing or wrong."""
    try:
        return kind()
    except ValidationError as error:
        for problem in error.errors():
            name = ".".join(str(part) for part in problem["loc"])
            typer.echo(f"{name}: {problem['msg']} (see .env.example)", err=True)
        raise typer.Exit(2) from None


def fail(message: str) -> NoReturn:
    """One line on stderr, exit 1: no traceback."""
    typer.echo(f"error: {message}", err=True)
    raise typer.Exit(1)
