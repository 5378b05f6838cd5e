"""The Codex shard registry: each auth volume's last verdict, and on-demand probes."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from uuid import UUID

from sqlalchemy import or_, select, text
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession

from services.api import outbox
from services.api.dispatch import shard_of
from services.api.errors import RunNotFound, ShardNotAssigned
from services.api.models import CodexShardRow, Run
from services.api.runs import lock_run
from shared.messages import CodexVolumeChecked, ProbeCodexVolume, TaskName, new_message
from shared.routing import CODEX_VOLUME_PREFIX, codex_queue_name, codex_volume_name


async def record_volume(session: AsyncSession, event: CodexVolumeChecked) -> bool:
    """Keep the newest verdict per shard; an older one arriving late changes nothing."""
    values = {
        "queue_name": event.shard.codex_queue,
        "volume_name": event.shard.codex_volume,
        "volume_status": event.status,
        "volume_state": event.state[:32],
        "volume_message": event.output[:512],
        "volume_checked_at": event.checked_at,
    }
    statement = (
        insert(CodexShardRow)
        .values(shard_index=event.shard.codex_shard_index, **values)
        .on_conflict_do_update(
            index_elements=[CodexShardRow.shard_index],
            set_=values,
            where=or_(
                CodexShardRow.volume_checked_at.is_(None),
                CodexShardRow.volume_checked_at < event.checked_at,
            ),
        )
        .returning(CodexShardRow.shard_index)
    )
    return (await session.execute(statement)).first() is not None


async def request_probe(
    session: AsyncSession, run_id: UUID, *, owner: UUID | None, force_refresh: bool
) -> Run:
    """Ask the preflight service to probe the run's auth volume again."""
    run = await lock_run(session, run_id, owner=owner)
    if run is None:
        raise RunNotFound(f"no run {run_id}")
    if run.codex_shard_index is None:
        raise ShardNotAssigned(
            f"run {run_id} has no Codex shard yet: discovery has not chosen its task"
        )
    command = new_message(
        ProbeCodexVolume,
        run_id=run.id,
        task=TaskName.CODEX_PREFLIGHT,
        attempt=run.attempt,
        repository=run.repository,
        feature_key=run.feature_key,
        shard=shard_of(run),
        force_refresh=force_refresh,
    )
    await outbox.enqueue(session, command)
    return run


STALE_AFTER = timedelta(seconds=90)


async def heartbeat(
    session: AsyncSession,
    index: int,
    hostname: str,
    *,
    volume_prefix: str = CODEX_VOLUME_PREFIX,
) -> CodexShardRow:
    """A runner serving shard `index` says it is alive (registering on first call)."""
    now = datetime.now(UTC)
    row = await session.get(CodexShardRow, index, with_for_update=True)
    if row is None:
        row = CodexShardRow(
            shard_index=index,
            queue_name=codex_queue_name(index),
            volume_name=codex_volume_name(index, volume_prefix),
        )
        session.add(row)
    if row.hostname != hostname or row.registered_at is None:
        row.hostname, row.registered_at = hostname, now
    row.heartbeat_at = now
    await session.flush()
    return row


async def claim(
    session: AsyncSession,
    shards: int,
    hostname: str,
    *,
    volume_prefix: str = CODEX_VOLUME_PREFIX,
) -> int | None:
    """The lowest shard no live runner serves, registered to `hostname`.

    None when all are taken. Serialised by a transaction-level advisory lock.
    """
    await session.execute(
        text("SELECT pg_advisory_xact_lock(hashtext('codex_shards'))")
    )
    found = (await session.scalars(select(CodexShardRow))).all()
    rows = {row.shard_index: row for row in found}
    now = datetime.now(UTC)
    for index in range(shards):
        row = rows.get(index)
        live = bool(row and row.heartbeat_at and now - row.heartbeat_at < STALE_AFTER)
        if not live:
            await heartbeat(session, index, hostname, volume_prefix=volume_prefix)
            return index
    return None
