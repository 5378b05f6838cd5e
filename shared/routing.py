"""Routing keys and names of the spec_workflow topology.

Free of any broker client, so logic modules can use it.
"""

from __future__ import annotations

from enum import StrEnum

from shared.messages import (
    ApplyAndPublish,
    CancelTask,
    CodexPreflight,
    CodexVolumeChecked,
    DiscoverNextPhase,
    FinalizeRun,
    Message,
    ProbeCodexVolume,
    RunStatusChanged,
    SubmitCodexJob,
    TaskCancelled,
    TaskFailed,
    TaskHeartbeat,
    TaskName,
    TaskStarted,
    TaskSucceeded,
)

CODEX_QUEUE_PREFIX = "codex-"
CODEX_VOLUME_PREFIX = "codex_auth_"


class Route(StrEnum):
    """Fixed routing keys; per-shard and per-status keys come from functions below."""

    DISCOVER_NEXT_PHASE = "cmd.discover_next_phase"
    CODEX_PREFLIGHT = "cmd.codex_preflight"
    APPLY_AND_PUBLISH = "cmd.apply_and_publish"
    FINALIZE_RUN = "cmd.finalize_run"
    CANCEL_DISCOVER_NEXT_PHASE = "cmd.cancel.discover_next_phase"
    CANCEL_CODEX_PREFLIGHT = "cmd.cancel.codex_preflight"
    CANCEL_APPLY_AND_PUBLISH = "cmd.cancel.apply_and_publish"
    TASK_STARTED = "evt.task.started"
    TASK_HEARTBEAT = "evt.task.heartbeat"
    TASK_SUCCEEDED = "evt.task.succeeded"
    TASK_FAILED = "evt.task.failed"
    TASK_CANCELLED = "evt.task.cancelled"
    PROBE_CODEX_VOLUME = "cmd.probe_codex_volume"
    CODEX_VOLUME_CHECKED = "evt.volume.checked"


STAGE_ROUTES: dict[TaskName, Route] = {
    TaskName.DISCOVER_NEXT_PHASE: Route.DISCOVER_NEXT_PHASE,
    TaskName.CODEX_PREFLIGHT: Route.CODEX_PREFLIGHT,
    TaskName.APPLY_AND_PUBLISH: Route.APPLY_AND_PUBLISH,
    TaskName.FINALIZE_RUN: Route.FINALIZE_RUN,
}
CANCEL_ROUTES: dict[TaskName, Route] = {
    TaskName.DISCOVER_NEXT_PHASE: Route.CANCEL_DISCOVER_NEXT_PHASE,
    TaskName.CODEX_PREFLIGHT: Route.CANCEL_CODEX_PREFLIGHT,
    TaskName.APPLY_AND_PUBLISH: Route.CANCEL_APPLY_AND_PUBLISH,
}
EVENT_ROUTES: dict[type[Message], Route] = {
    TaskStarted: Route.TASK_STARTED,
    TaskHeartbeat: Route.TASK_HEARTBEAT,
    TaskSucceeded: Route.TASK_SUCCEEDED,
    TaskFailed: Route.TASK_FAILED,
    TaskCancelled: Route.TASK_CANCELLED,
}
COMMAND_TYPES: dict[TaskName, type[Message]] = {
    TaskName.DISCOVER_NEXT_PHASE: DiscoverNextPhase,
    TaskName.CODEX_PREFLIGHT: CodexPreflight,
    TaskName.SUBMIT_CODEX_JOB: SubmitCodexJob,
    TaskName.APPLY_AND_PUBLISH: ApplyAndPublish,
    TaskName.FINALIZE_RUN: FinalizeRun,
}


def codex_queue_name(shard: int) -> str:
    return f"{CODEX_QUEUE_PREFIX}{shard}"


def codex_volume_name(shard: int, prefix: str = CODEX_VOLUME_PREFIX) -> str:
    """The Docker volume holding shard `shard`'s Codex login (CODEX_VOLUME_PREFIX)."""
    return f"{prefix}{shard}"


def submit_codex_route(shard: int) -> str:
    return f"cmd.submit_codex_job.{shard}"


def cancel_codex_route(shard: int) -> str:
    return f"cmd.cancel.submit_codex_job.{shard}"


def run_status_route(status: str) -> str:
    return f"evt.run.{status}"


def route_of(message: Message) -> str:
    """The routing key a message is published under."""
    if isinstance(message, ProbeCodexVolume):
        return Route.PROBE_CODEX_VOLUME
    if isinstance(message, CodexVolumeChecked):
        return Route.CODEX_VOLUME_CHECKED
    if isinstance(message, SubmitCodexJob):
        return submit_codex_route(message.shard.codex_shard_index)
    if isinstance(message, CancelTask):
        if message.task is TaskName.SUBMIT_CODEX_JOB:
            if message.shard is None:
                raise ValueError("cancelling a Codex job needs the run's shard")
            return cancel_codex_route(message.shard.codex_shard_index)
        return CANCEL_ROUTES[message.task]
    if isinstance(message, RunStatusChanged):
        return run_status_route(message.status)
    for kind, route in EVENT_ROUTES.items():
        if isinstance(message, kind):
            return route
    return STAGE_ROUTES[message.task]
