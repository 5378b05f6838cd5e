"""The database work behind `users`, `tokens` and `secrets rotate`.

Kept apart from the commands so that `up`, `status` and the rest do not import the
API. Every failure a user can cause or meet (unknown user, bad key, database down)
comes out as a `CommandError` whose message is the one line to print.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import timedelta
from enum import StrEnum
from pathlib import Path
from uuid import UUID

from sqlalchemy import select
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError, SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncSession

from services.api import accounts, credentials
from services.api.accounts import AccountError, IssuedToken
from services.api.db import Database
from services.api.migrate import asyncpg_url
from services.api.models import ApiToken, User
from services.api.vault import Keyring, VaultError, load_keyring

UNDEFINED_TABLE = "42P01"
INVALID_CATALOG = "3D000"


class CommandError(Exception):
    """A command cannot be done; the message says why, in one line."""


@dataclass(frozen=True)
class NewToken:
    user: User
    issued: IssuedToken


class Revoked(StrEnum):
    NOW = "revoked"
    BEFORE = "already revoked"


def root_cause(error: BaseException) -> BaseException:
    """The driver's own exception under SQLAlchemy's (and the adapter's) wrappers."""
    seen: set[int] = set()
    while id(error) not in seen:
        seen.add(id(error))
        inner = getattr(error, "orig", None) or error.__cause__
        if not isinstance(inner, BaseException):
            break
        error = inner
    return error


def describe_database_error(database_url: str, error: BaseException) -> str:
    """One line: which database, what went wrong, what to do (never the password)."""
    try:
        where = make_url(database_url).render_as_string(hide_password=True)
    except ArgumentError:
        where = "DATABASE_URL"
    cause = root_cause(error)
    text = (str(cause).strip().splitlines() or [""])[0] or type(cause).__name__
    message = f"database {where}: {text}"
    state = getattr(cause, "sqlstate", None)
    if state == UNDEFINED_TABLE:
        return message + " (run `spec-workflow db upgrade`)"
    if state == INVALID_CATALOG:
        return message + " (create it with `spec-workflow db upgrade`)"
    if isinstance(cause, OSError | TimeoutError):
        return message + " (is Postgres up and reachable? `make services`)"
    return message


@asynccontextmanager
async def transaction(database_url: str) -> AsyncIterator[AsyncSession]:
    """A session in one transaction on DATABASE_URL (`postgresql://` is fine)."""
    try:
        url = asyncpg_url(database_url)
    except ArgumentError:
        raise CommandError("DATABASE_URL is not a database URL") from None
    database = Database(url, pool_size=1)
    try:
        async with database.new_session() as session, session.begin():
            yield session
    except (AccountError, VaultError) as error:
        raise CommandError(str(error)) from error
    except (SQLAlchemyError, OSError, TimeoutError) as error:
        raise CommandError(describe_database_error(database_url, error)) from error
    finally:
        await database.dispose()


async def create_user(database_url: str, email: str) -> User:
    async with transaction(database_url) as session:
        return await accounts.create_user(session, email)


async def list_users(database_url: str) -> list[User]:
    async with transaction(database_url) as session:
        query = select(User).order_by(User.created_at, User.email)
        return list((await session.scalars(query)).all())


async def create_token(
    database_url: str, user_ref: str, *, name: str, ttl_days: int
) -> NewToken:
    """A token for the user (id or email); `ttl_days` 0: it never expires."""
    ttl = timedelta(days=ttl_days) if ttl_days > 0 else None
    async with transaction(database_url) as session:
        user = await accounts.find_user(session, user_ref)
        return NewToken(
            user, await accounts.issue_token(session, user, name=name, ttl=ttl)
        )


async def list_tokens(database_url: str, user_ref: str) -> list[ApiToken]:
    async with transaction(database_url) as session:
        user = await accounts.find_user(session, user_ref)
        return await accounts.list_tokens(session, user)


async def revoke_token(database_url: str, token_id: UUID) -> Revoked:
    async with transaction(database_url) as session:
        if await accounts.revoke_token(session, token_id):
            return Revoked.NOW
        if await session.get(ApiToken, token_id) is None:
            raise CommandError(f"no token {token_id}")
        return Revoked.BEFORE


def keyring(*, key: str | None, key_file: Path | None, previous: list[str]) -> Keyring:
    """The keyring of SECRETS_KEY / SECRETS_KEY_FILE and SECRETS_PREVIOUS_KEYS.

    Never a generated development key: rotating towards one would lose it.
    """
    try:
        ring, _ = load_keyring(
            key=key, key_file=key_file, previous=previous, dev_key_file=None
        )
    except VaultError as error:
        raise CommandError(str(error)) from error
    return ring


async def rotate(database_url: str, ring: Keyring) -> int:
    """Re-encrypt every provider secret not sealed with the current key, at once."""
    async with transaction(database_url) as session:
        return await credentials.rotate(session, ring)
