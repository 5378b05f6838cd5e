"""Postgres schema (design §5), by concept: accounts, runs, messaging (outbox and
inbox) and operations (shards, logs). Importing this package registers every table
on `Base.metadata` (Alembic's and the tests' view of the schema).
"""

from services.api.models.accounts import ApiToken, ProviderSecret, User
from services.api.models.base import (
    ACTIVE_RUN_STATUSES,
    DEFAULT_USER_EMAIL,
    DEFAULT_USER_ID,
    Base,
    metadata,
)
from services.api.models.messaging import InboxRow, OutboxRow
from services.api.models.operations import CodexShardRow, LogRecord
from services.api.models.runs import Artifact, CredentialAudit, Run, RunEvent, TaskState

__all__ = [
    "ACTIVE_RUN_STATUSES",
    "DEFAULT_USER_EMAIL",
    "DEFAULT_USER_ID",
    "ApiToken",
    "Artifact",
    "Base",
    "CodexShardRow",
    "CredentialAudit",
    "InboxRow",
    "LogRecord",
    "OutboxRow",
    "ProviderSecret",
    "Run",
    "RunEvent",
    "TaskState",
    "User",
    "metadata",
]
