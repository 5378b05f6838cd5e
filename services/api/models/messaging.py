"""The outbox (commands and events to publish) and the inbox (messages applied)."""

from __future__ import annotations

from datetime import datetime
from typing import Any
from uuid import UUID

from sqlalchemy import (
    Index,
    Integer,
    String,
    Text,
    text,
)
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import Mapped, mapped_column

from services.api.models.base import Base, now_column


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
    created_at: Mapped[datetime] = now_column()
    available_at: Mapped[datetime] = now_column()
    sent_at: Mapped[datetime | None]


class InboxRow(Base):
    __tablename__ = "inbox"

    message_id: Mapped[UUID] = mapped_column(primary_key=True)
    received_at: Mapped[datetime] = now_column()
