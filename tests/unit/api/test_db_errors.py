"""What counts as "Postgres unavailable" (retry in place, answer 503): SQLAlchemy's
wrapped errors and asyncpg's own, from the statements `direct.py` sends to it."""

from __future__ import annotations

import asyncio

import asyncpg
import pytest
from sqlalchemy.exc import TimeoutError as PoolTimeout

from services.api.db import is_unavailable, retry_while_unavailable


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


async def test_a_bug_is_not_retried() -> None:
    async def work() -> None:
        raise asyncpg.exceptions.UndefinedColumnError("no such column")

    with pytest.raises(asyncpg.exceptions.UndefinedColumnError):
        await asyncio.wait_for(retry_while_unavailable(work), timeout=5)
