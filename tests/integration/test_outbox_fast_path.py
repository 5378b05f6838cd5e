"""The outbox fast path: the API publishes what it committed; the relay is the net."""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime, timedelta

import httpx
from faststream.rabbit import RabbitBroker
from sqlalchemy import select

from services.api import outbox
from services.api.db import Database
from services.api.fastpath import FastPath
from services.api.models import OutboxRow
from services.api.settings import Settings
from shared.messages import RunStatusChanged, TaskName
from tests.support.api import create_run, wait_for
from tests.support.harness import StageHarness


class Recorder:
    """A fast path that only records what it was handed."""

    def __init__(self) -> None:
        self.submitted: list[list[outbox.Pending]] = []

    @property
    def grace(self) -> timedelta:
        return timedelta(seconds=30)

    def submit(self, rows: list[outbox.Pending]) -> None:
        self.submitted.append(rows)


def tap_event() -> RunStatusChanged:
    """Not mandatory, and no API consumer: harmless when the relay sends it later."""
    return RunStatusChanged(
        message_id=uuid.uuid4(),
        run_id=uuid.uuid4(),
        task=TaskName.DISCOVER_NEXT_PHASE,
        attempt=1,
        occurred_at=datetime.now(UTC),
        status="running",
        phase="discover",
    )


async def row(database: Database, message_id: uuid.UUID) -> OutboxRow | None:
    async with database.new_session() as session:
        return await session.get(OutboxRow, message_id)


async def test_fast_path_gets_committed_rows_only(
    settings: Settings, database: Database
) -> None:
    recorded = Recorder()
    db = Database(str(settings.database_url), pool_size=1)
    outbox.attach(db.sessions, recorded)
    rolled_back, committed, nested = tap_event(), tap_event(), tap_event()
    try:
        async with db.new_session() as session:
            await session.begin()
            await outbox.enqueue(session, rolled_back, mandatory=False)
            await session.rollback()
        assert recorded.submitted == []

        async with db.new_session() as session, session.begin():
            await outbox.enqueue(session, committed, mandatory=False)
        assert [[p.id for p in rows] for rows in recorded.submitted] == [
            [committed.message_id]
        ]
        # Enqueued again (the same deterministic id): the existing row is not resent.
        async with db.new_session() as session, session.begin():
            await outbox.enqueue(session, committed, mandatory=False)
        # Inside a savepoint: the relay path (it could roll back on its own).
        async with (
            db.new_session() as session,
            session.begin(),
            session.begin_nested(),
        ):
            await outbox.enqueue(session, nested, mandatory=False)
        assert len(recorded.submitted) == 1
    finally:
        await db.dispose()

    assert await row(database, rolled_back.message_id) is None
    kept = await row(database, committed.message_id)
    assert kept is not None
    assert kept.sent_at is None  # the recorder publishes nothing
    assert kept.available_at > kept.created_at + timedelta(seconds=29)
    relayed = await row(database, nested.message_id)
    assert relayed is not None
    assert relayed.available_at <= relayed.created_at + timedelta(seconds=1)


async def test_fast_path_sends_a_run_without_the_relay_waiting(
    api: httpx.AsyncClient, stages: StageHarness, database: Database
) -> None:
    del stages  # answers every command
    run = await wait_for(
        api, (await create_run(api, f"fp-{uuid.uuid4().hex[:8]}"))["id"]
    )
    assert run["status"] == "succeeded"
    deadline = asyncio.get_running_loop().time() + 5
    while True:  # the fast path marks rows sent just after the commit, not in it
        async with database.new_session() as session:
            rows = (
                await session.scalars(
                    select(OutboxRow).where(
                        OutboxRow.payload["run_id"].astext == run["id"]
                    )
                )
            ).all()
        if all(r.sent_at for r in rows) or asyncio.get_running_loop().time() > deadline:
            break
        await asyncio.sleep(0.05)
    assert len(rows) >= 6  # five commands and the run's status events
    for sent in rows:
        assert sent.sent_at is not None
        assert sent.attempts == 0
        # Published before its grace ran out: by the fast path, not the relay.
        assert sent.sent_at < sent.available_at


async def test_failed_fast_publish_is_handed_to_the_relay(
    settings: Settings, database: Database
) -> None:
    db = Database(str(settings.database_url), pool_size=1)
    unreachable = RabbitBroker("amqp://guest:guest@127.0.0.1:9/")  # never connected
    fast_path = FastPath(unreachable, db, grace=30)
    outbox.attach(db.sessions, fast_path)
    message = tap_event()
    try:
        async with db.new_session() as session, session.begin():
            await outbox.enqueue(session, message, mandatory=False)
        await fast_path.close(wait=10)
    finally:
        await db.dispose()
    deadline = asyncio.get_running_loop().time() + 10
    while (sent := await row(database, message.message_id)) is None or (
        sent.sent_at is None
    ):
        # The session's relay sends it long before the 30 s grace would end.
        assert asyncio.get_running_loop().time() < deadline, "not handed back"
        await asyncio.sleep(0.1)
    assert sent.sent_at < sent.created_at + timedelta(seconds=15)
