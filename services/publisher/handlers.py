"""Publisher's AMQP adapters: apply the patch, push, open or adopt the pull request.

The stage is still a stub: it refuses every command with `stage_not_implemented`
instead of pretending to succeed.
"""

from __future__ import annotations

from typing import Annotated, Any

from faststream import Depends
from faststream.rabbit import RabbitRouter
from loguru import logger

from shared.messages import ApplyAndPublish, CancelTask, TaskError, TaskFailed
from shared.metrics import Metrics, get_metrics
from shared.observer import observe_task
from shared.topology import EXCHANGE, Route, queue_for

SERVICE = "publisher"
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


def publish_details(cmd: ApplyAndPublish) -> dict[str, Any]:
    """The identifiers a runbook reader needs; never the patch."""
    return {
        "message_id": str(cmd.message_id),
        "repository": cmd.repository,
        "feature_key": cmd.feature_key,
        "base_branch": cmd.base_branch,
        "spec_task_id": cmd.spec_task.task_id,
        "publish_mode": cmd.publish_mode,
        "codex_task_id": cmd.codex_task_id,
    }


@router.subscriber(queue_for(SERVICE, Route.APPLY_AND_PUBLISH), EXCHANGE)
async def on_apply_and_publish(cmd: ApplyAndPublish, metrics: MetricsDep) -> None:
    with (
        logger.contextualize(
            run_id=str(cmd.run_id), task=cmd.task, attempt=cmd.attempt
        ),
        observe_task(
            metrics, cmd.task, cmd.run_id, cmd.attempt, details=publish_details(cmd)
        ) as observed,
    ):
        error = not_implemented("apply and publish")
        await task_failed.publish(cmd.reply(TaskFailed, error=error))
        observed.failed(error)


@router.subscriber(queue_for(SERVICE, Route.CANCEL_APPLY_AND_PUBLISH), EXCHANGE)
async def on_cancel_task(cmd: CancelTask) -> None:
    with logger.contextualize(
        run_id=str(cmd.run_id), task=cmd.task, attempt=cmd.attempt
    ):
        logger.info(
            "Cancel of task {} for run {} (attempt {}): nothing is running here",
            cmd.task,
            cmd.run_id,
            cmd.attempt,
        )
