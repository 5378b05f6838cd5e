"""Applying task events to runs as they go forward: started, heartbeat, succeeded
(and the next dispatch). The events that stop a task are in `stops.py`.

Each function runs inside the caller's transaction, with the run row locked. An event
that does not match the run's current attempt, or whose transition is not allowed,
changes nothing and says why.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from pydantic import ValidationError
from sqlalchemy import update
from sqlalchemy.ext.asyncio import AsyncSession

from services.api.closing import Closer, close
from services.api.dispatch import (
    announce_status,
    build_command,
    dispatch,
    queue_task,
    timeline,
)
from services.api.guards import (
    APPLIED,
    Outcome,
    current,
    fail,
    finish,
    move_task,
    record_artifacts,
    record_audit,
)
from services.api.lifecycle import (
    RunStatus,
    TaskStatus,
    next_task,
    shard_for,
)
from services.api.models import Run, TaskState
from shared.messages import (
    TaskError,
    TaskHeartbeat,
    TaskName,
    TaskStarted,
    TaskSucceeded,
)
from shared.routing import CODEX_VOLUME_PREFIX, codex_queue_name, codex_volume_name
from shared.summaries import (
    SUMMARY_TYPES,
    CodexSummary,
    DiscoverySummary,
    PreflightSummary,
    PublishSummary,
)


async def record_started(session: AsyncSession, event: TaskStarted) -> Outcome:
    run, outcome = await current(session, event)
    if run is None:
        return outcome
    now = datetime.now(UTC)
    if not await move_task(
        session,
        run,
        event.task,
        TaskStatus.RUNNING,
        started_at=now,
        lease_until=event.lease_until,
        heartbeat_at=now,
    ):
        return Outcome(False, "transition_not_allowed")
    timeline(session, run, "task_started", task=event.task, attempt=run.attempt)
    if run.status == RunStatus.PENDING:
        run.status = RunStatus.RUNNING
        run.started_at = run.started_at or now
        await announce_status(session, run)
    return APPLIED


async def record_heartbeat(session: AsyncSession, event: TaskHeartbeat) -> Outcome:
    run, outcome = await current(session, event)
    if run is None:
        return outcome
    result = await session.execute(
        update(TaskState)
        .where(
            TaskState.run_id == run.id,
            TaskState.task_name == event.task,
            TaskState.attempt == run.attempt,
            TaskState.status == TaskStatus.RUNNING,
        )
        .values(lease_until=event.lease_until, heartbeat_at=datetime.now(UTC))
        .returning(TaskState.id)
        .execution_options(synchronize_session=False)
    )
    if result.first() is None:
        return Outcome(False, "task_not_running")
    if event.progress:  # the stage's own summary of what it did so far
        timeline(session, run, "task_progress", task=event.task, attempt=run.attempt,
                 **event.progress)  # fmt: skip
    return APPLIED


async def record_succeeded(
    session: AsyncSession,
    event: TaskSucceeded,
    *,
    shards: int,
    volume_prefix: str = CODEX_VOLUME_PREFIX,
    closer: Closer | None = None,
) -> Outcome:
    """Record the success and move on: the next stage's command, or, after
    apply_and_publish and with a `closer`, finalize_run served at once in this
    transaction (no command to itself, no second transaction)."""
    run, outcome = await current(session, event)
    if run is None:
        return outcome
    summary_type = SUMMARY_TYPES.get(event.task)
    try:
        summary = summary_type.model_validate(event.summary) if summary_type else None
    except ValidationError as exc:
        error = TaskError(
            code="invalid_message",
            message=f"{event.task} reported an unreadable summary: "
            f"{exc.error_count()} validation error(s)",
        )
        return await fail(session, run, event.task, error)
    now = datetime.now(UTC)
    if not await move_task(
        session,
        run,
        event.task,
        TaskStatus.SUCCEEDED,
        finished_at=now,
        summary=event.summary,
        lease_until=None,
    ):
        return Outcome(False, "transition_not_allowed")
    await record_artifacts(session, run, event.task, event.artifacts)
    run.outputs = {**run.outputs, event.task: event.summary}
    timeline(session, run, "task_succeeded", task=event.task, attempt=run.attempt)
    before = run.status
    if run.status == RunStatus.PENDING:
        run.status = RunStatus.RUNNING
        run.started_at = run.started_at or now
    if await _apply_summary(session, run, summary, shards, volume_prefix):
        following = next_task(event.task)
        if following is None:
            finish(run, RunStatus.SUCCEEDED, now)
        elif following is TaskName.FINALIZE_RUN and closer is not None:
            await queue_task(session, run, build_command(run, following, run.attempt))
            if await close(session, run, now):
                await closer(session, run)
        else:
            await dispatch(session, run, following)
    if run.status != before:  # evt.run.<status> marks changes, not every step
        await announce_status(session, run)
    return APPLIED


async def _apply_summary(
    session: AsyncSession, run: Run, summary: Any, shards: int, volume_prefix: str
) -> bool:
    """Copy a stage's outputs onto the run; False when the run ends here (no work)."""
    if isinstance(summary, DiscoverySummary):
        run.base_branch, run.base_sha = summary.base_branch, summary.base_sha
        if summary.result == "no_work" or summary.discovered is None:
            run.result = "no_work"
            finish(run, RunStatus.SUCCEEDED, datetime.now(UTC))
            return False
        shard = shard_for(
            run.repository, run.feature_key, summary.discovered.task_id, shards
        )
        run.codex_shard_index = shard
        run.codex_queue, run.codex_volume = (
            codex_queue_name(shard),
            codex_volume_name(shard, volume_prefix),
        )
    elif isinstance(summary, PreflightSummary):
        run.codex_preflight_status = "passed"
        run.codex_preflight_message = summary.codex_preflight_message
        await record_audit(
            session, run, summary.codex_status, summary.github_status, summary.notes
        )
    elif isinstance(summary, CodexSummary):
        run.codex_task_id = summary.codex_task_id
        run.codex_patch_path = summary.patch.path
        run.codex_logs_path = summary.logs_path
    elif isinstance(summary, PublishSummary):
        run.branch_name, run.pr_url = summary.branch_name, summary.pr_url
        run.result = "published" if run.publish_mode != "none" else "patch_only"
    return True
