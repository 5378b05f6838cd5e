"""What every stage handler module shares: its task-event publishers, a dependency
holder `main.py` fills once, and the start → work → outcome sequence."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Generic, TypeVar

from faststream.rabbit import RabbitRouter
from faststream.rabbit.publisher import RabbitPublisher
from loguru import logger

from shared.messages import (
    STARTED_AFTER,
    ArtifactRef,
    Command,
    TaskError,
    TaskFailed,
    TaskStarted,
    TaskSucceeded,
)
from shared.metrics import Metrics
from shared.observer import TaskObservation, observe_task
from shared.routing import Route
from shared.topology import EXCHANGE

T = TypeVar("T")


def publisher(router: RabbitRouter, route: Route) -> RabbitPublisher:
    """A persistent, confirmed publisher on the exchange (tests use its .mock)."""
    return router.publisher(exchange=EXCHANGE, routing_key=route, persist=True)


@dataclass(frozen=True)
class TaskEvents:
    started: RabbitPublisher
    succeeded: RabbitPublisher
    failed: RabbitPublisher


def task_events(router: RabbitRouter) -> TaskEvents:
    return TaskEvents(
        publisher(router, Route.TASK_STARTED),
        publisher(router, Route.TASK_SUCCEEDED),
        publisher(router, Route.TASK_FAILED),
    )


class Holder(Generic[T]):
    """A value built once by `main.py`; handlers get it through `Depends(holder.get)`
    (tests override that with `dependency_provider.scope`)."""

    def __init__(self, what: str) -> None:
        self._what = what
        self._value: T | None = None

    def set(self, value: T) -> None:
        self._value = value

    def get(self) -> T:
        if self._value is None:
            raise RuntimeError(f"{self._what} was not configured by main.py")
        return self._value


@dataclass
class Serving:
    """One command being served: its observation and the deferred `TaskStarted`."""

    seen: TaskObservation
    announcing: asyncio.Task[None] | None = None

    async def settle(self) -> None:
        """Before the outcome: a `TaskStarted` not sent yet is not sent at all (the
        outcome implies the start; the API allows queued -> terminal)."""
        if self.announcing is not None and not self.announcing.done():
            self.announcing.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self.announcing


async def _announce(cmd: Command, events: TaskEvents, lease: timedelta) -> None:
    lease_until = datetime.now(UTC) + lease
    await events.started.publish(cmd.reply(TaskStarted, lease_until=lease_until))


async def _announce_later(
    cmd: Command, events: TaskEvents, lease: timedelta, delay: timedelta
) -> None:
    await asyncio.sleep(delay.total_seconds())
    try:
        await _announce(cmd, events, lease)
    except Exception as exc:  # the outcome still comes; the lease is a safety net
        logger.warning("TaskStarted not published: {}", type(exc).__name__)


@asynccontextmanager
async def serving(
    cmd: Command,
    events: TaskEvents,
    metrics: Metrics,
    details: dict[str, Any],
    lease: timedelta,
    started_after: timedelta = STARTED_AFTER,
) -> AsyncIterator[Serving]:
    """Log context and observer for the task, then `TaskStarted` with a lease.

    `TaskStarted` goes out once the work has taken `started_after` (at once for
    zero): a stage that is done sooner sends only its outcome, which saves the API a
    transaction and the broker a message per quick task, as Celery does not track
    STARTED by default. Long work still gets its lease.
    """
    with (
        logger.contextualize(
            run_id=str(cmd.run_id), task=cmd.task, attempt=cmd.attempt
        ),
        observe_task(
            metrics, cmd.task, cmd.run_id, cmd.attempt, details=details
        ) as seen,
    ):
        serving = Serving(seen)
        if started_after <= timedelta(0):
            await _announce(cmd, events, lease)
        else:
            serving.announcing = asyncio.get_running_loop().create_task(
                _announce_later(cmd, events, lease, started_after)
            )
        try:
            yield serving
        finally:
            await serving.settle()


async def report(
    cmd: Command,
    events: TaskEvents,
    serving: Serving,
    *,
    summary: dict[str, Any] | None,
    error: TaskError | None,
    artifacts: list[ArtifactRef],
) -> None:
    """Publish the outcome event and give the observer the same verdict."""
    await serving.settle()
    if error is None:
        done = cmd.reply(TaskSucceeded, summary=summary or {}, artifacts=artifacts)
        await events.succeeded.publish(done)
        serving.seen.succeeded(summary)
    else:
        failed = cmd.reply(
            TaskFailed, error=error, summary=summary or {}, artifacts=artifacts
        )
        await events.failed.publish(failed)
        serving.seen.failed(error)
