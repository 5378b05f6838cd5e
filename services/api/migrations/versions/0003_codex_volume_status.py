"""codex volume status

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-28 09:24:46.433959
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op


revision = '0003'
down_revision = '0002'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column('codex_shards', sa.Column('volume_status', sa.String(length=16), nullable=True))
    op.add_column('codex_shards', sa.Column('volume_state', sa.String(length=32), nullable=True))
    op.add_column('codex_shards', sa.Column('volume_message', sa.Text(), nullable=True))
    op.add_column('codex_shards', sa.Column('volume_checked_at', sa.DateTime(timezone=True), nullable=True))


def downgrade() -> None:
    op.drop_column('codex_shards', 'volume_checked_at')
    op.drop_column('codex_shards', 'volume_message')
    op.drop_column('codex_shards', 'volume_state')
    op.drop_column('codex_shards', 'volume_status')
