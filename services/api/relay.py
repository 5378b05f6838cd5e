"""Outbox relay and lease reaper: `python -m services.api.relay`, its own process.

The relay publishes due unsent outbox rows with persist, publisher confirms,
`mandatory` and raise-on-return, a batch at a time, then marks them sent in the same
transaction that locked them (FOR UPDATE SKIP LOCKED, so several relays can run). In
the API process the fast path (`fastpath.py`) publishes most rows right after their
commit; the relay sends what it missed, once the row's grace has passed. A row that
fails is retried with capped backoff, never dropped, and never blocks other rows. It
wakes on Postgres NOTIFY and polls every RELAY_INTERVAL as a fallback. The reaper fails
or re-sends tasks whose lease expired, and prunes old outbox and inbox rows.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
from datetime import UTC, datetime, timedelta
from typing import Any
from uuid import UUID

import asyncpg
from aio_pika.exceptions import DeliveryError
from aiormq.exceptions import PublishError
from faststream.rabbit import RabbitBroker
from faststream.rabbit.schemas import Channel
from loguru import logger
from sqlalchemy import delete, select

from services.api import leases, logsink, outbox
from services.api.db import Database, is_unavailable
from services.api.fastpath import publish
from services.api.models import InboxRow, OutboxRow
from services.api.outbox import NOTIFY_CHANNEL
from services.api.settings import Settings
from shared.liveness import LivenessFile
from shared.logging import configure_logging
from shared.logship import install as install_log_shipper
from shared.metrics import configure_metrics, get_metrics
from shared.topology import declare_topology

MAX_BACKOFF = 60.0


def backoff(attempts: int) -> timedelta:
    return timedelta(seconds=min(0.5 * 2 ** max(attempts - 1, 0), MAX_BACKOFF))


class Relay:
    """One relay + reaper; `serve()` runs until `stop` is set."""

    def __init__(
        self, settings: Settings, database: Database, broker: RabbitBroker
    ) -> None:
        self.settings, self.database, self.broker = settings, database, broker
        self.wake = asyncio.Event()
        self.stop = asyncio.Event()

    async def publish_batch(self) -> int:
        """Publish up to one batch of due rows; returns how many were sent.

        Rows are published one after the other (awaiting each confirm), then the
        confirmed ones are marked sent in one UPDATE, in the transaction that locked
        them.
        """
        now = datetime.now(UTC)
        sent: list[tuple[UUID, datetime]] = []
        async with self.database.new_session() as session, session.begin():
            rows = (
                await session.scalars(
                    select(OutboxRow)
                    .where(OutboxRow.sent_at.is_(None), OutboxRow.available_at <= now)
                    .order_by(OutboxRow.created_at)
                    .limit(self.settings.relay_batch_size)
                    .with_for_update(skip_locked=True)
                )
            ).all()
            for row in rows:
                try:
                    await publish(self.broker, row, self.settings.relay_publish_timeout)
                except Exception as exc:  # any publish failure: keep the row
                    self._failed(row, exc)
                    if not isinstance(exc, DeliveryError | PublishError):
                        # Broker unreachable or timing out: stop burning attempts
                        # on the batch.
                        break
                    continue
                sent.append((row.id, datetime.now(UTC)))
            await outbox.mark_sent(session, sent)
        if sent:
            get_metrics().incr("outbox_published", len(sent))
        return len(sent)

    def _failed(self, row: OutboxRow, exc: BaseException) -> None:
        row.attempts += 1
        row.last_error = f"{type(exc).__name__}: {str(exc)[:500]}"
        row.available_at = datetime.now(UTC) + backoff(row.attempts)
        get_metrics().incr(
            "outbox_publish_failed", routing_key=row.routing_key.split(".")[0]
        )
        logger.warning(
            "Outbox row {id} not published (attempt {n}): {error}",
            id=str(row.id),
            n=row.attempts,
            error=row.last_error,
        )

    async def drain(self) -> int:
        total = 0
        while not self.stop.is_set():
            sent = await self.publish_batch()
            total += sent
            if sent < self.settings.relay_batch_size:
                return total
        return total

    async def reap(self) -> int:
        """Handle expired leases, then prune sent outbox rows and old inbox ids."""
        now = datetime.now(UTC)
        async with self.database.new_session() as session, session.begin():
            keys = await leases.expired_leases(session, now)
        handled = 0
        for key in keys:
            async with self.database.new_session() as session, session.begin():
                outcome = await leases.reap(
                    session,
                    key,
                    now=now,
                    max_redispatch=self.settings.lease_max_redispatch,
                )
            if outcome.applied:
                handled += 1
                get_metrics().incr("lease_expired", task=str(key[1]))
                logger.warning(
                    "Lease expired for run {run} task {task} attempt {attempt}",
                    run=str(key[0]),
                    task=key[1],
                    attempt=key[2],
                )
        horizon = now - timedelta(hours=self.settings.outbox_retention_hours)
        async with self.database.new_session() as session, session.begin():
            await session.execute(delete(OutboxRow).where(OutboxRow.sent_at < horizon))
            await session.execute(
                delete(InboxRow).where(InboxRow.received_at < horizon)
            )
        await self.prune_logs(now)
        if handled:
            self.wake.set()
        return handled

    async def prune_logs(self, now: datetime) -> int:
        """Delete log records older than LOG_RETENTION_DAYS."""
        horizon = logsink.retention_horizon(now, self.settings.log_retention_days)
        async with self.database.new_session() as session, session.begin():
            pruned = await logsink.prune(session, horizon)
        if pruned:
            logger.info(
                "Pruned {n} log records older than {horizon}",
                n=pruned,
                horizon=horizon.isoformat(),
            )
        return pruned

    async def _listen(self) -> asyncpg.Connection | None:
        try:
            conn = await asyncpg.connect(self.settings.plain_database_url(), timeout=5)
            await conn.add_listener(NOTIFY_CHANNEL, lambda *_: self.wake.set())
            return conn
        except (OSError, asyncpg.PostgresError, TimeoutError) as exc:
            logger.warning(
                "LISTEN unavailable ({error}); polling only", error=type(exc).__name__
            )
            return None

    async def _loop(
        self,
        work: Any,
        interval: float,
        name: str,
        *,
        wake: asyncio.Event | None = None,
    ) -> None:
        while not self.stop.is_set():
            try:
                await work()
            except Exception as exc:
                if not is_unavailable(exc):
                    logger.exception("{name} iteration failed", name=name)
                else:
                    logger.warning("{name}: database unavailable", name=name)
            waiter = wake or self.stop
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(waiter.wait(), timeout=interval)
            if wake is not None:
                wake.clear()

    async def serve(self) -> None:
        listener = await self._listen()
        try:
            await asyncio.gather(
                self._loop(
                    self.drain, self.settings.relay_interval, "relay", wake=self.wake
                ),
                self._loop(self.reap, self.settings.reaper_interval, "reaper"),
                self._stop_wakes_relay(),
            )
        finally:
            if listener is not None:
                with contextlib.suppress(Exception):
                    await listener.close()

    async def _stop_wakes_relay(self) -> None:
        await self.stop.wait()
        self.wake.set()


def build_broker(settings: Settings) -> RabbitBroker:
    """A publish-only broker: no routers, so connecting it consumes nothing."""
    return RabbitBroker(
        str(settings.rabbitmq_url),
        default_channel=Channel(on_return_raises=True),
        logger=logging.getLogger("relay.broker"),
    )


async def run(settings: Settings) -> None:
    database = Database(str(settings.database_url), pool_size=3)
    broker = build_broker(settings)
    await broker.connect()
    await declare_topology(broker, settings.codex_shards)
    shipper = install_log_shipper("relay", broker)
    shipper.start()
    relay = Relay(settings, database, broker)
    liveness = LivenessFile(settings.liveness_file, lambda: broker.ping(timeout=5.0))
    await liveness.start()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, relay.stop.set)
    logger.info("Outbox relay and lease reaper started")
    try:
        await relay.serve()
    finally:
        logger.info("Outbox relay stopped")
        await liveness.stop()
        await shipper.stop()
        await broker.stop()
        await database.dispose()


def main() -> None:
    settings = Settings()
    configure_logging("relay", level=settings.log_level, json=settings.log_json)
    configure_metrics(settings)
    asyncio.run(run(settings))


if __name__ == "__main__":
    main()
