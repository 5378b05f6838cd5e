"""Connections for `reads` and the bearer-token check (`accounts.authenticate`): one
statement on asyncpg itself, and a lane that hands a finished read's connection to the
next read.

A checkout from the engine's pool costs more than the read: the pool's bookkeeping and
its events (`db._ping_when_idle`). Reads come in bursts, so a read leaves its
connection in its engine's lane; one that waited there LINGER seconds goes back to the
pool. A reused connection that turns out broken (the database restarted while it
waited) is dropped with the rest of the lane and the read runs again on a pool
checkout, which replaces a connection the server closed.
"""

from __future__ import annotations

import asyncio
import time
import weakref
from collections.abc import Sequence
from typing import Any

import asyncpg
from sqlalchemy import event
from sqlalchemy.engine import Engine
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncEngine
from sqlalchemy.pool import PoolProxiedConnection
from sqlalchemy.util import greenlet_spawn

LINGER = 0.25
"""Seconds a connection waits in a lane for the next read."""
LANE_SIZE = 4
"""Connections at most waiting in one engine's lane (its pool keeps 10, + overflow)."""

_LOST = (asyncpg.InterfaceError, asyncpg.PostgresConnectionError, OSError)


class Lane:
    """One engine's connections between two reads; all on the event loop's thread."""

    def __init__(self, engine: Engine) -> None:
        self.idle: list[tuple[float, PoolProxiedConnection]] = []
        self.timer: asyncio.TimerHandle | None = None
        self.closing: set[asyncio.Task[None]] = set()
        event.listen(engine, "engine_disposed", self.drop)

    async def take(self, engine: Engine) -> tuple[PoolProxiedConnection, bool]:
        """A connection, and whether it waited here (so was not checked by the pool)."""
        if self.idle:
            since, connection = self.idle.pop()  # the most recently used
            if time.monotonic() - since < LINGER:
                return connection, True
            self.idle.append((since, connection))
            self.expire()  # the newest waited too long: so did the others
        return await greenlet_spawn(engine.raw_connection), False

    def give(self, connection: PoolProxiedConnection) -> None:
        if len(self.idle) >= LANE_SIZE:
            self.release(connection)
            return
        self.idle.append((time.monotonic(), connection))
        if self.timer is None:
            self.timer = asyncio.get_running_loop().call_later(LINGER, self.expire)

    def expire(self) -> None:
        """Send the connections that waited LINGER back to the pool."""
        self._stop_timer()
        cutoff = time.monotonic() - LINGER
        for since, connection in self.idle:
            if since <= cutoff:
                self.release(connection)
        self.idle = [(since, c) for since, c in self.idle if since > cutoff]
        if self.idle:
            wait = self.idle[0][0] - cutoff
            self.timer = asyncio.get_running_loop().call_later(wait, self.expire)

    def release(self, connection: PoolProxiedConnection) -> None:
        # In a greenlet: a full pool closes an overflow connection, which awaits.
        task = asyncio.get_running_loop().create_task(greenlet_spawn(connection.close))
        self.closing.add(task)
        task.add_done_callback(self.closing.discard)

    def drop(self, *_: object) -> None:
        """Close the waiting connections: the engine was disposed, or one of them was
        found broken (the others likely are too)."""
        self._stop_timer()
        idle, self.idle = self.idle, []
        for _since, connection in idle:
            connection.invalidate()

    def _stop_timer(self) -> None:
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None


_LANES: weakref.WeakKeyDictionary[Engine, Lane] = weakref.WeakKeyDictionary()


def lane(engine: Engine) -> Lane:
    found = _LANES.get(engine)
    if found is None:
        found = _LANES[engine] = Lane(engine)
    return found


async def fetch(bind: AsyncEngine, sql: str, *args: Any) -> Sequence[Any]:
    """The rows of `sql`, run by asyncpg on a connection of `bind`: one round trip, no
    BEGIN (a single statement reads one snapshot anyway, and commits on its own), and
    no session. A statement that writes must be safe to run twice: after a reused
    connection breaks, it runs again on a fresh one.

    Errors become `DBAPIError`, as SQLAlchemy raises them: a lost connection is
    answered 503 like any other database outage.
    """
    engine = bind.sync_engine
    waiting = lane(engine)
    while True:
        connection, reused = await waiting.take(engine)
        driver = connection.driver_connection
        assert driver is not None
        try:
            rows: Sequence[Any] = await driver.fetch(sql, *args)
        except (asyncpg.PostgresError, *_LOST) as exc:
            if not (isinstance(exc, _LOST) or driver.is_closed()):
                waiting.give(connection)
                raise DBAPIError(sql, args, exc) from exc
            connection.invalidate()
            if reused:
                waiting.drop()
                continue
            raise DBAPIError(sql, args, exc, connection_invalidated=True) from exc
        except BaseException:
            connection.invalidate()  # cancelled mid-query: its state is unknown
            raise
        waiting.give(connection)
        return rows
