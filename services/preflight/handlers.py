"""Preflight's AMQP adapters: discovery and the Codex/GitHub pre-flight.

Both stages are still stubs: they refuse every command with `stage_not_implemented`
instead of pretending to succeed, so a run fails visibly at the first missing stage.
"""

from __future__ import annotations

from typing import Annotated, Any

from faststream import Depends
from faststream.rabbit import RabbitRouter
from loguru import logger

from shared.messages import (
    CancelTask,
    CodexPreflight,
    DiscoverNextPhase,
    TaskError,
    TaskFailed,
)
from shared.metrics import Metrics, get_metrics
from shared.observer import observe_task
from shared.topology import EXCHANGE, Route, queue_for

SERVICE = "preflight"
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


def command_details(cmd: DiscoverNextPhase | CodexPreflight) -> dict[str, Any]:
    """The identifiers a runbook reader needs; never the message body."""
    details: dict[str, Any] = {
        "message_id": str(cmd.message_id),
        "repository": cmd.repository,
        "feature_key": cmd.feature_key,
        "base_branch": cmd.base_branch,
    }
    if isinstance(cmd, CodexPreflight):
        details |= cmd.shard.model_dump() | {"spec_task_id": cmd.spec_task.task_id}
    return details


@router.subscriber(queue_for(SERVICE, Route.DISCOVER_NEXT_PHASE), EXCHANGE)
async def on_discover_next_phase(cmd: DiscoverNextPhase, metrics: MetricsDep) -> None:
    with (
        logger.contextualize(
            run_id=str(cmd.run_id), task=cmd.task, attempt=cmd.attempt
        ),
        observe_task(
            metrics, cmd.task, cmd.run_id, cmd.attempt, details=command_details(cmd)
        ) as observed,
    ):
        error = not_implemented("discovery")
        await task_failed.publish(cmd.reply(TaskFailed, error=error))
        observed.failed(error)


@router.subscriber(queue_for(SERVICE, Route.CODEX_PREFLIGHT), EXCHANGE)
async def on_codex_preflight(cmd: CodexPreflight, metrics: MetricsDep) -> None:
    with (
        logger.contextualize(
            run_id=str(cmd.run_id), task=cmd.task, attempt=cmd.attempt
        ),
        observe_task(
            metrics, cmd.task, cmd.run_id, cmd.attempt, details=command_details(cmd)
        ) as observed,
    ):
        error = not_implemented("codex pre-flight")
        await task_failed.publish(cmd.reply(TaskFailed, error=error))
        observed.failed(error)


@router.subscriber(queue_for(SERVICE, Route.CANCEL_DISCOVER_NEXT_PHASE), EXCHANGE)
@router.subscriber(queue_for(SERVICE, Route.CANCEL_CODEX_PREFLIGHT), EXCHANGE)
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
