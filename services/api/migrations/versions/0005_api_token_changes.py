"""api token changes are announced (NOTIFY api_tokens_changed)

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-29 04:40:00.000000

The API's token cache (`services/api/tokencache.py`) forgets what it knows on this
channel. Every change that can make a valid token invalid fires: revocation, a new
expiry, a new hash or user, a deletion (also by cascade from its user) and TRUNCATE.
Touching `last_used_at` does not.
"""

from __future__ import annotations

from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute(
        """
        CREATE FUNCTION notify_api_tokens_changed() RETURNS trigger
        LANGUAGE plpgsql AS $$
        BEGIN
            IF TG_LEVEL = 'ROW' THEN
                PERFORM pg_notify('api_tokens_changed', OLD.id::text);
            ELSE
                PERFORM pg_notify('api_tokens_changed', '');
            END IF;
            RETURN NULL;
        END
        $$
        """
    )
    op.execute(
        """
        CREATE TRIGGER api_tokens_changed
        AFTER UPDATE OF revoked_at, expires_at, token_hash, user_id OR DELETE
        ON api_tokens FOR EACH ROW EXECUTE FUNCTION notify_api_tokens_changed()
        """
    )
    op.execute(
        """
        CREATE TRIGGER api_tokens_truncated AFTER TRUNCATE ON api_tokens
        FOR EACH STATEMENT EXECUTE FUNCTION notify_api_tokens_changed()
        """
    )


def downgrade() -> None:
    op.execute("DROP TRIGGER IF EXISTS api_tokens_truncated ON api_tokens")
    op.execute("DROP TRIGGER IF EXISTS api_tokens_changed ON api_tokens")
    op.execute("DROP FUNCTION IF EXISTS notify_api_tokens_changed()")
