"""Codex runner's AMQP adapters for the one shard this process serves.

The Codex stage is still a stub: it refuses every job with `stage_not_implemented`
instead of pretending to succeed. The shard is known only at start-up, so the
subscribers come from `shard_router(shard)`; the publishers stay module-level objects
(their `.mock` is what tests assert on).
"""

from __future__ import annotations

from typing import Annotated, Any

from faststream import Depends
from faststream.rabbit import RabbitRouter
from loguru import logger

from shared.messages import CancelTask, SubmitCodexJob, TaskError, TaskFailed
from shared.metrics import Metrics, get_metrics
from shared.observer import observe_task
from shared.topology import EXCHANGE, Route, codex_cancel_queue, codex_queue

SERVICE = "codex_runner"
STAGE_NOT_IMPLEMENTED = "stage_not_implemented"

router = RabbitRouter()
task_failed = router.publisher(
    exchange=EXCHANGE, routing_key=Route.TASK_FAILED, persist=True
)

MetricsDep = Annotated[Metrics, Depends(get_metrics)]


def not_implemented(stage: str) -> TaskError:
    return TaskError(
        code=STAGE_NOT_IMPLEMENTED,
        message=f"{stage} is not implemented yet in this build",
        retryable=False,
    )


def job_details(cmd: SubmitCodexJob) -> dict[str, Any]:
    """The identifiers a runbook reader needs, shard included; never the prompt."""
    return {
        "message_id": str(cmd.message_id),
        "repository": cmd.repository,
        "feature_key": cmd.feature_key,
        "base_branch": cmd.base_branch,
        "spec_task_id": cmd.spec_task.task_id,
        **cmd.shard.model_dump(),
    }


async def on_submit_codex_job(cmd: SubmitCodexJob, metrics: MetricsDep) -> None:
    with (
        logger.contextualize(
            run_id=str(cmd.run_id), task=cmd.task, attempt=cmd.attempt
        ),
        observe_task(
            metrics, cmd.task, cmd.run_id, cmd.attempt, details=job_details(cmd)
        ) as observed,
    ):
        error = not_implemented("codex run")
        await task_failed.publish(cmd.reply(TaskFailed, error=error))
        observed.failed(error)


async def on_cancel_codex_job(cmd: CancelTask) -> None:
    with logger.contextualize(
        run_id=str(cmd.run_id), task=cmd.task, attempt=cmd.attempt
    ):
        logger.info(
            "Cancel of task {} for run {} (attempt {}): no Codex container is running",
            cmd.task,
            cmd.run_id,
            cmd.attempt,
        )


def shard_router(shard: int) -> RabbitRouter:
    """Subscribers of queue `codex-<shard>` and its cancel queue, plus publishers."""
    shard_routes = RabbitRouter()
    shard_routes.subscriber(codex_queue(shard), EXCHANGE)(on_submit_codex_job)
    shard_routes.subscriber(codex_cancel_queue(shard), EXCHANGE)(on_cancel_codex_job)
    shard_routes.include_router(router)
    return shard_routes
