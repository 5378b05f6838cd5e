"""Codex runner's AMQP adapters for the one shard this process serves.

A job's delivery is acknowledged once `TaskStarted` (with a lease) is confirmed; from
then on heartbeats keep the lease alive, and if this process dies the API's reaper
sends the command again. The subscriber still takes one job at a time, so a shard's
Codex login never serves two runs at once.
"""

from __future__ import annotations

import asyncio
import contextlib
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any

from faststream import Depends
from faststream.rabbit import RabbitMessage, RabbitRouter
from loguru import logger

from services.codex_runner import runner
from services.codex_runner.runner import RunnerDeps
from shared import stub
from shared.messages import (
    CancelTask,
    SubmitCodexJob,
    TaskCancelled,
    TaskError,
    TaskFailed,
    TaskHeartbeat,
    TaskStarted,
    TaskSucceeded,
    new_message,
)
from shared.metrics import Metrics, get_metrics
from shared.observer import observe_task
from shared.stage import publisher, task_events
from shared.topology import EXCHANGE, Route, codex_cancel_queue, codex_queue

SERVICE = "codex_runner"
LEASE = timedelta(minutes=3)
"""Default lease of a job (CODEX_LEASE_SECONDS): TaskStarted and each heartbeat."""

router = RabbitRouter()
events = task_events(router)
task_started, task_succeeded = events.started, events.succeeded
task_failed = events.failed
task_heartbeat = publisher(router, Route.TASK_HEARTBEAT)
task_cancelled = publisher(router, Route.TASK_CANCELLED)

_deps: RunnerDeps | None = None
_heartbeat_every = 30.0
_lease = LEASE


def configure(
    deps: RunnerDeps, heartbeat_interval: float, lease_seconds: float | None = None
) -> None:
    global _deps, _heartbeat_every, _lease
    _deps, _heartbeat_every = deps, heartbeat_interval
    _lease = LEASE if lease_seconds is None else timedelta(seconds=lease_seconds)


def get_deps() -> RunnerDeps:
    if _deps is None:
        raise RuntimeError("services.codex_runner.handlers.configure() was not called")
    return _deps


DepsDep = Annotated[RunnerDeps, Depends(get_deps)]
MetricsDep = Annotated[Metrics, Depends(get_metrics)]


async def _beat(cmd: SubmitCodexJob, progress: dict[str, Any]) -> None:
    await task_heartbeat.publish(
        new_message(
            TaskHeartbeat,
            run_id=cmd.run_id,
            task=cmd.task,
            attempt=cmd.attempt,
            lease_until=datetime.now(UTC) + _lease,
            progress=progress,
        )
    )


async def _heartbeats(cmd: SubmitCodexJob) -> None:
    while True:
        await asyncio.sleep(_heartbeat_every)
        try:
            await _beat(cmd, {})
        except Exception as exc:  # the next beat may get through; the lease allows it
            logger.warning("Heartbeat not published: {}", type(exc).__name__)


_one_job = asyncio.Lock()
"""Held for a whole job. The early ack frees the prefetch slot, and aiormq runs each
delivery in a task of its own: without this, the shard's next job would start beside
the running one. The next job waits here, unacked (no TaskStarted, no lease)."""


async def on_submit_codex_job(
    cmd: SubmitCodexJob, message: RabbitMessage, deps: DepsDep, metrics: MetricsDep
) -> None:
    async with _one_job:
        await _submit(cmd, message, deps, metrics)


async def _submit(
    cmd: SubmitCodexJob, message: RabbitMessage, deps: RunnerDeps, metrics: Metrics
) -> None:
    shard = cmd.shard.model_dump()
    details = stub.command_details(cmd)
    with (
        logger.contextualize(
            run_id=str(cmd.run_id), task=cmd.task, attempt=cmd.attempt, **shard
        ),
        observe_task(
            metrics, cmd.task, cmd.run_id, cmd.attempt, details=details
        ) as seen,
    ):
        lease = datetime.now(UTC) + _lease
        await task_started.publish(
            cmd.reply(TaskStarted, lease_until=lease, details=shard)
        )
        await message.ack()  # the lease and heartbeats carry the job from here on
        beats = asyncio.create_task(_heartbeats(cmd))
        try:
            outcome = await runner.run_job(cmd, deps, lambda p: _beat(cmd, p))
        except Exception as exc:
            # Acked already: no dead letter would tell the API, so say it here.
            crash = TaskError(code="handler_crashed", message=type(exc).__name__,
                              retryable=True)  # fmt: skip
            await task_failed.publish(cmd.reply(TaskFailed, error=crash))
            raise
        finally:
            beats.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await beats
        if outcome.cancelled:
            await task_cancelled.publish(
                cmd.reply(TaskCancelled, reason="cancel requested")
            )
            seen.failed(TaskError(code="cancelled", message="cancel requested"))
        elif outcome.error is not None:
            await task_failed.publish(
                cmd.reply(TaskFailed, error=outcome.error, artifacts=outcome.artifacts)
            )
            seen.failed(outcome.error)
        else:
            await task_succeeded.publish(
                cmd.reply(
                    TaskSucceeded,
                    summary=outcome.summary or {},
                    artifacts=outcome.artifacts,
                )
            )
            seen.succeeded(_brief(outcome.summary or {}))


def _brief(summary: dict[str, Any]) -> dict[str, Any]:
    keys = ("codex_task_id", "files_changed", "usage", "commands")
    return {key: summary.get(key) for key in keys}


async def on_cancel_codex_job(cmd: CancelTask, deps: DepsDep) -> None:
    with logger.contextualize(
        run_id=str(cmd.run_id), task=cmd.task, attempt=cmd.attempt
    ):
        stopped = await deps.executor.cancel(cmd.run_id)
        logger.info(
            "Cancel of run {}: {}",
            cmd.run_id,
            "agent stopped" if stopped else "no agent of this run is running here",
        )


def shard_router(shard: int) -> RabbitRouter:
    """Subscribers of queue `codex-<shard>` and its cancel queue, plus publishers."""
    shard_routes = RabbitRouter()
    shard_routes.subscriber(codex_queue(shard), EXCHANGE)(on_submit_codex_job)
    shard_routes.subscriber(codex_cancel_queue(shard), EXCHANGE)(on_cancel_codex_job)
    shard_routes.include_router(router)
    return shard_routes
