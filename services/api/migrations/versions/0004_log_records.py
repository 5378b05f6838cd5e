"""log records

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-28 10:23:05.478978
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "log_records",
        sa.Column("id", sa.BigInteger(), autoincrement=True, nullable=False),
        sa.Column("ts", sa.DateTime(timezone=True), nullable=False),
        sa.Column("service", sa.String(length=64), nullable=False),
        sa.Column("level", sa.String(length=16), nullable=False),
        sa.Column("level_no", sa.Integer(), nullable=False),
        sa.Column("message", sa.Text(), nullable=False),
        sa.Column("run_id", sa.Uuid(), nullable=True),
        sa.Column("task", sa.String(length=64), nullable=True),
        sa.Column("attempt", sa.Integer(), nullable=True),
        sa.Column("details", postgresql.JSONB(astext_type=sa.Text()), nullable=False),
        sa.Column("exception", sa.Text(), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_log_records")),
    )
    op.create_index(
        "ix_log_records_details",
        "log_records",
        ["details"],
        unique=False,
        postgresql_using="gin",
    )
    op.create_index(
        "ix_log_records_run_id_id", "log_records", ["run_id", "id"], unique=False
    )
    op.create_index(
        "ix_log_records_service_level",
        "log_records",
        ["service", "level"],
        unique=False,
    )
    op.create_index("ix_log_records_ts", "log_records", ["ts"], unique=False)


def downgrade() -> None:
    op.drop_index("ix_log_records_ts", table_name="log_records")
    op.drop_index("ix_log_records_service_level", table_name="log_records")
    op.drop_index("ix_log_records_run_id_id", table_name="log_records")
    op.drop_index(
        "ix_log_records_details", table_name="log_records", postgresql_using="gin"
    )
    op.drop_table("log_records")
