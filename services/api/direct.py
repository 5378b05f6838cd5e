"""The event path's hot statements, sent straight to asyncpg.

They run on the connection under the caller's `AsyncSession` transaction (same
transaction, same locks), as fixed SQL text that asyncpg prepares once per
connection: no SQLAlchemy statement is built, cache-keyed or compiled per call, which
cost ten times the statement itself (about 0.5 ms against 0.04 ms of CPU). Here: the
connection, task and outbox rows, artifacts, and what a transaction keeps between
its statements. Task moves are `taskmoves.py`'s; the run row and its timeline are
`runlock.py`'s (loading, locking) and `runrows.py`'s (writing).

JSONB parameters are JSON text: that is what SQLAlchemy's asyncpg codec expects.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar, cast
from uuid import UUID

import asyncpg
import orjson
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import Session

T = TypeVar("T")
JSONB_COLUMNS = frozenset({"summary", "error", "payload"})
TASK_COLUMNS = frozenset(
    {"status", "started_at", "finished_at", "lease_until", "heartbeat_at"}
    | JSONB_COLUMNS
)


_DRIVER = "direct.driver"


async def connection(session: AsyncSession) -> asyncpg.Connection:
    """The asyncpg connection of the session's current transaction.

    SQLAlchemy's asyncpg adapter sends BEGIN lazily, with its first statement: if
    ours came first it would run outside the transaction (autocommitted, surviving a
    rollback). So the adapter's transaction is started here when it has not been.
    Kept for the rest of the transaction (`for_transaction`): finding it costs two
    greenlet hops, and a transition asks for it once per statement.
    """
    found: asyncpg.Connection | None = of_transaction(session.sync_session, _DRIVER)
    if found is not None:
        return found
    conn = await session.connection()
    raw = await conn.get_raw_connection()
    adapter: Any = raw.dbapi_connection
    if adapter._transaction is None and adapter.isolation_level != "autocommit":
        await adapter._start_transaction()
    driver: asyncpg.Connection = raw.driver_connection
    if adapter._transaction is not None:  # autocommit: nothing to hold it to
        session.info[_DRIVER] = (session.sync_session.get_transaction(), driver)
    return driver


def json_text(value: object) -> str:
    """JSON/JSONB parameters as orjson writes them (the stdlib's json is several
    times slower on the run's growing `outputs`); enum keys by value. The engine's
    serializer too (`db.Database`)."""
    return orjson.dumps(value, option=orjson.OPT_NON_STR_KEYS).decode()


def jsonb(value: Any) -> str | None:
    return None if value is None else json_text(value)


@dataclass(frozen=True)
class TaskRow:
    """A task row of an attempt, as queued; its payload is its command's."""

    id: UUID
    run_id: UUID
    task: str
    attempt: int
    status: str


_INSERT_TASK = (
    "INSERT INTO spec_workflow_task_states "
    "(id, run_id, task_name, attempt, status, payload, redispatches) "
    "VALUES ({}, {}, {}, {}, {}, {}::jsonb, 0) "
    "ON CONFLICT ON CONSTRAINT uq_spec_workflow_task_states_key DO NOTHING"
)


async def insert_task(
    session: AsyncSession, row: TaskRow, payload: dict[str, Any]
) -> None:
    """A task row; an existing one (same run, task, attempt) stays."""
    conn = await connection(session)
    await conn.execute(
        _INSERT_TASK.format("$1", "$2", "$3", "$4", "$5", "$6"),
        row.id,
        row.run_id,
        row.task,
        row.attempt,
        row.status,
        jsonb(payload),
    )


_INSERT_OUTBOX = (
    "INSERT INTO outbox (id, routing_key, payload, mandatory, attempts, "
    "available_at) VALUES ($1, $2, $3::jsonb, $4, 0, "
    "now() + make_interval(secs => $5)) "
    "ON CONFLICT (id) DO NOTHING RETURNING id"
)
_INSERT_TASK_AND_OUTBOX = (
    "WITH task AS ("
    + _INSERT_TASK.format("$6", "$7", "$8", "$9", "$10", "$3")
    + f") {_INSERT_OUTBOX}"
)


async def insert_outbox(
    session: AsyncSession,
    *,
    id: UUID,
    routing_key: str,
    payload: dict[str, Any],
    mandatory: bool,
    delay_seconds: float,
    task: TaskRow | None = None,
) -> bool:
    """An outbox row due `delay_seconds` after now; False if its id already exists.

    With `task`, the command's task row too, in the same statement, with the same
    payload (`insert_task`).
    """
    conn = await connection(session)
    args = (id, routing_key, jsonb(payload), mandatory, delay_seconds)
    if task is None:
        inserted = await conn.fetchval(_INSERT_OUTBOX, *args)
    else:
        inserted = await conn.fetchval(
            _INSERT_TASK_AND_OUTBOX,
            *args,
            task.id,
            task.run_id,
            task.task,
            task.attempt,
            task.status,
        )
    return inserted is not None


async def insert_artifacts(
    session: AsyncSession, rows: Sequence[tuple[UUID, UUID, str, str, str, int]]
) -> None:
    """(id, run_id, artifact_type, path, task_name, attempt) rows; a path the run
    already has stays as it is."""
    if not rows:
        return
    conn = await connection(session)
    await conn.executemany(
        "INSERT INTO workflow_artifacts "
        "(id, run_id, artifact_type, path, task_name, attempt) "
        "VALUES ($1, $2, $3, $4, $5, $6) "
        "ON CONFLICT ON CONSTRAINT uq_workflow_artifacts_path DO NOTHING",
        rows,
    )


async def insert_audit(
    session: AsyncSession, row: tuple[UUID, UUID, int, str, str, str | None]
) -> None:
    """(id, run_id, attempt, codex_status, github_status, notes): one credential
    audit row, `checked_at` the transaction's time (the column's default). Written
    now: an ORM object would make the commit run a unit-of-work flush for it alone."""
    conn = await connection(session)
    await conn.execute(
        "INSERT INTO workflow_credential_audits "
        "(id, run_id, attempt, codex_status, github_status, notes) "
        "VALUES ($1, $2, $3, $4, $5, $6)",
        *row,
    )


async def artifacts_of(session: AsyncSession, run_id: UUID) -> list[asyncpg.Record]:
    """The run's artifact rows (path, artifact_type, task_name, attempt), oldest
    first, as the transaction sees them."""
    conn = await connection(session)
    rows: list[asyncpg.Record] = await conn.fetch(
        "SELECT path, artifact_type, task_name, attempt FROM workflow_artifacts "
        "WHERE run_id = $1 ORDER BY created_at, id",
        run_id,
    )
    return rows


def of_transaction(session: Session, key: str) -> Any:
    """What `for_transaction` keeps under `key` for the session's current
    transaction; None once it ended (rolled back, retried in place, committed)."""
    held, value = session.info.get(key, (None, None))
    return value if held is session.get_transaction() and held is not None else None


def for_transaction(session: Session, key: str, factory: Callable[[], T]) -> T:
    """The value kept under `key` for the session's current transaction, made by
    `factory` when there is none yet: per-transaction state that a retry in place
    (a new transaction on the same session) never sees."""
    value = of_transaction(session, key)
    if value is None:
        value = factory()
        session.info[key] = (session.get_transaction(), value)
    return cast(T, value)
