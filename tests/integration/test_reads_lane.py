"""The read path's connection lane: a read's connection serves the next read without
a pool checkout, goes back to the pool after LINGER, and a broken, cancelled or
disposed one never serves again."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest
import pytest_asyncio
from sqlalchemy.exc import DBAPIError

from services.api import reads_lane
from services.api.db import Database
from services.api.settings import Settings

PID = "SELECT pg_backend_pid()"


@pytest_asyncio.fixture(loop_scope="session")
async def db(settings: Settings, database: Database) -> AsyncIterator[Database]:
    """A Database of its own (the test disposes of it), on the migrated database."""
    del database  # requested for ordering only: the schema exists
    own = Database(str(settings.database_url), pool_size=2)
    yield own
    await own.dispose()


async def backend(db: Database, sql: str = PID) -> int:
    rows = await reads_lane.fetch(db.engine, sql)
    return int(rows[0][0])


def lane(db: Database) -> reads_lane.Lane:
    return reads_lane.lane(db.engine.sync_engine)


def checked_out(db: Database) -> int:
    return int(db.engine.sync_engine.pool.checkedout())  # type: ignore[attr-defined]


async def test_a_read_hands_its_connection_to_the_next(db: Database) -> None:
    first = await backend(db)
    second = await backend(db)

    assert second == first
    assert len(lane(db).idle) == 1
    assert checked_out(db) == 1  # waiting in the lane, not in the pool


async def test_a_connection_goes_back_to_the_pool_after_linger(db: Database) -> None:
    await backend(db)

    await asyncio.sleep(reads_lane.LINGER * 2 + 0.2)

    assert lane(db).idle == []
    assert checked_out(db) == 0


async def test_a_connection_that_died_waiting_is_replaced(
    db: Database, settings: Settings
) -> None:
    first = await backend(db)
    killer = Database(str(settings.database_url), pool_size=1)
    try:
        await reads_lane.fetch(killer.engine, f"SELECT pg_terminate_backend({first})")
    finally:
        await killer.dispose()
    await asyncio.sleep(0.1)

    second = await backend(db)

    assert second != first


async def test_a_cancelled_read_drops_its_connection(db: Database) -> None:
    first = await backend(db)
    sleeping = asyncio.create_task(backend(db, "SELECT pg_sleep(5)"))
    await asyncio.sleep(0.3)

    sleeping.cancel()
    with pytest.raises(asyncio.CancelledError):
        await sleeping

    assert lane(db).idle == []
    assert checked_out(db) == 0
    assert await backend(db) != first


async def test_a_query_error_keeps_the_connection(db: Database) -> None:
    first = await backend(db)

    with pytest.raises(DBAPIError) as raised:
        await backend(db, "SELECT 1 / 0")

    assert not raised.value.connection_invalidated
    assert await backend(db) == first


async def test_disposing_of_the_engine_closes_the_waiting_connections(
    db: Database,
) -> None:
    await backend(db)
    waiting = lane(db).idle[0][1]

    await db.dispose()

    assert lane(db).idle == []
    assert waiting.dbapi_connection is None  # invalidated: closed, not leaked
