"""Applying the events that stop a task: failed, cancelled, and a dead-lettered
message of the run. Same contract as `transitions.py` (the caller's transaction, the
run row locked; an event that does not apply changes nothing and says why).
"""

from __future__ import annotations

from datetime import UTC, datetime

from sqlalchemy.ext.asyncio import AsyncSession

from services.api.dispatch import announce_status, timeline
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
from services.api.lifecycle import ACTIVE_RUN, RunStatus, TaskStatus
from services.api.runs import lock_run
from shared.messages import Message, TaskCancelled, TaskError, TaskFailed, TaskName


async def record_failed(session: AsyncSession, event: TaskFailed) -> Outcome:
    run, outcome = await current(session, event)
    if run is None:
        return outcome
    # Fail the task first: an event that moves no task must change nothing.
    outcome = await fail(session, run, event.task, event.error, summary=event.summary)
    if not outcome.applied:
        return outcome
    await record_artifacts(session, run, event.task, event.artifacts)
    if event.task is TaskName.CODEX_PREFLIGHT:
        run.codex_preflight_status = "failed"
        run.codex_preflight_message = event.error.message
        audit = event.summary
        if "codex_status" in audit or "github_status" in audit:
            findings = str(audit.get("notes") or event.error.message)
            codex = str(audit.get("codex_status", "unknown"))
            await record_audit(
                session,
                run,
                codex,
                str(audit.get("github_status", "unknown")),
                findings,
            )
    return outcome


async def record_cancelled(session: AsyncSession, event: TaskCancelled) -> Outcome:
    """A stage stopped the task; the API already cancelled the run, or does so now."""
    run = await lock_run(session, event.run_id)
    if run is None:
        return Outcome(False, "unknown_run")
    if event.attempt != run.attempt:
        return Outcome(False, "stale_attempt")
    moved = await move_task(
        session, run, event.task, TaskStatus.CANCELLED, finished_at=datetime.now(UTC)
    )
    # Only the stop of the task the run waits on ends the run; any other task is done.
    if moved and run.status in ACTIVE_RUN:
        timeline(
            session,
            run,
            "task_cancelled",
            task=event.task,
            attempt=run.attempt,
            reason=event.reason,
        )
        finish(run, RunStatus.CANCELLED, datetime.now(UTC))
        await announce_status(session, run)
        return APPLIED
    return APPLIED if moved else Outcome(False, "transition_not_allowed")


async def fail_dead_letter(
    session: AsyncSession, message: Message, error: TaskError
) -> Outcome:
    """A message of this run died (unreadable, or its handler crashed): fail it."""
    run, outcome = await current(session, message)
    if run is None:
        return outcome
    # transition_not_allowed when its task is already over (or not yet dispatched):
    # the run waits on another. An open task has no summary yet for `fail` to clear.
    return await fail(session, run, message.task, error, kind="message_dead_lettered")
