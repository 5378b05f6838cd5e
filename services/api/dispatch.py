"""What a transition sends: next stage command, run-status events, timeline entries."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any
from uuid import UUID, uuid4, uuid5

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from services.api import direct, outbox, runrows
from services.api.lifecycle import PHASES, TaskStatus
from services.api.models import DEFAULT_USER_ID, Run, User
from shared.messages import (
    ApplyAndPublish,
    CodexShard,
    Command,
    DiscoverNextPhase,
    FinalizeRun,
    PublishMode,
    RunStatusChanged,
    TaskName,
)
from shared.routing import COMMAND_TYPES
from shared.summaries import CodexSummary, DiscoverySummary


class MissingStageOutput(Exception):
    """A command needs an output that no earlier stage recorded (a corrupted run)."""


def command_id(run_id: UUID, task: TaskName, attempt: int, redispatch: int = 0) -> UUID:
    """Deterministic: dispatching the same task attempt twice yields one outbox row."""
    suffix = f":{redispatch}" if redispatch else ""
    return uuid5(run_id, f"{task}:{attempt}{suffix}")


def shard_of(run: Run) -> CodexShard:
    if (
        run.codex_queue is None
        or run.codex_volume is None
        or run.codex_shard_index is None
    ):
        raise MissingStageOutput(f"run {run.id} has no Codex shard yet")
    return CodexShard(
        codex_queue=run.codex_queue,
        codex_volume=run.codex_volume,
        codex_shard_index=run.codex_shard_index,
    )


def _discovery(run: Run) -> DiscoverySummary:
    raw = run.outputs.get(TaskName.DISCOVER_NEXT_PHASE)
    if raw is None:
        raise MissingStageOutput(f"run {run.id} has no discovery output")
    summary = DiscoverySummary.model_validate(raw)
    if summary.discovered is None:
        raise MissingStageOutput(f"run {run.id} discovered no task")
    return summary


def build_command(
    run: Run, task: TaskName, attempt: int, *, requested_by: str | None = None
) -> Command:
    """The command for `task`, from the run's request and earlier stages' outputs."""
    common: dict[str, Any] = {
        "message_id": command_id(run.id, task, attempt),
        "run_id": run.id,
        "task": task,
        "attempt": attempt,
        "occurred_at": datetime.now(UTC),
        "repository": run.repository,
        "feature_key": run.feature_key,
    }
    if task is TaskName.DISCOVER_NEXT_PHASE:
        return DiscoverNextPhase(
            **common,
            base_branch=run.base_branch,
            requested_task_id=run.requested_task_id,
        )
    if task is TaskName.FINALIZE_RUN:
        return FinalizeRun(**common)
    found = _discovery(run)
    stage: dict[str, Any] = {
        **common,
        "base_branch": found.base_branch,
        "base_sha": found.base_sha,
        "spec_task": found.discovered,
    }
    if task is TaskName.APPLY_AND_PUBLISH:
        codex_raw = run.outputs.get(TaskName.SUBMIT_CODEX_JOB)
        if codex_raw is None:
            raise MissingStageOutput(f"run {run.id} has no patch")
        codex = CodexSummary.model_validate(codex_raw)
        return ApplyAndPublish(
            **stage,
            publish_mode=PublishMode(run.publish_mode),
            patch=codex.patch,
            codex_task_id=codex.codex_task_id,
            spec_title=found.spec_title,
            requested_by=requested_by,
        )
    kind = COMMAND_TYPES[task]
    extra: dict[str, Any] = {"shard": shard_of(run)}
    if task is TaskName.CODEX_PREFLIGHT:
        extra["publish_mode"] = PublishMode(run.publish_mode)
    if task is TaskName.SUBMIT_CODEX_JOB:
        extra |= {
            "notes": run.notes,
            "spec_title": found.spec_title,
            "has_plan": found.has_plan,
        }
    return kind(**stage, **extra)  # type: ignore[return-value]


async def dispatch(session: AsyncSession, run: Run, task: TaskName) -> Command:
    """Queue `task` of the run's current attempt.

    Adds a task row and its command, in the caller's transaction.
    """
    requested_by = None
    if task is TaskName.APPLY_AND_PUBLISH and run.created_by != DEFAULT_USER_ID:
        requested_by = await session.scalar(
            select(User.email).where(User.id == run.created_by)
        )
    command = build_command(run, task, run.attempt, requested_by=requested_by)
    await outbox.enqueue(session, command, task=queued(session, run, command))
    return command


async def queue_task(session: AsyncSession, run: Run, command: Command) -> None:
    """The task row of `command` (queued), and the run now waits on it; no message
    (the API serves finalize_run itself in the same transaction)."""
    row = queued(session, run, command)
    await direct.insert_task(session, row, command.model_dump(mode="json"))


def queued(session: AsyncSession, run: Run, command: Command) -> direct.TaskRow:
    """The run now waits on `command`: the queued task row for the caller to insert
    (`queue_task`, or with the command's outbox row: `dispatch`)."""
    task = command.task
    run.current_task = task
    run.phase = PHASES[task]
    timeline(session, run, "task_dispatched", task=task, attempt=run.attempt)
    return direct.TaskRow(uuid4(), run.id, task, run.attempt, TaskStatus.QUEUED)


def timeline(
    session: AsyncSession,
    run: Run,
    kind: str,
    *,
    task: str | None = None,
    attempt: int | None = None,
    **data: Any,
) -> None:
    """Append to the run's ordered timeline.

    The caller holds the run row lock, so `seq` has no gaps.
    """
    run.event_seq += 1
    runrows.add_timeline(session, (run.id, run.event_seq, kind, task, attempt, data))


async def announce_status(session: AsyncSession, run: Run) -> None:
    """Timeline entry plus an `evt.run.<status>` message for taps.

    Not mandatory: nobody has to listen.
    """
    timeline(
        session,
        run,
        f"run_{run.status}",
        attempt=run.attempt,
        phase=run.phase,
        result=run.result,
        errorCode=run.error_code,
    )
    message = RunStatusChanged(
        message_id=uuid5(run.id, f"run:{run.status}:{run.attempt}:{run.event_seq}"),
        run_id=run.id,
        task=TaskName(run.current_task or TaskName.DISCOVER_NEXT_PHASE),
        attempt=run.attempt,
        occurred_at=datetime.now(UTC),
        status=run.status,
        phase=run.phase,
        result=run.result,
        error_code=run.error_code,
        pr_url=run.pr_url,
    )
    await outbox.enqueue(session, message, mandatory=False)
