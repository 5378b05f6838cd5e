"""Users and their API tokens. Tokens are shown once; only their SHA-256 is stored."""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import cast
from uuid import UUID, uuid4

from sqlalchemy import select, update
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession

from services.api.models import DEFAULT_USER_EMAIL, DEFAULT_USER_ID, ApiToken, User
from services.api.reads_lane import fetch
from services.api.tokencache import TokenCache

TOKEN_PREFIX = "sw_"
TOUCH_EVERY = timedelta(minutes=1)


class AccountError(Exception):
    """An account operation cannot be done (unknown user, duplicate email, …)."""


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def new_token() -> str:
    return TOKEN_PREFIX + secrets.token_urlsafe(32)


@dataclass(frozen=True)
class IssuedToken:
    id: UUID
    token: str
    expires_at: datetime | None


async def ensure_default_user(session: AsyncSession) -> None:
    await session.execute(
        insert(User)
        .values(id=DEFAULT_USER_ID, email=DEFAULT_USER_EMAIL)
        .on_conflict_do_nothing()
    )


async def create_user(session: AsyncSession, email: str) -> User:
    email = email.strip().lower()
    if "@" not in email or len(email) > 320 or any(c.isspace() for c in email):
        raise AccountError(f"not an email address: {email!r}")
    if await session.scalar(select(User.id).where(User.email == email)):
        raise AccountError(f"a user with email {email} exists")
    user = User(id=uuid4(), email=email)
    session.add(user)
    await session.flush()
    return user


async def find_user(session: AsyncSession, ref: str) -> User:
    """A user by id or email."""
    try:
        query = select(User).where(User.id == UUID(ref))
    except ValueError:
        query = select(User).where(User.email == ref.strip().lower())
    user = (await session.scalars(query)).one_or_none()
    if user is None:
        raise AccountError(f"no user {ref}")
    return user


async def issue_token(
    session: AsyncSession, user: User, *, name: str, ttl: timedelta | None
) -> IssuedToken:
    token = new_token()
    expires = datetime.now(UTC) + ttl if ttl else None
    row = ApiToken(
        id=uuid4(),
        user_id=user.id,
        name=name[:128],
        token_hash=hash_token(token),
        prefix=token[:10],
        expires_at=expires,
    )
    session.add(row)
    await session.flush()
    return IssuedToken(row.id, token, expires)


async def revoke_token(session: AsyncSession, token_id: UUID) -> bool:
    result = await session.execute(
        update(ApiToken)
        .where(ApiToken.id == token_id, ApiToken.revoked_at.is_(None))
        .values(revoked_at=datetime.now(UTC))
        .returning(ApiToken.id)
    )
    return result.first() is not None


async def list_tokens(session: AsyncSession, user: User) -> list[ApiToken]:
    query = select(ApiToken).where(ApiToken.user_id == user.id)
    return list((await session.scalars(query.order_by(ApiToken.created_at))).all())


# One round trip on the read lane, no session: the token's row, and the throttled
# touch of its last use (a write once a TOUCH_EVERY per token; otherwise the UPDATE
# matches nothing and the statement commits without writing). Under READ COMMITTED a
# request that waited on another's touch re-checks `last_used_at` and skips its own.
_AUTHENTICATE = (
    "WITH token AS (SELECT id, user_id, revoked_at, expires_at, last_used_at "
    "FROM api_tokens WHERE token_hash = $1), "
    "touched AS (UPDATE api_tokens SET last_used_at = $2 FROM token "
    "WHERE api_tokens.id = token.id AND token.revoked_at IS NULL "
    "AND (token.expires_at IS NULL OR token.expires_at > $2) "
    "AND (api_tokens.last_used_at IS NULL OR api_tokens.last_used_at < $3) "
    "RETURNING api_tokens.id) "
    "SELECT user_id, revoked_at, expires_at FROM token"
)


async def authenticate(
    bind: AsyncEngine, token: str, cache: TokenCache | None = None
) -> UUID | None:
    """The user a bearer token belongs to, if it is known, unrevoked and unexpired.

    Every token-mode request asks this, so it is one statement on asyncpg
    (`reads_lane.fetch`), not a session's BEGIN, ORM query and COMMIT: those cost
    more than the read they guarded. With a `cache` (`tokencache`), a token checked
    lately is answered without the database.
    """
    if not token.startswith(TOKEN_PREFIX) or len(token) > 200:
        return None
    digest = hash_token(token)
    now = datetime.now(UTC)
    generation = 0
    if cache is not None:
        cached = cache.lookup(digest, now)
        if cached is not None:
            return cached
        generation = cache.generation
    rows = await fetch(bind, _AUTHENTICATE, digest, now, now - TOUCH_EVERY)
    if not rows:
        return None
    user_id, revoked_at, expires_at = rows[0]
    if revoked_at is not None or (expires_at is not None and expires_at <= now):
        return None
    if cache is not None:
        cache.keep(digest, user_id, expires_at, generation)
    return cast(UUID, user_id)
