"""GET /runs/{id} and GET /runs answer the same bytes as the ORM + pydantic path did
(`tests/support/reads_reference.py`), for a run with retried tasks, ties, nulls,
awkward strings and numbers in jsonb, under every combination of the include flags,
and for listing pages, filters and cursors."""

from __future__ import annotations

import itertools
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
import pytest_asyncio
from sqlalchemy import text

from services.api.db import Database
from services.api.models import (
    DEFAULT_USER_ID,
    Artifact,
    CredentialAudit,
    Run,
    TaskState,
    User,
)
from services.api.settings import Settings
from tests.support.api import RUNS
from tests.support.reads_reference import page_bytes, run_bytes
from tests.support.rows import bare_run

T0 = datetime(2031, 3, 4, 5, 6, 7, 890123, tzinfo=UTC)
AWKWARD = (
    'tab\t nl\n cr\r quote" back\\ nul-ish\x01\x1f del\x7f é ✓ \u2028 😀 </script>'
)
PAYLOAD: dict[str, Any] = {
    "z_last": 1,
    "a_first": [1, 2.5, -0.0, 0.1, 1e-7, 1e20, 2**64 - 1, -(2**63), True, None],
    "nested": {"empty": {}, "list": [], "text": AWKWARD, "ключ": "значение"},
    "float": 1.0,
}
"""jsonb reorders keys and keeps numbers as numeric (1e20 comes back as 21 digits)."""
LEGACY = (
    '{"beyond": 123456789012345678901234567890, "below": -9223372036854775809,'
    ' "pi": 3.14159265358979323846264338327950288}'
)
"""Numbers the app can no longer write (its JSON encoder is orjson) but jsonb holds."""


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


def task(run_id: uuid.UUID, name: str, attempt: int, status: str, **extra: Any) -> Any:
    return TaskState(
        id=uuid.uuid4(),
        run_id=run_id,
        task_name=name,
        attempt=attempt,
        status=status,
        payload=extra.pop("payload", {"task": name, "attempt": attempt}),
        redispatches=0,
        **extra,
    )


async def rich_run(database: Database, repository: str, **columns: Any) -> uuid.UUID:
    """A failed-then-retried run with every kind of value the response carries."""
    run_id = uuid.uuid4()
    run = Run(
        id=run_id,
        repository=repository,
        feature_key=f"reads-{run_id.hex[:8]}",
        base_branch="main",
        base_sha=None,
        requested_task_id="T001",
        publish_mode="pr",
        notes=AWKWARD,
        status="failed",
        phase="publish",
        result=None,
        error_code="push_rejected",
        error_message="line one\nline two",
        attempt=2,
        current_task="apply_and_publish",
        codex_shard_index=0,
        codex_queue="codex-0",
        codex_preflight_status="passed",
        outputs={"discover_next_phase": PAYLOAD},
        event_seq=7,
        created_by=DEFAULT_USER_ID,
        started_at=at(1).replace(microsecond=0),
        finished_at=None,
        created_at=at(0),
        updated_at=at(90).replace(microsecond=0),
    )
    for key, value in columns.items():
        setattr(run, key, value)
    same = at(60)  # two tasks, two artifacts written in one transaction: ties
    rows: list[Any] = [
        task(run_id, "discover_next_phase", 1, "succeeded", payload=PAYLOAD,
             summary={"result": "task_found", "n": 2**64 - 1},
             started_at=at(2), finished_at=at(3), created_at=at(2), updated_at=at(3)),
        task(run_id, "codex_preflight", 1, "failed",
             error={"code": "needs_auth", "message": AWKWARD, "retryable": False},
             started_at=at(4), finished_at=at(5), created_at=at(4), updated_at=at(5)),
        task(run_id, "legacy_stage", 1, "succeeded",  # not in PIPELINE: no summary
             created_at=at(6), updated_at=at(6)),
        task(run_id, "codex_preflight", 2, "succeeded", summary={},
             started_at=at(50), finished_at=at(51).replace(microsecond=0),
             created_at=at(50), updated_at=at(51)),
        task(run_id, "submit_codex_job", 2, "succeeded", summary={"files": 3},
             lease_until=at(70), heartbeat_at=at(55),
             created_at=at(52), updated_at=at(58)),
        task(run_id, "finalize_run", 2, "queued", created_at=same, updated_at=same),
        task(run_id, "apply_and_publish", 2, "failed", error={"code": "push"},
             created_at=same, updated_at=same),
        Artifact(id=uuid.uuid4(), run_id=run_id, artifact_type="patch",
                 path="patch.diff", task_name="submit_codex_job", attempt=2,
                 created_at=same),
        Artifact(id=uuid.uuid4(), run_id=run_id, artifact_type="log",
                 path="logs/codex.jsonl", task_name=None, attempt=None,
                 created_at=same),
        Artifact(id=uuid.uuid4(), run_id=run_id, artifact_type="manifest",
                 path="manifest.json", task_name="finalize_run", attempt=2,
                 created_at=at(10)),
        CredentialAudit(id=uuid.uuid4(), run_id=run_id, attempt=2,
                        codex_status="logged_in", github_status="valid",
                        notes=None, checked_at=at(50)),
        CredentialAudit(id=uuid.uuid4(), run_id=run_id, attempt=1,
                        codex_status="needs_auth", github_status="valid",
                        notes=AWKWARD, checked_at=at(4)),
    ]  # fmt: skip
    async with database.new_session() as session, session.begin():
        session.add(run)
        await session.flush()
        session.add_all(rows)
        await session.flush()
        await session.execute(
            text(f"UPDATE {TaskState.__tablename__} SET summary = CAST(:doc AS jsonb)"
                 " WHERE run_id = :run AND task_name = 'submit_codex_job'"),
            {"doc": LEGACY, "run": run_id},
        )  # fmt: skip
    return run_id


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def run_id(database: Database) -> uuid.UUID:
    return await rich_run(database, f"acme/reads-{uuid.uuid4().hex[:8]}")


@pytest.mark.parametrize(
    ("tasks", "artifacts", "audits"), list(itertools.product([True, False], repeat=3))
)
async def test_a_run_reads_as_the_orm_wrote_it(
    api: httpx.AsyncClient,
    database: Database,
    settings: Settings,
    run_id: uuid.UUID,
    tasks: bool,
    artifacts: bool,
    audits: bool,
) -> None:
    flags = {
        "includeTasks": str(tasks).lower(),
        "includeArtifacts": str(artifacts).lower(),
        "includeCredentialAudit": str(audits).lower(),
    }
    response = await api.get(f"{RUNS}/{run_id}", params=flags)

    async with database.new_session() as session:
        expected = await run_bytes(
            session,
            run_id,
            settings.artifacts_root,
            tasks=tasks,
            artifacts=artifacts,
            audits=audits,
        )
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "application/json"
    assert response.content == expected


async def test_defaults_include_everything(
    api: httpx.AsyncClient, database: Database, settings: Settings, run_id: uuid.UUID
) -> None:
    response = await api.get(f"{RUNS}/{run_id}")

    async with database.new_session() as session:
        expected = await run_bytes(session, run_id, settings.artifacts_root)
    assert response.content == expected
    body = response.json()
    assert [t["taskName"] for t in body["taskSummary"]] == [
        "discover_next_phase",
        "codex_preflight",
        "submit_codex_job",
        "apply_and_publish",
        "finalize_run",
    ]
    assert body["credentialAudit"]["attempt"] == 2
    assert body["tasks"][0]["payload"]["a_first"][5] == 1e20


async def test_a_run_without_relations_reads_empty_lists(
    api: httpx.AsyncClient, database: Database, settings: Settings
) -> None:
    run_id = uuid.uuid4()
    async with database.new_session() as session, session.begin():
        session.add(
            bare_run(
                run_id,
                status="cancelled",
                created_at=T0.replace(microsecond=0),
                updated_at=T0,
            )
        )

    response = await api.get(f"{RUNS}/{run_id}")

    async with database.new_session() as session:
        expected = await run_bytes(session, run_id, settings.artifacts_root)
    assert response.content == expected
    assert response.json()["tasks"] == []
    assert response.json()["credentialAudit"] is None


async def test_pages_read_as_the_orm_wrote_them(
    api: httpx.AsyncClient, database: Database, settings: Settings
) -> None:
    repository = f"Acme/Reads-List-{uuid.uuid4().hex[:8]}"  # matched case-blind
    for n in range(7):
        await rich_run(
            database,
            repository,
            status="succeeded" if n % 3 else "failed",
            created_at=at(-n * 10) if n != 4 else at(-30),  # a created_at tie
            codex_shard_index=None if n % 2 else n,
        )
    cases: list[dict[str, Any]] = [
        {"limit": 3},
        {"limit": 100},
        {"limit": 2, "status": "failed"},
        {"limit": 3, "status": "succeeded"},
    ]
    for case in cases:
        after: str | None = None
        pages = 0
        while True:
            params = {"repository": repository.upper(), "limit": str(case["limit"])}
            if "status" in case:
                params["status"] = case["status"]
            if after:
                params["cursor"] = after
            response = await api.get(RUNS, params=params)
            async with database.new_session() as session:
                expected = await page_bytes(
                    session,
                    settings.artifacts_root,
                    owner=DEFAULT_USER_ID,
                    repository=repository,
                    limit=case["limit"],
                    after=after,
                    status=case.get("status"),
                )
            assert response.status_code == 200, response.text
            assert response.headers["content-type"] == "application/json"
            assert response.content == expected, (case, pages)
            after = response.json()["nextCursor"]
            pages += 1
            if after is None:
                break
        assert pages >= 1


async def test_another_users_run_is_not_found_and_not_listed(
    api: httpx.AsyncClient, database: Database
) -> None:
    other = uuid.uuid4()
    repository = f"acme/reads-other-{other.hex[:8]}"
    async with database.new_session() as session, session.begin():
        session.add(User(id=other, email=f"{other.hex}@example.com"))
    run_id = await rich_run(database, repository, created_by=other)

    response = await api.get(f"{RUNS}/{run_id}")
    listed = await api.get(RUNS, params={"repository": repository})

    assert response.status_code == 404
    assert response.content == (
        b'{"detail":{"code":"workflow_not_found","message":"no run '
        + str(run_id).encode()
        + b'"}}'
    )
    assert listed.content == b'{"items":[],"nextCursor":null}'
