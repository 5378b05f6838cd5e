"""A run, its task attempts, credential audits, artifacts and timeline."""

from __future__ import annotations

from datetime import datetime
from typing import Any
from uuid import UUID

from sqlalchemy import (
    BigInteger,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    UniqueConstraint,
    func,
    text,
)
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import Mapped, mapped_column, relationship

from services.api.models.base import Base, now_column


class Run(Base):
    __tablename__ = "spec_workflow_runs"
    __table_args__ = (
        # One active run per repository + feature, enforced by the database (no racy
        # check-then-insert).
        Index(
            "uq_spec_workflow_runs_active",
            text("lower(repository)"),
            "feature_key",
            unique=True,
            postgresql_where=text("status IN ('pending', 'running')"),
        ),
        Index(
            "uq_spec_workflow_runs_idempotency",
            "created_by",
            "idempotency_key",
            unique=True,
            postgresql_where=text("idempotency_key IS NOT NULL"),
        ),
        Index("ix_spec_workflow_runs_listing", "created_at", "id"),
    )

    id: Mapped[UUID] = mapped_column(primary_key=True)
    repository: Mapped[str] = mapped_column(String(512))
    feature_key: Mapped[str] = mapped_column(String(128))
    base_branch: Mapped[str | None] = mapped_column(String(255))
    base_sha: Mapped[str | None] = mapped_column(String(64))
    requested_task_id: Mapped[str | None] = mapped_column(String(128))
    publish_mode: Mapped[str] = mapped_column(String(16))
    notes: Mapped[str | None] = mapped_column(Text)
    status: Mapped[str] = mapped_column(String(16), index=True)
    phase: Mapped[str] = mapped_column(String(16))
    result: Mapped[str | None] = mapped_column(String(32))
    error_code: Mapped[str | None] = mapped_column(String(64))
    error_message: Mapped[str | None] = mapped_column(Text)
    attempt: Mapped[int] = mapped_column(Integer, default=1)
    current_task: Mapped[str | None] = mapped_column(String(32))
    branch_name: Mapped[str | None] = mapped_column(String(255))
    pr_url: Mapped[str | None] = mapped_column(String(1024))
    codex_task_id: Mapped[str | None] = mapped_column(String(128))
    codex_queue: Mapped[str | None] = mapped_column(String(64))
    codex_volume: Mapped[str | None] = mapped_column(String(64))
    codex_shard_index: Mapped[int | None] = mapped_column(Integer)
    codex_preflight_status: Mapped[str | None] = mapped_column(String(16))
    codex_preflight_message: Mapped[str | None] = mapped_column(Text)
    codex_logs_path: Mapped[str | None] = mapped_column(String(1024))
    codex_patch_path: Mapped[str | None] = mapped_column(String(1024))
    outputs: Mapped[dict[str, Any]] = mapped_column(JSONB, default=dict)
    """Each succeeded stage's summary by task name: what a retry carries forward."""
    event_seq: Mapped[int] = mapped_column(Integer, default=0)
    created_by: Mapped[UUID] = mapped_column(ForeignKey("users.id"))
    idempotency_key: Mapped[str | None] = mapped_column(String(255))
    started_at: Mapped[datetime | None]
    finished_at: Mapped[datetime | None]
    created_at: Mapped[datetime] = now_column()
    updated_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True),
        nullable=False,
        server_default=func.now(),
        onupdate=func.clock_timestamp(),
    )

    tasks: Mapped[list[TaskState]] = relationship(
        lazy="raise",
        order_by="(TaskState.attempt, TaskState.created_at)",
        viewonly=True,
    )
    artifacts: Mapped[list[Artifact]] = relationship(
        lazy="raise", order_by="Artifact.created_at", viewonly=True
    )
    credential_audits: Mapped[list[CredentialAudit]] = relationship(
        lazy="raise", order_by="CredentialAudit.checked_at", viewonly=True
    )


class TaskState(Base):
    """One row per task per attempt."""

    __tablename__ = "spec_workflow_task_states"
    __table_args__ = (
        UniqueConstraint(
            "run_id", "task_name", "attempt", name="uq_spec_workflow_task_states_key"
        ),
        Index(
            "ix_spec_workflow_task_states_lease",
            "lease_until",
            postgresql_where=text("status = 'running'"),
        ),
    )

    id: Mapped[UUID] = mapped_column(primary_key=True)
    run_id: Mapped[UUID] = mapped_column(
        ForeignKey("spec_workflow_runs.id", ondelete="CASCADE"), index=True
    )
    task_name: Mapped[str] = mapped_column(String(32))
    attempt: Mapped[int] = mapped_column(Integer)
    status: Mapped[str] = mapped_column(String(16))
    payload: Mapped[dict[str, Any]] = mapped_column(JSONB, default=dict)
    """The command sent to the stage (no secrets), sent again by a lease re-dispatch."""
    summary: Mapped[dict[str, Any] | None] = mapped_column(JSONB)
    error: Mapped[dict[str, Any] | None] = mapped_column(JSONB)
    lease_until: Mapped[datetime | None]
    heartbeat_at: Mapped[datetime | None]
    redispatches: Mapped[int] = mapped_column(Integer, default=0)
    started_at: Mapped[datetime | None]
    finished_at: Mapped[datetime | None]
    created_at: Mapped[datetime] = now_column()
    updated_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True),
        nullable=False,
        server_default=func.now(),
        onupdate=func.clock_timestamp(),
    )


class CredentialAudit(Base):
    __tablename__ = "workflow_credential_audits"

    id: Mapped[UUID] = mapped_column(primary_key=True)
    run_id: Mapped[UUID] = mapped_column(
        ForeignKey("spec_workflow_runs.id", ondelete="CASCADE"), index=True
    )
    attempt: Mapped[int] = mapped_column(Integer)
    codex_status: Mapped[str] = mapped_column(String(32))
    github_status: Mapped[str] = mapped_column(String(32))
    notes: Mapped[str | None] = mapped_column(Text)
    checked_at: Mapped[datetime] = now_column()


class Artifact(Base):
    __tablename__ = "workflow_artifacts"
    __table_args__ = (
        UniqueConstraint("run_id", "path", name="uq_workflow_artifacts_path"),
    )

    id: Mapped[UUID] = mapped_column(primary_key=True)
    run_id: Mapped[UUID] = mapped_column(
        ForeignKey("spec_workflow_runs.id", ondelete="CASCADE"), index=True
    )
    artifact_type: Mapped[str] = mapped_column(String(64))
    path: Mapped[str] = mapped_column(String(1024))
    """Relative to the run's directory in ARTIFACTS_ROOT; never taken from input."""
    task_name: Mapped[str | None] = mapped_column(String(32))
    attempt: Mapped[int | None] = mapped_column(Integer)
    created_at: Mapped[datetime] = now_column()


class RunEvent(Base):
    """The run's ordered timeline; `seq` counts from 1 per run."""

    __tablename__ = "run_events"
    __table_args__ = (UniqueConstraint("run_id", "seq", name="uq_run_events_seq"),)

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=True)
    run_id: Mapped[UUID] = mapped_column(
        ForeignKey("spec_workflow_runs.id", ondelete="CASCADE")
    )
    seq: Mapped[int] = mapped_column(Integer)
    kind: Mapped[str] = mapped_column(String(64))
    task_name: Mapped[str | None] = mapped_column(String(32))
    attempt: Mapped[int | None] = mapped_column(Integer)
    data: Mapped[dict[str, Any]] = mapped_column(JSONB, default=dict)
    created_at: Mapped[datetime] = now_column()
