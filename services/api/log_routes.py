"""`GET /api/logs`: the stored log records (`logsink`), filtered and keyset-paged.

In token mode a caller sees only records of their own runs; records that name no run
(start-up lines, broker warnings) are not shown to anyone there.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime
from typing import Annotated, Literal
from uuid import UUID

from fastapi import APIRouter, Depends, Query, Request

from services.api import logsink
from services.api.db import SessionDep
from services.api.deps import PrincipalDep, SettingsDep, get_principal
from services.api.errors import InvalidLogQuery
from services.api.schemas import LogList, LogOut
from services.api.settings import AuthMode

logs = APIRouter(prefix="/api", dependencies=[Depends(get_principal)])

DETAILS_PREFIX = "details."
DETAILS_KEY = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,63}$")
MAX_DETAILS_FILTERS = 10


def _aware(value: datetime | None) -> datetime | None:
    """Times without an offset are UTC."""
    if value is not None and value.tzinfo is None:
        return value.replace(tzinfo=UTC)
    return value


def details_filters(request: Request) -> dict[str, str]:
    """`details.<key>=<value>` query parameters as a JSONB containment object."""
    found: dict[str, str] = {}
    for name, value in request.query_params.multi_items():
        if not name.startswith(DETAILS_PREFIX):
            continue
        key = name.removeprefix(DETAILS_PREFIX)
        if not DETAILS_KEY.match(key):
            raise InvalidLogQuery("details filters look like details.<key>=<value>")
        if key in found or len(found) >= MAX_DETAILS_FILTERS:
            raise InvalidLogQuery(
                f"at most {MAX_DETAILS_FILTERS} distinct details filters"
            )
        if len(value) > 512:
            raise InvalidLogQuery("details values are limited to 512 characters")
        found[key] = value
    return found


def parse_cursor(token: str | None) -> int | None:
    if token is None:
        return None
    if not token.isdigit() or len(token) > 19:
        raise InvalidLogQuery("cursor is not one this API issued")
    return int(token)


@logs.get("/logs", response_model_by_alias=True)
async def list_logs(
    request: Request,
    session: SessionDep,
    settings: SettingsDep,
    caller: PrincipalDep,
    run_id: Annotated[UUID | None, Query(alias="runId")] = None,
    task: Annotated[str | None, Query(max_length=64)] = None,
    service: Annotated[str | None, Query(max_length=64)] = None,
    level: Annotated[str | None, Query(max_length=16)] = None,
    since: datetime | None = None,
    until: datetime | None = None,
    q: Annotated[str | None, Query(min_length=1, max_length=256)] = None,
    cursor_token: Annotated[str | None, Query(alias="cursor", max_length=20)] = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 100,
    order: Literal["asc", "desc"] = "desc",
) -> LogList:
    min_level = None
    if level is not None:
        min_level = logsink.level_no(level)
        if min_level is None:
            names = ", ".join(n.lower() for n in logsink.LEVELS)
            raise InvalidLogQuery(f"level is one of {names}")
    since, until = _aware(since), _aware(until)
    if since is not None and until is not None and since > until:
        raise InvalidLogQuery("since is after until")
    query = logsink.LogQuery(
        run_id=run_id,
        task=task,
        service=service,
        min_level=min_level,
        since=since,
        until=until,
        q=q,
        details=details_filters(request),
        cursor=parse_cursor(cursor_token),
        limit=limit,
        ascending=order == "asc",
        owner=caller.user_id if settings.auth_mode is AuthMode.TOKEN else None,
    )
    async with session.begin():
        rows, next_id = await logsink.search(session, query)
    return LogList(
        items=[LogOut.model_validate(r) for r in rows],
        next_cursor=str(next_id) if next_id is not None else None,
    )
