"""The shard registry: probe verdicts per auth volume; probes requested via the API."""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime, timedelta

import httpx
import pytest
from sqlalchemy import select, update

from services.api.db import Database
from services.api.models import CodexShardRow, OutboxRow
from shared.messages import (
    CodexShard,
    CodexVolumeChecked,
    TaskHeartbeat,
    TaskName,
    new_message,
)
from shared.routing import Route
from tests.support.api import RUNS, create_run, wait_for
from tests.support.canary import INTERNAL_TOKEN
from tests.support.harness import StageHarness

SHARDS = "/api/workflows/speckit/codex/shards"


def verdict(shard: int, status: str, when: datetime, state: str) -> CodexVolumeChecked:
    return new_message(
        CodexVolumeChecked,
        run_id=uuid.uuid4(),
        task=TaskName.CODEX_PREFLIGHT,
        attempt=1,
        shard=CodexShard(
            codex_queue=f"codex-{shard}",
            codex_volume=f"codex_auth_{shard}",
            codex_shard_index=shard,
        ),
        status=status,
        state=state,
        exit_code=0 if status == "ready" else 1,
        output="API key configured - ***" if status == "ready" else "Not logged in",
        checked_at=when,
    )


async def shard(api: httpx.AsyncClient, index: int) -> dict[str, object]:
    items = (await api.get(SHARDS)).json()["items"]
    return dict(next(item for item in items if item["shardIndex"] == index))


async def test_the_newest_verdict_wins_whatever_the_arrival_order(
    api: httpx.AsyncClient, stages: StageHarness
) -> None:
    now = datetime.now(UTC)
    await stages.emit(verdict(2, "needs_auth", now, "logged_out"))
    for _ in range(100):
        if (await shard(api, 2)).get("volumeStatus") == "needs_auth":
            break
        await asyncio.sleep(0.05)
    await stages.emit(verdict(2, "ready", now + timedelta(seconds=5), "api_key"))
    await stages.emit(verdict(2, "error", now - timedelta(seconds=5), "error"))
    for _ in range(100):
        seen = await shard(api, 2)
        if seen.get("volumeStatus") == "ready":
            break
        await asyncio.sleep(0.05)
    await asyncio.sleep(0.3)  # let the stale one arrive too
    seen = await shard(api, 2)
    assert seen["volumeStatus"] == "ready"
    assert seen["volumeState"] == "api_key"
    assert seen["volume"] == "codex_auth_2"
    assert seen["status"] == "unregistered"  # no runner registration yet
    assert seen["volumeCheckedAt"] is not None


@pytest.mark.usefixtures("stages")
async def test_probe_request_goes_to_the_preflight_service(
    api: httpx.AsyncClient, database: Database
) -> None:
    run = await wait_for(
        api, (await create_run(api, f"p-{uuid.uuid4().hex[:8]}"))["id"]
    )

    response = await api.post(
        f"{RUNS}/{run['id']}/codex/preflight", json={"forceRefresh": True}
    )

    assert response.status_code == 202, response.text
    body = response.json()
    assert body["codexVolume"] == run["codexVolume"]
    assert body["codexShardIndex"] == run["codexShardIndex"]
    assert body["forceRefresh"] is True
    async with database.new_session() as session:
        rows = (
            await session.scalars(
                select(OutboxRow).where(
                    OutboxRow.routing_key == Route.PROBE_CODEX_VOLUME,
                    OutboxRow.payload["run_id"].astext == run["id"],
                )
            )
        ).all()
    assert len(rows) == 1
    assert rows[0].payload["shard"]["codex_volume"] == run["codexVolume"]


async def test_probe_request_needs_a_shard(
    api: httpx.AsyncClient, stages: StageHarness
) -> None:
    key = f"p-{uuid.uuid4().hex[:8]}"
    stages.script(key, hold=frozenset({TaskName.DISCOVER_NEXT_PHASE}))
    run = await create_run(api, key)
    early = await api.post(f"{RUNS}/{run['id']}/codex/preflight")
    assert early.status_code == 409
    assert early.json()["detail"]["code"] == "shard_not_assigned"
    missing = await api.post(f"{RUNS}/{uuid.uuid4()}/codex/preflight")
    assert missing.status_code == 404
    bad = await api.post(f"{RUNS}/{run['id']}/codex/preflight", json={"force": 1})
    assert bad.status_code == 422
    stages.release(run["id"])
    await wait_for(api, run["id"])


SERVICE = {"Authorization": f"Bearer {INTERNAL_TOKEN}"}


async def test_runners_claim_free_shards_and_heartbeat(
    api: httpx.AsyncClient, database: Database
) -> None:
    async with database.new_session() as session, session.begin():
        await session.execute(update(CodexShardRow).values(heartbeat_at=None))

    first = await api.post(
        "/internal/shards/claim", json={"hostname": "runner-a"}, headers=SERVICE
    )
    second = await api.post(
        "/internal/shards/claim", json={"hostname": "runner-b"}, headers=SERVICE
    )
    third = await api.post(
        "/internal/shards/claim", json={"hostname": "runner-c"}, headers=SERVICE
    )
    full = await api.post(
        "/internal/shards/claim", json={"hostname": "runner-d"}, headers=SERVICE
    )

    assert [r.json()["shardIndex"] for r in (first, second, third)] == [0, 1, 2]
    assert first.json() == {
        "shardIndex": 0,
        "queue": "codex-0",
        "volume": "codex_auth_0",
    }
    assert full.status_code == 409
    assert full.json()["detail"]["code"] == "no_free_shard"
    listed = {s["shardIndex"]: s for s in (await api.get(SHARDS)).json()["items"]}
    assert listed[1]["status"] == "registered"
    assert listed[1]["hostname"] == "runner-b"
    assert listed[1]["heartbeatAt"] is not None

    async with database.new_session() as session, session.begin():
        stale = datetime.now(UTC) - timedelta(minutes=5)
        await session.execute(
            update(CodexShardRow)
            .where(CodexShardRow.shard_index == 1)
            .values(heartbeat_at=stale)
        )
    again = await api.post(
        "/internal/shards/claim", json={"hostname": "runner-d"}, headers=SERVICE
    )
    assert again.json()["shardIndex"] == 1  # runner-b went quiet: its shard is free

    beat = await api.post(
        "/internal/shards/2/heartbeat", json={"hostname": "runner-c"}, headers=SERVICE
    )
    assert beat.status_code == 200
    out_of_range = await api.post(
        "/internal/shards/7/heartbeat", json={"hostname": "x"}, headers=SERVICE
    )
    assert out_of_range.status_code == 409
    anonymous = await api.post("/internal/shards/claim", json={"hostname": "x"})
    assert anonymous.status_code == 401
    bad_host = await api.post(
        "/internal/shards/claim", json={"hostname": "bad host;"}, headers=SERVICE
    )
    assert bad_host.status_code == 422
    async with database.new_session() as session, session.begin():
        await session.execute(update(CodexShardRow).values(heartbeat_at=None))


async def test_progress_heartbeats_reach_the_timeline(
    api: httpx.AsyncClient, stages: StageHarness
) -> None:
    key = f"g-{uuid.uuid4().hex[:8]}"
    stages.script(key, hold=frozenset({TaskName.SUBMIT_CODEX_JOB}))
    run = await create_run(api, key)
    await wait_for(
        api,
        run["id"],
        frozenset({"running"}),
        where=lambda r: (
            r["currentTask"] == "submit_codex_job"
            and r["tasks"][-1]["status"] == "running"
        ),
    )
    command = stages.commands(key, TaskName.SUBMIT_CODEX_JOB)[0]
    progress = {
        "items": 3,
        "commands": 1,
        "files_changed": 2,
        "usage": {"input_tokens": 9},
    }
    await stages.emit(
        new_message(
            TaskHeartbeat,
            run_id=command.run_id,
            task=command.task,
            attempt=command.attempt,
            lease_until=datetime.now(UTC) + timedelta(minutes=3),
            progress=progress,
        )
    )
    for _ in range(100):
        events = (await api.get(f"{RUNS}/{run['id']}/events")).json()["items"]
        noted = [e for e in events if e["kind"] == "task_progress"]
        if noted:
            break
        await asyncio.sleep(0.05)
    assert noted[0]["data"] == progress
    assert noted[0]["taskName"] == "submit_codex_job"
    stages.release(run["id"])
    await wait_for(api, run["id"])
