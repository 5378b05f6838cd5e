"""Canary keys stored through the API never show up where they must not.

A token-mode user stores canary values as its GitHub, OpenAI, Google and Anthropic
keys (two of them in no known token shape, so only redaction by registered value can
catch them), then the flows that touch keys run: reads, updates, deletes, bad writes
that carry a key, a key sent as a bearer token, runs that succeed, fail and are
retried, the workers' /internal endpoint releasing the keys, the run's events, logs
and artifacts. Meanwhile a tap (`services.cli.tap`, bound to `#` on `spec_workflow`
and on `spec_workflow.logs`) records every message, and the session app's log
shipper sends every record, DEBUG included, to the log sink table.

Then no canary, no API token, no service token and no SECRETS_KEY may be in: the log
lines (loguru sinks), the log sink table, the tapped messages, the API responses,
the artifact files, or a `pg_dump` of the database (where the keys exist only as
AES-GCM ciphertext). The session-end audit (conftest `api`) checks the markers in
all of these again for the whole session.
"""

from __future__ import annotations

import asyncio
import contextlib
import secrets
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import pytest_asyncio
from fastapi import FastAPI
from sqlalchemy import String, cast, func, select

from services.api.db import Database
from services.api.models import LogRecord, ProviderSecret
from services.api.settings import Settings
from services.cli.tap import Tap, Tapped, bindings
from shared.logship import LogShipper
from shared.messages import TaskName
from tests.support.api import RUNS, wait_for
from tests.support.canary import (
    INTERNAL_TOKEN,
    MARKERS,
    SECRETS_KEY,
    CanaryAudit,
    database_dump,
    dump_leaks,
    found_in,
)
from tests.support.harness import StageHarness
from tests.support.sandbox import Principal, new_principal

ME = "/api/me/credentials"
SERVICE = {"Authorization": f"Bearer {INTERNAL_TOKEN}"}


def _tail(n: int = 24) -> str:
    return secrets.token_hex(n // 2)


KEYS = {
    "github": f"ghp_CANARYgithubPROBE{_tail()}",
    "openai": f"sk-proj-CANARYopenaiPROBE{_tail()}",
    "google": f"CANARYgooglePROBE.{_tail()}",  # no known token shape
    "anthropic": f"CANARYanthropicPROBE+{_tail()}",  # nor this one
}
"""Each holds a session marker (MARKERS), so the session-end audit sees them too."""


@dataclass(frozen=True)
class Evidence:
    user: Principal
    run_ids: list[str]
    tapped: list[Tapped]
    secrets: list[str]


async def _bad_writes(client: httpx.AsyncClient, user: Principal) -> None:
    """Writes that carry a key and must fail without echoing it."""
    key = KEYS["github"]
    attempts: list[tuple[str, dict[str, Any]]] = [
        (f"{ME}/github", {"json": {"value": f" {key}"}}),
        (f"{ME}/github", {"json": {"value": f"{key}\n"}}),
        (f"{ME}/github", {"json": {"value": key * 200}}),
        (f"{ME}/github", {"json": {"value": key, "extra": key}}),
        (f"{ME}/github", {"json": {"secret": key}}),
        (f"{ME}/github", {"json": [key]}),
        (f"{ME}/gitlab", {"json": {"value": key}}),
        (f"{ME}/github", {"content": f'{{"value": "{key}"'.encode()}),  # cut short
        (f"{ME}/github", {"content": f"value={key}".encode()}),
    ]
    for path, body in attempts:
        headers = {**user.headers, "content-type": "application/json"}
        response = await client.put(path, headers=headers, **body)
        assert 400 <= response.status_code < 500, (path, body, response.text)
        assert not found_in(response.text, MARKERS), response.text


async def _as_bearer(client: httpx.AsyncClient) -> None:
    for authorization in (
        f"Bearer {KEYS['github']}",
        f"Bearer sw_{KEYS['openai']}",
        f"Basic {KEYS['google']}",
        f"Bearer {SECRETS_KEY}",
    ):
        response = await client.get(RUNS, headers={"Authorization": authorization})
        assert response.status_code == 401, response.text


async def _keys_round_trip(client: httpx.AsyncClient, user: Principal) -> None:
    for provider, value in KEYS.items():
        stored = await client.put(
            f"{ME}/{provider}", json={"value": value}, headers=user.headers
        )
        assert stored.status_code == 200, stored.text
        assert stored.json()["masked"] == "****" + value[-4:]
    listed = await client.get(ME, headers=user.headers)
    assert {i["provider"] for i in listed.json()["items"]} == set(KEYS)
    for provider in KEYS:
        assert (
            await client.get(f"{ME}/{provider}", headers=user.headers)
        ).status_code == 200
    again = await client.put(
        f"{ME}/github", json={"value": KEYS["github"]}, headers=user.headers
    )
    assert again.status_code == 200
    gone = await client.delete(f"{ME}/google", headers=user.headers)
    assert gone.status_code == 204
    back = await client.put(
        f"{ME}/google", json={"value": KEYS["google"]}, headers=user.headers
    )
    assert back.status_code == 200


async def _runs(
    client: httpx.AsyncClient, stages: StageHarness, user: Principal
) -> list[str]:
    """A run that succeeds, one that fails and is retried; the keys released for
    each; their timelines, logs and artifacts read back."""
    failing = f"cn-fail-{uuid.uuid4().hex[:8]}"
    stages.script(failing, fail_at=TaskName.APPLY_AND_PUBLISH)
    run_ids = []
    for feature in (f"cn-ok-{uuid.uuid4().hex[:8]}", failing):
        created = await client.post(
            RUNS,
            json={"repository": "acme/canary", "featureKey": feature},
            headers=user.headers,
        )
        assert created.status_code == 202, created.text
        run_ids.append(created.json()["id"])
    failed = await wait_for(client, run_ids[1], headers=user.headers)
    assert failed["status"] == "failed", failed
    retried = await client.post(f"{RUNS}/{run_ids[1]}/retry", headers=user.headers)
    assert retried.status_code == 202, retried.text
    for run_id, attempt in zip(run_ids, (1, 2), strict=True):
        run = await wait_for(
            client,
            run_id,
            where=lambda r, a=attempt: r["attempt"] == a,
            headers=user.headers,
        )
        assert run["status"] == "succeeded", run
        released = await client.post(
            f"/internal/runs/{run_id}/secrets",
            json={"providers": sorted(KEYS)},
            headers=SERVICE,
        )
        assert released.status_code == 200, released.text
        assert released.json()["secrets"] == KEYS  # the one place they are shown
        await client.get(f"{RUNS}/{run_id}/events", headers=user.headers)
        await client.get("/api/logs", params={"runId": run_id}, headers=user.headers)
        for artifact in run["artifacts"]:
            download = await client.get(
                f"{RUNS}/{run_id}/artifacts/{artifact['id']}", headers=user.headers
            )
            assert download.status_code == 200
    return run_ids


async def _shipped(database: Database, needles: list[str]) -> None:
    """Wait until the log sink stored a record naming each of `needles`."""
    for _ in range(200):
        async with database.new_session() as session:
            found = {
                needle
                for needle in needles
                if await session.scalar(
                    select(func.count())
                    .select_from(LogRecord)
                    .where(LogRecord.message.contains(needle))
                )
            }
        if found == set(needles):
            return
        await asyncio.sleep(0.1)
    raise AssertionError(f"the log sink never stored records naming {needles}")


@contextlib.asynccontextmanager
async def wiretap(rabbitmq_url: str) -> AsyncIterator[list[Tapped]]:
    """`spec-workflow tap --logs '#'`, in process: every message on both exchanges."""
    seen: list[Tapped] = []
    ready, stop = asyncio.Event(), asyncio.Event()
    tap = Tap(rabbitmq_url, bindings(["#"], logs=True), seen.append)
    task = asyncio.create_task(tap.run(stop, lambda _: ready.set()))
    await asyncio.wait_for(ready.wait(), 10)
    try:
        yield seen
    finally:
        await asyncio.sleep(0.5)  # let in-flight deliveries arrive
        stop.set()
        await asyncio.wait_for(task, 10)


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def evidence(
    token_api: httpx.AsyncClient,
    api: httpx.AsyncClient,
    stages: StageHarness,
    database: Database,
    app: FastAPI,
    settings: Settings,
) -> Evidence:
    del api  # the session stack: its consumers and relay carry the token app's runs
    shipper: LogShipper = app.state.log_shipper
    shipper.attach(level="DEBUG")  # later create_app calls removed it; ship it all
    try:
        async with wiretap(str(settings.rabbitmq_url)) as tapped:
            user = await new_principal(database)
            await _keys_round_trip(token_api, user)
            await _bad_writes(token_api, user)
            await _as_bearer(token_api)
            run_ids = await _runs(token_api, stages, user)
            await _shipped(
                database,
                [f"key of user {user.id}", f"keys of run {run_ids[0]}"],
            )
    finally:
        shipper.attach()  # back to the configured level
    values = [*MARKERS, *KEYS.values(), user.token, INTERNAL_TOKEN, SECRETS_KEY]
    return Evidence(user, run_ids, tapped, values)


def report(found: list[str]) -> str:
    return "\n".join(found[:20])


async def test_the_keys_are_stored_encrypted_only(
    evidence: Evidence, database: Database
) -> None:
    async with database.new_session() as session:
        rows = (
            await session.scalars(
                select(ProviderSecret).where(ProviderSecret.user_id == evidence.user.id)
            )
        ).all()
    assert {r.provider for r in rows} == set(KEYS)
    for row in rows:
        assert KEYS[row.provider].encode() not in row.ciphertext
        assert row.hint == KEYS[row.provider][-4:]


async def test_the_tap_saw_the_runs_and_the_log_records(evidence: Evidence) -> None:
    keys = {t.routing_key for t in evidence.tapped}
    bodies = b"\n".join(t.raw for t in evidence.tapped).decode(errors="replace")
    assert any(k.startswith("cmd.") for k in keys), keys
    assert any(k.startswith("evt.") for k in keys), keys
    assert any(k.startswith("log.") for k in keys), keys
    assert all(run_id in bodies for run_id in evidence.run_ids)


async def test_no_secret_in_tapped_messages(evidence: Evidence) -> None:
    found = [
        f"{t.routing_key}: {value} in {t.raw[:300]!r}"
        for t in evidence.tapped
        for value in found_in(t.raw.decode(errors="replace"), evidence.secrets)
    ]
    assert not found, report(found)


async def test_no_secret_in_log_lines(evidence: Evidence, canary: CanaryAudit) -> None:
    assert any(str(evidence.user.id) in line for line in canary.logs)
    found = [
        f"{value} in {line[:300]!r}"
        for line in list(canary.logs)
        for value in found_in(line, evidence.secrets)
    ]
    assert not found, report(found)


async def test_no_secret_in_the_log_sink_table(
    evidence: Evidence, database: Database
) -> None:
    async with database.new_session() as session:
        rows = (
            await session.execute(
                select(
                    LogRecord.run_id,
                    LogRecord.message,
                    cast(LogRecord.details, String),
                    LogRecord.exception,
                )
            )
        ).all()
    assert {str(row[0]) for row in rows} >= set(evidence.run_ids)
    found = [
        f"{value} in {row!r:.300}"
        for row in rows
        for value in found_in(" ".join(str(c) for c in row), evidence.secrets)
    ]
    assert not found, report(found)


async def test_no_secret_in_api_responses(
    evidence: Evidence, canary: CanaryAudit
) -> None:
    """Every response but /internal's (which hands keys to workers by design)."""
    assert canary.responses
    found = [
        f"{value} in {text[:300]!r}"
        for text in list(canary.responses)
        for value in found_in(text, evidence.secrets)
    ]
    assert not found, report(found)


async def test_no_secret_in_artifact_files(
    evidence: Evidence, canary: CanaryAudit, artifacts_root: Path
) -> None:
    assert any((artifacts_root / run_id).is_dir() for run_id in evidence.run_ids)
    leaks = [
        leak
        for leak in canary.leaks(artifacts_root, evidence.secrets)
        if leak.startswith("artifact ")
    ]
    assert not leaks, report(leaks)


async def test_no_secret_in_a_database_dump(
    evidence: Evidence, settings: Settings
) -> None:
    dump = await database_dump(str(settings.database_url))
    assert "COPY public.provider_secrets" in dump
    assert "COPY public.log_records" in dump
    assert str(evidence.user.id) in dump
    leaks = dump_leaks(dump, evidence.secrets)
    assert not leaks, report(leaks)


@pytest.mark.parametrize("provider", sorted(KEYS))
async def test_masked_reads_show_only_the_last_four(
    evidence: Evidence, token_api: httpx.AsyncClient, provider: str
) -> None:
    response = await token_api.get(f"{ME}/{provider}", headers=evidence.user.headers)
    assert response.json()["masked"] == "****" + KEYS[provider][-4:]
    assert KEYS[provider][:-4] not in response.text
