"""The run timeline as Server-Sent Events: live, ordered, resumable, owner-only."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
import pytest_asyncio
from fastapi import FastAPI

from services.api import accounts
from services.api.db import Database
from services.api.timeline import event_stream
from services.cli.sse import SseParser
from shared.messages import TaskName
from tests.support.api import RUNS, create_run, wait_for
from tests.support.harness import StageHarness
from tests.support.http_server import serving

SSE = {"Accept": "text/event-stream"}


@dataclass(frozen=True)
class Frame:
    id: int
    event: str
    data: dict[str, Any]


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def http_api(app: FastAPI, api: httpx.AsyncClient) -> AsyncIterator[str]:
    """The session app over real HTTP (its consumers and relay run via `api`)."""
    del api
    async with serving(app) as base_url:
        yield base_url


def held(frame: Frame) -> bool:
    return bool(frame.data["taskName"] == TaskName.SUBMIT_CODEX_JOB)


def feature() -> str:
    return f"f-{uuid.uuid4().hex[:10]}"


def frames(body: str) -> list[Frame]:
    """The events of an SSE body; comments and `retry:` blocks carry no event."""
    parsed = []
    for block in body.split("\n\n"):
        fields = dict(
            line.split(": ", 1) for line in block.splitlines() if line[:1] != ":"
        )
        if "data" in fields:
            parsed.append(
                Frame(int(fields["id"]), fields["event"], json.loads(fields["data"]))
            )
    return parsed


async def stream(
    client: httpx.AsyncClient, run_id: str, **headers: str
) -> httpx.Response:
    """The whole stream (the in-process transport hands it over once it ended)."""
    async with client.stream(
        "GET", f"{RUNS}/{run_id}/events", headers=SSE | headers
    ) as response:
        await response.aread()
    return response


async def timeline(client: httpx.AsyncClient, run_id: str) -> list[dict[str, Any]]:
    response = await client.get(f"{RUNS}/{run_id}/events")
    assert response.status_code == 200, response.text
    return list(response.json()["items"])


async def test_stream_follows_a_run_live_to_its_end(
    api: httpx.AsyncClient, stages: StageHarness
) -> None:
    key = feature()
    stages.script(key, hold=frozenset({TaskName.SUBMIT_CODEX_JOB}))
    run_id = (await create_run(api, key))["id"]
    await wait_for(api, run_id, frozenset({"running"}))

    following = asyncio.create_task(stream(api, run_id))
    await asyncio.sleep(0.3)
    assert not following.done()  # the run is held: the stream stays open
    stages.release(run_id)
    response = await asyncio.wait_for(following, 20)

    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/event-stream")
    assert response.headers["cache-control"] == "no-cache"
    got = frames(response.text)
    assert [f.id for f in got] == list(range(1, len(got) + 1))
    assert [f.id for f in got] == [f.data["seq"] for f in got]
    assert [f.event for f in got] == [f.data["kind"] for f in got]
    assert got[0].event == "run_created"
    assert got[-1].event == "run_succeeded"
    assert [f.data for f in got] == await timeline(api, run_id)
    assert response.text.startswith("retry: ")


async def test_stream_resumes_after_a_disconnect_without_losing_an_event(
    api: httpx.AsyncClient, stages: StageHarness, database: Database
) -> None:
    key = feature()
    stages.script(key, hold=frozenset({TaskName.SUBMIT_CODEX_JOB}))
    run_id = (await create_run(api, key))["id"]
    first: list[Frame] = []
    source = event_stream(database, uuid.UUID(run_id), after=0, poll=0.05)
    async for chunk in source:
        first.extend(frames(chunk))
        if first and first[-1].event == "task_started" and held(first[-1]):
            break
    await source.aclose()  # the client went away mid-run
    stages.release(run_id)

    response = await stream(api, run_id, **{"Last-Event-ID": str(first[-1].id)})

    rest = frames(response.text)
    assert rest[0].id == first[-1].id + 1
    assert [f.data for f in first + rest] == await timeline(api, run_id)
    assert rest[-1].event == "run_succeeded"


async def test_last_event_id_wins_over_after_and_an_ended_stream_answers_204(
    api: httpx.AsyncClient, stages: StageHarness
) -> None:
    del stages
    run = await wait_for(api, (await create_run(api, feature()))["id"])
    events = await timeline(api, run["id"])
    url = f"{RUNS}/{run['id']}/events"

    async with api.stream(
        "GET", url, params={"after": 1}, headers=SSE | {"Last-Event-ID": "3"}
    ) as response:
        body = (await response.aread()).decode()
    replay = await api.get(url, params={"after": 2}, headers=SSE)
    done = await api.get(url, headers=SSE | {"Last-Event-ID": str(len(events))})

    assert [f.id for f in frames(body)] == [e["seq"] for e in events[3:]]
    assert [f.id for f in frames(replay.text)] == [e["seq"] for e in events[2:]]
    assert done.status_code == 204
    assert done.content == b""


async def test_keep_alive_comments_flow_while_nothing_happens(
    api: httpx.AsyncClient, stages: StageHarness, database: Database
) -> None:
    key = feature()
    stages.script(key, hold=frozenset({TaskName.SUBMIT_CODEX_JOB}))
    run_id = (await create_run(api, key))["id"]
    await wait_for(
        api,
        run_id,
        frozenset({"running"}),
        where=lambda r: r["currentTask"] == TaskName.SUBMIT_CODEX_JOB,
    )
    await asyncio.sleep(0.3)  # the held task's start reaches the timeline
    chunks: list[str] = []
    source = event_stream(
        database, uuid.UUID(run_id), after=0, poll=0.05, keepalive=0.2
    )
    async with asyncio.timeout(10):
        async for chunk in source:
            chunks.append(chunk)
            if chunk == ": keep-alive\n\n":
                break
    await source.aclose()
    stages.release(run_id)
    await wait_for(api, run_id)

    assert chunks[-1] == ": keep-alive\n\n"
    assert frames("".join(chunks))  # the events came first


async def test_json_stays_the_default(api: httpx.AsyncClient) -> None:
    run_id = (await create_run(api, feature()))["id"]

    plain = await api.get(f"{RUNS}/{run_id}/events")
    listed = await api.get(
        f"{RUNS}/{run_id}/events",
        headers={"Accept": "application/json, text/event-stream;q=0"},
    )

    for response in (plain, listed):
        assert response.status_code == 200
        assert response.headers["content-type"] == "application/json"
        assert response.json()["items"][0]["kind"] == "run_created"
    await api.post(f"{RUNS}/{run_id}/cancel")


@pytest.mark.parametrize("header", [{}, {"Last-Event-ID": "2"}])
async def test_stream_of_an_unknown_run_is_404(
    api: httpx.AsyncClient, header: dict[str, str]
) -> None:
    response = await api.get(f"{RUNS}/{uuid.uuid4()}/events", headers=SSE | header)

    assert response.status_code == 404
    assert response.json()["detail"]["code"] == "workflow_not_found"


async def test_bad_last_event_id_is_422(api: httpx.AsyncClient) -> None:
    run_id = (await create_run(api, feature()))["id"]

    response = await api.get(
        f"{RUNS}/{run_id}/events", headers=SSE | {"Last-Event-ID": "soon"}
    )

    assert response.status_code == 422
    await api.post(f"{RUNS}/{run_id}/cancel")


async def _token(database: Database) -> dict[str, str]:
    async with database.new_session() as session, session.begin():
        user = await accounts.create_user(
            session, f"u-{uuid.uuid4().hex[:10]}@example.com"
        )
        issued = await accounts.issue_token(session, user, name="test", ttl=None)
    return {"Authorization": f"Bearer {issued.token}"}


async def test_token_mode_streams_only_the_owner_s_runs(
    token_api: httpx.AsyncClient, stages: StageHarness, database: Database
) -> None:
    del stages
    alice, bob = await _token(database), await _token(database)
    created = await token_api.post(
        RUNS, json={"repository": "acme/shop", "featureKey": feature()}, headers=alice
    )
    run_id = created.json()["id"]
    await wait_for(token_api, run_id, headers=alice)
    url = f"{RUNS}/{run_id}/events"

    anonymous = await token_api.get(url, headers=SSE)
    foreign = await token_api.get(url, headers=SSE | bob)
    own = await stream(token_api, run_id, **alice)

    assert anonymous.status_code == 401
    assert foreign.status_code == 404
    assert own.status_code == 200
    assert frames(own.text)[-1].event == "run_succeeded"


async def test_over_http_events_arrive_as_they_happen_and_a_hang_up_loses_none(
    api: httpx.AsyncClient, stages: StageHarness, http_api: str
) -> None:
    key = feature()
    stages.script(key, hold=frozenset({TaskName.SUBMIT_CODEX_JOB}))
    run_id = (await create_run(api, key))["id"]
    url = f"{http_api}{RUNS}/{run_id}/events"
    first: list[Frame] = []
    async with httpx.AsyncClient(timeout=10) as client:
        async with client.stream("GET", url, headers=SSE) as response:
            assert response.status_code == 200
            parser = SseParser()
            async for line in response.aiter_lines():
                if (event := parser.feed(line)) is None:
                    continue
                first.append(
                    Frame(int(event.id or 0), event.event, json.loads(event.data))
                )
                if first[-1].event == "task_started" and held(first[-1]):
                    break  # hang up while the run is held
        still = await client.get(f"{http_api}{RUNS}/{run_id}")
        stages.release(run_id)
        async with client.stream(
            "GET", url, headers=SSE | {"Last-Event-ID": str(first[-1].id)}
        ) as response:
            rest = frames((await response.aread()).decode())

    assert still.json()["status"] == "running"  # it streamed before the run ended
    assert [f.data for f in first + rest] == await timeline(api, run_id)
    assert rest[-1].event == "run_succeeded"
