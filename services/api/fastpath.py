"""The outbox fast path: the API publishes what it just committed.

`outbox.enqueue` collects a transaction's new rows; after the commit they come here
and are published at once (persist, confirms, `mandatory`, raise-on-return, as the
relay does), then marked sent with the confirm time. Rows are marked sent only after
their confirm. A failed publish hands the row back to the relay at once (due now,
NOTIFY); anything else that goes wrong leaves the row unsent until its `available_at`
(commit + grace) has passed, when the relay publishes it: a crash or an outage costs
latency (and possibly one duplicate publish, as a relay crash between confirm and
commit does), never a message.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Coroutine
from datetime import UTC, datetime, timedelta
from typing import Any
from uuid import UUID

from faststream.rabbit import RabbitBroker
from loguru import logger

from services.api import outbox
from services.api.db import Database
from services.api.models import OutboxRow
from shared.metrics import get_metrics
from shared.topology import EXCHANGE


async def publish(
    broker: RabbitBroker, row: outbox.Pending | OutboxRow, confirm_within: float
) -> None:
    """One outbox row; raises unless the broker confirmed it (routed, if mandatory).

    The broker's channel must have `on_return_raises=True`.
    """
    await broker.publish(
        row.payload,
        exchange=EXCHANGE,
        routing_key=row.routing_key,
        persist=True,
        mandatory=row.mandatory,
        message_id=str(row.id),
        correlation_id=str(row.payload.get("run_id", "")),
        timeout=confirm_within,
    )


MARK_EVERY = 0.1
"""Seconds of confirms gathered into one `mark_sent` UPDATE."""


class FastPath:
    """`outbox.FastPath` over the API's broker and database."""

    def __init__(
        self,
        broker: RabbitBroker,
        database: Database,
        *,
        grace: float,
        mark_every: float = MARK_EVERY,
    ) -> None:
        self.broker, self.database = broker, database
        self.mark_every = mark_every
        self._grace = timedelta(seconds=grace)
        self.timeout = grace / 2  # give up well before the relay takes over
        self.tasks: set[asyncio.Task[None]] = set()
        self.confirmed: list[tuple[UUID, datetime]] = []
        self.marking: asyncio.Task[None] | None = None

    @property
    def grace(self) -> timedelta:
        return self._grace

    def submit(self, rows: list[outbox.Pending]) -> None:
        self._spawn(self._publish(rows))

    def _spawn(self, work: Coroutine[Any, Any, None]) -> asyncio.Task[None]:
        task = asyncio.get_running_loop().create_task(work)
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)
        return task

    async def _publish(self, rows: list[outbox.Pending]) -> None:
        results = await asyncio.gather(
            *(publish(self.broker, row, self.timeout) for row in rows),
            return_exceptions=True,
        )
        now = datetime.now(UTC)
        failed: list[UUID] = []
        for row, result in zip(rows, results, strict=True):
            if isinstance(result, BaseException):
                failed.append(row.id)
                get_metrics().incr(
                    "outbox_fast_path_failed", routing_key=row.routing_key.split(".")[0]
                )
                logger.warning(
                    "Outbox row {id} not published at once ({error}); "
                    "handed to the relay",
                    id=str(row.id),
                    error=f"{type(result).__name__}: {str(result)[:200]}",
                )
            else:
                self.confirmed.append((row.id, now))
        if self.confirmed and (self.marking is None or self.marking.done()):
            self.marking = self._spawn(self._mark())
        if failed:
            await self._hand_back(failed)

    async def _hand_back(self, ids: list[UUID]) -> None:
        """Make the rows due at once and wake the relay, which retries them with its
        backoff; if even that fails, the grace still brings them to the relay."""
        try:
            async with self.database.new_session() as session, session.begin():
                await outbox.hand_back(session, ids)
        except Exception as exc:
            logger.warning(
                "{n} outbox rows not handed back to the relay ({error}); it takes "
                "them when their grace ends",
                n=len(ids),
                error=type(exc).__name__,
            )

    async def _mark(self) -> None:
        """One UPDATE for the confirms of `mark_every` seconds (a group commit, well
        inside the grace): a transaction per few runs rather than per message."""
        while self.confirmed:
            await asyncio.sleep(self.mark_every)
            batch, self.confirmed = self.confirmed, []
            try:
                async with self.database.new_session() as session, session.begin():
                    await outbox.mark_sent(session, batch)
            except Exception as exc:  # the relay sends them again after the grace
                logger.warning(
                    "{n} published outbox rows not marked sent ({error})",
                    n=len(batch),
                    error=type(exc).__name__,
                )
                continue
            get_metrics().incr("outbox_published", len(batch))

    async def close(self, wait: float = 5.0) -> None:
        """Let in-flight publishes and marks finish (then cancel what is left)."""
        deadline = asyncio.get_running_loop().time() + wait
        while self.tasks:
            left = deadline - asyncio.get_running_loop().time()
            if left <= 0:
                break
            await asyncio.wait(list(self.tasks), timeout=left)
        for task in list(self.tasks):
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
