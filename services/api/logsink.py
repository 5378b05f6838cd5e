"""The log sink: stores shipped records (`api.log_records`) and answers queries.

Each message holds a JSON list of records (or one record) from `shared.logship`.
The decoder cannot fail (the body is kept as latin-1 text); malformed records are
counted (`log_records_malformed`) and dropped, never raised: the queue has no DLX and
a redelivery would fail the same way. The valid ones of a message are inserted with
one executemany. Postgres down → retried in place, like the event handlers.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any
from uuid import UUID

import orjson
from faststream.message import StreamMessage
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator
from sqlalchemy import ColumnElement, delete, insert, select
from sqlalchemy.ext.asyncio import AsyncSession

from services.api.db import Database, retry_while_unavailable
from services.api.models import LogRecord, Run
from shared.metrics import get_metrics

LEVELS = {
    "TRACE": 5,
    "DEBUG": 10,
    "INFO": 20,
    "SUCCESS": 25,
    "WARNING": 30,
    "ERROR": 40,
    "CRITICAL": 50,
}


def level_no(level: str) -> int | None:
    """The numeric level of a loguru level name (case-insensitive), else None."""
    return LEVELS.get(level.upper())


class ShippedRecord(BaseModel):
    """One record as `shared.logshape.shape` writes it."""

    model_config = ConfigDict(extra="ignore")

    time: datetime
    level: str = Field(min_length=1, max_length=16)
    service: str = Field(min_length=1, max_length=64)
    message: str
    run_id: UUID | None = None
    task: str | None = Field(None, max_length=64)
    attempt: int | None = Field(None, ge=0, le=2**31 - 1)
    details: dict[str, Any] = Field(default_factory=dict)
    exception: str | None = None

    @field_validator("run_id", mode="before")
    @classmethod
    def _lenient_run_id(cls, value: object) -> object:
        """A run_id that is not a UUID is kept in `details`, not fatal: see `row`."""
        return value or None

    @field_validator("time")
    @classmethod
    def _aware(cls, value: datetime) -> datetime:
        if value.tzinfo is None:
            raise ValueError("time needs a UTC offset")
        return value

    def row(self) -> dict[str, Any]:
        return {
            "ts": self.time,
            "service": self.service,
            "level": self.level.upper(),
            "level_no": level_no(self.level) or 0,
            # Postgres text cannot hold NUL.
            "message": self.message.replace("\x00", ""),
            "run_id": self.run_id,
            "task": self.task,
            "attempt": self.attempt,
            "details": _strip_nul(self.details),
            "exception": self.exception.replace("\x00", "") if self.exception else None,
        }


def _strip_nul(value: Any) -> Any:
    if isinstance(value, str):
        return value.replace("\x00", "").replace("\\u0000", "")
    if isinstance(value, dict):
        return {str(k).replace("\x00", ""): _strip_nul(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_strip_nul(v) for v in value]
    return value


def parse(raw: bytes) -> tuple[list[dict[str, Any]], int]:
    """Rows to insert and the number of malformed records in one message body."""
    try:
        data = orjson.loads(raw)
    except orjson.JSONDecodeError:
        return [], 1
    items = data if isinstance(data, list) else [data]
    rows: list[dict[str, Any]] = []
    bad = 0
    for item in items:
        try:
            rows.append(ShippedRecord.model_validate(item).row())
        except (ValidationError, TypeError, ValueError):
            bad += 1
    return rows, bad


async def decode_raw(message: StreamMessage[Any]) -> str:
    """Never fails: the body as latin-1 text (parsed in the handler)."""
    return message.body.decode("latin-1")


async def store(session: AsyncSession, rows: list[dict[str, Any]]) -> None:
    """Insert a batch of rows (the caller owns the transaction)."""
    if rows:
        await session.execute(insert(LogRecord), rows)


async def store_shipped(database: Database, body: str) -> None:
    """Store a shipped batch; drops (and counts) what cannot be stored. The
    `api.log_records` handler (`events.build_router`) binds the app's database."""
    rows, bad = parse(body.encode("latin-1"))
    metrics = get_metrics()
    if bad:
        metrics.incr("log_records_malformed", bad)
    if not rows:
        return

    async def insert_rows() -> None:
        async with database.new_session() as session, session.begin():
            await store(session, rows)

    try:
        await retry_while_unavailable(insert_rows)
    except Exception:  # e.g. a value Postgres refuses: drop the batch, never loop
        metrics.incr("log_records_malformed", len(rows))
        return
    metrics.incr("log_records_stored", len(rows))


async def prune(session: AsyncSession, horizon: datetime) -> int:
    """Delete records older than `horizon`; returns how many."""
    result = await session.execute(
        delete(LogRecord)
        .where(LogRecord.ts < horizon)
        .execution_options(synchronize_session=False)
    )
    return int(getattr(result, "rowcount", 0) or 0)


def retention_horizon(now: datetime, days: float) -> datetime:
    return now - timedelta(days=days)


class LogQuery(BaseModel):
    """Validated filters of `GET /api/logs`."""

    run_id: UUID | None = None
    task: str | None = None
    service: str | None = None
    min_level: int | None = None
    since: datetime | None = None
    until: datetime | None = None
    q: str | None = None
    details: dict[str, str] = Field(default_factory=dict)
    cursor: int | None = None
    limit: int = 100
    ascending: bool = False
    owner: UUID | None = None
    """Token mode: only records of this user's runs (records without a run: none)."""


def _escape_like(text: str) -> str:
    return text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


def build_query(query: LogQuery) -> Any:
    """The SELECT for one page (`limit + 1` rows, to know whether more follow)."""
    conditions: list[ColumnElement[bool]] = []
    if query.run_id is not None:
        conditions.append(LogRecord.run_id == query.run_id)
    if query.task is not None:
        conditions.append(LogRecord.task == query.task)
    if query.service is not None:
        conditions.append(LogRecord.service == query.service)
    if query.min_level is not None:
        conditions.append(LogRecord.level_no >= query.min_level)
    if query.since is not None:
        conditions.append(LogRecord.ts >= query.since)
    if query.until is not None:
        conditions.append(LogRecord.ts < query.until)
    if query.q:
        conditions.append(
            LogRecord.message.ilike(f"%{_escape_like(query.q)}%", escape="\\")
        )
    if query.details:
        conditions.append(LogRecord.details.contains(query.details))
    if query.cursor is not None:
        conditions.append(
            LogRecord.id > query.cursor
            if query.ascending
            else LogRecord.id < query.cursor
        )
    if query.owner is not None:
        owned = select(Run.id).where(Run.created_by == query.owner)
        conditions.append(LogRecord.run_id.in_(owned))
    order = LogRecord.id.asc() if query.ascending else LogRecord.id.desc()
    statement = select(LogRecord).order_by(order).limit(query.limit + 1)
    if conditions:
        statement = statement.where(*conditions)
    return statement


async def search(
    session: AsyncSession, query: LogQuery
) -> tuple[list[LogRecord], int | None]:
    """One page of records and the cursor of the next one (None: no more)."""
    rows = list((await session.scalars(build_query(query))).all())
    if len(rows) > query.limit:
        rows = rows[: query.limit]
        return rows, rows[-1].id
    return rows, None
