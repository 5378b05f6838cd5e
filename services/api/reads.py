"""The run reads behind GET /runs and GET /runs/{id}: one SQL statement each, the
JSON written by Postgres (`reads_sql`), the bytes sent as they are.

No ORM objects, no pydantic validation, no BEGIN/COMMIT and no pool checkout per read
(`reads_lane`): those were most of what a read cost. The bytes are the ones FastAPI
made of `RunOut` / `RunList` (tests/integration/test_reads.py compares them with
`RunOut` validated from the ORM's objects).
"""

from __future__ import annotations

from datetime import datetime
from functools import lru_cache
from pathlib import PurePath
from typing import Any
from uuid import UUID

import orjson
from sqlalchemy.ext.asyncio import AsyncEngine

from services.api import cursor
from services.api.errors import RunNotFound
from services.api.reads_lane import fetch
from services.api.reads_sql import list_sql, run_sql
from services.api.runs import ListFilter

MEDIA_TYPE = "application/json"


def compact(document: str) -> bytes:
    """Postgres' JSON as the ORM path wrote it: jsonb decoded as the engine decodes it
    (`db.Database`: orjson), written without the spaces of jsonb's text
    (`{"a": 1, "b": [1, 2]}`); orjson writes floats as pydantic does."""
    return orjson.dumps(orjson.loads(document))


@lru_cache(maxsize=8)
def artifacts_prefix(artifacts_root: PurePath | str) -> str:
    """What `str(artifacts_root / run_id)` puts before the id."""
    return str(PurePath(artifacts_root) / "x")[:-1]


async def run_json(
    bind: AsyncEngine,
    run_id: UUID,
    *,
    owner: UUID | None,
    artifacts_root: PurePath | str,
    tasks: bool = True,
    artifacts: bool = True,
    audits: bool = True,
) -> bytes:
    """The run as `RunOut` JSON; RunNotFound unless it exists and `owner` (when given)
    created it."""
    args: list[Any] = [run_id, artifacts_prefix(artifacts_root)]
    if owner is not None:
        args.append(owner)
    rows = await fetch(
        bind, run_sql(tasks, artifacts, audits, owner is not None), *args
    )
    if not rows:
        raise RunNotFound(f"no run {run_id}")
    return compact(rows[0][0])


def list_query(
    filters: ListFilter,
    *,
    owner: UUID | None,
    limit: int,
    after: tuple[datetime, UUID] | None,
    artifacts_root: PurePath | str,
) -> tuple[str, list[Any]]:
    """The SELECT of a page (`limit + 1` rows: one more tells whether more follow)
    and its parameters."""
    sql = list_sql(
        limit + 1,
        owner is not None,
        filters.status is not None,
        filters.feature_key is not None,
        filters.repository is not None,
        after is not None,
    )
    args: list[Any] = [artifacts_prefix(artifacts_root)]
    args += [v for v in (owner, filters.status, filters.feature_key) if v is not None]
    if filters.repository is not None:
        args.append(filters.repository.lower())
    if after is not None:
        args += after
    return sql, args


async def runs_json(
    bind: AsyncEngine,
    filters: ListFilter,
    *,
    owner: UUID | None,
    limit: int,
    after: tuple[datetime, UUID] | None,
    artifacts_root: PurePath | str,
) -> bytes:
    """A page of runs as `RunList` JSON: newest first, keyset-paginated on
    (created_at, id); `nextCursor` when more rows follow."""
    sql, args = list_query(
        filters, owner=owner, limit=limit, after=after, artifacts_root=artifacts_root
    )
    rows = await fetch(bind, sql, *args)
    page = rows[:limit]
    more = len(rows) > limit
    next_cursor = cursor.encode(page[-1][1], page[-1][2]) if more else None
    # compact already: row_to_json, and a run's own columns hold no jsonb
    items = ",".join(row[0] for row in page).encode()
    return b'{"items":[' + items + b'],"nextCursor":' + orjson.dumps(next_cursor) + b"}"
