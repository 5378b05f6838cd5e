"""Users, their API tokens and their encrypted provider keys."""

from __future__ import annotations

from datetime import datetime
from uuid import UUID

from sqlalchemy import (
    DateTime,
    ForeignKey,
    LargeBinary,
    String,
    UniqueConstraint,
    func,
)
from sqlalchemy.orm import Mapped, mapped_column

from services.api.models.base import Base, now_column


class User(Base):
    __tablename__ = "users"

    id: Mapped[UUID] = mapped_column(primary_key=True)
    email: Mapped[str] = mapped_column(String(320), unique=True)
    created_at: Mapped[datetime] = now_column()


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
    created_at: Mapped[datetime] = now_column()


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
    created_at: Mapped[datetime] = now_column()
    updated_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True),
        nullable=False,
        server_default=func.now(),
        onupdate=func.clock_timestamp(),
    )
