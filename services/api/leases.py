"""Expired leases: a running task whose stage stopped reporting is sent again, and the
run failed once it was re-sent too often (the relay's reaper)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from services.api import outbox
from services.api.dispatch import command_id, timeline
from services.api.guards import APPLIED, Outcome, fail
from services.api.lifecycle import ACTIVE_RUN, TaskStatus
from services.api.models import Run, TaskState
from services.api.runs import lock_run
from shared.messages import TaskError, TaskName
from shared.routing import COMMAND_TYPES


async def expired_leases(
    session: AsyncSession, now: datetime, limit: int = 100
) -> list[tuple[Any, ...]]:
    """(run_id, task, attempt) of running tasks whose lease ran out.

    Only tasks of the run's current attempt count.
    """
    rows = await session.execute(
        select(TaskState.run_id, TaskState.task_name, TaskState.attempt)
        .join(Run, Run.id == TaskState.run_id)
        .where(
            TaskState.status == TaskStatus.RUNNING,
            TaskState.lease_until < now,
            TaskState.attempt == Run.attempt,
            Run.status.in_(ACTIVE_RUN),
        )
        .limit(limit)
    )
    return [tuple(row) for row in rows]


async def reap(
    session: AsyncSession, key: tuple[Any, ...], *, now: datetime, max_redispatch: int
) -> Outcome:
    """Send an expired task's command again.

    Fail the run instead once it was re-sent `max_redispatch` times.
    """
    run_id, task_name, attempt = key
    run = await lock_run(session, run_id)
    if run is None or run.attempt != attempt or run.status not in ACTIVE_RUN:
        return Outcome(False, "run_moved_on")
    state = (
        await session.scalars(
            select(TaskState)
            .where(
                TaskState.run_id == run_id,
                TaskState.task_name == task_name,
                TaskState.attempt == attempt,
            )
            .with_for_update()
        )
    ).one_or_none()
    if (
        state is None
        or state.status != TaskStatus.RUNNING
        or state.lease_until is None
        or state.lease_until >= now
    ):
        return Outcome(False, "lease_renewed")
    task = TaskName(task_name)
    if state.redispatches >= max_redispatch:
        error = TaskError(
            code="lease_expired",
            message=f"{task} stopped reporting progress "
            f"(lease expired {state.redispatches + 1} time(s))",
            retryable=True,
        )
        return await fail(session, run, task, error)
    state.redispatches += 1
    state.status = TaskStatus.QUEUED
    state.lease_until = None
    payload = {
        **state.payload,
        "message_id": str(command_id(run.id, task, attempt, state.redispatches)),
        "occurred_at": now.isoformat(),
    }
    await outbox.enqueue(session, COMMAND_TYPES[task].model_validate(payload))
    timeline(
        session,
        run,
        "task_redispatched",
        task=task,
        attempt=attempt,
        redispatch=state.redispatches,
    )
    return APPLIED
