"""HTTP request and response bodies: camelCase JSON like the original MoonMind API."""

from __future__ import annotations

from datetime import datetime
from typing import Any
from uuid import UUID

from pydantic import BaseModel, ConfigDict, Field, field_validator
from pydantic.alias_generators import to_camel

from shared.messages import PublishMode
from shared.names import branch_name, repository_ref, spec_kit_name


class CamelModel(BaseModel):
    model_config = ConfigDict(
        alias_generator=to_camel, populate_by_name=True, from_attributes=True
    )


class RunCreate(BaseModel):
    model_config = ConfigDict(
        alias_generator=to_camel, populate_by_name=False, extra="forbid"
    )

    repository: str = Field(max_length=512)
    feature_key: str = Field(max_length=128)
    base_branch: str | None = Field(None, max_length=255)
    task_id: str | None = Field(None, max_length=128)
    publish_mode: PublishMode = PublishMode.PR
    notes: str | None = Field(None, max_length=10_000)

    @field_validator("repository")
    @classmethod
    def _repository(cls, value: str) -> str:
        return repository_ref(value)

    @field_validator("feature_key")
    @classmethod
    def _feature_key(cls, value: str) -> str:
        return spec_kit_name(value, "featureKey")

    @field_validator("task_id")
    @classmethod
    def _task_id(cls, value: str | None) -> str | None:
        return None if value is None else spec_kit_name(value, "taskId")

    @field_validator("base_branch")
    @classmethod
    def _base_branch(cls, value: str | None) -> str | None:
        return None if value is None else branch_name(value)

    @field_validator("notes")
    @classmethod
    def _notes(cls, value: str | None) -> str | None:
        if value is not None and "\x00" in value:
            raise ValueError("notes must not contain NUL characters")
        return value


class RetryRequest(BaseModel):
    model_config = ConfigDict(alias_generator=to_camel, extra="forbid")

    notes: str | None = Field(None, max_length=10_000)

    @field_validator("notes")
    @classmethod
    def _notes(cls, value: str | None) -> str | None:
        return RunCreate._notes(value)


class TaskOut(CamelModel):
    id: UUID
    task_name: str
    status: str
    attempt: int
    payload: dict[str, Any]
    summary: dict[str, Any] | None
    error: dict[str, Any] | None
    lease_until: datetime | None
    heartbeat_at: datetime | None
    started_at: datetime | None
    finished_at: datetime | None
    created_at: datetime
    updated_at: datetime


class ArtifactOut(CamelModel):
    id: UUID
    artifact_type: str
    path: str
    task_name: str | None
    attempt: int | None
    created_at: datetime


class CredentialAuditOut(CamelModel):
    attempt: int
    codex_status: str
    github_status: str
    checked_at: datetime
    notes: str | None


class RunOut(CamelModel):
    id: UUID
    repository: str
    feature_key: str
    base_branch: str | None
    base_sha: str | None
    task_id: str | None = Field(
        validation_alias="requested_task_id", serialization_alias="taskId"
    )
    publish_mode: str
    notes: str | None
    status: str
    phase: str
    result: str | None
    error_code: str | None
    error_message: str | None
    attempt: int
    current_task: str | None
    branch_name: str | None
    pr_url: str | None
    codex_task_id: str | None
    codex_queue: str | None
    codex_volume: str | None
    codex_shard_index: int | None
    codex_preflight_status: str | None
    codex_preflight_message: str | None
    codex_logs_path: str | None
    codex_patch_path: str | None
    artifacts_path: str | None = None
    created_by: UUID
    started_at: datetime | None
    finished_at: datetime | None
    created_at: datetime
    updated_at: datetime
    tasks: list[TaskOut] | None = None
    task_summary: list[TaskOut] | None = None
    artifacts: list[ArtifactOut] | None = None
    credential_audit: CredentialAuditOut | None = None
    credential_audits: list[CredentialAuditOut] | None = None


class RunList(CamelModel):
    items: list[RunOut]
    next_cursor: str | None


class EventOut(CamelModel):
    seq: int
    kind: str
    task_name: str | None
    attempt: int | None
    data: dict[str, Any]
    created_at: datetime


class EventList(CamelModel):
    items: list[EventOut]
    last_seq: int


class ArtifactList(CamelModel):
    items: list[ArtifactOut]


class ErrorBody(BaseModel):
    code: str
    message: str


class ErrorOut(BaseModel):
    detail: ErrorBody


class CredentialIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    value: str = Field(min_length=1, max_length=4096)

    @field_validator("value")
    @classmethod
    def _printable(cls, value: str) -> str:
        if value != value.strip() or any(ord(c) < 32 or ord(c) == 127 for c in value):
            raise ValueError(
                "a key has no surrounding whitespace or control characters"
            )
        return value


class CredentialOut(CamelModel):
    provider: str
    masked: str
    source: str
    created_at: datetime
    updated_at: datetime


class CredentialList(CamelModel):
    items: list[CredentialOut]


class LogOut(CamelModel):
    id: int
    time: datetime = Field(validation_alias="ts")
    service: str
    level: str
    message: str
    run_id: UUID | None
    task: str | None
    attempt: int | None
    details: dict[str, Any]
    exception: str | None


class LogList(CamelModel):
    items: list[LogOut]
    next_cursor: str | None
