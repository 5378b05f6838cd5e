"""What counts as "Postgres unavailable" (retry in place, answer 503): SQLAlchemy's
wrapped errors and asyncpg's own, from the statements `direct.py` sends to it."""

from __future__ import annotations

import asyncio
import sys

import asyncpg
import pytest
from sqlalchemy.exc import TimeoutError as PoolTimeout

from services.api import db
from services.api.db import is_unavailable, retry_while_unavailable
from services.api.taskmoves import StaleTaskStatus
from tests.support.fakes import CapturedLogs


@pytest.mark.parametrize(
    "error",
    [
        asyncpg.exceptions.ConnectionDoesNotExistError("connection was closed"),
        asyncpg.exceptions.CannotConnectNowError("the database system is starting up"),
        asyncpg.exceptions.AdminShutdownError("terminating connection"),
        ConnectionResetError(),
        PoolTimeout("QueuePool limit of size 20 overflow 0 reached"),
    ],
)
def test_connection_loss_is_unavailable(error: Exception) -> None:
    assert is_unavailable(error)


@pytest.mark.parametrize(
    "error",
    [
        asyncpg.exceptions.UniqueViolationError("duplicate key"),
        asyncpg.exceptions.UndefinedColumnError("no such column"),
        ValueError("a bug"),
    ],
)
def test_query_errors_are_not(error: Exception) -> None:
    assert not is_unavailable(error)


async def test_an_asyncpg_deadlock_is_retried() -> None:
    calls = 0

    async def work() -> str:
        nonlocal calls
        calls += 1
        if calls == 1:
            raise asyncpg.exceptions.DeadlockDetectedError("deadlock detected")
        return "done"

    assert await retry_while_unavailable(work) == "done"
    assert calls == 2


@pytest.fixture
def delays(monkeypatch: pytest.MonkeyPatch) -> list[float]:
    """The waits `retry_while_unavailable` asks for, none of them waited.

    The tests share the session's event loop with other tasks (a log shipper's
    0.2 s flush loop, for one), so only sleeps awaited from `db.py` are recorded
    and skipped; everyone else's still sleep."""
    asked: list[float] = []
    real_sleep = asyncio.sleep

    async def sleep(delay: float) -> None:
        if sys._getframe(1).f_globals.get("__name__") == db.__name__:
            asked.append(delay)
            delay = 0
        await real_sleep(delay)

    monkeypatch.setattr(asyncio, "sleep", sleep)  # as db.py calls it
    return asked


async def test_a_conflict_runs_again_at_once_and_is_not_an_outage(
    delays: list[float],
) -> None:
    """A serialization failure (our own `StaleTaskStatus` or Postgres's) is run
    again without the outage's 0.2 s wait, then with a short growing backoff."""
    errors = [
        StaleTaskStatus("moved meanwhile"),
        asyncpg.exceptions.SerializationError("could not serialize access"),
        asyncpg.exceptions.DeadlockDetectedError("deadlock detected"),
    ]

    async def work() -> str:
        if errors:
            raise errors.pop(0)
        return "done"

    with CapturedLogs.capture() as logs:
        assert await retry_while_unavailable(work) == "done"
    assert delays == [0.0, 0.01, 0.02]
    assert len(logs.matching("Transaction conflict")) == 3
    assert not logs.matching("unavailable")


async def test_an_outage_backs_off_from_200_ms(delays: list[float]) -> None:
    outages = 3

    async def work() -> str:
        nonlocal outages
        if outages:
            outages -= 1
            raise ConnectionResetError()
        return "done"

    with CapturedLogs.capture() as logs:
        assert await retry_while_unavailable(work) == "done"
    assert delays == [0.2, 0.4, 0.8]
    assert len(logs.matching("Database unavailable")) == 3


async def test_a_bug_is_not_retried() -> None:
    async def work() -> None:
        raise asyncpg.exceptions.UndefinedColumnError("no such column")

    with pytest.raises(asyncpg.exceptions.UndefinedColumnError):
        await asyncio.wait_for(retry_while_unavailable(work), timeout=5)
