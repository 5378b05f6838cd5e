"""Guarded task moves on the event path: the UPDATE that changes a task row's
status only from the statuses its edge allows, decided at once when the transaction
already read the row's status (`know_status`) and then sent with `runrows.flush`'s
statement, else sent now.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from functools import cache
from typing import Any
from uuid import UUID

from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import Session

from services.api import direct


@cache
def move_sql(columns: tuple[str, ...], first: int = 1) -> str:
    """The guarded UPDATE, parameters from $first: the new status, run, task,
    attempt, the statuses it may move from, then `columns`' values."""
    n = [f"${first + k}" for k in range(5)]
    sets = "".join(
        f"{c} = ${i}::jsonb, " if c in direct.JSONB_COLUMNS else f"{c} = ${i}, "
        for i, c in enumerate(columns, start=first + 5)
    )
    return (
        f"UPDATE spec_workflow_task_states SET status = {n[0]}, {sets}"
        "updated_at = clock_timestamp() "
        f"WHERE run_id = {n[1]} AND task_name = {n[2]} AND attempt = {n[3]} "
        f"AND status = ANY({n[4]}::varchar[]) RETURNING id"
    )


TaskKey = tuple[UUID, str, int]
"""run, task name, attempt: one task row."""
_KNOWN = "taskmoves.task_status"
_MOVES = "taskmoves.moves"


@dataclass
class Move:
    """A guarded task move `runrows.flush` sends with the transaction's last
    statement (`move_task`)."""

    key: TaskKey
    to: str
    allowed_from: list[str]
    values: dict[str, Any]

    @property
    def columns(self) -> tuple[str, ...]:
        return tuple(sorted(self.values))

    def params(self) -> list[Any]:
        values = [
            direct.jsonb(self.values[c])
            if c in direct.JSONB_COLUMNS
            else self.values[c]
            for c in self.columns
        ]
        return [self.to, *self.key, self.allowed_from, *values]


class StaleTaskStatus(RuntimeError):
    """A deferred move found its row no longer where `know_status` said: the
    transaction is run again (a serialization failure, as Postgres would call it)."""

    sqlstate = "40001"


def know_status(session: AsyncSession, key: TaskKey, status: str | None) -> None:
    """The task row's status as this transaction read it (None: no such row), so
    that `move_task` can leave its UPDATE to `runrows.flush`."""
    known: dict[TaskKey, str | None] = direct.for_transaction(
        session.sync_session, _KNOWN, dict
    )
    known[key] = status


def take_moves(session: Session) -> list[Move]:
    """The transaction's deferred moves, handed over once."""
    moves: dict[TaskKey, Move] | None = direct.of_transaction(session, _MOVES)
    session.info.pop(_MOVES, None)
    return list(moves.values()) if moves else []


def _defer(
    session: AsyncSession, key: TaskKey, to: str, allowed: list[str], values: Any
) -> bool | None:
    """True (deferred) or False (refused) when the transaction's own knowledge of the
    row decides; None when the database must answer now."""
    known: dict[TaskKey, str | None] | None = direct.of_transaction(
        session.sync_session, _KNOWN
    )
    if known is None or key not in known:
        return None
    moves: dict[TaskKey, Move] = direct.for_transaction(
        session.sync_session, _MOVES, dict
    )
    pending = moves.get(key)
    if known[key] not in allowed:
        # After our own move the answer is ours; a status only read may be stale
        # (read before the run lock was granted): ask the database.
        return False if pending is not None else None
    if pending is None:
        moves[key] = Move(key, to, allowed, dict(values))
    else:  # the same row moved twice: one UPDATE, guarded as the first one was
        pending.to = to
        pending.values |= values
    known[key] = to
    return True


async def move_task(
    session: AsyncSession,
    run_id: UUID,
    task: str,
    attempt: int,
    to: str,
    allowed_from: Sequence[str],
    values: dict[str, Any],
) -> bool:
    """Guarded UPDATE of one task row; False unless its status is in `allowed_from`.

    When the transaction read the row's status (`know_status`, with the run locked),
    the move is decided here and its UPDATE goes with `runrows.flush`'s statement,
    still guarded: one round trip fewer per event.
    """
    unknown = values.keys() - direct.TASK_COLUMNS
    if unknown:
        raise ValueError(f"not a task column: {sorted(unknown)}")
    deferred = _defer(session, (run_id, task, attempt), to, list(allowed_from), values)
    if deferred is not None:
        return deferred
    columns = tuple(sorted(values))
    params = [
        direct.jsonb(values[c]) if c in direct.JSONB_COLUMNS else values[c]
        for c in columns
    ]
    conn = await direct.connection(session)
    moved = await conn.fetchval(
        move_sql(columns),
        to,
        run_id,
        task,
        attempt,
        list(allowed_from),
        *params,
    )
    known = direct.of_transaction(session.sync_session, _KNOWN)
    key = (run_id, task, attempt)
    if known is not None and key in known:  # what the database holds now
        if moved is None:
            del known[key]
        else:
            known[key] = to
    return moved is not None
