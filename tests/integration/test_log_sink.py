"""The log sink end to end: the API process's records → spec_workflow.logs →
api.log_records → `log_records` → `GET /api/logs`."""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from loguru import logger
from sqlalchemy import insert, select

from services.api.db import Database
from services.api.models import LogRecord
from services.api.relay import Relay, build_broker
from services.api.settings import Settings
from shared.logship import LogShipper
from tests.integration.test_auth import new_user
from tests.support.api import RUNS, wait_for

LOGS = "/api/logs"


def attach(app: FastAPI) -> LogShipper:
    """The session app's shipper, re-attached: later `create_app` calls (token_api,
    every_route) reconfigure logging, which removes every sink."""
    shipper: LogShipper = app.state.log_shipper
    shipper.attach()
    return shipper


async def stored(
    client: httpx.AsyncClient,
    params: dict[str, Any],
    count: int,
    headers: dict[str, str] | None = None,
) -> list[dict[str, Any]]:
    """Poll until `count` records match (the sink is asynchronous)."""
    items: list[dict[str, Any]] = []
    for _ in range(100):
        response = await client.get(
            LOGS, params={**params, "order": "asc"}, headers=headers
        )
        assert response.status_code == 200, response.text
        items = response.json()["items"]
        if len(items) >= count:
            return items
        await asyncio.sleep(0.1)
    raise AssertionError(f"{len(items)} of {count} records stored: {items}")


def emit(run_id: str | None, marker: str, *, queue: str = "codex-7") -> None:
    context = {"run_id": run_id, "task": "discover_next_phase", "attempt": 1}
    with logger.contextualize(**{k: v for k, v in context.items() if v}):
        for n in range(5):
            logger.bind(codex_queue=queue).warning(
                "log-sink {marker} {n}", marker=marker, n=n
            )
        logger.bind(codex_queue="codex-8").error(
            "log-sink {marker} failed", marker=marker
        )


async def test_records_are_stored_and_queried(
    api: httpx.AsyncClient, app: FastAPI
) -> None:
    attach(app)
    run_id = str(uuid.uuid4())
    emit(run_id, "query")

    items = await stored(api, {"runId": run_id}, 6)
    assert [i["message"] for i in items] == [
        *(f"log-sink query {n}" for n in range(5)),
        "log-sink query failed",
    ]
    assert [i["id"] for i in items] == sorted(i["id"] for i in items)
    first = items[0]
    assert (first["service"], first["level"], first["runId"]) == (
        "api",
        "WARNING",
        run_id,
    )
    assert (first["task"], first["attempt"]) == ("discover_next_phase", 1)
    assert first["details"]["codex_queue"] == "codex-7"
    assert set(first) >= {"id", "time", "message", "details", "exception"}

    newest = (await api.get(LOGS, params={"runId": run_id})).json()["items"]
    assert [i["id"] for i in newest] == [i["id"] for i in reversed(items)]

    by_details = await api.get(
        LOGS, params={"runId": run_id, "details.codex_queue": "codex-8"}
    )
    assert [i["message"] for i in by_details.json()["items"]] == [
        "log-sink query failed"
    ]
    errors = await api.get(LOGS, params={"runId": run_id, "level": "error"})
    assert [i["level"] for i in errors.json()["items"]] == ["ERROR"]
    warnings = await api.get(LOGS, params={"runId": run_id, "level": "WARNING"})
    assert len(warnings.json()["items"]) == 6
    text = await api.get(LOGS, params={"runId": run_id, "q": "QUERY 3"})
    assert [i["message"] for i in text.json()["items"]] == ["log-sink query 3"]
    other = await api.get(LOGS, params={"runId": run_id, "service": "publisher"})
    assert other.json()["items"] == []
    future = (datetime.now(UTC) + timedelta(hours=1)).isoformat()
    late = await api.get(LOGS, params={"runId": run_id, "since": future})
    assert late.json()["items"] == []

    pages: list[int] = []
    cursor: str | None = None
    while True:
        params: dict[str, Any] = {"runId": run_id, "limit": 4, "order": "asc"}
        if cursor:
            params["cursor"] = cursor
        page = (await api.get(LOGS, params=params)).json()
        pages.extend(i["id"] for i in page["items"])
        cursor = page["nextCursor"]
        if cursor is None:
            break
    assert pages == [i["id"] for i in items]


@pytest.mark.parametrize(
    ("params", "code"),
    [
        ({"level": "loud"}, "invalid_log_query"),
        ({"cursor": "abc"}, "invalid_log_query"),
        ({"details.bad key": "x"}, "invalid_log_query"),
        ({"limit": 0}, "invalid_request"),
        ({"limit": 501}, "invalid_request"),
        ({"runId": "nope"}, "invalid_request"),
        ({"since": "tomorrow"}, "invalid_request"),
        ({"order": "up"}, "invalid_request"),
    ],
)
async def test_bad_parameters_are_422(
    api: httpx.AsyncClient, params: dict[str, Any], code: str
) -> None:
    response = await api.get(LOGS, params=params)
    assert response.status_code == 422
    assert response.json()["detail"]["code"] == code


async def test_retention_deletes_old_rows(
    api: httpx.AsyncClient, settings: Settings, database: Database
) -> None:
    """The session's relay (the `api` fixture) prunes on its own, with the real
    clock, and could take a row past retention first. So the rows are younger than
    retention by the real clock, and this prune runs two days ahead: only it can
    delete the older one."""
    del api
    assert settings.log_retention_days > 3
    marker = uuid.uuid4().hex
    now = datetime.now(UTC)
    ages = {"old": settings.log_retention_days - 1, "recent": 1}
    rows = [
        {
            "ts": now - timedelta(days=days),
            "service": "test",
            "level": "INFO",
            "level_no": 20,
            "message": marker,
            "details": {"age": age},
        }
        for age, days in ages.items()
    ]
    async with database.new_session() as session, session.begin():
        await session.execute(insert(LogRecord), rows)
    relay = Relay(settings, database, build_broker(settings))

    assert await relay.prune_logs(now + timedelta(days=2)) >= 1

    async with database.new_session() as session:
        left = await session.scalars(
            select(LogRecord.details).where(LogRecord.message == marker)
        )
        assert list(left) == [{"age": "recent"}]


@pytest.mark.usefixtures("stages")
async def test_token_mode_shows_only_the_callers_runs(
    token_api: httpx.AsyncClient, app: FastAPI, database: Database
) -> None:
    alice, bob = await new_user(database), await new_user(database)
    created = await token_api.post(
        RUNS,
        json={"repository": "acme/shop", "featureKey": f"l-{uuid.uuid4().hex[:8]}"},
        headers=alice.headers,
    )
    assert created.status_code == 202, created.text
    run_id = created.json()["id"]
    await wait_for(token_api, run_id, headers=alice.headers)
    attach(app)
    marker = f"token-{uuid.uuid4().hex[:8]}"
    emit(run_id, marker)
    emit(None, marker)  # no run: nobody sees it in token mode

    mine = await stored(token_api, {"q": marker}, 6, headers=alice.headers)
    assert {i["runId"] for i in mine} == {run_id}
    theirs = await token_api.get(LOGS, params={"q": marker}, headers=bob.headers)
    assert theirs.json()["items"] == []
    anonymous = await token_api.get(LOGS, params={"q": marker})
    assert anonymous.status_code == 401
