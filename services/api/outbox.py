"""Transactional outbox and inbox.

Messages are written in the caller's transaction; duplicates are dropped.
"""

from __future__ import annotations

from uuid import UUID

from sqlalchemy import func, select, text
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession

from services.api.models import InboxRow, OutboxRow
from shared.messages import Message
from shared.routing import route_of

NOTIFY_CHANNEL = "spec_workflow_outbox"


async def enqueue(
    session: AsyncSession, message: Message, *, mandatory: bool = True
) -> None:
    """Queue `message` for the relay, inside the caller's transaction.

    The row's id is the message id, so enqueuing the same deterministic command twice
    keeps one row. The NOTIFY is delivered at commit, waking the relay without waiting
    for its poll interval.
    """
    await session.execute(
        insert(OutboxRow)
        .values(
            id=message.message_id,
            routing_key=route_of(message),
            payload=message.model_dump(mode="json"),
            mandatory=mandatory,
        )
        .on_conflict_do_nothing(index_elements=[OutboxRow.id])
    )
    await session.execute(text(f"NOTIFY {NOTIFY_CHANNEL}"))


async def first_delivery(session: AsyncSession, message_id: UUID) -> bool:
    """Record `message_id` in the inbox; False when already processed (a duplicate)."""
    inserted = await session.scalar(
        insert(InboxRow)
        .values(message_id=message_id)
        .on_conflict_do_nothing(index_elements=[InboxRow.message_id])
        .returning(InboxRow.message_id)
    )
    return inserted is not None


async def pending_count(session: AsyncSession) -> int:
    return int(
        await session.scalar(select(func.count()).where(OutboxRow.sent_at.is_(None)))
        or 0
    )
