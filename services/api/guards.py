"""The steps every transition is made of: the locked run of the event's attempt, the
guarded task move, failing or finishing the run, and recording a stage's artifacts.

Each function runs inside the caller's transaction. A guard that does not hold changes
nothing and says why (`Outcome`).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import PurePosixPath
from typing import Any
from uuid import uuid4

from sqlalchemy.ext.asyncio import AsyncSession

from services.api import direct, taskmoves
from services.api.dispatch import announce_status, timeline
from services.api.lifecycle import (
    ACTIVE_RUN,
    TASK_ALLOWED_FROM,
    Phase,
    RunStatus,
    TaskStatus,
)
from services.api.models import Run
from services.api.runs import lock_run
from shared.messages import ArtifactRef, Message, TaskError, TaskName


@dataclass(frozen=True)
class Outcome:
    """What an event did: `applied`, or the reason it was ignored."""

    applied: bool
    reason: str = "applied"


APPLIED = Outcome(True)


async def current(session: AsyncSession, event: Message) -> tuple[Run | None, Outcome]:
    run = await lock_run(session, event.run_id)
    if run is None:
        return None, Outcome(False, "unknown_run")
    if event.attempt != run.attempt:
        return None, Outcome(False, "stale_attempt")
    if run.status not in ACTIVE_RUN:
        return None, Outcome(False, "run_not_active")
    return run, APPLIED


async def move_task(
    session: AsyncSession, run: Run, task: TaskName, to: TaskStatus, **values: Any
) -> bool:
    """Guarded UPDATE of the task row of the run's current attempt.

    False when the edge is not allowed.
    """
    return await taskmoves.move_task(
        session,
        run.id,
        task,
        run.attempt,
        to,
        sorted(TASK_ALLOWED_FROM[to]),
        values,
    )


async def fail(
    session: AsyncSession,
    run: Run,
    task: TaskName,
    error: TaskError,
    *,
    summary: dict[str, Any] | None = None,
    kind: str = "task_failed",
) -> Outcome:
    """Fail the task (guarded) and with it the run; `kind` names the timeline entry."""
    now = datetime.now(UTC)
    if not await move_task(
        session,
        run,
        task,
        TaskStatus.FAILED,
        finished_at=now,
        lease_until=None,
        error=error.model_dump(mode="json"),
        summary=summary,
    ):
        return Outcome(False, "transition_not_allowed")
    timeline(session, run, kind, task=task, attempt=run.attempt, errorCode=error.code)
    run.error_code, run.error_message = error.code, error.message
    finish(run, RunStatus.FAILED, now)
    await announce_status(session, run)
    return APPLIED


def finish(run: Run, status: RunStatus, now: datetime) -> None:
    run.status = status
    run.finished_at = now
    if status == RunStatus.SUCCEEDED:
        run.phase = Phase.COMPLETE


def safe_relative(path: str) -> str | None:
    """A normalised path inside the run directory, or None if it could escape."""
    if not path or "\x00" in path or "\\" in path or len(path) > 1024:
        return None
    pure = PurePosixPath(path)
    if (
        pure.is_absolute()
        or any(part in ("..", "") for part in pure.parts)
        or str(pure) == "."
    ):
        return None
    return str(pure)


async def record_artifacts(
    session: AsyncSession, run: Run, task: TaskName, refs: list[ArtifactRef]
) -> None:
    rows = []
    for ref in refs:
        path = safe_relative(ref.path)
        if path is None:
            # A stage never names files outside its run; drop rather than trust.
            continue
        rows.append(
            (uuid4(), run.id, ref.artifact_type[:64], path, str(task), run.attempt)
        )
    await direct.insert_artifacts(session, rows)


async def record_audit(
    session: AsyncSession, run: Run, codex: str, github: str, findings: str | None
) -> None:
    """One audit row per attempt: statuses as the stage reported them; the notes are
    the operator's notes for this attempt, then the stage's findings."""
    notes = "\n".join(part for part in (run.notes, findings) if part) or None
    await direct.insert_audit(
        session, (uuid4(), run.id, run.attempt, codex[:32], github[:32], notes)
    )
