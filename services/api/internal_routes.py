"""The workers' internal API (`/internal`, service token only): a run's keys, and
the Codex runners' shard claims and heartbeats."""

from __future__ import annotations

from uuid import UUID

from fastapi import APIRouter, Depends
from loguru import logger

from services.api import credentials, runs, shards
from services.api.db import SessionDep
from services.api.deps import KeyringDep, SettingsDep, require_service_token
from services.api.errors import NoFreeShard
from services.api.shard_schemas import (
    SecretsOut,
    SecretsRequest,
    ShardClaim,
    ShardClaimed,
)
from shared.routing import codex_queue_name, codex_volume_name

internal = APIRouter(prefix="/internal", dependencies=[Depends(require_service_token)])


@internal.post("/runs/{run_id}/secrets")
async def run_secrets(
    run_id: UUID, body: SecretsRequest, session: SessionDep, keyring: KeyringDep
) -> SecretsOut:
    """The keys of the run's user, for a worker about to use them.

    Nothing else ever reads a key back.
    """
    wanted = list(dict.fromkeys(body.providers))
    async with session.begin():
        run = await runs.visible_run(session, run_id, owner=None)
        found = await credentials.reveal(session, keyring, run.created_by, wanted)
    logger.info(
        "Released {n} of {m} requested keys of run {run}",
        n=len(found),
        m=len(wanted),
        run=str(run_id),
    )
    return SecretsOut(
        run_id=run_id,
        user_id=run.created_by,
        secrets=found,
        missing=[p for p in wanted if p not in found],
    )


def claimed(index: int, volume_prefix: str) -> ShardClaimed:
    return ShardClaimed(
        shard_index=index,
        queue=codex_queue_name(index),
        volume=codex_volume_name(index, volume_prefix),
    )


@internal.post("/shards/claim")
async def claim_shard(
    body: ShardClaim, session: SessionDep, settings: SettingsDep
) -> ShardClaimed:
    """A Codex runner without CODEX_SHARD_INDEX takes the lowest shard nobody serves."""
    async with session.begin():
        index = await shards.claim(
            session,
            settings.codex_shards,
            body.hostname,
            volume_prefix=settings.codex_volume_prefix,
        )
    if index is None:
        raise NoFreeShard(f"all {settings.codex_shards} Codex shards are served")
    logger.info("Shard {} claimed by {}", index, body.hostname)
    return claimed(index, settings.codex_volume_prefix)


@internal.post("/shards/{index}/heartbeat")
async def shard_heartbeat(
    index: int, body: ShardClaim, session: SessionDep, settings: SettingsDep
) -> ShardClaimed:
    """A Codex runner serving shard `index` is alive (registers it on first call)."""
    if not 0 <= index < settings.codex_shards:
        raise NoFreeShard(
            f"shard {index} is outside CODEX_SHARDS={settings.codex_shards}"
        )
    async with session.begin():
        await shards.heartbeat(
            session, index, body.hostname, volume_prefix=settings.codex_volume_prefix
        )
    return claimed(index, settings.codex_volume_prefix)
