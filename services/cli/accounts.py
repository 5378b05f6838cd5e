"""`users`, `tokens` and `secrets`: accounts for AUTH_MODE=token, and the key that
encrypts provider secrets. They work on DATABASE_URL directly, not through the API.
"""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine, Sequence
from datetime import UTC, datetime
from typing import Annotated, Any, TypeVar
from uuid import UUID

import typer

from services.cli.common import fail, read_settings
from services.cli.settings import DatabaseSettings, SecretsSettings, TokenSettings

users_app = typer.Typer(no_args_is_help=True, help="Users (for AUTH_MODE=token).")
tokens_app = typer.Typer(
    no_args_is_help=True, help="API tokens: shown once at creation, stored hashed."
)
secrets_app = typer.Typer(
    no_args_is_help=True, help="The key that encrypts provider secrets at rest."
)

T = TypeVar("T")


def when(moment: datetime | None, missing: str = "-") -> str:
    """A timestamp in UTC to the second, or `missing`."""
    if moment is None:
        return missing
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> list[str]:
    """Columns padded to their widest cell, two spaces apart."""
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    return [
        "  ".join(
            cell.ljust(width) for cell, width in zip(row, widths, strict=True)
        ).rstrip()
        for row in [header, *rows]
    ]


def _run(work: Coroutine[Any, Any, T]) -> T:
    """Run the database work; a `CommandError` becomes one line and exit 1."""
    from services.cli.accounts_db import CommandError

    try:
        return asyncio.run(work)
    except CommandError as error:
        fail(str(error))


def _database_url(kind: type[DatabaseSettings] = DatabaseSettings) -> str:
    return str(read_settings(kind).database_url)


@users_app.command("create")
def users_create(
    email: Annotated[str, typer.Option(help="the new user's email (unique)")],
) -> None:
    """Create a user; prints its id and email."""
    from services.cli import accounts_db

    user = _run(accounts_db.create_user(_database_url(), email))
    typer.echo(f"{user.id}  {user.email}")


@users_app.command("list")
def users_list() -> None:
    """Every user: id, email, created."""
    from services.cli import accounts_db

    users = _run(accounts_db.list_users(_database_url()))
    rows = [(str(u.id), u.email, when(u.created_at)) for u in users]
    for line in table(("ID", "EMAIL", "CREATED"), rows):
        typer.echo(line)


@tokens_app.command("create")
def tokens_create(
    user: Annotated[str, typer.Option(help="the user's email or id")],
    name: Annotated[str, typer.Option(help="a label, to tell tokens apart")] = "cli",
    expires_in_days: Annotated[
        int | None,
        typer.Option(
            min=0,
            help="lifetime in days; 0: never expires "
            "(default: API_TOKEN_DEFAULT_TTL_DAYS)",
            show_default=False,
        ),
    ] = None,
) -> None:
    """Create a token for a user and print it, once: alone on the last line of
    stdout (`| tail -1`). Its id and expiry go to stderr. Only its hash is stored.
    """
    from services.cli import accounts_db

    settings = read_settings(TokenSettings)
    days = (
        settings.token_default_ttl_days if expires_in_days is None else expires_in_days
    )
    new = _run(
        accounts_db.create_token(
            str(settings.database_url), user, name=name, ttl_days=days
        )
    )
    typer.echo(
        f"token {new.issued.id} for {new.user.email} ({new.user.id}), "
        f"expires {when(new.issued.expires_at, 'never')}; "
        "it is shown only now: store it",
        err=True,
    )
    typer.echo(new.issued.token)


@tokens_app.command("list")
def tokens_list(
    user: Annotated[str, typer.Option(help="the user's email or id")],
) -> None:
    """A user's tokens: id, name, prefix, created, expires, revoked, last used."""
    from services.cli import accounts_db

    tokens = _run(accounts_db.list_tokens(_database_url(), user))
    header = ("ID", "NAME", "PREFIX", "CREATED", "EXPIRES", "REVOKED", "LAST USED")
    rows = [
        (
            str(t.id),
            t.name,
            t.prefix,
            when(t.created_at),
            when(t.expires_at, "never"),
            when(t.revoked_at),
            when(t.last_used_at),
        )
        for t in tokens
    ]
    for line in table(header, rows):
        typer.echo(line)


@tokens_app.command("revoke")
def tokens_revoke(
    token_id: Annotated[str, typer.Argument(help="the id from `tokens list`")],
) -> None:
    """Revoke a token: it authenticates no more. Revoking it again changes nothing."""
    from services.cli import accounts_db

    try:
        parsed = UUID(token_id)
    except ValueError:
        fail(f"not a token id: {token_id!r} (see `spec-workflow tokens list`)")
    outcome = _run(accounts_db.revoke_token(_database_url(), parsed))
    typer.echo(f"token {parsed} {outcome}")


@secrets_app.command("generate-key")
def secrets_generate_key() -> None:
    """Print a new random key, as SECRETS_KEY expects it."""
    from services.api.vault import generate_key

    typer.echo(generate_key())


@secrets_app.command("rotate")
def secrets_rotate() -> None:
    """Re-encrypt with SECRETS_KEY (or SECRETS_KEY_FILE) every provider secret
    sealed with another key, in one transaction. The keys the rows were sealed
    with must be in SECRETS_PREVIOUS_KEYS; afterwards they can be dropped.
    """
    from services.cli import accounts_db

    settings = read_settings(SecretsSettings)
    key = settings.secrets_key
    try:
        ring = accounts_db.keyring(
            key=key.get_secret_value() if key else None,
            key_file=settings.secrets_key_file,
            previous=settings.previous_keys(),
        )
    except accounts_db.CommandError as error:
        fail(str(error))
    count = _run(accounts_db.rotate(str(settings.database_url), ring))
    noun = "secret" if count == 1 else "secrets"
    typer.echo(f"re-encrypted {count} provider {noun}; current key {ring.current_id}")
