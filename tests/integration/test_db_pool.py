"""The pool's disconnect handling (`db._ping_when_idle`): a connection the server
closed is replaced at checkout without a round trip, only an idle one is pinged, and
one whose ping fails is replaced too."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest
import pytest_asyncio
from sqlalchemy import text
from sqlalchemy.dialects.postgresql.asyncpg import AsyncAdapt_asyncpg_connection

from services.api.db import Database
from services.api.settings import Settings


@pytest_asyncio.fixture(loop_scope="session")
async def make_db(
    settings: Settings, database: Database
) -> AsyncIterator[Callable[[float], Database]]:
    """Databases of one connection each (disposed of at the end), on the migrated
    database."""
    del database  # requested for ordering only: the schema exists
    made: list[Database] = []

    def make(idle_after: float) -> Database:
        db = Database(
            str(settings.database_url), pool_size=1, ping_idle_after=idle_after
        )
        made.append(db)
        return db

    yield make
    for db in made:
        await db.dispose()


async def backend(db: Database) -> int:
    async with db.new_session() as session:
        return int(await session.scalar(text("SELECT pg_backend_pid()")) or 0)


async def terminate(db: Database, pid: int) -> None:
    async with db.new_session() as session:
        assert await session.scalar(text(f"SELECT pg_terminate_backend({pid})"))


@pytest.fixture
def pings(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Counts the adapter's pings."""
    seen: list[int] = []
    original: Any = AsyncAdapt_asyncpg_connection.ping

    def counted(self: AsyncAdapt_asyncpg_connection) -> None:
        seen.append(1)
        original(self)

    monkeypatch.setattr(AsyncAdapt_asyncpg_connection, "ping", counted)
    return seen


async def test_a_recently_used_connection_is_not_pinged(
    make_db: Callable[[float], Database], pings: list[int]
) -> None:
    db = make_db(60.0)
    first = await backend(db)

    assert await backend(db) == first
    assert await backend(db) == first
    assert pings == []


async def test_an_idle_connection_is_pinged(
    make_db: Callable[[float], Database], pings: list[int]
) -> None:
    db = make_db(0.05)
    first = await backend(db)
    await asyncio.sleep(0.1)

    assert await backend(db) == first
    assert len(pings) == 1


async def test_a_connection_the_server_closed_is_replaced_without_a_ping(
    make_db: Callable[[float], Database], pings: list[int]
) -> None:
    db, killer = make_db(60.0), make_db(60.0)
    first = await backend(db)

    await terminate(killer, first)
    await asyncio.sleep(0.2)  # the EOF reaches asyncpg

    second = await backend(db)
    assert second != first
    assert pings == []


async def test_a_connection_whose_ping_fails_is_replaced(
    make_db: Callable[[float], Database], monkeypatch: pytest.MonkeyPatch
) -> None:
    db = make_db(0.0)
    first = await backend(db)
    failures = [ConnectionResetError("silent peer")]

    def failing_once(_self: AsyncAdapt_asyncpg_connection) -> None:
        if failures:
            raise failures.pop()

    monkeypatch.setattr(AsyncAdapt_asyncpg_connection, "ping", failing_once)

    second = await backend(db)
    assert second != first
    assert failures == []
