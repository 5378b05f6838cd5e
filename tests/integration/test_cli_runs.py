"""`spec-workflow runs …`: its HTTP calls and `watch`, against the session's API.

The calls take an httpx client, so they run here on the in-process app; the typer
commands around them only map errors to exit codes (checked on the real binary).
"""

from __future__ import annotations

import asyncio
import io
import json
import os
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import pytest_asyncio
from fastapi import FastAPI
from rich.console import Console

from services.api import accounts
from services.api.db import Database
from services.api.main import create_app
from services.api.settings import Settings
from services.cli import api_client
from services.cli.api_client import ApiError, RunRequest
from services.cli.settings import ClientSettings
from services.cli.watch import watch
from shared.messages import TaskName
from tests.support.api import wait_for
from tests.support.canary import CanaryAudit, attach_capture
from tests.support.harness import StageHarness
from tests.support.http_server import serving

CLI = Path(sys.executable).with_name("spec-workflow")


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def http_api(app: FastAPI, api: httpx.AsyncClient) -> AsyncIterator[str]:
    """The session app over real HTTP (its consumers and relay run via `api`)."""
    del api
    async with serving(app) as base_url:
        yield base_url


def feature() -> str:
    return f"f-{uuid.uuid4().hex[:10]}"


def at_codex(run: dict[str, Any]) -> bool:
    return bool(run["currentTask"] == TaskName.SUBMIT_CODEX_JOB)


def console() -> tuple[Console, io.StringIO]:
    out = io.StringIO()
    return Console(file=out, width=140, color_system=None), out


async def test_create_show_list_cancel_retry(
    api: httpx.AsyncClient, stages: StageHarness
) -> None:
    key = feature()
    stages.script(key, hold=frozenset({TaskName.SUBMIT_CODEX_JOB}))
    request = RunRequest("acme/shop", key, task_id="T007", notes="small")
    idempotency = uuid.uuid4().hex

    run, replayed = await api_client.create_run(api, request, idempotency)
    again, replayed_again = await api_client.create_run(api, request, idempotency)
    await wait_for(api, run["id"], frozenset({"running"}), where=at_codex)
    listed = await api_client.list_runs(api, feature_key=key, status="running")
    cancelled = await api_client.cancel_run(api, run["id"])
    retried = await api_client.retry_run(api, run["id"], notes="again")
    shown = await api_client.get_run(api, run["id"])

    assert (replayed, replayed_again, again["id"]) == (False, True, run["id"])
    assert run["taskId"] == "T007"
    assert [r["id"] for r in listed["items"]] == [run["id"]]
    assert cancelled["status"] == "cancelled"
    assert (retried["attempt"], retried["status"]) == (2, "pending")
    assert shown["taskSummary"][0]["taskName"] == "discover_next_phase"
    stages.release(run["id"])
    await wait_for(api, run["id"])


async def test_api_errors_carry_the_code(api: httpx.AsyncClient) -> None:
    with pytest.raises(ApiError) as missing:
        await api_client.get_run(api, str(uuid.uuid4()))
    with pytest.raises(ApiError) as invalid:
        await api_client.create_run(api, RunRequest("acme/shop", "../etc"))

    assert (missing.value.status, missing.value.code) == (404, "workflow_not_found")
    assert invalid.value.code == "invalid_request"
    assert str(invalid.value).startswith("invalid_request: featureKey")


async def test_watch_exits_0_when_the_run_succeeds(
    api: httpx.AsyncClient, stages: StageHarness
) -> None:
    key = feature()
    stages.script(key, hold=frozenset({TaskName.SUBMIT_CODEX_JOB}))
    run, _ = await api_client.create_run(api, RunRequest("acme/shop", key))
    screen, out = console()

    watching = asyncio.create_task(watch(api, run["id"], screen))
    await asyncio.sleep(0.3)
    stages.release(run["id"])
    code = await asyncio.wait_for(watching, 20)

    assert code == 0
    text = out.getvalue()
    assert f"run {run['id']}  succeeded  attempt 1  result published" in text
    for task in TaskName:
        assert task.value in text
    assert "failed" not in text


async def test_watch_exits_1_when_the_run_fails(
    api: httpx.AsyncClient, stages: StageHarness
) -> None:
    key = feature()
    stages.script(key, fail_at=TaskName.CODEX_PREFLIGHT, fail_code="no_login")
    run, _ = await api_client.create_run(api, RunRequest("acme/shop", key))
    screen, out = console()

    code = await asyncio.wait_for(watch(api, run["id"], screen), 20)

    assert code == 1
    assert "error no_login" in out.getvalue()


async def test_watch_exits_1_when_the_run_is_cancelled(
    api: httpx.AsyncClient, stages: StageHarness
) -> None:
    key = feature()
    stages.script(key, hold=frozenset({TaskName.SUBMIT_CODEX_JOB}))
    run, _ = await api_client.create_run(api, RunRequest("acme/shop", key))
    screen, out = console()
    await wait_for(api, run["id"], frozenset({"running"}), where=at_codex)

    watching = asyncio.create_task(watch(api, run["id"], screen))
    await asyncio.sleep(0.2)
    await api_client.cancel_run(api, run["id"])
    code = await asyncio.wait_for(watching, 20)

    assert code == 1
    assert "cancelled" in out.getvalue()


async def test_watch_of_an_ended_run_replays_it(
    api: httpx.AsyncClient, stages: StageHarness
) -> None:
    del stages
    run, _ = await api_client.create_run(api, RunRequest("acme/shop", feature()))
    await wait_for(api, run["id"])
    screen, out = console()

    assert await watch(api, run["id"], screen) == 0
    assert "finalize_run" in out.getvalue()


async def test_the_token_reaches_a_token_mode_api(
    api: httpx.AsyncClient,
    token_settings: Settings,
    database: Database,
    canary: CanaryAudit,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> None:
    del api  # the session app migrated the database
    app: FastAPI = create_app(token_settings)
    attach_capture(canary)  # create_app reconfigured logging
    async with database.new_session() as session, session.begin():
        user = await accounts.create_user(session, f"u-{uuid.uuid4().hex[:8]}@x.io")
        issued = await accounts.issue_token(session, user, name="cli", ttl=None)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("API_URL", "http://token-api")
    transport = httpx.ASGITransport(app=app)

    monkeypatch.delenv("SPEC_WORKFLOW_TOKEN", raising=False)
    async with api_client.api_client(ClientSettings(), transport) as anonymous:
        with pytest.raises(ApiError) as refused:
            await api_client.list_runs(anonymous)
    monkeypatch.setenv("SPEC_WORKFLOW_TOKEN", issued.token)
    async with api_client.api_client(ClientSettings(), transport) as client:
        page = await api_client.list_runs(client)

    assert refused.value.status == 401
    assert page == {"items": [], "nextCursor": None}


def run_cli(tmp_path: Path, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(CLI), *args],
        cwd=tmp_path,
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_runs_commands_exit_2_when_the_api_is_unreachable(tmp_path: Path) -> None:
    result = run_cli(
        tmp_path, "runs", "show", str(uuid.uuid4()), API_URL="http://127.0.0.1:9"
    )

    assert result.returncode == 2
    assert result.stderr.startswith("cannot reach the API at http://127.0.0.1:9")
    assert "Traceback" not in result.stderr


def test_runs_commands_exit_2_on_a_bad_run_id(tmp_path: Path) -> None:
    result = run_cli(tmp_path, "runs", "watch", "not-a-uuid")

    assert result.returncode == 2
    assert "Traceback" not in result.stderr


async def cli(base_url: str, cwd: Path, *args: str) -> tuple[int, str, str]:
    """The real binary; asynchronous, as the API it calls runs on this loop."""
    process = await asyncio.create_subprocess_exec(
        str(CLI),
        *args,
        cwd=cwd,
        env={**os.environ, "API_URL": base_url, "COLUMNS": "160"},
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(process.communicate(), 30)
    assert process.returncode is not None
    return process.returncode, out.decode(), err.decode()


async def test_the_binary_creates_watches_and_shows_a_run(
    http_api: str, stages: StageHarness, tmp_path: Path
) -> None:
    key = feature()
    stages.script(key, hold=frozenset({TaskName.SUBMIT_CODEX_JOB}))
    created = await cli(
        http_api,
        tmp_path,
        "runs",
        "create",
        "--repository",
        "acme/shop",
        "--feature",
        key,
        "--publish-mode",
        "draft",
        "--json",
    )
    run_id = json.loads(created[1])["id"]

    watching = asyncio.create_task(cli(http_api, tmp_path, "runs", "watch", run_id))
    await asyncio.sleep(1.0)
    assert not watching.done()
    stages.release(run_id)
    code, out, err = await watching
    shown = await cli(http_api, tmp_path, "runs", "show", run_id)
    listed = await cli(http_api, tmp_path, "runs", "list", "--feature", key)
    refused = await cli(http_api, tmp_path, "runs", "retry", run_id)

    assert created[0] == 0
    assert (code, err) == (0, "")
    assert f"run {run_id}  succeeded" in out
    assert "apply_and_publish" in out
    assert "pull request https://github.example/acme/shop/pull/" in out
    assert shown[0] == 0
    assert "  publish      draft" in shown[1]
    assert listed[0] == 0
    assert listed[1].splitlines()[1].startswith(f"{run_id}  succeeded")
    assert refused[0] == 1
    assert refused[2].startswith("retry_not_allowed: ")
    assert len(refused[2].splitlines()) == 1
