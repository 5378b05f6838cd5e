"""What a stage that is not built yet does: refuse honestly, through the observer.

Used by the stage services until their issues land; a refused command fails its run
with `stage_not_implemented` instead of pretending to succeed.
"""

from __future__ import annotations

from typing import Any

from faststream.rabbit.publisher import RabbitPublisher
from loguru import logger

from shared.messages import CancelTask, Command, TaskError, TaskFailed
from shared.metrics import Metrics
from shared.observer import observe_task

STAGE_NOT_IMPLEMENTED = "stage_not_implemented"


def not_implemented(stage: str) -> TaskError:
    return TaskError(
        code=STAGE_NOT_IMPLEMENTED,
        message=f"{stage} is not implemented yet in this build",
        retryable=False,
    )


def command_details(cmd: Command) -> dict[str, Any]:
    """The identifiers a runbook reader needs (shard keys included); never bodies."""
    details: dict[str, Any] = {
        "message_id": str(cmd.message_id),
        "repository": cmd.repository,
        "feature_key": cmd.feature_key,
    }
    for name in ("base_branch", "publish_mode", "codex_task_id"):
        if hasattr(cmd, name):
            details[name] = getattr(cmd, name)
    spec_task = getattr(cmd, "spec_task", None)
    if spec_task is not None:
        details["spec_task_id"] = spec_task.task_id
    shard = getattr(cmd, "shard", None)
    if shard is not None:
        details |= shard.model_dump()
    return details


async def refuse(
    cmd: Command, stage: str, task_failed: RabbitPublisher, metrics: Metrics
) -> None:
    """Report the command's task as failed with `stage_not_implemented`."""
    with (
        logger.contextualize(
            run_id=str(cmd.run_id), task=cmd.task, attempt=cmd.attempt
        ),
        observe_task(
            metrics, cmd.task, cmd.run_id, cmd.attempt, details=command_details(cmd)
        ) as observed,
    ):
        error = not_implemented(stage)
        await task_failed.publish(cmd.reply(TaskFailed, error=error))
        observed.failed(error)


def note_cancel(cmd: CancelTask, what: str) -> None:
    with logger.contextualize(
        run_id=str(cmd.run_id), task=cmd.task, attempt=cmd.attempt
    ):
        logger.info(
            "Cancel of task {} for run {} (attempt {}): {}",
            cmd.task,
            cmd.run_id,
            cmd.attempt,
            what,
        )
