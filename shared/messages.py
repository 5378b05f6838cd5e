"""Every message that crosses RabbitMQ: stage commands, task events and run events.

Messages are frozen and tolerant of unknown fields. They change only by adding fields
with defaults; a rename or removal is a new message type. They never carry secret
values.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from enum import StrEnum
from typing import Any, Literal, TypeVar
from uuid import UUID, uuid4, uuid5

from pydantic import BaseModel, ConfigDict, Field


class TaskName(StrEnum):
    """The pipeline's tasks; the same names in messages, metrics and logs."""

    DISCOVER_NEXT_PHASE = "discover_next_phase"
    CODEX_PREFLIGHT = "codex_preflight"
    SUBMIT_CODEX_JOB = "submit_codex_job"
    APPLY_AND_PUBLISH = "apply_and_publish"
    FINALIZE_RUN = "finalize_run"


PIPELINE: tuple[TaskName, ...] = tuple(TaskName)
"""Tasks in the order a run executes them."""


class PublishMode(StrEnum):
    PR = "pr"
    DRAFT = "draft"
    BRANCH = "branch"
    NONE = "none"


class Wire(BaseModel):
    """Base of every wire model: immutable, tolerant of fields newer senders add."""

    model_config = ConfigDict(frozen=True, extra="ignore")


M = TypeVar("M", bound="Message")


class Message(Wire):
    """Base of every message; `(run_id, task, attempt)` is the idempotency key."""

    message_id: UUID
    run_id: UUID
    task: TaskName
    attempt: int = Field(ge=1)
    occurred_at: datetime

    def reply(self, kind: type[M], **fields: Any) -> M:
        """Follow-up message.

        A redelivered cause yields the same message_id, so the API can drop it.
        """
        return kind(
            message_id=uuid5(self.message_id, kind.__name__),
            run_id=self.run_id,
            task=self.task,
            attempt=self.attempt,
            occurred_at=datetime.now(UTC),
            **fields,
        )


def new_message(
    kind: type[M], *, run_id: UUID, task: TaskName, attempt: int, **fields: Any
) -> M:
    """A message with a fresh id, for senders with no cause to reply to (heartbeats)."""
    return kind(
        message_id=uuid4(),
        run_id=run_id,
        task=task,
        attempt=attempt,
        occurred_at=datetime.now(UTC),
        **fields,
    )


# -------------------------------- shared payload pieces


class DiscoveredTask(Wire):
    """One Spec Kit task line chosen by discovery."""

    task_id: str
    description: str
    phase: str | None = None
    line: int | None = None
    parallel: bool = False
    user_story: str | None = None


class ArtifactRef(Wire):
    """A file the stage wrote, relative to the run's artifact directory."""

    path: str
    artifact_type: str


class TaskError(Wire):
    code: str
    message: str
    retryable: bool = False


class CodexShard(Wire):
    """The Codex queue and auth volume a run is routed to."""

    codex_queue: str
    codex_volume: str
    codex_shard_index: int = Field(ge=0)


# -------------------------------- commands (cmd.<task>)


class Command(Message):
    """A stage command: what the stage needs, never a secret."""

    repository: str
    feature_key: str


class DiscoverNextPhase(Command):
    base_branch: str | None = None
    requested_task_id: str | None = None


class CodexPreflight(Command):
    base_branch: str
    base_sha: str
    shard: CodexShard
    spec_task: DiscoveredTask
    publish_mode: PublishMode = PublishMode.PR
    """Push rights are required unless the run only keeps the patch (`none`)."""


class ProbeCodexVolume(Command):
    """Re-probe a shard's Codex login now (`force_refresh` skips the cache)."""

    shard: CodexShard
    force_refresh: bool = True


class SubmitCodexJob(Command):
    base_branch: str
    base_sha: str
    shard: CodexShard
    spec_task: DiscoveredTask
    notes: str | None = None
    spec_title: str | None = None
    has_plan: bool = False


class ApplyAndPublish(Command):
    base_branch: str
    base_sha: str
    spec_task: DiscoveredTask
    publish_mode: PublishMode
    patch: ArtifactRef
    codex_task_id: str | None = None
    spec_title: str | None = None
    requested_by: str | None = None
    """Email of the run's user (not the default user), for a Co-authored-by trailer."""


class FinalizeRun(Command):
    """Served by the API itself: closes the run and writes its manifest."""


class CancelTask(Command):
    """Asks the stage that holds the run to stop it.

    The Codex runner stops its container.
    """

    reason: str = "cancel requested"
    shard: CodexShard | None = None


# -------------------------------- task events (evt.task.<status>)


STARTED_AFTER = timedelta(seconds=0.5)
"""Default STAGE_STARTED_AFTER: a stage whose work ends sooner sends no TaskStarted."""


class TaskStarted(Message):
    """The stage took the command.

    It promises a heartbeat or an outcome before `lease_until`. Optional for work
    shorter than the stage's STAGE_STARTED_AFTER: an outcome implies the start.
    """

    lease_until: datetime | None = None
    details: dict[str, Any] = Field(default_factory=dict)


class TaskHeartbeat(Message):
    """The stage is still working; extends the lease."""

    lease_until: datetime
    progress: dict[str, Any] = Field(default_factory=dict)


class TaskSucceeded(Message):
    summary: dict[str, Any] = Field(default_factory=dict)
    artifacts: list[ArtifactRef] = Field(default_factory=list)


class TaskFailed(Message):
    error: TaskError
    summary: dict[str, Any] = Field(default_factory=dict)
    artifacts: list[ArtifactRef] = Field(default_factory=list)


class TaskCancelled(Message):
    reason: str = "cancelled"


# -------------------------------- run events (evt.run.<status>)


class RunStatusChanged(Message):
    """Published by the API after every run status change, for taps and listeners."""

    status: str
    phase: str
    result: str | None = None
    error_code: str | None = None
    pr_url: str | None = None


class CodexVolumeChecked(Message):
    """A login probe's verdict on an auth volume, for the API's shard registry."""

    shard: CodexShard
    status: Literal["ready", "needs_auth", "error"]
    state: str
    exit_code: int | None = None
    output: str = ""
    checked_at: datetime
