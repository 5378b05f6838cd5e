"""Ship log records to the `spec_workflow.logs` exchange without ever blocking.

`LogShipper.sink` is a loguru sink (added after `configure_logging()` through
`add_sink`, so records are already redacted). It shapes each record into a small JSON
dict and appends it to a bounded buffer; when the buffer is full the record is dropped
and counted, never waited for. A background task publishes the buffer in batches, one
message per run of consecutive records with the same `log.<service>.<level>` routing
key (so the order they were logged in survives), a JSON list, non-persistent,
not mandatory, each publish bounded by `timeout`: a dead or slow broker only costs
dropped records. Dropped counts are reported every `report_interval` as one WARNING
line (not shipped) and the StatsD counter `log_records_dropped`.

Records of the shipper itself and of the AMQP client libraries are never shipped, nor
the broker loggers' per-message chatter below WARNING (the log consumer's own
deliveries would otherwise feed themselves).

The buffer is a `collections.deque` checked against `maxsize`: appends are atomic
under the GIL, so a sink called from another thread (stdlib logging) is safe, which an
`asyncio.Queue` is not.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections import deque
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from loguru import logger

from shared.logging import add_sink
from shared.logshape import NO_SHIP, runs_by_key, shape, should_ship
from shared.metrics import get_metrics
from shared.topology import LOGS_EXCHANGE

if TYPE_CHECKING:
    from faststream.rabbit import RabbitBroker
    from loguru import Message

Publish = Callable[[str, list[dict[str, Any]]], Awaitable[None]]
"""`publish(routing_key, records)`: one message holding a JSON list."""


class LogShipper:
    """A bounded, non-blocking buffer between loguru and the logs exchange."""

    def __init__(
        self,
        service: str,
        publish: Publish,
        *,
        maxsize: int = 10_000,
        batch_size: int = 500,
        timeout: float = 2.0,
        flush_interval: float = 0.2,
        report_interval: float = 30.0,
    ) -> None:
        self.service, self.publish = service, publish
        self.maxsize, self.batch_size, self.timeout = maxsize, batch_size, timeout
        self.flush_interval, self.report_interval = flush_interval, report_interval
        self.buffer: deque[dict[str, Any]] = deque()
        self.dropped = 0
        self.shipped = 0
        self._reported = 0
        self._sink_id: int | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self._stopping = False

    # -- the sink: called by loguru for every record ---------------------------------

    def sink(self, message: Message) -> None:
        """Never blocks and never raises into the logging call."""
        try:
            record = message.record
            if not should_ship(record):
                return
            if len(self.buffer) >= self.maxsize:
                self.dropped += 1
                return
            self.buffer.append(shape(record, self.service))
        except Exception:
            self.dropped += 1

    def attach(self, **options: Any) -> None:
        """Add (or re-add, after `configure_logging` removed it) the loguru sink."""
        if self._sink_id is not None:
            with contextlib.suppress(ValueError):
                logger.remove(self._sink_id)
        # catch=False: the sink never raises; enqueue=False: it never blocks.
        self._sink_id = add_sink(self.sink, catch=False, **options)

    # -- the background side ---------------------------------------------------------

    def start(self) -> None:
        """Start publishing and reporting on the running loop (idempotent)."""
        if self._tasks:
            return
        self._stopping = False
        self._tasks = [
            asyncio.create_task(self._ship_forever(), name="log-shipper"),
            asyncio.create_task(self._report_forever(), name="log-shipper-report"),
        ]

    async def stop(self, *, flush_timeout: float = 2.0) -> None:
        """Stop the tasks, try one last flush within `flush_timeout`, detach."""
        self._stopping = True
        for task in self._tasks:
            task.cancel()
        if self._tasks:
            # Bounded, and the loop checks `_stopping` too: on Python 3.11 the
            # `wait_for` in `flush_batch` can swallow the cancel, and while handlers
            # keep logging the loop never ran dry (SIGTERM never stopped a stage).
            await asyncio.wait(self._tasks, timeout=flush_timeout)
        self._tasks = []
        with contextlib.suppress(TimeoutError, Exception):
            await asyncio.wait_for(self.flush(), flush_timeout)
        self.report()
        if self._sink_id is not None:
            with contextlib.suppress(ValueError):
                logger.remove(self._sink_id)
            self._sink_id = None

    async def flush(self) -> int:
        """Publish what is buffered now; returns how many records were sent.

        Records logged meanwhile wait for the next flush. Unbounded, the final flush
        in `stop()` ran as long as handlers kept logging (the subscribers consume
        until the shutdown hooks return), and on Python 3.11 `wait_for` can swallow
        the cancellation meant to end it: SIGTERM never stopped the process.
        """
        sent, left = 0, len(self.buffer)
        while self.buffer and left > 0:
            size = min(left, self.batch_size)
            left -= size
            sent += await self.flush_batch(size)
        return sent

    async def flush_batch(self, size: int | None = None) -> int:
        batch: list[dict[str, Any]] = []
        limit = self.batch_size if size is None else size
        while self.buffer and len(batch) < limit:
            batch.append(self.buffer.popleft())
        sent = 0
        for key, items in runs_by_key(batch):
            try:
                await asyncio.wait_for(self.publish(key, items), self.timeout)
            except asyncio.CancelledError:
                self.dropped += len(items)
                raise
            except Exception:  # broker down or slow: drop, count, carry on
                self.dropped += len(items)
                continue
            sent += len(items)
        self.shipped += sent
        return sent

    async def _ship_forever(self) -> None:
        while not self._stopping:
            if self.buffer:
                await self.flush_batch()
            else:
                await asyncio.sleep(self.flush_interval)

    async def _report_forever(self) -> None:
        while True:
            await asyncio.sleep(self.report_interval)
            self.report()

    def report(self) -> int:
        """Log and count records dropped since the last report; returns that count."""
        new = self.dropped - self._reported
        if new <= 0:
            return 0
        self._reported += new
        with contextlib.suppress(Exception):
            get_metrics().incr("log_records_dropped", new, service=self.service)
        logger.bind(**{NO_SHIP: True}).warning(
            "Log shipper dropped {count} records ({total} in all): buffer full or "
            "broker unavailable",
            count=new,
            total=self.dropped,
        )
        return new


def broker_publisher(broker: RabbitBroker, *, timeout: float = 2.0) -> Publish:
    """`Publish` over a FastStream broker: non-persistent, not mandatory."""

    async def publish(key: str, records: list[dict[str, Any]]) -> None:
        body = json.dumps(records, default=str, separators=(",", ":")).encode()
        await broker.publish(
            body,
            exchange=LOGS_EXCHANGE,
            routing_key=key,
            persist=False,
            mandatory=False,
            content_type="application/json",
            timeout=timeout,
        )

    return publish


def install(
    service: str, broker: RabbitBroker, *, timeout: float = 2.0, **options: Any
) -> LogShipper:
    """Create a shipper over `broker` and attach its sink; call `start()` once the
    broker is connected (records logged before are buffered)."""
    shipper = LogShipper(
        service, broker_publisher(broker, timeout=timeout), timeout=timeout, **options
    )
    shipper.attach()
    return shipper
