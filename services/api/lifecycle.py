"""The run state machine as pure rules: statuses, edges, pipeline order, shards.

`runs.py`, `guards.py`, `transitions.py`, `stops.py`, `closing.py` and `leases.py` apply
these rules as guarded UPDATEs; the property tests drive them directly.
"""

from __future__ import annotations

import hashlib
from enum import StrEnum

from shared.messages import PIPELINE, TaskName


class RunStatus(StrEnum):
    PENDING = "pending"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"


class TaskStatus(StrEnum):
    QUEUED = "queued"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    SKIPPED = "skipped"
    CANCELLED = "cancelled"


class Phase(StrEnum):
    DISCOVER = "discover"
    SUBMIT = "submit"
    APPLY = "apply"
    PUBLISH = "publish"
    COMPLETE = "complete"


ACTIVE_RUN = frozenset({RunStatus.PENDING, RunStatus.RUNNING})
TERMINAL_RUN = frozenset({RunStatus.SUCCEEDED, RunStatus.FAILED, RunStatus.CANCELLED})
RETRYABLE_RUN = frozenset({RunStatus.FAILED, RunStatus.CANCELLED})
OPEN_TASK = frozenset({TaskStatus.QUEUED, TaskStatus.RUNNING})
TERMINAL_TASK = frozenset(
    {TaskStatus.SUCCEEDED, TaskStatus.FAILED, TaskStatus.SKIPPED, TaskStatus.CANCELLED}
)

# Target status -> statuses it may be entered from. An outcome may overtake its
# TaskStarted (events travel on different queues), so queued -> terminal is legal;
# nothing ever leaves a terminal status.
TASK_ALLOWED_FROM: dict[TaskStatus, frozenset[TaskStatus]] = {
    TaskStatus.RUNNING: frozenset({TaskStatus.QUEUED}),
    TaskStatus.SUCCEEDED: OPEN_TASK,
    TaskStatus.FAILED: OPEN_TASK,
    TaskStatus.CANCELLED: OPEN_TASK,
    TaskStatus.SKIPPED: frozenset({TaskStatus.QUEUED}),
    TaskStatus.QUEUED: frozenset(
        {TaskStatus.RUNNING}
    ),  # lease expired: the command is sent again
}
RUN_ALLOWED_FROM: dict[RunStatus, frozenset[RunStatus]] = {
    RunStatus.RUNNING: frozenset({RunStatus.PENDING}),
    RunStatus.SUCCEEDED: ACTIVE_RUN,
    RunStatus.FAILED: ACTIVE_RUN,
    RunStatus.CANCELLED: ACTIVE_RUN,
    RunStatus.PENDING: RETRYABLE_RUN,  # retry starts a new attempt
}

PHASES: dict[TaskName, Phase] = {
    TaskName.DISCOVER_NEXT_PHASE: Phase.DISCOVER,
    TaskName.CODEX_PREFLIGHT: Phase.DISCOVER,
    TaskName.SUBMIT_CODEX_JOB: Phase.SUBMIT,
    TaskName.APPLY_AND_PUBLISH: Phase.PUBLISH,
    TaskName.FINALIZE_RUN: Phase.COMPLETE,
}


def task_may_enter(target: TaskStatus, current: TaskStatus) -> bool:
    return current in TASK_ALLOWED_FROM[target]


def run_may_enter(target: RunStatus, current: RunStatus) -> bool:
    return current in RUN_ALLOWED_FROM[target]


def next_task(task: TaskName) -> TaskName | None:
    """The task after `task` in the pipeline, or None after finalize_run."""
    index = PIPELINE.index(task)
    return PIPELINE[index + 1] if index + 1 < len(PIPELINE) else None


def resume_point(latest: dict[TaskName, TaskStatus]) -> TaskName:
    """First task, in pipeline order, whose latest attempt did not succeed."""
    for task in PIPELINE:
        if latest.get(task) is not TaskStatus.SUCCEEDED:
            return task
    raise ValueError("every task succeeded: nothing to resume")


def shard_for(repository: str, feature_key: str, task_id: str, shards: int) -> int:
    """Stable shard from `repository|feature|task`: the same in every process."""
    digest = hashlib.sha256(
        f"{repository.lower()}|{feature_key}|{task_id}".encode()
    ).digest()
    return int.from_bytes(digest[:8], "big") % shards
