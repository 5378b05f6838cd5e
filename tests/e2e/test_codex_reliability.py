"""The Codex runner under failure, on a stack of its own: one shard, short leases.

The runner killed mid-run and restarted (its leftover container removed, the job sent
again by the reaper, one success, one patch); two runs of one shard one after the
other; cancel mid-run (container gone, a retry works). The scripted model picks each
run's script by a marker in the operator notes, which the runner puts in the prompt.
"""

from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import AsyncIterator, Iterator
from typing import Any

import aiodocker
import httpx
import pytest
import pytest_asyncio

from tests.support.api import RUNS, create_run, wait_for
from tests.support.containers import AuthVolumes, container_engine
from tests.support.github import FakeGitHub
from tests.support.gitserver import GitSmartHTTPServer
from tests.support.model import (
    Chooser,
    Request,
    Script,
    ScriptedModel,
    Step,
    patch,
    say,
)
from tests.support.specrepo import AGENT_PATCH, FEATURE_KEY, SeededRepo, seed_spec_repo
from tests.support.stack import CODEX_KEY, GITHUB_TOKEN, Stack, launch

SHARD = 0  # CODEX_SHARDS=1: every run is routed to codex-0
RUNNER = f"codex_runner-{SHARD}"
LEASE = 4.0
REPOS = ("acme/crash", "acme/pair-a", "acme/pair-b", "acme/cancel")
EDIT = [patch("c1", AGENT_PATCH)]
DONE = [say("Added the cart model and checked T003.")]
FAST: Script = [EDIT, DONE]
PAIR_DELAY = 3.0
# marker in the notes -> (delay of the first execution's first answer, of later ones)
SCRIPTS = {"scenario:crash": (30.0, 0.0), "scenario:cancel": (30.0, 0.0)}
TERMINAL_KINDS = {"run_succeeded", "run_failed", "run_cancelled"}


def choose(model: ScriptedModel) -> Chooser:
    """Per run: the marker's delays; the pair runs are slow on every execution."""

    def script(request: Request) -> Script | None:
        if request.mentions("scenario:pair"):
            return [Step(items=EDIT, delay=PAIR_DELAY), DONE]
        for marker, (first, later) in SCRIPTS.items():
            if request.mentions(marker):
                runs = len(executions(model, marker))  # this request included
                delay = first if runs <= 1 else later
                return [Step(items=EDIT, delay=delay), DONE]
        return None

    return script


def executions(model: ScriptedModel, marker: str) -> list[Request]:
    """The first request of each Codex execution for the run with `marker`."""
    return [r for r in list(model.requests) if r.turn == 0 and r.mentions(marker)]


@pytest.fixture(scope="module")
def reliability_model() -> Iterator[ScriptedModel]:
    server = ScriptedModel(FAST, api_key=CODEX_KEY)
    server.choose = choose(server)
    with server:
        yield server


@pytest.fixture(scope="module")
def reliability_forge() -> Iterator[tuple[GitSmartHTTPServer, FakeGitHub, SeededRepo]]:
    with GitSmartHTTPServer() as git, FakeGitHub(git=git) as github:
        github.add_user("octo", GITHUB_TOKEN)
        seeded = [seed_spec_repo(git, name) for name in REPOS]
        for name in REPOS:
            github.add_repo(name)
            github.grant("octo", name, "write")
        yield git, github, seeded[0]


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def rstack(
    tmp_path_factory: pytest.TempPathFactory,
    statsd: socket.socket,
    reliability_forge: tuple[GitSmartHTTPServer, FakeGitHub, SeededRepo],
    auth_volumes: AuthVolumes,
    reliability_model: ScriptedModel,
) -> AsyncIterator[Stack]:
    overrides = {
        "CODEX_SHARDS": "1",
        "CODEX_LEASE_SECONDS": str(LEASE),
        "HEARTBEAT_INTERVAL": "1",
        "REAPER_INTERVAL": "1",
        "CODEX_TIMEOUT": "60",
        "CODEX_IDLE_TIMEOUT": "45",
        "CODEX_STOP_TIMEOUT": "1",  # Codex, PID 1 of its container, ignores SIGTERM
    }
    async with launch(
        tmp_path_factory.mktemp("reliability"),
        statsd=statsd,
        forge=reliability_forge,
        model=reliability_model,
        volumes=auth_volumes,
        overrides=overrides,
    ) as stack:
        yield stack


@pytest_asyncio.fixture(loop_scope="session")
async def docker() -> AsyncIterator[aiodocker.Docker]:
    engine = await container_engine()
    async with engine.docker() as client:
        yield client


async def containers_of(docker: aiodocker.Docker, **labels: str) -> list[Any]:
    filters = {"label": [f"{name}={value}" for name, value in labels.items()]}
    found: list[Any] = await docker.containers.list(all=True, filters=filters)
    return found


async def eventually(
    check: Any,
    timeout: float,  # noqa: ASYNC109 - expiry is an AssertionError
    what: str,
) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if result := await check():
            return result
        await asyncio.sleep(0.1)
    raise AssertionError(f"not within {timeout:g}s: {what}")


async def started(model: ScriptedModel, marker: str) -> None:
    """Until Codex of that run has asked the model (so its container runs)."""

    async def asked() -> bool:
        return bool(executions(model, marker))

    await eventually(asked, 60, f"Codex asked the model for {marker}")


async def events(client: httpx.AsyncClient, run_id: str) -> list[dict[str, Any]]:
    response = await client.get(f"{RUNS}/{run_id}/events", params={"limit": 1000})
    assert response.status_code == 200, response.text
    return list(response.json()["items"])


def codex_task(run: dict[str, Any], attempt: int) -> dict[str, Any]:
    return next(
        t
        for t in run["tasks"]
        if t["taskName"] == "submit_codex_job" and t["attempt"] == attempt
    )


async def test_runner_killed_mid_run_and_restarted_finishes_the_run_once(
    rstack: Stack, docker: aiodocker.Docker
) -> None:
    marker = "scenario:crash"
    async with httpx.AsyncClient(base_url=rstack.base_url, timeout=10) as client:
        run = await create_run(
            client, FEATURE_KEY, repository="acme/crash", notes=marker
        )
        run_id = run["id"]
        await started(rstack.model, marker)
        running = await wait_for(client, run_id, frozenset({"running"}))
        assert codex_task(running, 1)["status"] == "running"
        [leftover] = await containers_of(docker, run_id=run_id)

        killed = rstack.kill(RUNNER)

        async def dead() -> bool:
            return not alive(killed)

        await eventually(dead, 10, "the runner died")
        assert [c.id for c in await containers_of(docker, run_id=run_id)] == [
            leftover.id
        ]  # nobody cleaned up after the killed runner
        restarted = rstack.start(RUNNER)
        assert restarted != killed

        async def leftover_gone() -> bool:
            found = await containers_of(docker, run_id=run_id)
            return leftover.id not in {c.id for c in found}

        await eventually(leftover_gone, 30, "the restarted runner removed it")

        async def logged() -> bool:
            cleaned = "agent(s) a previous runner left on shard 0"
            return cleaned in rstack.log(RUNNER)

        await eventually(logged, 5, "the restarted runner logged its clean-up")
        final = await wait_for(client, run_id, timeout=90)
        await asyncio.sleep(LEASE + 1)  # nothing more may happen to it
        timeline = await events(client, run_id)
        again = (await client.get(f"{RUNS}/{run_id}")).json()

    assert (again["status"], again["attempt"]) == (final["status"], 1)
    terminal = [e for e in timeline if e["kind"] in TERMINAL_KINDS]
    assert len(terminal) == 1, terminal
    codex_events = [e for e in timeline if e["taskName"] == "submit_codex_job"]
    kinds = [e["kind"] for e in codex_events if e["kind"] != "task_progress"]
    assert kinds.count("task_succeeded") == 1, kinds
    assert kinds.count("task_redispatched") == 1, kinds
    assert kinds.count("task_failed") == 0, kinds
    task = codex_task(final, 1)
    assert task["status"] == "succeeded"
    assert [t["attempt"] for t in final["tasks"]].count(2) == 0  # no new attempt
    patches = [a for a in final["artifacts"] if a["path"] == "patch.diff"]
    assert len(patches) == 1, final["artifacts"]
    assert final["codexPatchPath"] == "patch.diff"
    assert len(executions(rstack.model, marker)) == 2  # killed one, finished one
    assert await containers_of(docker, run_id=run_id) == []


def alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as stat:
            state = stat.read().rsplit(")", 1)[1].split()[0]
    except FileNotFoundError:
        return False
    return state not in ("Z", "X")


async def test_two_runs_of_one_shard_run_one_after_the_other(
    rstack: Stack, docker: aiodocker.Docker
) -> None:
    seen: list[set[str]] = []
    stop = asyncio.Event()

    async def watch() -> None:
        while not stop.is_set():
            found = await containers_of(docker, codex_shard_index=str(SHARD))
            seen.append({c["Labels"]["run_id"] for c in found})
            await asyncio.sleep(0.1)

    watcher = asyncio.create_task(watch())
    async with httpx.AsyncClient(base_url=rstack.base_url, timeout=10) as client:
        runs = await asyncio.gather(
            create_run(
                client, FEATURE_KEY, repository="acme/pair-a", notes="scenario:pair-a"
            ),
            create_run(
                client, FEATURE_KEY, repository="acme/pair-b", notes="scenario:pair-b"
            ),
        )
        finals = [await wait_for(client, run["id"], timeout=90) for run in runs]
    stop.set()
    await watcher

    for final in finals:
        assert codex_task(final, 1)["status"] == "succeeded", final
        assert final["codexShardIndex"] == SHARD
    spans = []
    for name in ("scenario:pair-a", "scenario:pair-b"):
        asked = [r.received_at for r in rstack.model.requests if r.mentions(name)]
        assert len(executions(rstack.model, name)) == 1
        spans.append((min(asked), max(asked)))
    first, second = sorted(spans)
    # The later run asked its first question only after the earlier one's last.
    assert second[0] > first[1], spans
    assert first[1] - first[0] >= PAIR_DELAY  # the slow answer came in between
    # Other containers on the engine may carry the label too: only ours count.
    ours = [ids & {run["id"] for run in runs} for ids in seen]
    assert all(len(ids) <= 1 for ids in ours), [ids for ids in ours if len(ids) > 1]
    assert set[str]().union(*ours) == {run["id"] for run in runs}


async def test_cancel_mid_run_stops_the_container_and_a_retry_works(
    rstack: Stack, docker: aiodocker.Docker
) -> None:
    marker = "scenario:cancel"
    async with httpx.AsyncClient(base_url=rstack.base_url, timeout=10) as client:
        run = await create_run(
            client, FEATURE_KEY, repository="acme/cancel", notes=marker
        )
        run_id = run["id"]
        await started(rstack.model, marker)
        assert len(await containers_of(docker, run_id=run_id)) == 1

        asked = time.monotonic()
        cancelled = await client.post(f"{RUNS}/{run_id}/cancel")
        assert cancelled.status_code == 202, cancelled.text
        assert cancelled.json()["status"] == "cancelled"

        async def gone() -> bool:
            return not await containers_of(docker, run_id=run_id)

        await eventually(gone, 5, "the run's container is gone")
        stopped_in = time.monotonic() - asked
        run = (await client.get(f"{RUNS}/{run_id}")).json()
        assert run["status"] == "cancelled"
        assert codex_task(run, 1)["status"] == "cancelled"

        retried = await client.post(f"{RUNS}/{run_id}/retry")
        assert retried.status_code == 202, retried.text
        final = await wait_for(
            client,
            run_id,
            timeout=60,
            where=lambda r: r["attempt"] == 2,
        )
        timeline = await events(client, run_id)

    assert stopped_in < 5
    assert codex_task(final, 2)["status"] == "succeeded"
    assert codex_task(final, 1)["status"] == "cancelled"
    assert len(executions(rstack.model, marker)) == 2
    cancels = [
        e
        for e in timeline
        if e["kind"] == "task_cancelled" and e["taskName"] == "submit_codex_job"
    ]
    assert len(cancels) == 1, cancels
    retry_start = (
        "moonmind.spec_workflow.task_start:1|c|#task:submit_codex_job,attempt:2,"
        "status:running,retry:true"
    )
    assert retry_start in rstack.datagrams()  # the retried attempt is tagged so
    assert "Cancel of run " + run_id + ": agent stopped" in rstack.log(RUNNER)
