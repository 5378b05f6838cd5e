"""What every stage handler module shares: its task-event publishers, a dependency
holder `main.py` fills once, and the start → work → outcome sequence."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Generic, TypeVar

from faststream.rabbit import RabbitRouter
from faststream.rabbit.publisher import RabbitPublisher
from loguru import logger

from shared.messages import (
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


@asynccontextmanager
async def serving(
    cmd: Command,
    events: TaskEvents,
    metrics: Metrics,
    details: dict[str, Any],
    lease: timedelta,
) -> AsyncIterator[TaskObservation]:
    """Log context and observer for the task, then `TaskStarted` with a lease."""
    with (
        logger.contextualize(
            run_id=str(cmd.run_id), task=cmd.task, attempt=cmd.attempt
        ),
        observe_task(
            metrics, cmd.task, cmd.run_id, cmd.attempt, details=details
        ) as seen,
    ):
        lease_until = datetime.now(UTC) + lease
        await events.started.publish(cmd.reply(TaskStarted, lease_until=lease_until))
        yield seen


async def report(
    cmd: Command,
    events: TaskEvents,
    seen: TaskObservation,
    *,
    summary: dict[str, Any] | None,
    error: TaskError | None,
    artifacts: list[ArtifactRef],
) -> None:
    """Publish the outcome event and give the observer the same verdict."""
    if error is None:
        done = cmd.reply(TaskSucceeded, summary=summary or {}, artifacts=artifacts)
        await events.succeeded.publish(done)
        seen.succeeded(summary)
    else:
        failed = cmd.reply(
            TaskFailed, error=error, summary=summary or {}, artifacts=artifacts
        )
        await events.failed.publish(failed)
        seen.failed(error)
