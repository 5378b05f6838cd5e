"""HTTP routes for the Codex shards: their registry and volume verdicts, and a
re-probe of a run's auth volume.
"""

from __future__ import annotations

from uuid import UUID

from fastapi import APIRouter
from sqlalchemy import select

from services.api import shards
from services.api.db import SessionDep
from services.api.deps import PrincipalDep, SettingsDep
from services.api.dispatch import shard_of
from services.api.models import CodexShardRow
from services.api.shard_schemas import ProbeAccepted, ProbeRequest, ShardList, ShardOut
from shared.routing import codex_queue_name, codex_volume_name

router = APIRouter()  # under `routes.router`: its prefix and its caller check


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
