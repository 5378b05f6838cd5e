"""The declarative base, its naming convention and the shared constants."""

from __future__ import annotations

from datetime import datetime
from typing import Any, ClassVar
from uuid import UUID

from sqlalchemy import DateTime, MetaData, func
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import DeclarativeBase, mapped_column

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


def now_column() -> Any:
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
