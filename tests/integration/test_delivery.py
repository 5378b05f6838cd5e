"""At-least-once delivery against the real broker.

Duplicates, disorder, poison messages, races and leases.
"""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime

import httpx
import orjson
import pytest
from sqlalchemy import func, select

from services.api.db import Database
from services.api.models import OutboxRow, RunEvent, TaskState
from shared.messages import PIPELINE, TaskError, TaskFailed, TaskName, TaskSucceeded
from shared.routing import Route, submit_codex_route
from shared.topology import EXCHANGE
from tests.support.api import RUNS, create_run, wait_for
from tests.support.harness import StageHarness
from tests.support.infra import Infra


def feature() -> str:
    return f"d-{uuid.uuid4().hex[:10]}"


async def transitions_of(
    database: Database, run_id: str, kind: str
) -> list[str | None]:
    async with database.new_session() as session:
        rows = await session.scalars(
            select(RunEvent.task_name).where(
                RunEvent.run_id == uuid.UUID(run_id), RunEvent.kind == kind
            )
        )
        return list(rows)


async def test_duplicated_events_apply_once(
    api: httpx.AsyncClient, stages: StageHarness, database: Database
) -> None:
    key = feature()
    stages.script(key, duplicate=True)
    run = await wait_for(api, (await create_run(api, key))["id"])

    assert run["status"] == "succeeded"
    succeeded = await transitions_of(database, run["id"], "task_succeeded")
    assert sorted(t or "" for t in succeeded) == sorted(PIPELINE)
    sent = [e for e in stages.published if str(e.run_id) == run["id"]]
    assert len(sent) == 2 * 2 * (
        len(PIPELINE) - 1
    )  # started + outcome, each twice, per stage


async def test_outcome_before_start_still_completes(
    api: httpx.AsyncClient, stages: StageHarness
) -> None:
    key = feature()
    stages.script(key, outcome_first=True)
    run = await wait_for(api, (await create_run(api, key))["id"])

    assert run["status"] == "succeeded"
    assert {t["status"] for t in run["tasks"]} == {"succeeded"}
    events = (await api.get(f"{RUNS}/{run['id']}/events")).json()["items"]
    for task in PIPELINE:
        seqs = {e["kind"]: e["seq"] for e in events if e["taskName"] == task}
        # A start that arrives after the outcome is ignored, never applied over it.
        assert seqs.get("task_started", 0) < seqs["task_succeeded"], seqs


async def test_numbers_beyond_64_bits_in_a_summary_do_not_fail_the_run(
    api: httpx.AsyncClient, stages: StageHarness
) -> None:
    """JSON has no integer limit and a stage may send any. The API's decoder (FastStream
    uses orjson when installed) reads integers beyond 64 bits as the nearest double:
    stored rounded, and the run goes on. Not failed, not dead-lettered."""
    key = feature()
    huge = {"big": 2**70 + 1, "small": -(2**64) - 3, "list": [2**100 + 7, 1]}
    stages.script(key, summary_extra=huge)
    run = await wait_for(api, (await create_run(api, key))["id"])

    assert run["status"] == "succeeded", run
    summaries = [t["summary"] for t in run["tasks"] if t["summary"]]
    assert len(summaries) == len(PIPELINE) - 1  # finalize_run has no summary
    for summary in summaries:
        assert summary["big"] == float(2**70 + 1) != 2**70 + 1
        assert summary["small"] == float(-(2**64) - 3)
        assert summary["list"] == [float(2**100 + 7), 1]


async def test_stale_attempt_event_is_ignored(
    api: httpx.AsyncClient, stages: StageHarness
) -> None:
    key = feature()
    stages.script(key, fail_at=TaskName.APPLY_AND_PUBLISH)
    failed = await wait_for(api, (await create_run(api, key))["id"])
    assert (await api.post(f"{RUNS}/{failed['id']}/retry")).status_code == 202
    run = await wait_for(api, failed["id"])
    assert run["status"] == "succeeded"

    old = stages.commands(key, TaskName.SUBMIT_CODEX_JOB)[0]
    await stages.emit(
        old.reply(
            TaskFailed, error=TaskError(code="late", message="attempt 1 speaking")
        )
    )
    await stages.emit(old.reply(TaskSucceeded, summary={"garbage": True}))
    await asyncio.sleep(0.5)
    after = (await api.get(f"{RUNS}/{run['id']}")).json()
    assert after["status"] == "succeeded"
    assert after["errorCode"] is None
    assert after["updatedAt"] == run["updatedAt"]


BAD_BODIES: dict[str, dict[str, object]] = {
    # Each one names a real run (so the dead-letter consumer can fail it) but breaks
    # its queue's schema.
    Route.DISCOVER_NEXT_PHASE: {},
    Route.CODEX_PREFLIGHT: {
        "repository": "acme/shop",
        "feature_key": "x",
        "base_sha": 7,
    },
    Route.APPLY_AND_PUBLISH: {"repository": "acme/shop"},
    Route.FINALIZE_RUN: {},
    Route.TASK_STARTED: {"lease_until": "not a time"},
    Route.TASK_HEARTBEAT: {},
    Route.TASK_SUCCEEDED: {"summary": "not a dict"},
    Route.TASK_FAILED: {"error": {"code": 1}},
    Route.TASK_CANCELLED: {"reason": 5},
    Route.CANCEL_DISCOVER_NEXT_PHASE: {"repository": None},
    Route.CANCEL_CODEX_PREFLIGHT: {"feature_key": ["x"]},
    Route.CANCEL_APPLY_AND_PUBLISH: {"shard": "zero"},
    submit_codex_route(0): {"spec_task": "T001"},
    submit_codex_route(1): {"shard": {}},
    submit_codex_route(2): {"base_sha": None},
}


@pytest.mark.parametrize("routing_key", list(BAD_BODIES))
async def test_malformed_message_fails_its_run_and_consumer_survives(
    api: httpx.AsyncClient, stages: StageHarness, infra: Infra, routing_key: str
) -> None:
    key = feature()
    stages.script(key, hold=frozenset({TaskName.DISCOVER_NEXT_PHASE}))
    run = await create_run(api, key)
    await wait_for(api, run["id"], frozenset({"running"}))
    body = {
        "message_id": str(uuid.uuid4()),
        "run_id": run["id"],
        "task": TaskName.DISCOVER_NEXT_PHASE,
        "attempt": 1,
        "occurred_at": datetime.now(UTC).isoformat(),
        **BAD_BODIES[routing_key],
    }
    await stages.broker.publish(
        orjson.dumps(body), exchange=EXCHANGE, routing_key=routing_key, persist=True
    )
    await stages.broker.publish(
        b"\xff definitely not json",
        exchange=EXCHANGE,
        routing_key=routing_key,
        persist=True,
    )

    failed = await wait_for(api, run["id"])
    assert failed["status"] == "failed"
    assert failed["errorCode"] == "invalid_message"
    assert "could not read" in failed["errorMessage"]
    assert failed["tasks"][0]["status"] == "failed"
    # Consumers are alive: a fresh run goes all the way through.
    assert (await wait_for(api, (await create_run(api, feature()))["id"]))[
        "status"
    ] == "succeeded"
    await infra.wait_queue_messages("api.dead_letters", 0, timeout=15)


async def test_handler_crash_is_dead_lettered_and_fails_the_run(
    api: httpx.AsyncClient, stages: StageHarness
) -> None:
    key = feature()
    stages.script(key, crash_at=TaskName.CODEX_PREFLIGHT)
    run = await wait_for(api, (await create_run(api, key))["id"])

    assert run["status"] == "failed"
    assert run["errorCode"] == "handler_crashed"
    assert "preflight.codex_preflight" in run["errorMessage"]
    assert (
        len(stages.commands(key, TaskName.CODEX_PREFLIGHT)) == 1
    )  # rejected, not requeued in a loop


@pytest.mark.usefixtures("stages")
async def test_idempotency_key_returns_the_same_run(api: httpx.AsyncClient) -> None:
    body = {"repository": "acme/shop", "featureKey": feature()}
    token = f"op-{uuid.uuid4()}"
    replies = await asyncio.gather(
        *(
            api.post(RUNS, json=body, headers={"Idempotency-Key": token})
            for _ in range(5)
        )
    )

    assert {r.status_code for r in replies} == {202}
    assert len({r.json()["id"] for r in replies}) == 1
    assert sum(r.headers.get("Idempotent-Replayed") == "true" for r in replies) == 4
    other = await api.post(
        RUNS, json={**body, "notes": "different"}, headers={"Idempotency-Key": token}
    )
    assert other.status_code == 422
    assert other.json()["detail"]["code"] == "idempotency_key_reused"


async def test_concurrent_creates_admit_one_active_run(
    api: httpx.AsyncClient, stages: StageHarness
) -> None:
    key = feature()
    stages.script(key, hold=frozenset({TaskName.DISCOVER_NEXT_PHASE}))
    body = {"repository": "acme/shop", "featureKey": key}
    replies = await asyncio.gather(*(api.post(RUNS, json=body) for _ in range(10)))

    accepted = [r for r in replies if r.status_code == 202]
    assert len(accepted) == 1
    winner = accepted[0].json()["id"]
    conflicts = [r.json()["detail"] for r in replies if r.status_code == 409]
    assert len(conflicts) == 9
    assert {c["code"] for c in conflicts} == {"active_run_exists"}
    assert {c["activeRunId"] for c in conflicts} == {winner}
    same_repo_other_case = await api.post(
        RUNS, json={"repository": "ACME/Shop", "featureKey": key}
    )
    assert same_repo_other_case.status_code == 409
    stages.release(winner)
    assert (await wait_for(api, winner))["status"] == "succeeded"
    assert (
        await api.post(RUNS, json=body)
    ).status_code == 202  # the feature is free again


async def test_concurrent_retries_create_exactly_one_attempt(
    api: httpx.AsyncClient, stages: StageHarness, database: Database
) -> None:
    key = feature()
    stages.script(key, fail_at=TaskName.SUBMIT_CODEX_JOB)
    failed = await wait_for(api, (await create_run(api, key))["id"])

    replies = await asyncio.gather(
        *(api.post(f"{RUNS}/{failed['id']}/retry") for _ in range(6))
    )

    assert sorted(r.status_code for r in replies) == [202] + [409] * 5
    async with database.new_session() as session:
        second = await session.scalar(
            select(func.count()).where(
                TaskState.run_id == uuid.UUID(failed["id"]), TaskState.attempt == 2
            )
        )
    assert second == 1
    assert (await wait_for(api, failed["id"]))["status"] == "succeeded"


async def test_expired_lease_is_redispatched_then_failed(
    api: httpx.AsyncClient, stages: StageHarness
) -> None:
    key = feature()
    stages.script(
        key,
        lease_seconds=0.3,
        silent_after_start=frozenset({TaskName.DISCOVER_NEXT_PHASE}),
    )
    run = await wait_for(api, (await create_run(api, key))["id"], timeout=30)

    assert run["status"] == "failed"
    assert run["errorCode"] == "lease_expired"
    commands = stages.commands(key, TaskName.DISCOVER_NEXT_PHASE)
    assert (
        len(commands) == 2
    )  # the original and one re-dispatch (LEASE_MAX_REDISPATCH=1)
    assert commands[0].message_id != commands[1].message_id


@pytest.mark.usefixtures("api", "stages")
async def test_unroutable_command_stays_in_the_outbox(database: Database) -> None:
    lost, tap_only = uuid.uuid4(), uuid.uuid4()
    async with database.new_session() as session, session.begin():
        session.add(
            OutboxRow(
                id=lost,
                routing_key="unrouted.no_such_stage",
                payload={"x": 1},
                mandatory=True,
            )
        )
        session.add(
            OutboxRow(
                id=tap_only,
                routing_key="evt.run.nobody_listens",
                payload={"x": 2},
                mandatory=False,
            )
        )
    deadline = asyncio.get_running_loop().time() + 15
    while True:
        async with database.new_session() as session:
            row = await session.get(OutboxRow, lost)
            tap = await session.get(OutboxRow, tap_only)
        assert row is not None
        assert tap is not None
        if row.attempts >= 1 and tap.sent_at is not None:
            break
        assert asyncio.get_running_loop().time() < deadline, (
            "relay did not try the rows"
        )
        await asyncio.sleep(0.1)
    assert row.sent_at is None
    assert row.last_error
    assert row.available_at > datetime.now(UTC)  # backing off, not hot-looping
