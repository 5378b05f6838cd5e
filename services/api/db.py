"""The engine and the session dependency; `main.py` calls `configure_database` once."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Annotated, Any, TypeVar

import orjson
from fastapi import Depends, Request
from loguru import logger
from sqlalchemy import event
from sqlalchemy.exc import (
    DBAPIError,
    DisconnectionError,
    InterfaceError,
    OperationalError,
)
from sqlalchemy.exc import TimeoutError as PoolTimeout
from sqlalchemy.ext.asyncio import (
    AsyncEngine,
    AsyncSession,
    async_sessionmaker,
    create_async_engine,
)
from sqlalchemy.orm import Session, sessionmaker

from services.api import runrows
from services.api.direct import json_text

PING_IDLE_AFTER = 1.0
"""A pooled connection idle for longer than this (seconds) is pinged at checkout."""


class Database:
    """An engine and its session factory."""

    def __init__(
        self,
        url: str,
        *,
        pool_size: int = 10,
        max_overflow: int = 10,
        pool_timeout: float = 30.0,
        ping_idle_after: float = PING_IDLE_AFTER,
    ) -> None:
        self.engine: AsyncEngine = create_async_engine(
            url,
            pool_size=pool_size,
            max_overflow=max_overflow,
            pool_timeout=pool_timeout,
            json_serializer=json_text,
            json_deserializer=orjson.loads,
        )
        _ping_when_idle(self.engine, ping_idle_after)
        self.sessions: sessionmaker[Session] = sessionmaker()
        """The sync sessions behind `new_session`: session events attach here."""
        self.new_session = async_sessionmaker(
            self.engine, expire_on_commit=False, sync_session_class=self.sessions
        )
        runrows.attach(self.sessions)

    async def dispose(self) -> None:
        await self.engine.dispose()


_IDLE_SINCE = "idle_since"


def _ping_when_idle(engine: AsyncEngine, idle_after: float) -> None:
    """Pessimistic disconnect handling at a fraction of `pool_pre_ping`'s cost.

    `pool_pre_ping` pings at every checkout, and SQLAlchemy's asyncpg ping is three
    round trips (BEGIN, `;`, ROLLBACK): under load, a fifth of a short transaction's
    statements. Instead:

    - a connection the server closed is known without a round trip: asyncpg reads
      every socket it holds, sees the server's EOF at once and marks the connection
      closed (a restart, a stop, `pg_terminate_backend`);
    - only a connection idle for longer than `idle_after` is pinged, for what no EOF
      announces (a peer gone silent, a half-open socket).

    A connection that fails either check is replaced by the pool. One that broke in
    the last `idle_after` without an EOF fails its first statement as a disconnect:
    the caller's transaction is retried (`retry_while_unavailable`) or answered 503,
    as for a server lost mid-transaction.
    """
    pool = engine.sync_engine.pool

    def fresh(_dbapi: Any, record: Any) -> None:
        record.info[_IDLE_SINCE] = time.monotonic()

    def checkout(dbapi: Any, record: Any, _proxy: Any) -> None:
        if record.driver_connection.is_closed():
            raise DisconnectionError("closed by the server")  # the pool reconnects
        if time.monotonic() - record.info.get(_IDLE_SINCE, 0.0) <= idle_after:
            return
        try:
            dbapi.ping()
        except Exception as exc:
            raise DisconnectionError(f"ping failed: {type(exc).__name__}") from exc

    event.listen(pool, "connect", fresh)
    event.listen(pool, "checkin", fresh)
    event.listen(pool, "checkout", checkout)


def get_database(request: Request) -> Database:
    """The app's database (`app.state.database`, set by `main.create_app`).

    AMQP handlers get a request-like object whose `app` is the same FastAPI app.
    """
    database: Database = request.app.state.database
    return database


async def get_session(request: Request) -> AsyncIterator[AsyncSession]:
    async with get_database(request).new_session() as session:
        yield session  # open and close only: the route or handler owns the transaction


SessionDep = Annotated[AsyncSession, Depends(get_session)]


async def database_dep(request: Request) -> Database:
    """The app's database, without a session (the read routes: `reads_lane`)."""
    return get_database(request)


DatabaseDep = Annotated[Database, Depends(database_dep)]  # async: no thread-pool hop


T = TypeVar("T")
_UNAVAILABLE_SQLSTATES = {
    "57P01",
    "57P02",
    "57P03",
    "08000",
    "08001",
    "08003",
    "08004",
    "08006",
    "53300",
}
_RETRY_SQLSTATES = {
    "40001",
    "40P01",
}  # serialization failure, deadlock: safe to run the transaction again


def _sqlstate(exc: BaseException) -> str | None:
    """SQLSTATE of a SQLAlchemy error's driver error, or of asyncpg's own (raised by
    the statements `direct.py` sends straight to it)."""
    orig = getattr(exc, "orig", None) or exc
    return getattr(orig, "sqlstate", None) or getattr(orig, "pgcode", None)


def is_unavailable(exc: BaseException) -> bool:
    """Postgres is unreachable (not a bad query) or every pooled connection stayed
    busy for the pool's timeout: answer 503, retry events in place."""
    if isinstance(exc, PoolTimeout):
        return True
    if isinstance(exc, DBAPIError):
        return (
            exc.connection_invalidated
            or _sqlstate(exc) in _UNAVAILABLE_SQLSTATES
            or isinstance(exc, OperationalError | InterfaceError)
        )
    return _sqlstate(exc) in _UNAVAILABLE_SQLSTATES or isinstance(
        exc, OSError | asyncio.TimeoutError
    )


def _conflict_delay(conflicts: int, max_delay: float) -> float:
    """No wait before the first run again, then 10, 20, 40 ms ... up to `max_delay`."""
    return 0.0 if conflicts == 1 else min(0.01 * 2 ** (conflicts - 2), max_delay)


async def retry_while_unavailable(
    work: Callable[[], Awaitable[T]], *, max_delay: float = 10.0
) -> T:
    """Run `work` (one transaction) until Postgres answers.

    An event is not poison because the database is down. A serialization failure
    or a deadlock is a conflict with another transaction, not an outage: the
    transaction runs again at once, then after 10, 20, 40 ms ... if it keeps
    conflicting.
    """
    outage_delay = 0.2
    conflicts = 0
    while True:
        try:
            return await work()
        except Exception as exc:
            if _sqlstate(exc) in _RETRY_SQLSTATES:
                conflicts += 1
                logger.info(
                    "Transaction conflict ({error}); running it again (conflict {n})",
                    error=type(exc).__name__,
                    n=conflicts,
                )
                await asyncio.sleep(_conflict_delay(conflicts, max_delay))
                continue
            if not is_unavailable(exc):
                raise
            logger.warning(
                "Database unavailable ({error}); retrying in {delay:.1f}s",
                error=type(exc).__name__,
                delay=outage_delay,
            )
            await asyncio.sleep(outage_delay)
            outage_delay = min(outage_delay * 2, max_delay)
