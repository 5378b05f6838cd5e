"""Postgres schema (design §5).

Runs, task attempts, audits, artifacts, shards, users, outbox, inbox and timeline.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, ClassVar
from uuid import UUID

from sqlalchemy import (
    BigInteger,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Text,
    UniqueConstraint,
    func,
    text,
)
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship

DEFAULT_USER_ID = UUID("00000000-0000-0000-0000-000000000000")
DEFAULT_USER_EMAIL = "default@example.com"
ACTIVE_RUN_STATUSES = ("pending", "running")

metadata = MetaData(
    naming_convention={
        "ix": "ix_%(column_0_label)s",
        "uq": "uq_%(table_name)s_%(column_0_name)s",
        "ck": "ck_%(table_name)s_%(constraint_name)s",
        "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
        "pk": "pk_%(table_name)s",
    }
)


def _now() -> Any:
    return mapped_column(
        DateTime(timezone=True), nullable=False, server_default=func.now()
    )


class Base(DeclarativeBase):
    metadata = metadata
    # Fetch server-side defaults (created_at, updated_at) with RETURNING: no lazy
    # loads after a flush.
    # ClassVar here fails mypy: SQLAlchemy's typing declares it as an instance var.
    __mapper_args__ = {"eager_defaults": True}  # noqa: RUF012
    type_annotation_map: ClassVar[dict[Any, Any]] = {
        dict[str, Any]: JSONB,
        datetime: DateTime(timezone=True),
    }


class User(Base):
    __tablename__ = "users"

    id: Mapped[UUID] = mapped_column(primary_key=True)
    email: Mapped[str] = mapped_column(String(320), unique=True)
    created_at: Mapped[datetime] = _now()


class ApiToken(Base):
    """A bearer token of a user; only its SHA-256 is stored."""

    __tablename__ = "api_tokens"

    id: Mapped[UUID] = mapped_column(primary_key=True)
    user_id: Mapped[UUID] = mapped_column(
        ForeignKey("users.id", ondelete="CASCADE"), index=True
    )
    name: Mapped[str] = mapped_column(String(128))
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    prefix: Mapped[str] = mapped_column(String(16))
    """The first characters of the token, to tell tokens apart in listings."""
    expires_at: Mapped[datetime | None]
    revoked_at: Mapped[datetime | None]
    last_used_at: Mapped[datetime | None]
    created_at: Mapped[datetime] = _now()


class ProviderSecret(Base):
    """A provider key of a user, encrypted with AES-256-GCM under a key kept outside.

    The associated data binds each ciphertext to its user and provider.
    """

    __tablename__ = "provider_secrets"
    __table_args__ = (
        UniqueConstraint("user_id", "provider", name="uq_provider_secrets_user"),
    )

    id: Mapped[UUID] = mapped_column(primary_key=True)
    user_id: Mapped[UUID] = mapped_column(
        ForeignKey("users.id", ondelete="CASCADE"), index=True
    )
    provider: Mapped[str] = mapped_column(String(32))
    key_id: Mapped[str] = mapped_column(String(16))
    nonce: Mapped[bytes] = mapped_column(LargeBinary)
    ciphertext: Mapped[bytes] = mapped_column(LargeBinary)
    hint: Mapped[str | None] = mapped_column(String(8))
    """The last four characters of long keys, for the masked view."""
    source: Mapped[str] = mapped_column(String(16))
    """`api` (stored by the user) or `environment` (seeded at start-up)."""
    created_at: Mapped[datetime] = _now()
    updated_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True),
        nullable=False,
        server_default=func.now(),
        onupdate=func.clock_timestamp(),
    )


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
    created_at: Mapped[datetime] = _now()
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
    created_at: Mapped[datetime] = _now()
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
    checked_at: Mapped[datetime] = _now()


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
    created_at: Mapped[datetime] = _now()


class CodexShardRow(Base):
    """A Codex shard as registered by the runner that serves it."""

    __tablename__ = "codex_shards"

    shard_index: Mapped[int] = mapped_column(
        Integer, primary_key=True, autoincrement=False
    )
    queue_name: Mapped[str] = mapped_column(String(64))
    volume_name: Mapped[str] = mapped_column(String(64))
    hostname: Mapped[str | None] = mapped_column(String(255))
    registered_at: Mapped[datetime | None]
    heartbeat_at: Mapped[datetime | None]
    volume_status: Mapped[str | None] = mapped_column(String(16))
    """ready | needs_auth | error, from the last Codex login probe."""
    volume_state: Mapped[str | None] = mapped_column(String(32))
    volume_message: Mapped[str | None] = mapped_column(Text)
    volume_checked_at: Mapped[datetime | None]


class OutboxRow(Base):
    __tablename__ = "outbox"
    __table_args__ = (
        Index(
            "ix_outbox_unsent", "available_at", postgresql_where=text("sent_at IS NULL")
        ),
    )

    id: Mapped[UUID] = mapped_column(primary_key=True)
    """Becomes the AMQP message_id."""
    routing_key: Mapped[str] = mapped_column(String(255))
    payload: Mapped[dict[str, Any]] = mapped_column(JSONB)
    mandatory: Mapped[bool] = mapped_column(default=True)
    """Commands must reach a queue; run events are for taps and may go unrouted."""
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    last_error: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = _now()
    available_at: Mapped[datetime] = _now()
    sent_at: Mapped[datetime | None]


class InboxRow(Base):
    __tablename__ = "inbox"

    message_id: Mapped[UUID] = mapped_column(primary_key=True)
    received_at: Mapped[datetime] = _now()


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
    created_at: Mapped[datetime] = _now()


class LogRecord(Base):
    """One shipped log line (`spec_workflow.logs`); pruned after LOG_RETENTION_DAYS.

    No foreign key to runs: records may arrive before or outlive their run row.
    """

    __tablename__ = "log_records"
    __table_args__ = (
        Index("ix_log_records_run_id_id", "run_id", "id"),
        Index("ix_log_records_ts", "ts"),
        Index("ix_log_records_service_level", "service", "level"),
        Index("ix_log_records_details", "details", postgresql_using="gin"),
    )

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=True)
    ts: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    service: Mapped[str] = mapped_column(String(64))
    level: Mapped[str] = mapped_column(String(16))
    level_no: Mapped[int] = mapped_column(Integer)
    message: Mapped[str] = mapped_column(Text)
    run_id: Mapped[UUID | None]
    task: Mapped[str | None] = mapped_column(String(64))
    attempt: Mapped[int | None] = mapped_column(Integer)
    details: Mapped[dict[str, Any]] = mapped_column(JSONB, default=dict)
    exception: Mapped[str | None] = mapped_column(Text)
