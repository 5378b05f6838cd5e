"""HTTP routes under /api/workflows/speckit for runs: thin adapters over `runs.py`
(a run's artifacts: `artifact_routes`; the Codex shards: `shard_routes`).

Each route owns its transaction.
"""

from __future__ import annotations

from typing import Annotated
from uuid import UUID

from fastapi import APIRouter, Depends, Header, Query, Response
from fastapi.responses import StreamingResponse
from sqlalchemy import select

from services.api import artifact_routes, cursor, reads, run_control, runs, shard_routes
from services.api.db import DatabaseDep, SessionDep
from services.api.deps import PrincipalDep, SettingsDep, get_principal
from services.api.lifecycle import TERMINAL_RUN, RunStatus
from services.api.models import Run, RunEvent
from services.api.schemas import (
    EventList,
    EventOut,
    RetryRequest,
    RunCreate,
    RunList,
    RunOut,
)
from services.api.settings import Settings
from services.api.timeline import EVENT_STREAM, event_stream, wants_event_stream
from shared.messages import PublishMode
from shared.names import NAME_RE

router = APIRouter(
    prefix="/api/workflows/speckit", dependencies=[Depends(get_principal)]
)


LastEventId = Annotated[int | None, Header(alias="Last-Event-ID", ge=0, le=2**31 - 1)]
IdempotencyKey = Annotated[
    str | None,
    Header(
        alias="Idempotency-Key", min_length=1, max_length=255, pattern=r"^[\x21-\x7e]+$"
    ),
]


def run_out(run: Run, settings: Settings) -> RunOut:
    """The run's own columns, as POST /runs, retry and cancel answer (the GET routes
    write their JSON in SQL: `reads.py`). Relationships are lazy="raise": not read."""
    extra: dict[str, object] = {
        c.key: getattr(run, c.key) for c in Run.__mapper__.column_attrs
    }
    extra["artifacts_path"] = str(settings.artifacts_root / str(run.id))
    return RunOut.model_validate(extra)


@router.post("/runs", status_code=202, response_model_exclude_none=False)
async def create_run(
    body: RunCreate,
    session: SessionDep,
    settings: SettingsDep,
    caller: PrincipalDep,
    response: Response,
    idempotency_key: IdempotencyKey = None,
) -> RunOut:
    request = runs.NewRun(
        repository=body.repository,
        feature_key=body.feature_key,
        base_branch=body.base_branch,
        task_id=body.task_id,
        publish_mode=PublishMode(body.publish_mode).value,
        notes=body.notes,
    )
    async with session.begin():
        run, created = await runs.create_run(
            session, request, user_id=caller.user_id, idempotency_key=idempotency_key
        )
    if not created:
        response.headers["Idempotent-Replayed"] = "true"
    return run_out(run, settings)


@router.get("/runs", response_model=RunList)
async def list_runs(
    database: DatabaseDep,
    settings: SettingsDep,
    caller: PrincipalDep,
    status: RunStatus | None = None,
    feature_key: Annotated[
        str | None, Query(alias="featureKey", pattern=f"^{NAME_RE.pattern}$")
    ] = None,
    repository: Annotated[str | None, Query(max_length=512)] = None,
    limit: Annotated[int, Query(ge=1, le=100)] = 20,
    cursor_token: Annotated[str | None, Query(alias="cursor", max_length=200)] = None,
) -> Response:
    after = cursor.decode(cursor_token) if cursor_token else None
    filters = runs.ListFilter(
        status=status.value if status else None,
        feature_key=feature_key,
        repository=repository,
    )
    body = await reads.runs_json(
        database.engine,
        filters,
        owner=caller.user_id,
        limit=limit,
        after=after,
        artifacts_root=settings.artifacts_root,
    )
    return Response(body, media_type=reads.MEDIA_TYPE)


@router.get("/runs/{run_id}", response_model=RunOut)
async def get_run(
    run_id: UUID,
    database: DatabaseDep,
    settings: SettingsDep,
    caller: PrincipalDep,
    include_tasks: Annotated[bool, Query(alias="includeTasks")] = True,
    include_artifacts: Annotated[bool, Query(alias="includeArtifacts")] = True,
    include_credential_audit: Annotated[
        bool, Query(alias="includeCredentialAudit")
    ] = True,
) -> Response:
    body = await reads.run_json(
        database.engine,
        run_id,
        owner=caller.user_id,
        artifacts_root=settings.artifacts_root,
        tasks=include_tasks,
        artifacts=include_artifacts,
        audits=include_credential_audit,
    )
    return Response(body, media_type=reads.MEDIA_TYPE)


@router.post("/runs/{run_id}/retry", status_code=202)
async def retry_run(
    run_id: UUID,
    session: SessionDep,
    settings: SettingsDep,
    caller: PrincipalDep,
    body: RetryRequest | None = None,
) -> RunOut:
    async with session.begin():
        run = await run_control.start_retry(
            session, run_id, notes=body.notes if body else None, owner=caller.user_id
        )
    return run_out(run, settings)


@router.post("/runs/{run_id}/cancel", status_code=202)
async def cancel_run(
    run_id: UUID, session: SessionDep, settings: SettingsDep, caller: PrincipalDep
) -> RunOut:
    async with session.begin():
        run = await run_control.cancel_run(session, run_id, owner=caller.user_id)
    return run_out(run, settings)


@router.get(
    "/runs/{run_id}/events",
    response_model=EventList,
    responses={
        200: {
            "content": {EVENT_STREAM: {}},
            "description": "JSON page, or with `Accept: text/event-stream` the live "
            "timeline as Server-Sent Events (`id` = seq, `event` = kind, `data` = the "
            "event as JSON), resuming after `Last-Event-ID` or `after`; it ends after "
            "the run's terminal event.",
        },
        204: {"description": "stream requested, run ended, nothing after the cursor"},
    },
)
async def run_events(
    run_id: UUID,
    session: SessionDep,
    database: DatabaseDep,
    caller: PrincipalDep,
    after: Annotated[int, Query(ge=0, le=2**31 - 1)] = 0,
    limit: Annotated[int, Query(ge=1, le=1000)] = 500,
    accept: Annotated[str | None, Header()] = None,
    last_event_id: LastEventId = None,
) -> EventList | Response:
    if wants_event_stream(accept):
        start = after if last_event_id is None else last_event_id
        async with session.begin():
            run = await runs.visible_run(session, run_id, owner=caller.user_id)
            ended = run.status in TERMINAL_RUN and start >= run.event_seq
        if ended:  # 204 is what tells an EventSource to stop reconnecting
            return Response(status_code=204)
        return StreamingResponse(
            event_stream(database, run_id, after=start),
            media_type=EVENT_STREAM,
            headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
        )
    async with session.begin():
        await runs.visible_run(session, run_id, owner=caller.user_id)
        rows = (
            await session.scalars(
                select(RunEvent)
                .where(RunEvent.run_id == run_id, RunEvent.seq > after)
                .order_by(RunEvent.seq)
                .limit(limit)
            )
        ).all()
    items = [EventOut.model_validate(r) for r in rows]
    return EventList(items=items, last_seq=items[-1].seq if items else after)


# Defined in their own modules, served under this router's prefix and caller check.
router.include_router(artifact_routes.router)
router.include_router(shard_routes.router)
