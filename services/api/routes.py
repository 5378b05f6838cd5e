"""HTTP routes under /api/workflows/speckit: thin adapters over `runs.py`.

Each route owns its transaction.
"""

from __future__ import annotations

import asyncio
import os
from typing import Annotated
from uuid import UUID

from fastapi import APIRouter, Depends, Header, Query, Response
from fastapi.responses import FileResponse, StreamingResponse
from sqlalchemy import select

from services.api import cursor, reads, runs, shards
from services.api.db import DatabaseDep, SessionDep
from services.api.deps import PrincipalDep, SettingsDep, get_principal
from services.api.dispatch import shard_of
from services.api.errors import ArtifactNotFound
from services.api.lifecycle import TERMINAL_RUN, RunStatus
from services.api.models import Artifact, CodexShardRow, Run, RunEvent
from services.api.schemas import (
    ArtifactList,
    ArtifactOut,
    EventList,
    EventOut,
    ProbeAccepted,
    ProbeRequest,
    RetryRequest,
    RunCreate,
    RunList,
    RunOut,
    ShardList,
    ShardOut,
)
from services.api.settings import Settings
from services.api.timeline import EVENT_STREAM, event_stream, wants_event_stream
from shared.messages import PublishMode
from shared.names import NAME_RE
from shared.routing import codex_queue_name, codex_volume_name

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
        run = await runs.start_retry(
            session, run_id, notes=body.notes if body else None, owner=caller.user_id
        )
    return run_out(run, settings)


@router.post("/runs/{run_id}/cancel", status_code=202)
async def cancel_run(
    run_id: UUID, session: SessionDep, settings: SettingsDep, caller: PrincipalDep
) -> RunOut:
    async with session.begin():
        run = await runs.cancel_run(session, run_id, owner=caller.user_id)
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


@router.get("/runs/{run_id}/artifacts")
async def list_artifacts(
    run_id: UUID, session: SessionDep, caller: PrincipalDep
) -> ArtifactList:
    async with session.begin():
        run = await runs.get_run(
            session, run_id, owner=caller.user_id, tasks=False, audits=False
        )
    return ArtifactList(items=[ArtifactOut.model_validate(a) for a in run.artifacts])


def _artifact_file(run_dir: str | os.PathLike[str], path: str) -> str | None:
    """The real path of `path` when it is a regular file inside `run_dir`, else None.

    realpath follows symlinks: a link planted in the tree cannot lead outside the
    run's directory. Blocking filesystem calls: run it in a thread.
    """
    root = os.path.realpath(run_dir)
    target = os.path.realpath(os.path.join(root, path))
    if os.path.commonpath([root, target]) != root or not os.path.isfile(target):
        return None
    return target


@router.get("/runs/{run_id}/artifacts/{artifact_id}", response_class=FileResponse)
async def download_artifact(
    run_id: UUID,
    artifact_id: UUID,
    session: SessionDep,
    settings: SettingsDep,
    caller: PrincipalDep,
) -> FileResponse:
    async with session.begin():
        await runs.visible_run(session, run_id, owner=caller.user_id)
        artifact = await session.scalar(
            select(Artifact).where(
                Artifact.id == artifact_id, Artifact.run_id == run_id
            )
        )
    if artifact is None:
        raise ArtifactNotFound(f"run {run_id} has no artifact {artifact_id}")
    target = await asyncio.to_thread(
        _artifact_file, settings.artifacts_root / str(run_id), artifact.path
    )
    if target is None:
        raise ArtifactNotFound(f"artifact {artifact_id} is not available")
    return FileResponse(
        target, filename=os.path.basename(target), media_type="application/octet-stream"
    )


@router.get("/codex/shards")
async def list_shards(session: SessionDep, settings: SettingsDep) -> ShardList:
    async with session.begin():
        registered = {
            row.shard_index: row
            for row in (await session.scalars(select(CodexShardRow))).all()
        }
    items = []
    for index in range(settings.codex_shards):
        row = registered.get(index)
        items.append(
            ShardOut(
                volume_status=row.volume_status if row else None,
                volume_state=row.volume_state if row else None,
                volume_message=row.volume_message if row else None,
                volume_checked_at=row.volume_checked_at if row else None,
                shard_index=index,
                queue=codex_queue_name(index),
                volume=codex_volume_name(index, settings.codex_volume_prefix),
                status="registered" if row and row.registered_at else "unregistered",
                hostname=row.hostname if row else None,
                registered_at=row.registered_at if row else None,
                heartbeat_at=row.heartbeat_at if row else None,
            )
        )
    return ShardList(items=items)


@router.post("/runs/{run_id}/codex/preflight", status_code=202)
async def probe_codex_volume(
    run_id: UUID,
    session: SessionDep,
    caller: PrincipalDep,
    body: ProbeRequest | None = None,
) -> ProbeAccepted:
    """Re-probe the run's Codex auth volume; see the verdict in GET …/codex/shards."""
    force = body.force_refresh if body else True
    async with session.begin():
        run = await shards.request_probe(
            session, run_id, owner=caller.user_id, force_refresh=force
        )
    shard = shard_of(run)
    return ProbeAccepted(
        run_id=run.id,
        codex_volume=shard.codex_volume,
        codex_shard_index=shard.codex_shard_index,
        force_refresh=force,
    )
