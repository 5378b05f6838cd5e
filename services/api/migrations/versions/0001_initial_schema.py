"""initial schema

Revision ID: 0001
Revises:
Create Date: 2026-11-28 08:41:27.142819
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = '0001'
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('codex_shards',
    sa.Column('shard_index', sa.Integer(), autoincrement=False, nullable=False),
    sa.Column('queue_name', sa.String(length=64), nullable=False),
    sa.Column('volume_name', sa.String(length=64), nullable=False),
    sa.Column('hostname', sa.String(length=255), nullable=True),
    sa.Column('registered_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('heartbeat_at', sa.DateTime(timezone=True), nullable=True),
    sa.PrimaryKeyConstraint('shard_index', name=op.f('pk_codex_shards'))
    )
    op.create_table('inbox',
    sa.Column('message_id', sa.Uuid(), nullable=False),
    sa.Column('received_at', sa.DateTime(timezone=True), server_default=sa.text('now()'), nullable=False),
    sa.PrimaryKeyConstraint('message_id', name=op.f('pk_inbox'))
    )
    op.create_table('outbox',
    sa.Column('id', sa.Uuid(), nullable=False),
    sa.Column('routing_key', sa.String(length=255), nullable=False),
    sa.Column('payload', postgresql.JSONB(astext_type=sa.Text()), nullable=False),
    sa.Column('mandatory', sa.Boolean(), nullable=False),
    sa.Column('attempts', sa.Integer(), nullable=False),
    sa.Column('last_error', sa.Text(), nullable=True),
    sa.Column('created_at', sa.DateTime(timezone=True), server_default=sa.text('now()'), nullable=False),
    sa.Column('available_at', sa.DateTime(timezone=True), server_default=sa.text('now()'), nullable=False),
    sa.Column('sent_at', sa.DateTime(timezone=True), nullable=True),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_outbox'))
    )
    op.create_index('ix_outbox_unsent', 'outbox', ['available_at'], unique=False, postgresql_where=sa.text('sent_at IS NULL'))
    op.create_table('users',
    sa.Column('id', sa.Uuid(), nullable=False),
    sa.Column('email', sa.String(length=320), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), server_default=sa.text('now()'), nullable=False),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_users')),
    sa.UniqueConstraint('email', name=op.f('uq_users_email'))
    )
    # The default user every request acts as with AUTH_MODE=disabled, and background jobs run as.
    op.execute(
        "INSERT INTO users (id, email) VALUES ('00000000-0000-0000-0000-000000000000', 'default@example.com')"
    )
    op.create_table('spec_workflow_runs',
    sa.Column('id', sa.Uuid(), nullable=False),
    sa.Column('repository', sa.String(length=512), nullable=False),
    sa.Column('feature_key', sa.String(length=128), nullable=False),
    sa.Column('base_branch', sa.String(length=255), nullable=True),
    sa.Column('base_sha', sa.String(length=64), nullable=True),
    sa.Column('requested_task_id', sa.String(length=128), nullable=True),
    sa.Column('publish_mode', sa.String(length=16), nullable=False),
    sa.Column('notes', sa.Text(), nullable=True),
    sa.Column('status', sa.String(length=16), nullable=False),
    sa.Column('phase', sa.String(length=16), nullable=False),
    sa.Column('result', sa.String(length=32), nullable=True),
    sa.Column('error_code', sa.String(length=64), nullable=True),
    sa.Column('error_message', sa.Text(), nullable=True),
    sa.Column('attempt', sa.Integer(), nullable=False),
    sa.Column('current_task', sa.String(length=32), nullable=True),
    sa.Column('branch_name', sa.String(length=255), nullable=True),
    sa.Column('pr_url', sa.String(length=1024), nullable=True),
    sa.Column('codex_task_id', sa.String(length=128), nullable=True),
    sa.Column('codex_queue', sa.String(length=64), nullable=True),
    sa.Column('codex_volume', sa.String(length=64), nullable=True),
    sa.Column('codex_shard_index', sa.Integer(), nullable=True),
    sa.Column('codex_preflight_status', sa.String(length=16), nullable=True),
    sa.Column('codex_preflight_message', sa.Text(), nullable=True),
    sa.Column('codex_logs_path', sa.String(length=1024), nullable=True),
    sa.Column('codex_patch_path', sa.String(length=1024), nullable=True),
    sa.Column('outputs', postgresql.JSONB(astext_type=sa.Text()), nullable=False),
    sa.Column('event_seq', sa.Integer(), nullable=False),
    sa.Column('created_by', sa.Uuid(), nullable=False),
    sa.Column('idempotency_key', sa.String(length=255), nullable=True),
    sa.Column('started_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('finished_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('created_at', sa.DateTime(timezone=True), server_default=sa.text('now()'), nullable=False),
    sa.Column('updated_at', sa.DateTime(timezone=True), server_default=sa.text('now()'), nullable=False),
    sa.ForeignKeyConstraint(['created_by'], ['users.id'], name=op.f('fk_spec_workflow_runs_created_by_users')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_spec_workflow_runs'))
    )
    op.create_index('ix_spec_workflow_runs_listing', 'spec_workflow_runs', ['created_at', 'id'], unique=False)
    op.create_index(op.f('ix_spec_workflow_runs_status'), 'spec_workflow_runs', ['status'], unique=False)
    op.create_index('uq_spec_workflow_runs_active', 'spec_workflow_runs', [sa.literal_column('lower(repository)'), 'feature_key'], unique=True, postgresql_where=sa.text("status IN ('pending', 'running')"))
    op.create_index('uq_spec_workflow_runs_idempotency', 'spec_workflow_runs', ['created_by', 'idempotency_key'], unique=True, postgresql_where=sa.text('idempotency_key IS NOT NULL'))
    op.create_table('run_events',
    sa.Column('id', sa.BigInteger(), autoincrement=True, nullable=False),
    sa.Column('run_id', sa.Uuid(), nullable=False),
    sa.Column('seq', sa.Integer(), nullable=False),
    sa.Column('kind', sa.String(length=64), nullable=False),
    sa.Column('task_name', sa.String(length=32), nullable=True),
    sa.Column('attempt', sa.Integer(), nullable=True),
    sa.Column('data', postgresql.JSONB(astext_type=sa.Text()), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), server_default=sa.text('now()'), nullable=False),
    sa.ForeignKeyConstraint(['run_id'], ['spec_workflow_runs.id'], name=op.f('fk_run_events_run_id_spec_workflow_runs'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_run_events')),
    sa.UniqueConstraint('run_id', 'seq', name='uq_run_events_seq')
    )
    op.create_table('spec_workflow_task_states',
    sa.Column('id', sa.Uuid(), nullable=False),
    sa.Column('run_id', sa.Uuid(), nullable=False),
    sa.Column('task_name', sa.String(length=32), nullable=False),
    sa.Column('attempt', sa.Integer(), nullable=False),
    sa.Column('status', sa.String(length=16), nullable=False),
    sa.Column('payload', postgresql.JSONB(astext_type=sa.Text()), nullable=False),
    sa.Column('summary', postgresql.JSONB(astext_type=sa.Text()), nullable=True),
    sa.Column('error', postgresql.JSONB(astext_type=sa.Text()), nullable=True),
    sa.Column('lease_until', sa.DateTime(timezone=True), nullable=True),
    sa.Column('heartbeat_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('redispatches', sa.Integer(), nullable=False),
    sa.Column('started_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('finished_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('created_at', sa.DateTime(timezone=True), server_default=sa.text('now()'), nullable=False),
    sa.Column('updated_at', sa.DateTime(timezone=True), server_default=sa.text('now()'), nullable=False),
    sa.ForeignKeyConstraint(['run_id'], ['spec_workflow_runs.id'], name=op.f('fk_spec_workflow_task_states_run_id_spec_workflow_runs'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_spec_workflow_task_states')),
    sa.UniqueConstraint('run_id', 'task_name', 'attempt', name='uq_spec_workflow_task_states_key')
    )
    op.create_index('ix_spec_workflow_task_states_lease', 'spec_workflow_task_states', ['lease_until'], unique=False, postgresql_where=sa.text("status = 'running'"))
    op.create_index(op.f('ix_spec_workflow_task_states_run_id'), 'spec_workflow_task_states', ['run_id'], unique=False)
    op.create_table('workflow_artifacts',
    sa.Column('id', sa.Uuid(), nullable=False),
    sa.Column('run_id', sa.Uuid(), nullable=False),
    sa.Column('artifact_type', sa.String(length=64), nullable=False),
    sa.Column('path', sa.String(length=1024), nullable=False),
    sa.Column('task_name', sa.String(length=32), nullable=True),
    sa.Column('attempt', sa.Integer(), nullable=True),
    sa.Column('created_at', sa.DateTime(timezone=True), server_default=sa.text('now()'), nullable=False),
    sa.ForeignKeyConstraint(['run_id'], ['spec_workflow_runs.id'], name=op.f('fk_workflow_artifacts_run_id_spec_workflow_runs'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_workflow_artifacts')),
    sa.UniqueConstraint('run_id', 'path', name='uq_workflow_artifacts_path')
    )
    op.create_index(op.f('ix_workflow_artifacts_run_id'), 'workflow_artifacts', ['run_id'], unique=False)
    op.create_table('workflow_credential_audits',
    sa.Column('id', sa.Uuid(), nullable=False),
    sa.Column('run_id', sa.Uuid(), nullable=False),
    sa.Column('attempt', sa.Integer(), nullable=False),
    sa.Column('codex_status', sa.String(length=32), nullable=False),
    sa.Column('github_status', sa.String(length=32), nullable=False),
    sa.Column('notes', sa.Text(), nullable=True),
    sa.Column('checked_at', sa.DateTime(timezone=True), server_default=sa.text('now()'), nullable=False),
    sa.ForeignKeyConstraint(['run_id'], ['spec_workflow_runs.id'], name=op.f('fk_workflow_credential_audits_run_id_spec_workflow_runs'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_workflow_credential_audits'))
    )
    op.create_index(op.f('ix_workflow_credential_audits_run_id'), 'workflow_credential_audits', ['run_id'], unique=False)


def downgrade() -> None:
    op.drop_index(op.f('ix_workflow_credential_audits_run_id'), table_name='workflow_credential_audits')
    op.drop_table('workflow_credential_audits')
    op.drop_index(op.f('ix_workflow_artifacts_run_id'), table_name='workflow_artifacts')
    op.drop_table('workflow_artifacts')
    op.drop_index(op.f('ix_spec_workflow_task_states_run_id'), table_name='spec_workflow_task_states')
    op.drop_index('ix_spec_workflow_task_states_lease', table_name='spec_workflow_task_states', postgresql_where=sa.text("status = 'running'"))
    op.drop_table('spec_workflow_task_states')
    op.drop_table('run_events')
    op.drop_index('uq_spec_workflow_runs_idempotency', table_name='spec_workflow_runs', postgresql_where=sa.text('idempotency_key IS NOT NULL'))
    op.drop_index('uq_spec_workflow_runs_active', table_name='spec_workflow_runs', postgresql_where=sa.text("status IN ('pending', 'running')"))
    op.drop_index(op.f('ix_spec_workflow_runs_status'), table_name='spec_workflow_runs')
    op.drop_index('ix_spec_workflow_runs_listing', table_name='spec_workflow_runs')
    op.drop_table('spec_workflow_runs')
    op.drop_table('users')
    op.drop_index('ix_outbox_unsent', table_name='outbox', postgresql_where=sa.text('sent_at IS NULL'))
    op.drop_table('outbox')
    op.drop_table('inbox')
    op.drop_table('codex_shards')
