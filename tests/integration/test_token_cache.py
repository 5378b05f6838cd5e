"""The token cache against the session's Postgres: the real LISTEN, migration 0005's
triggers, and a token-mode app whose lifespan runs the watcher.

A change made with `session_replication_role = replica` (superuser only; the tests
connect as one) fires no trigger, so sends no NOTIFY: what the cache answers after
one shows whether it answered from memory. A change that is heard is awaited by its
own payload (the token's id) on an unchanged LISTEN connection, so a reconnect, which
also empties the cache, cannot pass for it.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime, timedelta

import asyncpg
import httpx
import pytest
import pytest_asyncio
from sqlalchemy import delete, text, update
from sqlalchemy.sql import Executable

from services.api import accounts
from services.api.db import Database
from services.api.main import create_app
from services.api.models import ApiToken
from services.api.models import User as UserRow
from services.api.settings import Settings
from services.api.tokencache import CHANNEL, TokenCache, TokenWatcher
from tests.integration.test_auth import User, new_user
from tests.support.api import RUNS
from tests.support.canary import CanaryAudit, attach_capture
from tests.support.fakes import CapturedLogs
from tests.support.lifespan import caching_tokens, until


async def watching(settings: Settings, heartbeat: float) -> TokenWatcher:
    watcher = TokenWatcher(
        TokenCache(60.0), settings.plain_database_url(), heartbeat=heartbeat, retry=0.1
    )
    watcher.start()
    await until(lambda: watcher.cache.live)
    return watcher


@pytest_asyncio.fixture(loop_scope="session")
async def watched(settings: Settings) -> AsyncIterator[TokenWatcher]:
    watcher = await watching(settings, heartbeat=5.0)
    yield watcher
    await watcher.stop()
    assert not watcher.cache.live


async def unheard(database: Database, statement: Executable) -> None:
    """Run `statement` with triggers off for this session only: no NOTIFY."""
    async with database.new_session() as session, session.begin():
        await session.execute(text("SET LOCAL session_replication_role = replica"))
        await session.execute(statement)


async def heard(
    database: Database, watcher: TokenWatcher, statement: Executable, payload: str
) -> None:
    """Run `statement` and wait for its NOTIFY on the same LISTEN connection."""
    connection = watcher.connection
    async with database.new_session() as session, session.begin():
        await session.execute(statement)
    await until(lambda: payload in watcher.heard)
    assert watcher.connection is connection
    assert watcher.cache.live


async def check(
    database: Database, watcher: TokenWatcher, user: User
) -> uuid.UUID | None:
    return await accounts.authenticate(database.engine, user.token, watcher.cache)


def set_token(user: User, **values: object) -> Executable:
    return update(ApiToken).where(ApiToken.id == user.token_id).values(**values)


def revoke(user: User) -> Executable:
    return set_token(user, revoked_at=datetime.now(UTC))


def expire(user: User) -> Executable:
    return set_token(user, expires_at=datetime.now(UTC) - timedelta(seconds=1))


def rehash(user: User) -> Executable:
    return set_token(user, token_hash=accounts.hash_token(accounts.new_token()))


def reassign(user: User) -> Executable:
    return set_token(user, user_id=uuid.UUID(int=0))  # the default user


def delete_token(user: User) -> Executable:
    return delete(ApiToken).where(ApiToken.id == user.token_id)


def delete_user(user: User) -> Executable:
    return delete(UserRow).where(UserRow.id == user.id)  # its tokens by cascade


async def test_a_checked_token_is_answered_from_memory(
    database: Database, watched: TokenWatcher
) -> None:
    user = await new_user(database)
    assert await check(database, watched, user) == user.id
    await unheard(database, revoke(user))
    assert await check(database, watched, user) == user.id  # from memory
    assert await accounts.authenticate(database.engine, user.token) is None

    await heard(database, watched, text(f"NOTIFY {CHANNEL}, 'by hand'"), "by hand")
    assert await check(database, watched, user) is None


@pytest.mark.parametrize(
    "change", [revoke, expire, rehash, reassign, delete_token, delete_user]
)
async def test_every_change_that_ends_a_token_reaches_the_cache(
    database: Database,
    watched: TokenWatcher,
    change: Callable[[User], Executable],
) -> None:
    user = await new_user(database)
    assert await check(database, watched, user) == user.id
    assert watched.cache.entries
    await heard(database, watched, change(user), str(user.token_id))
    assert watched.cache.entries == {}
    result = await check(database, watched, user)
    assert result is None or (change is reassign and result == uuid.UUID(int=0))


async def test_truncate_is_heard(database: Database, watched: TokenWatcher) -> None:
    """The trigger function's statement-level branch, on a temporary table (the
    session's own tokens must stay)."""
    async with database.new_session() as session, session.begin():
        await session.execute(text("CREATE TEMP TABLE doomed (id uuid) ON COMMIT DROP"))
        await session.execute(
            text(
                "CREATE TRIGGER doomed_truncated AFTER TRUNCATE ON doomed "
                "FOR EACH STATEMENT EXECUTE FUNCTION notify_api_tokens_changed()"
            )
        )
        await session.execute(text("TRUNCATE doomed"))
    await until(lambda: "" in watched.heard)


async def test_touching_last_use_is_not_heard(
    database: Database, watched: TokenWatcher
) -> None:
    user, other = await new_user(database), await new_user(database)
    before = list(watched.heard)
    async with database.new_session() as session, session.begin():
        await session.execute(
            set_token(user, last_used_at=datetime.now(UTC), name="renamed")
        )
    # Notifications arrive in commit order: the revocation's comes after any of the
    # touch's would have.
    await heard(database, watched, revoke(other), str(other.token_id))
    assert watched.heard[len(before) :] == [str(other.token_id)]


async def cut(watcher: TokenWatcher, settings: Settings) -> None:
    """Terminate the watcher's LISTEN connection from the server's side."""
    connection = watcher.connection
    assert connection is not None
    admin = await asyncpg.connect(settings.plain_database_url())
    try:
        await admin.execute(
            "SELECT pg_terminate_backend($1)", connection.get_server_pid()
        )
    finally:
        await admin.close()
    await until(lambda: not watcher.cache.live)


async def test_the_cache_is_dark_while_its_listen_is_lost(
    database: Database, watched: TokenWatcher, settings: Settings
) -> None:
    user, later = await new_user(database), await new_user(database)
    assert await check(database, watched, user) == user.id
    connection = watched.connection
    with CapturedLogs.capture("INFO") as logs:
        await cut(watched, settings)
        # Unheard while dark, yet in effect at once: the check goes to the database.
        await unheard(database, revoke(user))
        assert await check(database, watched, user) is None
        await until(lambda: watched.cache.live and watched.connection is not connection)
        assert await check(database, watched, later) == later.id
        assert set(watched.cache.entries) == {accounts.hash_token(later.token)}

        await cut(watched, settings)  # a second outage is reported too
        await until(lambda: watched.cache.live)
    assert [m.split(":")[0] for m in logs.messages() if "Token cache" in m] == [
        "Token cache off",
        "Token cache on",
        "Token cache off",
        "Token cache on",
    ]


async def test_the_cache_is_dark_while_the_triggers_are_off(
    database: Database, settings: Settings
) -> None:
    """A database without migration 0005's triggers, or with them disabled, would
    leave the cache deaf: the heartbeat sees it and the cache answers nothing."""
    watcher = await watching(settings, heartbeat=0.2)
    try:
        async with database.new_session() as session, session.begin():
            await session.execute(
                text("ALTER TABLE api_tokens DISABLE TRIGGER api_tokens_changed")
            )
        try:
            await until(lambda: not watcher.cache.live)
            user = await new_user(database)
            assert await check(database, watcher, user) == user.id
            assert watcher.cache.entries == {}  # checked, not kept
        finally:
            async with database.new_session() as session, session.begin():
                await session.execute(
                    text("ALTER TABLE api_tokens ENABLE TRIGGER api_tokens_changed")
                )
        await until(lambda: watcher.cache.live)
    finally:
        await watcher.stop()


async def test_a_token_mode_app_checks_tokens_through_its_cache(
    token_settings: Settings, database: Database, canary: CanaryAudit
) -> None:
    """The wiring: create_app makes the cache, its lifespan runs the watcher, and
    every request's check goes through both."""
    app = create_app(token_settings)
    attach_capture(canary)  # create_app reconfigured logging
    user = await new_user(database)
    async with (
        caching_tokens(app) as cache,
        httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app),
            base_url="http://cached",
        ) as client,
    ):

        async def get() -> httpx.Response:
            return await client.get(RUNS, headers=user.headers)

        assert (await get()).status_code == 200
        assert set(cache.entries) == {accounts.hash_token(user.token)}
        await unheard(database, revoke(user))
        assert (await get()).status_code == 200  # from memory: no NOTIFY was sent

        generation = cache.generation
        async with database.new_session() as session, session.begin():
            await session.execute(revoke(user))
        await until(lambda: cache.generation > generation)
        response = await get()
        assert response.status_code == 401
        assert response.json()["detail"]["code"] == "unauthorized"
    assert not cache.live
