"""Operator actions on an existing run: retry (a new attempt, resumed at its first
unfinished task) and cancel (at once, and the stage holding it is asked to stop).

Every function takes the caller's session and never commits: the route owns the
transaction.
"""

from __future__ import annotations

from datetime import UTC, datetime
from uuid import UUID

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from services.api import outbox, runs
from services.api.dispatch import announce_status, dispatch, shard_of, timeline
from services.api.errors import (
    ActiveRunExists,
    RunNotCancellable,
    RunNotFound,
    RunNotRetryable,
)
from services.api.lifecycle import (
    ACTIVE_RUN,
    OPEN_TASK,
    RETRYABLE_RUN,
    RunStatus,
    TaskStatus,
    resume_point,
)
from services.api.models import Run, TaskState
from shared.messages import CancelTask, TaskName, new_message


async def start_retry(
    session: AsyncSession, run_id: UUID, *, notes: str | None, owner: UUID | None
) -> Run:
    """Resume a failed or cancelled run at its first unfinished task (a new attempt)."""
    run = await runs.lock_run(session, run_id, owner=owner)
    if run is None:
        raise RunNotFound(f"no run {run_id}")
    if run.status not in RETRYABLE_RUN:
        raise RunNotRetryable(
            f"run {run_id} is {run.status};"
            " only failed or cancelled runs can be retried"
        )
    rows = await session.execute(
        select(TaskState.task_name, TaskState.status)
        .where(TaskState.run_id == run.id)
        .order_by(TaskState.attempt)
    )
    latest = {
        TaskName(name): TaskStatus(status) for name, status in rows
    }  # later attempts overwrite
    resume = resume_point(latest)
    repository, feature_key = run.repository, run.feature_key
    try:
        # Another run of this feature may have started since: the partial index decides.
        async with session.begin_nested():
            run.status = RunStatus.PENDING
    except IntegrityError as exc:
        if "uq_spec_workflow_runs_active" not in str(exc.orig):
            raise
        active = await runs.active_run_id(session, repository, feature_key)
        raise ActiveRunExists(
            f"run {active} is still active for {repository} feature {feature_key}",
            str(active) if active else None,
        ) from None
    previous = run.attempt
    run.attempt += 1
    run.error_code = run.error_message = run.result = None
    run.finished_at = None
    if notes is not None:
        run.notes = notes
    timeline(
        session,
        run,
        "run_retried",
        attempt=run.attempt,
        previousAttempt=previous,
        resumeAt=resume,
    )
    await dispatch(session, run, resume)
    await announce_status(session, run)
    return run


async def cancel_run(session: AsyncSession, run_id: UUID, *, owner: UUID | None) -> Run:
    """Cancel the run now and ask the stage that holds it to stop."""
    run = await runs.lock_run(session, run_id, owner=owner)
    if run is None:
        raise RunNotFound(f"no run {run_id}")
    if run.status not in ACTIVE_RUN:
        raise RunNotCancellable(f"run {run_id} is already {run.status}")
    open_tasks = (
        await session.scalars(
            select(TaskState)
            .where(
                TaskState.run_id == run.id,
                TaskState.attempt == run.attempt,
                TaskState.status.in_(OPEN_TASK),
            )
            .with_for_update()
        )
    ).all()
    now = datetime.now(UTC)
    for state in open_tasks:
        state.status = TaskStatus.CANCELLED
        state.finished_at = now
        task = TaskName(state.task_name)
        if (
            task is not TaskName.FINALIZE_RUN
        ):  # the API runs finalize itself; no stage holds it
            await outbox.enqueue(session, _cancel_command(run, task))
        timeline(
            session,
            run,
            "task_cancelled",
            task=task,
            attempt=run.attempt,
            reason="cancel requested",
        )
    run.status = RunStatus.CANCELLED
    run.finished_at = now
    await announce_status(session, run)
    return run


def _cancel_command(run: Run, task: TaskName) -> CancelTask:
    return new_message(
        CancelTask,
        run_id=run.id,
        task=task,
        attempt=run.attempt,
        repository=run.repository,
        feature_key=run.feature_key,
        shard=shard_of(run) if task is TaskName.SUBMIT_CODEX_JOB else None,
    )
