"""A transaction's run changes on the event path, sent straight to asyncpg
(`direct.py`): the timeline entries it queues, and the one statement that writes the
run's changed columns with them and the deferred task moves. Loading and locking the
run: `runlock`.
"""

from __future__ import annotations

from functools import cache
from typing import Any
from uuid import UUID

import asyncpg
from sqlalchemy import event, inspect
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import Session, sessionmaker
from sqlalchemy.orm.attributes import set_committed_value

from services.api import direct, taskmoves
from services.api.models import Run, RunEvent

TimelineEntry = tuple[UUID, int, str, str | None, int | None, dict[str, Any]]
"""run_id, seq, kind, task_name, attempt, data: a `run_events` row to be."""
_TIMELINE = "runrows.timeline"


def add_timeline(session: AsyncSession, entry: TimelineEntry) -> None:
    """Queue a timeline entry for `flush`, or, in a transaction that does not call
    it, for the ORM's next flush (`attach`). No ORM object: building, adding and
    expunging one cost more than writing the row."""
    entries: list[TimelineEntry] = direct.for_transaction(
        session.sync_session, _TIMELINE, list
    )
    entries.append(entry)


def _take_timeline(session: Session) -> list[TimelineEntry]:
    entries: list[TimelineEntry] | None = direct.of_transaction(session, _TIMELINE)
    session.info.pop(_TIMELINE, None)
    return entries or []


def _timeline_to_orm(session: Session, *_: Any) -> None:
    """`before_flush`: entries no `flush` wrote become ORM objects, which this ORM
    flush then inserts (at the commit, or an autoflush before a query that may read
    them). A queued entry always comes with a changed run (`event_seq`), so there is
    always such a flush."""
    for run_id, seq, kind, task, attempt, data in _take_timeline(session):
        session.add(
            RunEvent(
                run_id=run_id,
                seq=seq,
                kind=kind,
                task_name=task,
                attempt=attempt,
                data=data,
            )
        )


def attach(sessions: sessionmaker[Session]) -> None:
    """Every session of `sessions` hands its leftover timeline to the ORM flush."""
    event.listen(sessions, "before_flush", _timeline_to_orm)


async def flush(session: AsyncSession) -> None:
    """Write the transaction's new timeline entries and its run-row changes directly,
    leaving nothing of theirs to the unit of work; the commit's ORM flush writes
    whatever else is pending (nothing, on the event path: credential audits are
    written directly too).

    The run's changed columns (with `updated_at`, as the ORM's `onupdate` would) and
    the timeline entries go in one statement: an UPDATE and a multi-row INSERT.
    """
    entries = _take_timeline(session.sync_session)
    moves = taskmoves.take_moves(session.sync_session)
    changed: list[Run | None] = [o for o in session.dirty if isinstance(o, Run)]
    if not entries and not changed and not moves:
        return
    conn = await direct.connection(session)
    timeline: list[list[Any]] = [
        list(c) for c in zip(*map(_entry, entries), strict=True)
    ]
    for run in changed or [None]:
        await _write(conn, run, timeline, moves)
        timeline, moves = [], []  # written with the first run


def _entry(e: TimelineEntry) -> tuple[Any, ...]:
    return (*e[:5], direct.jsonb(e[5] or {}))


def _timeline_cte(first: int) -> str:
    """INSERT of the timeline from six arrays, parameters $first to $first+5."""
    arrays = ", ".join(
        f"${first + k}::{kind}[]"
        for k, kind in enumerate(("uuid", "int", "varchar", "varchar", "int", "jsonb"))
    )
    return (
        "timeline AS (INSERT INTO run_events "
        f"(run_id, seq, kind, task_name, attempt, data) SELECT * FROM unnest({arrays}))"
    )


async def _write(
    conn: asyncpg.Connection,
    run: Run | None,
    timeline: list[list[Any]],
    moves: list[taskmoves.Move],
) -> None:
    """The run's changed columns, the timeline entries and the deferred task moves,
    whichever there are, in one statement."""
    columns: tuple[str, ...] = ()
    clean = False  # every change of the run is one of `columns`
    if run is not None:
        state = inspect(run)
        # The attributes set since the load or the last flush (their old values are
        # kept there); comparing every attribute's history cost more.
        changed = list(state.committed_state)
        columns = tuple(c for c in changed if c in RUN_COLUMNS)
        clean = len(columns) == len(changed)
    if not columns and not timeline and not moves:
        return
    params: list[Any] = []
    if run is not None and columns:
        params = [run.id] + [
            direct.jsonb(getattr(run, c)) if c in RUN_JSONB else getattr(run, c)
            for c in columns
        ]
    sql = _write_sql(columns, bool(timeline), tuple(m.columns for m in moves))
    row = await conn.fetchrow(
        sql, *params, *timeline, *(p for m in moves for p in m.params())
    )
    assert row is not None
    if row["moved"] != len(moves):
        raise taskmoves.StaleTaskStatus(
            f"{len(moves) - row['moved']} task move(s) lost"
        )
    if run is not None and columns:
        set_committed_value(run, "updated_at", row["updated_at"])
        if clean:
            # What the ORM does after its own flush: the run is no longer modified,
            # so the commit's flush has nothing to look at (it compared every
            # attribute of the run again, about a tenth of a short event's CPU).
            state._commit_all(state.dict, state._instance_dict())
        else:
            for column in columns:  # now what the database holds
                set_committed_value(run, column, getattr(run, column))


RUN_COLUMNS = frozenset(c.key for c in Run.__table__.columns) - {
    "id",
    "created_at",
    "updated_at",
}
RUN_JSONB = frozenset({"outputs"})


@cache
def _write_sql(
    columns: tuple[str, ...], with_timeline: bool, moves: tuple[tuple[str, ...], ...]
) -> str:
    """With `columns`: $1 the run, then their values; then the timeline's six arrays;
    then each move's parameters (`taskmoves.move_sql`). Answers the run's new
    `updated_at` (NULL without `columns`) and how many task rows moved."""
    ctes, first = [], 1
    if columns:
        sets = "".join(
            f"{c} = ${i}::jsonb, " if c in RUN_JSONB else f"{c} = ${i}, "
            for i, c in enumerate(columns, start=2)
        )
        ctes.append(
            f"changed AS (UPDATE spec_workflow_runs SET {sets}updated_at = "
            "clock_timestamp() WHERE id = $1 RETURNING updated_at)"
        )
        first = len(columns) + 2
    if with_timeline:
        ctes.append(_timeline_cte(first))
        first += 6
    for n, move in enumerate(moves):
        ctes.append(f"m{n} AS ({taskmoves.move_sql(move, first)})")
        first += 5 + len(move)
    updated = "(SELECT updated_at FROM changed)" if columns else "NULL::timestamptz"
    moved = " + ".join(f"(SELECT count(*) FROM m{n})" for n in range(len(moves)))
    return (
        f"WITH {', '.join(ctes)} SELECT {updated} AS updated_at, "
        f"{moved or '0'}::int AS moved"
    )
