"""Bearer tokens this API process has verified, kept a short while so a token-mode
request does not pay a database round trip for its check (at 10 clients the check
was about 40% of a `GET /runs/{id}`'s cost: `docs/benchmarks.md`).

Safe because Postgres says when to forget. Migration 0005's triggers send
`NOTIFY api_tokens_changed` whenever a token is revoked, re-dated, moved to another
user or deleted (by our CLI, a cascade from its user, or by hand in SQL), and the
`TokenWatcher`'s LISTEN drops every entry on it. The cache answers only while that
LISTEN is up: before it is, from the moment its connection is lost or fails its
heartbeat until it is back, every check goes to the database. An entry also ends
TOKEN_CACHE_SECONDS after its check, and at the token's own expiry.

A check that read the database before a change and would store its answer after the
change's NOTIFY is not stored: every drop starts a new generation, and an answer is
kept only in the generation its read began in.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from uuid import UUID

import asyncpg
from loguru import logger

CHANNEL = "api_tokens_changed"
CAPACITY = 10_000
"""Tokens kept at most; the oldest entry makes room. Only verified tokens are kept,
so unknown tokens sent in a flood cannot fill it."""
_LOST = (OSError, TimeoutError, asyncpg.PostgresError, asyncpg.InterfaceError)


@dataclass(frozen=True, slots=True)
class Entry:
    user_id: UUID
    expires_at: datetime | None
    stale_at: float  # on the cache's monotonic clock


class TokenCache:
    """Token hash -> its user; used on the event loop's thread only."""

    def __init__(
        self,
        ttl: float,
        *,
        capacity: int = CAPACITY,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.ttl = ttl
        self.capacity = capacity
        self.clock = clock
        self.entries: dict[str, Entry] = {}
        self.generation = 0
        self.live = False
        """Whether changes reach the cache (its watcher's LISTEN is up)."""

    def lookup(self, token_hash: str, now: datetime) -> UUID | None:
        """The user of a token checked lately, or None: ask the database."""
        if not self.live:
            return None
        entry = self.entries.get(token_hash)
        if entry is None:
            return None
        if entry.stale_at <= self.clock() or (
            entry.expires_at is not None and entry.expires_at <= now
        ):
            del self.entries[token_hash]
            return None
        return entry.user_id

    def keep(
        self,
        token_hash: str,
        user_id: UUID,
        expires_at: datetime | None,
        generation: int,
    ) -> None:
        """Store a valid token's check, read from the database in `generation`."""
        if not self.live or generation != self.generation or self.ttl <= 0:
            return
        if token_hash not in self.entries and len(self.entries) >= self.capacity:
            del self.entries[next(iter(self.entries))]
        self.entries[token_hash] = Entry(user_id, expires_at, self.clock() + self.ttl)

    def forget(self) -> None:
        """Drop every entry; checks begun before this are not stored."""
        self.entries.clear()
        self.generation += 1

    def set_live(self, live: bool) -> None:
        self.forget()
        self.live = live


TRIGGERS = ("api_tokens_changed", "api_tokens_truncated")
_TRIGGERS_ON = (
    "SELECT count(*) FROM pg_trigger "
    "WHERE tgrelid = to_regclass('api_tokens') AND tgname = ANY($1::text[]) "
    "AND tgenabled <> 'D'"
)


class TriggersMissing(RuntimeError):
    """Migration 0005's triggers are absent or disabled: no change would be heard."""


class TokenWatcher:
    """Keeps the cache's LISTEN up on a connection of its own.

    Connects, listens, and every `heartbeat` seconds checks, within the same time,
    that the connection answers and that migration 0005's triggers are there and
    enabled (a database not yet migrated, or triggers disabled by hand, would leave
    the cache deaf). The cache is live only from a passed check on; after any loss
    or failed check it goes dark and the watcher tries again every `retry` seconds.
    A connection that dies without a word is noticed within two heartbeats.
    """

    def __init__(
        self,
        cache: TokenCache,
        dsn: str,
        *,
        heartbeat: float = 5.0,
        retry: float = 1.0,
    ) -> None:
        self.cache = cache
        self.dsn = dsn
        self.heartbeat = heartbeat
        self.retry = retry
        self.task: asyncio.Task[None] | None = None
        self.connection: asyncpg.Connection | None = None
        self.heard: list[str] = []
        """Payloads of the latest notifications (a few), for tests and debugging."""
        self._failing = False

    def start(self) -> None:
        if self.task is None:
            self.task = asyncio.get_running_loop().create_task(self.run())

    async def stop(self) -> None:
        task, self.task = self.task, None
        if task is None:
            return
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await task
        self.cache.set_live(False)

    async def run(self) -> None:
        while True:
            try:
                await self._watch()
            except _LOST as exc:
                self._off(f"LISTEN {CHANNEL} lost ({type(exc).__name__})")
            except TriggersMissing:
                self._off("the api_tokens triggers (migration 0005) are missing or off")
            except Exception:
                logger.exception("Token cache watcher failed; it starts again")
                self._failing = True
            await asyncio.sleep(self.retry)

    def _off(self, why: str) -> None:
        if not self._failing:  # once per outage, not per attempt
            logger.warning(
                "Token cache off: {why}; every token check goes to the database",
                why=why,
            )
        self._failing = True

    async def _watch(self) -> None:
        lost = asyncio.Event()
        conn: asyncpg.Connection = await asyncpg.connect(
            self.dsn,
            timeout=5,
            server_settings={"application_name": "spec-workflow-token-cache"},
        )
        self.connection = conn
        try:
            conn.add_termination_listener(lambda _c: lost.set())
            await conn.add_listener(CHANNEL, self._changed)
            await self._check(conn)
            self.cache.set_live(True)
            self._failing = False
            logger.info("Token cache on: listening on {channel}", channel=CHANNEL)
            while True:
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(self.heartbeat):
                        await lost.wait()
                if lost.is_set():
                    raise ConnectionResetError("the LISTEN connection closed")
                await self._check(conn)
        finally:
            self.cache.set_live(False)
            self.connection = None
            conn.terminate()

    async def _check(self, conn: asyncpg.Connection) -> None:
        async with asyncio.timeout(self.heartbeat):
            enabled = await conn.fetchval(_TRIGGERS_ON, list(TRIGGERS))
        if enabled != len(TRIGGERS):
            raise TriggersMissing

    def _changed(self, _conn: Any, _pid: int, _channel: str, payload: str) -> None:
        self.cache.forget()
        self.heard = [*self.heard[-9:], payload]
        logger.debug("API token {token} changed: token cache dropped", token=payload)
