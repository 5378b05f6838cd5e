"""The run timeline as Server-Sent Events: frames, the Accept check, the stream."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncGenerator
from uuid import UUID

from sqlalchemy import select

from services.api.db import Database
from services.api.lifecycle import TERMINAL_RUN
from services.api.models import Run, RunEvent
from services.api.schemas import EventOut

EVENT_STREAM = "text/event-stream"
STREAM_POLL_SECONDS = 0.5
STREAM_KEEPALIVE_SECONDS = 15.0
STREAM_RETRY_MS = 2000  # how long an EventSource waits before it reconnects
STREAM_BATCH = 500


def wants_event_stream(accept: str | None) -> bool:
    """The Accept header lists text/event-stream (with a non-zero q)."""
    for media_range in (accept or "").split(","):
        media_type, *params = (part.strip() for part in media_range.split(";"))
        if media_type.lower() != EVENT_STREAM:
            continue
        q = next((p[2:] for p in params if p.replace(" ", "").startswith("q=")), "1")
        try:
            return float(q) > 0
        except ValueError:
            return False
    return False


def sse_frame(event: EventOut) -> str:
    data = event.model_dump_json(by_alias=True)  # one line: JSON escapes newlines
    return f"id: {event.seq}\nevent: {event.kind}\ndata: {data}\n\n"


async def event_stream(
    database: Database,
    run_id: UUID,
    *,
    after: int,
    poll: float = STREAM_POLL_SECONDS,
    keepalive: float = STREAM_KEEPALIVE_SECONDS,
) -> AsyncGenerator[str, None]:
    """The run's events after `after`, as SSE frames, until the run has ended.

    Each poll is its own short transaction: nothing is held open while waiting.
    The run row is read before the events, so once it says terminal with
    `event_seq` N, events up to N are visible to the next statement.
    """
    yield f"retry: {STREAM_RETRY_MS}\n\n"
    last, quiet_since = after, time.monotonic()
    while True:
        async with database.new_session() as session, session.begin():
            head = (
                await session.execute(
                    select(Run.status, Run.event_seq).where(Run.id == run_id)
                )
            ).one_or_none()
            rows = (
                await session.scalars(
                    select(RunEvent)
                    .where(RunEvent.run_id == run_id, RunEvent.seq > last)
                    .order_by(RunEvent.seq)
                    .limit(STREAM_BATCH)
                )
            ).all()
        if head is None:  # the run was deleted
            return
        for row in rows:
            yield sse_frame(EventOut.model_validate(row))
            last = row.seq
        if len(rows) == STREAM_BATCH:
            continue
        if head.status in TERMINAL_RUN and last >= head.event_seq:
            return
        if rows:
            quiet_since = time.monotonic()
        elif time.monotonic() - quiet_since >= keepalive:
            yield ": keep-alive\n\n"
            quiet_since = time.monotonic()
        await asyncio.sleep(poll)
