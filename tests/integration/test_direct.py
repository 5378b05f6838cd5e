"""services.api.direct: the event path's statements sent straight to asyncpg stay
inside the session's transaction, and its flush leaves the ORM nothing to redo."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

import asyncpg
import pytest
from sqlalchemy import event, select
from sqlalchemy.ext.asyncio import AsyncSession

from services.api import direct, runlock, runrows, taskmoves
from services.api.db import Database
from services.api.dispatch import timeline
from services.api.lifecycle import TASK_ALLOWED_FROM, TaskStatus
from services.api.models import InboxRow, Run, RunEvent, TaskState
from services.api.runs import lock_run
from tests.support.rows import bare_run


class Boom(Exception):
    pass


async def inbox_has(database: Database, message_id: uuid.UUID) -> bool:
    async with database.new_session() as session:
        return await session.get(InboxRow, message_id) is not None


async def test_a_direct_statement_first_still_rolls_back(database: Database) -> None:
    """The adapter's BEGIN is lazy: a direct statement first must not autocommit."""
    first, second = uuid.uuid4(), uuid.uuid4()

    async def fail_after_insert(session: AsyncSession) -> None:
        async with session.begin():
            assert await runlock.first_delivery(session, first)
            raise Boom

    async with database.new_session() as session:
        with pytest.raises(Boom):
            await fail_after_insert(session)
        async with session.begin():  # the same session, a new transaction
            assert await runlock.first_delivery(session, second)
            await session.rollback()
    assert not await inbox_has(database, first)
    assert not await inbox_has(database, second)

    async with database.new_session() as session, session.begin():
        assert await runlock.first_delivery(session, first)
        assert not await runlock.first_delivery(session, first)  # a duplicate
    assert await inbox_has(database, first)


async def new_run(database: Database) -> uuid.UUID:
    """A run row and its first task row, with no command: the session's stack (relay,
    stages) must not move it while a test does."""
    run_id = uuid.uuid4()
    async with database.new_session() as session, session.begin():
        session.add(bare_run(run_id, repository="acme/direct"))
        await session.flush()
        row = direct.TaskRow(uuid.uuid4(), run_id, "discover_next_phase", 1, "queued")
        await direct.insert_task(session, row, {})
    return run_id


async def test_flush_writes_the_run_and_its_timeline_once(database: Database) -> None:
    run_id = await new_run(database)
    statements: list[str] = []

    def record(_conn, _cursor, statement, *_args) -> None:
        statements.append(statement.split()[0])

    async with database.new_session() as session:
        async with session.begin():
            run = await lock_run(session, run_id)
            assert run is not None
            before = run.updated_at
            run.status = "running"
            run.outputs = {**run.outputs, "discover_next_phase": {"n": 1}}
            timeline(session, run, "task_started", task="discover_next_phase")
            timeline(session, run, "probe", note="twice")
            await runrows.flush(session)
            event.listen(database.engine.sync_engine, "before_cursor_execute", record)
        event.remove(database.engine.sync_engine, "before_cursor_execute", record)
        assert statements == []  # the commit's ORM flush had nothing left to write
        assert run.updated_at > before  # the committed value, as the database has it

    async with database.new_session() as session:
        stored = await session.get(Run, run_id)
        assert stored is not None
        assert stored.status == "running"
        assert stored.outputs["discover_next_phase"] == {"n": 1}
        assert stored.updated_at == run.updated_at
        entries = (
            await session.scalars(
                select(RunEvent).where(RunEvent.run_id == run_id).order_by(RunEvent.seq)
            )
        ).all()
    assert [(e.seq, e.kind) for e in entries][-2:] == [
        (stored.event_seq - 1, "task_started"),
        (stored.event_seq, "probe"),
    ]
    assert entries[-1].data == {"note": "twice"}


async def test_move_task_is_guarded(database: Database) -> None:
    run_id = await new_run(database)
    now = datetime.now(UTC)
    running = sorted(TASK_ALLOWED_FROM[TaskStatus.RUNNING])
    async with database.new_session() as session, session.begin():
        assert await taskmoves.move_task(
            session,
            run_id,
            "discover_next_phase",
            1,
            TaskStatus.RUNNING,
            running,
            {"started_at": now, "summary": {"k": [1, 2]}},
        )
        # running -> running is no edge: nothing changes
        assert not await taskmoves.move_task(
            session,
            run_id,
            "discover_next_phase",
            1,
            TaskStatus.RUNNING,
            running,
            {"started_at": datetime.now(UTC)},
        )
        with pytest.raises(ValueError, match="not a task column"):
            await taskmoves.move_task(
                session, run_id, "discover_next_phase", 1, "running", running, {"x": 1}
            )
    async with database.new_session() as session:
        state = (
            await session.scalars(select(TaskState).where(TaskState.run_id == run_id))
        ).one()
    assert state.status == "running"
    assert state.started_at == now
    assert state.summary == {"k": [1, 2]}
    assert state.updated_at > state.created_at


async def locked_elsewhere(database: Database, run_id: uuid.UUID) -> bool:
    """Whether another transaction holds the run row's lock (FOR UPDATE NOWAIT)."""
    async with database.new_session() as other, other.begin():
        conn = await direct.connection(other)
        try:
            await conn.fetchval(
                "SELECT id FROM spec_workflow_runs WHERE id = $1 FOR UPDATE NOWAIT",
                run_id,
            )
        except asyncpg.LockNotAvailableError:
            return True
    return False


async def test_first_delivery_locks_and_loads_the_run(database: Database) -> None:
    run_id = await new_run(database)
    async with database.new_session() as session, session.begin():
        assert await runlock.first_delivery(session, uuid.uuid4(), lock=run_id)
        held = runlock.holds_lock(session, run_id)
        assert held is not None
        assert held.status == "pending"
        assert held.repository == "acme/direct"
        assert await locked_elsewhere(database, run_id)
        held.status = "running"  # unflushed: lock_run must not reload over it
        assert await lock_run(session, run_id) is held
        assert held.status == "running"
    assert not await locked_elsewhere(database, run_id)


async def test_first_delivery_of_a_duplicate_or_an_unknown_run(
    database: Database,
) -> None:
    run_id, message_id, unknown = await new_run(database), uuid.uuid4(), uuid.uuid4()
    async with database.new_session() as session, session.begin():
        assert await runlock.first_delivery(session, message_id, lock=run_id)
    async with database.new_session() as session, session.begin():
        assert not await runlock.first_delivery(session, message_id, lock=run_id)
        assert runlock.holds_lock(session, run_id) is not None  # locked all the same
    async with database.new_session() as session, session.begin():
        assert await runlock.first_delivery(session, uuid.uuid4(), lock=unknown)
        assert runlock.holds_lock(session, unknown) is None
        assert await lock_run(session, unknown) is None


async def test_a_lock_ends_with_its_transaction(database: Database) -> None:
    """The same session again (an event retried in place): the run it still holds
    from the rolled-back transaction is locked and reloaded anew."""
    run_id = await new_run(database)

    async def change_then_fail(session: AsyncSession) -> None:
        async with session.begin():
            assert await runlock.first_delivery(session, uuid.uuid4(), lock=run_id)
            run = runlock.holds_lock(session, run_id)
            assert run is not None
            run.status = "running"
            raise Boom

    async with database.new_session() as session:
        with pytest.raises(Boom):
            await change_then_fail(session)
        async with session.begin():
            assert runlock.holds_lock(session, run_id) is None
            assert await runlock.first_delivery(session, uuid.uuid4(), lock=run_id)
            again = await lock_run(session, run_id)
            assert again is not None
            assert again.status == "pending"  # reloaded: the change was rolled back
            assert runlock.holds_lock(session, run_id) is again
            assert await locked_elsewhere(database, run_id)


async def kinds(database: Database, run_id: uuid.UUID) -> list[str]:
    async with database.new_session() as session:
        rows = await session.scalars(
            select(RunEvent.kind)
            .where(RunEvent.run_id == run_id)
            .order_by(RunEvent.seq)
        )
        return list(rows)


async def test_a_timeline_no_flush_wrote_is_written_at_commit(
    database: Database,
) -> None:
    """A route that leaves its writes to the commit (retry, cancel) loses nothing."""
    run_id = await new_run(database)
    async with database.new_session() as session, session.begin():
        run = await lock_run(session, run_id)
        assert run is not None
        timeline(session, run, "probe", note="at commit")
    assert await kinds(database, run_id) == ["probe"]


async def test_a_rolled_back_timeline_is_not_written_by_the_next_transaction(
    database: Database,
) -> None:
    run_id = await new_run(database)

    async def add_then_fail(session: AsyncSession) -> None:
        async with session.begin():
            run = await lock_run(session, run_id)
            assert run is not None
            timeline(session, run, "rolled_back")
            raise Boom

    async with database.new_session() as session:
        with pytest.raises(Boom):
            await add_then_fail(session)
        async with session.begin():  # the same session: an event retried in place
            run = await lock_run(session, run_id)
            assert run is not None
            timeline(session, run, "kept")
            await runrows.flush(session)
    assert await kinds(database, run_id) == ["kept"]


async def task_status(database: Database, run_id: uuid.UUID) -> str:
    async with database.new_session() as session:
        state = (
            await session.scalars(select(TaskState).where(TaskState.run_id == run_id))
        ).one()
    return state.status


async def test_a_move_known_to_be_allowed_goes_with_the_flush(
    database: Database,
) -> None:
    """first_delivery read the task's status with the run lock: the move is decided
    then and its UPDATE sent with the flush's one statement, still guarded."""
    run_id = await new_run(database)
    task = ("discover_next_phase", 1)
    async with database.new_session() as session, session.begin():
        assert await runlock.first_delivery(
            session, uuid.uuid4(), lock=run_id, task=task
        )
        run = await lock_run(session, run_id)  # held: no statement
        assert run is not None
        mid = await direct.connection(session)
        running = sorted(TASK_ALLOWED_FROM[TaskStatus.RUNNING])
        done = sorted(TASK_ALLOWED_FROM[TaskStatus.SUCCEEDED])
        assert await taskmoves.move_task(
            session, run_id, *task, TaskStatus.RUNNING, running, {"heartbeat_at": None}
        )
        # decided from what the transaction knows: running -> running is no edge
        assert not await taskmoves.move_task(
            session, run_id, *task, TaskStatus.RUNNING, running, {}
        )
        assert await taskmoves.move_task(
            session, run_id, *task, TaskStatus.SUCCEEDED, done, {"summary": {"n": 1}}
        )
        assert (
            await mid.fetchval(
                "SELECT status FROM spec_workflow_task_states WHERE run_id = $1", run_id
            )
            == "queued"
        )  # nothing sent yet
        run.status = "running"
        await runrows.flush(session)
    assert await task_status(database, run_id) == "succeeded"  # both moves, as one


async def test_a_stale_status_fails_the_flush_for_a_retry(database: Database) -> None:
    """A status read before the run lock was granted can be stale: the deferred
    UPDATE is still guarded, and moving nothing is a serialization failure (retried
    in place by `retry_while_unavailable`), never a silent half-applied event."""
    run_id = await new_run(database)
    task = ("discover_next_phase", 1)
    async with database.new_session() as session, session.begin():
        await taskmoves.move_task(
            session, run_id, *task, TaskStatus.FAILED, ["queued"], {}
        )

    async def stale_event(session: AsyncSession) -> None:
        async with session.begin():
            assert await runlock.first_delivery(
                session, uuid.uuid4(), lock=run_id, task=task
            )
            taskmoves.know_status(session, (run_id, *task), "queued")  # stale
            assert await taskmoves.move_task(
                session, run_id, *task, TaskStatus.RUNNING, ["queued"], {}
            )
            await runrows.flush(session)

    async with database.new_session() as session:
        with pytest.raises(taskmoves.StaleTaskStatus) as stale:
            await stale_event(session)
    assert stale.value.sqlstate == "40001"
    assert await task_status(database, run_id) == "failed"


async def test_a_refusal_on_a_read_status_asks_the_database(database: Database) -> None:
    """Only a status this transaction wrote decides a refusal by itself: one it read
    may be stale, so the guarded UPDATE runs at once."""
    run_id = await new_run(database)
    task = ("discover_next_phase", 1)
    async with database.new_session() as session, session.begin():
        assert await runlock.first_delivery(
            session, uuid.uuid4(), lock=run_id, task=task
        )
        taskmoves.know_status(session, (run_id, *task), "succeeded")  # stale: queued
        assert await taskmoves.move_task(
            session, run_id, *task, TaskStatus.RUNNING, ["queued"], {}
        )
        await runrows.flush(session)
    assert await task_status(database, run_id) == "running"
