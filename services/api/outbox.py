"""Transactional outbox (the inbox is `runlock.first_delivery`).

Messages are written in the caller's transaction; duplicates are dropped.

With a fast path attached to the session factory (the API process), a committed
transaction's new rows are handed to it at once for publishing; their `available_at`
is pushed `grace` into the future, so the relay leaves them alone unless the fast path
has not marked them sent by then (API crash, broker or database trouble).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Protocol
from uuid import UUID

from sqlalchemy import event, func, select, text
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import Session, sessionmaker

from services.api import direct
from services.api.models import OutboxRow
from shared.messages import Message
from shared.routing import route_of

NOTIFY_CHANNEL = "spec_workflow_outbox"
FAST_PATH = "outbox.fast_path"
"""`session.info` key of the `FastPath` (set by `attach`)."""
_PENDING = "outbox.pending"


@dataclass(frozen=True)
class Pending:
    """An outbox row as committed: what the fast path publishes."""

    id: UUID
    routing_key: str
    payload: dict[str, Any]
    mandatory: bool


class FastPath(Protocol):
    """Publishes committed rows right after the commit, then marks them sent."""

    @property
    def grace(self) -> timedelta:
        """How long the relay leaves a fast-path row alone."""

    def submit(self, rows: list[Pending]) -> None:
        """Called synchronously after the commit; must not block."""


def attach(factory: sessionmaker[Session], fast_path: FastPath) -> None:
    """Hand every session's committed rows to `fast_path` (discarded on rollback)."""
    factory.configure(info={FAST_PATH: fast_path})
    event.listen(factory, "after_commit", _after_commit)
    event.listen(factory, "after_rollback", _after_rollback)


def _after_commit(session: Session) -> None:
    pending: list[Pending] | None = session.info.pop(_PENDING, None)
    if pending:
        session.info[FAST_PATH].submit(pending)


def _after_rollback(session: Session) -> None:
    session.info.pop(_PENDING, None)


async def enqueue(
    session: AsyncSession,
    message: Message,
    *,
    mandatory: bool = True,
    task: direct.TaskRow | None = None,
) -> None:
    """Queue `message` inside the caller's transaction, with the task row of the
    command if given (on the fast path in the same statement).

    The row's id is the message id, so enqueuing the same deterministic command twice
    keeps one row. Without a fast path (the relay's own sessions, or a savepoint,
    which could roll back on its own) the NOTIFY, delivered at commit, wakes the relay
    without waiting for its poll interval. With one, the new row goes to the fast path
    after the commit and the relay only sees it once `grace` has passed.
    """
    fast_path: FastPath | None = session.info.get(FAST_PATH)
    routing_key, payload = route_of(message), message.model_dump(mode="json")
    values: dict[str, Any] = {
        "id": message.message_id,
        "routing_key": routing_key,
        "payload": payload,
        "mandatory": mandatory,
    }
    if fast_path is None or session.in_nested_transaction():
        if task is not None:
            await direct.insert_task(session, task, payload)
        await session.execute(
            insert(OutboxRow)
            .values(**values)
            .on_conflict_do_nothing(index_elements=[OutboxRow.id])
        )
        await session.execute(text(f"NOTIFY {NOTIFY_CHANNEL}"))
        return
    inserted = await direct.insert_outbox(
        session,
        id=message.message_id,
        routing_key=routing_key,
        payload=payload,
        mandatory=mandatory,
        delay_seconds=fast_path.grace.total_seconds(),
        task=task,
    )
    if inserted:  # an existing row is the relay's (or already sent)
        pending = Pending(message.message_id, routing_key, payload, mandatory)
        session.info.setdefault(_PENDING, []).append(pending)


async def mark_sent(
    session: AsyncSession, sent: Sequence[tuple[UUID, datetime]]
) -> None:
    """Record confirmed publishes, each with its confirm time, in one statement."""
    if not sent:
        return
    await session.execute(
        text(
            "UPDATE outbox SET sent_at = s.sent_at "
            "FROM unnest(CAST(:ids AS uuid[]), CAST(:times AS timestamptz[])) "
            "AS s(id, sent_at) WHERE outbox.id = s.id AND outbox.sent_at IS NULL"
        ),
        {"ids": [i for i, _ in sent], "times": [t for _, t in sent]},
    )


async def hand_back(session: AsyncSession, ids: Sequence[UUID]) -> None:
    """Fast-path rows that could not be published: due now, and the relay woken."""
    await session.execute(
        text(
            "UPDATE outbox SET available_at = now() "
            "WHERE id = ANY(CAST(:ids AS uuid[])) AND sent_at IS NULL"
        ),
        {"ids": list(ids)},
    )
    await session.execute(text(f"NOTIFY {NOTIFY_CHANNEL}"))


async def pending_count(session: AsyncSession) -> int:
    return int(
        await session.scalar(select(func.count()).where(OutboxRow.sent_at.is_(None)))
        or 0
    )
