"""The run row loaded and locked on the event path without an ORM query, sent
straight to asyncpg (`direct.py`): the inbox insert that also locks and loads the
event's run (and reads its task's status), `lock_run`, `insert_run`, and which runs
the transaction holds. `runrows.flush` writes their changes.
"""

from __future__ import annotations

from typing import Any
from uuid import UUID

from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import make_transient_to_detached

from services.api import direct, runrows, taskmoves
from services.api.models import Run

_INBOX = (
    "INSERT INTO inbox (message_id) VALUES ($1) "
    "ON CONFLICT (message_id) DO NOTHING RETURNING message_id"
)


async def first_delivery(
    session: AsyncSession,
    message_id: UUID,
    *,
    lock: UUID | None = None,
    task: tuple[str, int] | None = None,
) -> bool:
    """Record `message_id` in the inbox; False when it was there (a duplicate).

    With `lock`, the same statement also locks and loads that run (`lock_run`), so
    the transition's own `lock_run` costs no round trip; with `task` too (name,
    attempt), it reads that task row's status for `taskmoves.move_task`.
    """
    conn = await direct.connection(session)
    if lock is None or session.identity_key(Run, (lock,)) in session.identity_map:
        return await conn.fetchval(_INBOX, message_id) is not None
    if task is None:
        row = await conn.fetchrow(_INBOX_AND_LOCK, message_id, lock)
    else:
        row = await conn.fetchrow(_INBOX_LOCK_AND_TASK, message_id, lock, *task)
    assert row is not None  # one row, whether or not the run exists
    values = dict(row.items())
    first = bool(values.pop("first_delivery"))
    status = values.pop("task_status", None)
    if values["id"] is not None:
        _adopt(session, values)
        if task is not None:
            taskmoves.know_status(session, (lock, *task), status)
    return first


_ALL_COLUMNS = ", ".join(c.key for c in Run.__table__.columns)
RUN_SELECT = f"SELECT {_ALL_COLUMNS} FROM spec_workflow_runs WHERE id = $1"
NEW_RUN_COLUMNS = (
    "id",
    "repository",
    "feature_key",
    "base_branch",
    "requested_task_id",
    "publish_mode",
    "notes",
    "status",
    "phase",
    "attempt",
    "outputs",
    "event_seq",
    "created_by",
    "idempotency_key",
)
_INSERT_RUN = (
    f"INSERT INTO spec_workflow_runs ({', '.join(NEW_RUN_COLUMNS)}) VALUES ("
    + ", ".join(
        f"${i}::jsonb" if c in runrows.RUN_JSONB else f"${i}"
        for i, c in enumerate(NEW_RUN_COLUMNS, start=1)
    )
    + f") ON CONFLICT DO NOTHING RETURNING {_ALL_COLUMNS}"
)


async def insert_run(session: AsyncSession, values: dict[str, Any]) -> Run | None:
    """A new run row (`NEW_RUN_COLUMNS`; the rest NULL or the server's defaults),
    held by the session like a locked one; None if it would break a unique index (an
    active run of the same feature, the same Idempotency-Key): ON CONFLICT, not an
    error, so no savepoint is needed to carry on."""
    conn = await direct.connection(session)
    row = await conn.fetchrow(
        _INSERT_RUN,
        *(
            direct.jsonb(values[c]) if c in runrows.RUN_JSONB else values[c]
            for c in NEW_RUN_COLUMNS
        ),
    )
    return None if row is None else _adopt(session, dict(row.items()))


_INBOX_AND_LOCK = (
    f"WITH delivery AS ({_INBOX}), "
    f"locked AS ({RUN_SELECT.replace('$1', '$2')} FOR UPDATE) "
    "SELECT EXISTS (SELECT 1 FROM delivery) AS first_delivery, locked.* "
    "FROM (VALUES (1)) AS one LEFT JOIN locked ON true"
)
# The task row as the statement's snapshot has it: if the run lock had to wait, a
# later change is missed, which `taskmoves.move_task` allows for.
_INBOX_LOCK_AND_TASK = _INBOX_AND_LOCK.replace(
    "locked.* ",
    "(SELECT status FROM spec_workflow_task_states WHERE run_id = $2 "
    "AND task_name = $3 AND attempt = $4) AS task_status, locked.* ",
)
_LOCKED = "runlock.locked"


def holds_lock(session: AsyncSession, run_id: UUID) -> Run | None:
    """The run, if this transaction locked it with `lock_run` or `first_delivery`
    (its in-memory state is then the current one: nobody else can change the row)."""
    locked: dict[UUID, Run] | None = direct.of_transaction(
        session.sync_session, _LOCKED
    )
    return None if locked is None else locked.get(run_id)


def _adopt(session: AsyncSession, values: dict[str, Any]) -> Run:
    """A locked row as a persistent ORM object of the session, without an ORM query
    (`make_transient_to_detached`, then `add`). The session's identity map holds it
    weakly: `session.info` keeps it for the transaction (`holds_lock`).

    The values go straight into the instance's dict, as the ORM's own loading puts
    them: through the constructor every column would be set, and its history kept,
    one instrumented attribute at a time, only for `make_transient_to_detached` to
    commit them all again.
    """
    run = Run()
    run.__dict__.update(values)
    make_transient_to_detached(run)
    session.add(run)
    return note_lock(session, run)


def note_lock(session: AsyncSession, run: Run) -> Run:
    """`run` is locked by this transaction (`holds_lock` answers it until its end)."""
    locked: dict[UUID, Run] = direct.for_transaction(
        session.sync_session, _LOCKED, dict
    )
    locked[run.id] = run
    return run


async def lock_run(
    session: AsyncSession, run_id: UUID, *, owner: UUID | None = None
) -> Run | None:
    """The run row, locked FOR UPDATE, as a persistent ORM object of the session
    (`_adopt`).

    Only for a run the session does not hold yet (`runs.lock_run` checks).
    """
    conn = await direct.connection(session)
    sql = RUN_SELECT + (" AND created_by = $2" if owner is not None else "")
    row = await conn.fetchrow(
        sql + " FOR UPDATE", *((run_id, owner) if owner is not None else (run_id,))
    )
    return None if row is None else _adopt(session, dict(row.items()))
