"""Closing a run: finalize_run's transition, its manifest, and whether a message's
task is still open (the dead-letter path asks)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from datetime import UTC, datetime

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from services.api.dispatch import announce_status, timeline
from services.api.guards import (
    APPLIED,
    Outcome,
    current,
    finish,
    move_task,
    record_artifacts,
)
from services.api.lifecycle import ACTIVE_RUN, OPEN_TASK, RunStatus, TaskStatus
from services.api.models import Run, TaskState
from shared.messages import ArtifactRef, Message, TaskName

Closer = Callable[[AsyncSession, Run], Awaitable[None]]
"""What finalize_run adds once the run is closed (the manifest): `events.py`'s."""


async def finalize(session: AsyncSession, event: Message) -> tuple[Run | None, Outcome]:
    """Serve finalize_run: close the run.

    Returns the run so the caller can write its manifest.
    """
    run, outcome = await current(session, event)
    if run is None:
        return None, outcome
    if not await close(session, run, datetime.now(UTC)):
        return None, Outcome(False, "transition_not_allowed")
    await announce_status(session, run)
    return run, APPLIED


async def close(session: AsyncSession, run: Run, now: datetime) -> bool:
    """finalize_run's own transition: its task and the run succeed."""
    if not await move_task(
        session,
        run,
        TaskName.FINALIZE_RUN,
        TaskStatus.SUCCEEDED,
        started_at=now,
        finished_at=now,
    ):
        return False
    timeline(
        session, run, "task_succeeded", task=TaskName.FINALIZE_RUN, attempt=run.attempt
    )
    finish(run, RunStatus.SUCCEEDED, now)
    return True


async def record_manifest(session: AsyncSession, run: Run, path: str) -> None:
    await record_artifacts(
        session,
        run,
        TaskName.FINALIZE_RUN,
        [ArtifactRef(path=path, artifact_type="manifest")],
    )


async def task_is_open(session: AsyncSession, message: Message) -> bool:
    """Whether the message's task is open on the run's current attempt (no locks)."""
    found = await session.scalar(
        select(TaskState.id)
        .join(Run, Run.id == TaskState.run_id)
        .where(
            TaskState.run_id == message.run_id,
            TaskState.task_name == message.task,
            TaskState.attempt == message.attempt,
            TaskState.status.in_(OPEN_TASK),
            Run.attempt == message.attempt,
            Run.status.in_(ACTIVE_RUN),
        )
    )
    return found is not None
