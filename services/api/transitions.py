"""Applying task events to runs.

Guarded transitions, the next dispatch, dead letters and expired leases.

Each function runs inside the caller's transaction, with the run row locked. An event
that does not match the run's current attempt, or whose transition is not allowed,
changes nothing and says why.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import PurePosixPath
from typing import Any
from uuid import uuid4

from pydantic import ValidationError
from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession

from services.api import direct, outbox
from services.api.dispatch import (
    announce_status,
    build_command,
    command_id,
    dispatch,
    queue_task,
    timeline,
)
from services.api.lifecycle import (
    ACTIVE_RUN,
    OPEN_TASK,
    TASK_ALLOWED_FROM,
    Phase,
    RunStatus,
    TaskStatus,
    next_task,
    shard_for,
)
from services.api.models import CredentialAudit, Run, TaskState
from services.api.runs import lock_run
from shared.messages import (
    SUMMARY_TYPES,
    ArtifactRef,
    CodexSummary,
    DiscoverySummary,
    Message,
    PreflightSummary,
    PublishSummary,
    TaskCancelled,
    TaskError,
    TaskFailed,
    TaskHeartbeat,
    TaskName,
    TaskStarted,
    TaskSucceeded,
)
from shared.routing import (
    CODEX_VOLUME_PREFIX,
    COMMAND_TYPES,
    codex_queue_name,
    codex_volume_name,
)


@dataclass(frozen=True)
class Outcome:
    """What an event did: `applied`, or the reason it was ignored."""

    applied: bool
    reason: str = "applied"


APPLIED = Outcome(True)


async def _current(session: AsyncSession, event: Message) -> tuple[Run | None, Outcome]:
    run = await lock_run(session, event.run_id)
    if run is None:
        return None, Outcome(False, "unknown_run")
    if event.attempt != run.attempt:
        return None, Outcome(False, "stale_attempt")
    if run.status not in ACTIVE_RUN:
        return None, Outcome(False, "run_not_active")
    return run, APPLIED


async def _move_task(
    session: AsyncSession, run: Run, task: TaskName, to: TaskStatus, **values: Any
) -> bool:
    """Guarded UPDATE of the task row of the run's current attempt.

    False when the edge is not allowed.
    """
    return await direct.move_task(
        session,
        run.id,
        task,
        run.attempt,
        to,
        sorted(TASK_ALLOWED_FROM[to]),
        values,
    )


async def record_started(session: AsyncSession, event: TaskStarted) -> Outcome:
    run, outcome = await _current(session, event)
    if run is None:
        return outcome
    now = datetime.now(UTC)
    if not await _move_task(
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
    run, outcome = await _current(session, event)
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


Closer = Callable[[AsyncSession, Run], Awaitable[None]]
"""What finalize_run adds once the run is closed (the manifest): `events.py`'s."""


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
    run, outcome = await _current(session, event)
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
        return await _fail(session, run, event.task, error)
    now = datetime.now(UTC)
    if not await _move_task(
        session,
        run,
        event.task,
        TaskStatus.SUCCEEDED,
        finished_at=now,
        summary=event.summary,
        lease_until=None,
    ):
        return Outcome(False, "transition_not_allowed")
    await _record_artifacts(session, run, event.task, event.artifacts)
    run.outputs = {**run.outputs, event.task: event.summary}
    timeline(session, run, "task_succeeded", task=event.task, attempt=run.attempt)
    before = run.status
    if run.status == RunStatus.PENDING:
        run.status = RunStatus.RUNNING
        run.started_at = run.started_at or now
    if await _apply_summary(session, run, summary, shards, volume_prefix):
        following = next_task(event.task)
        if following is None:
            _finish(run, RunStatus.SUCCEEDED, now)
        elif following is TaskName.FINALIZE_RUN and closer is not None:
            await queue_task(session, run, build_command(run, following, run.attempt))
            if await _close(session, run, now):
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
            _finish(run, RunStatus.SUCCEEDED, datetime.now(UTC))
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
        _audit(session, run, summary.codex_status, summary.github_status, summary.notes)
    elif isinstance(summary, CodexSummary):
        run.codex_task_id = summary.codex_task_id
        run.codex_patch_path = summary.patch.path
        run.codex_logs_path = summary.logs_path
    elif isinstance(summary, PublishSummary):
        run.branch_name, run.pr_url = summary.branch_name, summary.pr_url
        run.result = "published" if run.publish_mode != "none" else "patch_only"
    return True


async def record_failed(session: AsyncSession, event: TaskFailed) -> Outcome:
    run, outcome = await _current(session, event)
    if run is None:
        return outcome
    # Fail the task first: an event that moves no task must change nothing.
    outcome = await _fail(session, run, event.task, event.error, summary=event.summary)
    if not outcome.applied:
        return outcome
    await _record_artifacts(session, run, event.task, event.artifacts)
    if event.task is TaskName.CODEX_PREFLIGHT:
        run.codex_preflight_status = "failed"
        run.codex_preflight_message = event.error.message
        audit = event.summary
        if "codex_status" in audit or "github_status" in audit:
            findings = str(audit.get("notes") or event.error.message)
            codex = str(audit.get("codex_status", "unknown"))
            _audit(
                session,
                run,
                codex,
                str(audit.get("github_status", "unknown")),
                findings,
            )
    return outcome


def _audit(
    session: AsyncSession, run: Run, codex: str, github: str, findings: str | None
) -> None:
    """One audit row per attempt: statuses as the stage reported them; the notes are
    the operator's notes for this attempt, then the stage's findings."""
    notes = "\n".join(part for part in (run.notes, findings) if part) or None
    session.add(
        CredentialAudit(
            id=uuid4(),
            run_id=run.id,
            attempt=run.attempt,
            codex_status=codex[:32],
            github_status=github[:32],
            notes=notes,
        )
    )


async def _fail(
    session: AsyncSession,
    run: Run,
    task: TaskName,
    error: TaskError,
    *,
    summary: dict[str, Any] | None = None,
) -> Outcome:
    now = datetime.now(UTC)
    if not await _move_task(
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
    timeline(
        session,
        run,
        "task_failed",
        task=task,
        attempt=run.attempt,
        errorCode=error.code,
    )
    run.error_code, run.error_message = error.code, error.message
    _finish(run, RunStatus.FAILED, now)
    await announce_status(session, run)
    return APPLIED


async def record_cancelled(session: AsyncSession, event: TaskCancelled) -> Outcome:
    """A stage stopped the task; the API already cancelled the run, or does so now."""
    run = await lock_run(session, event.run_id)
    if run is None:
        return Outcome(False, "unknown_run")
    if event.attempt != run.attempt:
        return Outcome(False, "stale_attempt")
    moved = await _move_task(
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
        _finish(run, RunStatus.CANCELLED, datetime.now(UTC))
        await announce_status(session, run)
        return APPLIED
    return APPLIED if moved else Outcome(False, "transition_not_allowed")


async def fail_dead_letter(
    session: AsyncSession, message: Message, error: TaskError
) -> Outcome:
    """A message of this run died (unreadable, or its handler crashed): fail it."""
    run, outcome = await _current(session, message)
    if run is None:
        return outcome
    now = datetime.now(UTC)
    if not await _move_task(
        session,
        run,
        message.task,
        TaskStatus.FAILED,
        finished_at=now,
        lease_until=None,
        error=error.model_dump(mode="json"),
    ):
        # Its task is already over (or not yet dispatched): the run waits on another.
        return Outcome(False, "transition_not_allowed")
    timeline(
        session,
        run,
        "message_dead_lettered",
        task=message.task,
        attempt=run.attempt,
        errorCode=error.code,
    )
    run.error_code, run.error_message = error.code, error.message
    _finish(run, RunStatus.FAILED, now)
    await announce_status(session, run)
    return APPLIED


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


async def finalize(session: AsyncSession, event: Message) -> tuple[Run | None, Outcome]:
    """Serve finalize_run: close the run.

    Returns the run so the caller can write its manifest.
    """
    run, outcome = await _current(session, event)
    if run is None:
        return None, outcome
    if not await _close(session, run, datetime.now(UTC)):
        return None, Outcome(False, "transition_not_allowed")
    await announce_status(session, run)
    return run, APPLIED


async def _close(session: AsyncSession, run: Run, now: datetime) -> bool:
    """finalize_run's own transition: its task and the run succeed."""
    if not await _move_task(
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
    _finish(run, RunStatus.SUCCEEDED, now)
    return True


async def record_manifest(session: AsyncSession, run: Run, path: str) -> None:
    await _record_artifacts(
        session,
        run,
        TaskName.FINALIZE_RUN,
        [ArtifactRef(path=path, artifact_type="manifest")],
    )


def _finish(run: Run, status: RunStatus, now: datetime) -> None:
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


async def _record_artifacts(
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
        return await _fail(session, run, task, error)
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
