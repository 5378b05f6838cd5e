"""Publisher's AMQP adapters: apply the patch, push, open or adopt the pull request.

The handler announces the start (with a lease), runs `publish.run_publish` and
publishes the outcome. An expected failure is a TaskFailed event; anything else
raises and the message is dead-lettered (the API then fails the attempt).
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Annotated

from faststream import Depends
from faststream.rabbit import RabbitRouter
from loguru import logger

from services.publisher.publish import Deps, run_publish
from shared import stub
from shared.messages import (
    ApplyAndPublish,
    CancelTask,
    TaskFailed,
    TaskStarted,
    TaskSucceeded,
)
from shared.metrics import Metrics, get_metrics
from shared.observer import observe_task
from shared.topology import EXCHANGE, Route, queue_for

SERVICE = "publisher"
LEASE = timedelta(minutes=15)

router = RabbitRouter()
task_started = router.publisher(
    exchange=EXCHANGE, routing_key=Route.TASK_STARTED, persist=True
)
task_succeeded = router.publisher(
    exchange=EXCHANGE, routing_key=Route.TASK_SUCCEEDED, persist=True
)
task_failed = router.publisher(
    exchange=EXCHANGE, routing_key=Route.TASK_FAILED, persist=True
)

_deps: Deps | None = None


def configure(deps: Deps) -> None:
    """Called once by `main.py`; tests override `get_deps` instead."""
    global _deps
    _deps = deps


def get_deps() -> Deps:
    if _deps is None:
        raise RuntimeError("services.publisher.handlers.configure() was not called")
    return _deps


MetricsDep = Annotated[Metrics, Depends(get_metrics)]
DepsDep = Annotated[Deps, Depends(get_deps)]


@router.subscriber(queue_for(SERVICE, Route.APPLY_AND_PUBLISH), EXCHANGE)
async def on_apply_and_publish(
    cmd: ApplyAndPublish, deps: DepsDep, metrics: MetricsDep
) -> None:
    details = stub.command_details(cmd)
    with (
        logger.contextualize(
            run_id=str(cmd.run_id), task=cmd.task, attempt=cmd.attempt
        ),
        observe_task(
            metrics, cmd.task, cmd.run_id, cmd.attempt, details=details
        ) as seen,
    ):
        lease = datetime.now(UTC) + LEASE
        await task_started.publish(cmd.reply(TaskStarted, lease_until=lease))
        outcome = await run_publish(cmd, deps)
        if outcome.error is None:
            summary = outcome.summary or {}
            await task_succeeded.publish(
                cmd.reply(TaskSucceeded, summary=summary, artifacts=outcome.artifacts)
            )
            seen.succeeded(summary)
        else:
            await task_failed.publish(
                cmd.reply(TaskFailed, error=outcome.error, artifacts=outcome.artifacts)
            )
            seen.failed(outcome.error)


@router.subscriber(queue_for(SERVICE, Route.CANCEL_APPLY_AND_PUBLISH), EXCHANGE)
async def on_cancel_task(cmd: CancelTask) -> None:
    stub.note_cancel(cmd, "publishing is short and idempotent; the outcome stands")
