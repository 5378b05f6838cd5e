"""The Codex shard registry and the shipped log records."""

from __future__ import annotations

from datetime import datetime
from typing import Any
from uuid import UUID

from sqlalchemy import (
    BigInteger,
    DateTime,
    Index,
    Integer,
    String,
    Text,
)
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import Mapped, mapped_column

from services.api.models.base import Base


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
