"""`make up` for real: five kinds of process over HTTP, RabbitMQ and Postgres.

Discovery, pre-flight, the Codex runner and the publisher are real: a run ends with a
pull request on the GitHub fake, through the real outbox, relay, broker, workers and
state machine.
"""

from __future__ import annotations

import asyncio
import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest_asyncio

from shared.messages import PIPELINE, TaskName
from tests.support.api import RUNS, create_run, wait_for
from tests.support.specrepo import (
    AGENT_FILE,
    FEATURE_DIR,
    FEATURE_KEY,
    FIRST_OPEN_TASK,
    TASKS,
)
from tests.support.stack import CODEX_KEY, GITHUB_TOKEN, SHARDS, Stack
from tests.support.tap import Tapped, tap

MARKER = "scenario:publish"  # in the notes, so in the prompt: marks this run's requests
TASK_TEXT = next(t.description for t in TASKS if t.id == FIRST_OPEN_TASK)
SERVICES = {"preflight", "codex_runner", "publisher", "api"}


async def test_stack_is_ready_and_reports_every_process(stack: Stack) -> None:
    async with httpx.AsyncClient(base_url=stack.base_url) as client:
        ready = await client.get("/readyz")
    assert ready.status_code == 200
    assert ready.json()["checks"] == {"database": True, "broker": True}
    status = stack.cli("status")
    assert status.returncode == 0, status.stderr
    names = {
        "api",
        "relay",
        "preflight",
        "publisher",
        *(f"codex_runner-{n}" for n in range(SHARDS)),
    }
    for name in names:
        assert name in status.stdout
        assert (stack.var_dir / "run" / f"{name}.pid").exists()
    again = stack.cli("up")
    assert again.returncode == 0, (
        again.stdout + again.stderr
    )  # already running: nothing new started
    assert {p.stem for p in (stack.var_dir / "run").glob("*.pid")} == names


@dataclass(frozen=True)
class Published:
    """One run from POST to `succeeded`, watched by a tap and a StatsD listener."""

    run: dict[str, Any]
    tapped: Tapped
    datagrams: list[str]


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def published(stack: Stack) -> Published:
    """Discovery, pre-flight (a Codex login probe in a container), the real Codex CLI
    in a container against the scripted model, and the publisher all run. A tap was
    started before the run, and stopped once it saw the run end."""
    stack.datagrams()  # drop what earlier tests sent
    async with (
        tap(stack) as tapped,
        httpx.AsyncClient(base_url=stack.base_url, timeout=10) as client,
    ):
        created = await create_run(client, FEATURE_KEY, notes=MARKER)
        run = await wait_for(client, created["id"], timeout=90)

        def ended(record: dict[str, Any]) -> bool:
            body = record["body"]
            return record["routing_key"] == "evt.run.succeeded" and (
                isinstance(body, dict) and body.get("run_id") == run["id"]
            )

        await tapped.until(ended, 10)
    # The services' StatsD sends are fire-and-forget: the last ones may trail.
    wire = stack.datagrams()
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline and not any(
        "task_success" in w and "task:finalize_run" in w for w in wire
    ):
        await asyncio.sleep(0.05)
        wire += stack.datagrams()
    return Published(run, tapped, wire)


async def test_run_publishes_a_pull_request_from_a_real_patch(
    stack: Stack, published: Published
) -> None:
    """The run ends with one pull request whose branch holds exactly the agent's
    change: the new model file and the task's line checked in tasks.md."""
    run = published.run
    run_id = run["id"]
    assert run["status"] == "succeeded", run
    assert run["result"] == "published"
    assert run["baseSha"] == stack.repo.base_sha
    assert run["codexPreflightStatus"] == "passed"
    assert run["credentialAudit"]["codexStatus"] == "valid"
    assert run["credentialAudit"]["githubStatus"] == "valid"
    assert run["codexTaskId"]  # the thread id Codex reported
    assert run["codexPatchPath"] == "patch.diff"
    # The API names the volume with this session's CODEX_VOLUME_PREFIX.
    assert run["codexVolume"] == stack.volume(run["codexShardIndex"])
    summary = {t["taskName"]: t["status"] for t in run["taskSummary"]}
    assert summary["apply_and_publish"] == "succeeded", summary
    discovered = run["tasks"][0]["summary"]["discovered"]
    assert discovered["task_id"] == FIRST_OPEN_TASK
    (pull,) = stack.github.pulls(stack.repo.full_name)
    assert pull in stack.github.pulls_created
    assert run["prUrl"].endswith(f"/pull/{pull.number}")
    branch = run["branchName"]
    assert branch == f"speckit/{FEATURE_KEY}/{FIRST_OPEN_TASK}-{run_id[:8]}"
    assert (pull.head, pull.base) == (branch, "main")
    # The pull request's diff is the agent's change, nothing more.
    repo = stack.repo.full_name
    changed = stack.git.git(repo, "diff", "--name-status", f"main...{branch}")
    assert sorted(changed.splitlines()) == [
        f"A\t{AGENT_FILE}",
        f"M\t{FEATURE_DIR}/tasks.md",
    ]
    assert stack.git.show(repo, branch, AGENT_FILE) == (
        b'class Order:\n    """An order."""\n'
    )
    tasks_diff = stack.git.git(repo, "diff", f"main...{branch}", "--", "*tasks.md")
    removed = [x for x in tasks_diff.splitlines() if x.startswith("-- [")]
    added = [x for x in tasks_diff.splitlines() if x.startswith("+- [")]
    assert [x[1:] for x in removed] == [f"- [ ] {FIRST_OPEN_TASK} {TASK_TEXT}"]
    assert [x[1:] for x in added] == [f"- [X] {FIRST_OPEN_TASK} {TASK_TEXT}"]
    paths = {a["path"] for a in run["artifacts"]}
    assert {"discovery.json", "preflight.json", "patch.diff"} <= paths
    assert "codex/1/events.jsonl" in paths
    async with httpx.AsyncClient(base_url=stack.base_url, timeout=10) as client:
        patch_file = next(a for a in run["artifacts"] if a["path"] == "patch.diff")
        diff = (await client.get(f"{RUNS}/{run_id}/artifacts/{patch_file['id']}")).text
        shards = (await client.get("/api/workflows/speckit/codex/shards")).json()
    assert "+class Order:" in diff
    assert f"+- [X] {FIRST_OPEN_TASK} " in diff
    codex_task = next(t for t in run["tasks"] if t["taskName"] == "submit_codex_job")
    assert codex_task["summary"]["usage"]
    asked = [r for r in stack.model.requests if r.mentions(MARKER)]
    assert len(asked) == 2  # one patch step, one final message
    assert all(r.headers["authorization"] == f"Bearer {CODEX_KEY}" for r in asked)
    volume = next(
        s for s in shards["items"] if s["shardIndex"] == run["codexShardIndex"]
    )
    assert volume["volume"] == run["codexVolume"]
    assert volume["volumeStatus"] == "ready"
    assert volume["status"] == "registered"  # the runner heartbeats its shard


async def test_tap_started_before_the_run_sees_all_of_it(
    published: Published,
) -> None:
    """The tap's own queue got a copy of every command and event of the run, in
    pipeline order, and it exited cleanly on SIGTERM."""
    run = published.run
    tapped = published.tapped
    assert tapped.exit_code == 0, tapped.stderr
    assert "tap done:" in tapped.stderr
    mine = tapped.of_run(run["id"])
    keys = [r["routing_key"] for r in mine]
    assert all(r["exchange"] == "spec_workflow" for r in mine)
    shard = run["codexShardIndex"]
    commands = [k for k in keys if k.startswith("cmd.")]
    assert commands == [
        "cmd.discover_next_phase",
        "cmd.codex_preflight",
        f"cmd.submit_codex_job.{shard}",
        "cmd.apply_and_publish",
    ], keys  # finalize_run: served by the API in apply_and_publish's transaction
    for task in PIPELINE:  # each stage succeeded once
        if task is TaskName.FINALIZE_RUN:
            continue  # the API itself closes the run: no worker, no task events
        of_task = [r["routing_key"] for r in mine if r["body"].get("task") == task]
        events = [k for k in of_task if k.startswith("evt.task.")]
        # Codex always announces its start (its ack waits on it); a quicker stage
        # only when its work outlasts STAGE_STARTED_AFTER
        if task is TaskName.SUBMIT_CODEX_JOB:
            assert events[0] == "evt.task.started", (task, of_task)
        assert events[-1] == "evt.task.succeeded", (task, of_task)
        assert events.count("evt.task.succeeded") == 1, (task, of_task)
        assert "evt.task.failed" not in events, (task, of_task)
    statuses = [k for k in keys if k.startswith("evt.run.")]
    assert statuses[-1] == "evt.run.succeeded", statuses
    assert keys[-1] == "evt.run.succeeded", keys
    final = mine[-1]["body"]
    assert final["status"] == "succeeded"
    assert final["pr_url"] == run["prUrl"]
    # The job went to the run's shard only: its queue's routing key says so.
    (job,) = [r for r in mine if r["routing_key"].startswith("cmd.submit_codex_job")]
    assert job["body"]["shard"]["codex_volume"] == run["codexVolume"]
    assert GITHUB_TOKEN not in json.dumps(tapped.records)
    assert CODEX_KEY not in json.dumps(tapped.records)


async def test_log_sink_and_statsd_see_the_run(
    stack: Stack, published: Published
) -> None:
    """Every service's lines reach `GET /api/logs?runId=`, and every task of the run
    sends the runbook's series to the StatsD listener."""
    run_id = published.run["id"]
    preflight_log = stack.log("preflight")
    assert GITHUB_TOKEN not in preflight_log
    assert CODEX_KEY not in preflight_log
    lines = [orjson.loads(x) for x in preflight_log.splitlines() if x.startswith("{")]
    messages = [
        line["record"]["message"]
        for line in lines
        if line["record"]["extra"].get("run_id") == run_id
    ]
    assert any(
        m.startswith(
            f"Spec workflow task discover_next_phase started for run {run_id}"
            " (attempt 1)"
        )
        for m in messages
    ), messages
    assert any(
        m.startswith(
            f"Spec workflow task codex_preflight succeeded for run {run_id} (attempt 1)"
        )
        for m in messages
    ), messages
    assert "Codex pre-flight check passed" in messages
    wire = published.datagrams
    prefix = "moonmind.spec_workflow"
    metrics = [parse_metric(w) for w in wire]
    for task in PIPELINE:  # every task of the run, by the runbook's names and tags
        mine = [m for m in metrics if m.tags.get("task") == task]
        starts = [m for m in mine if m.name == f"{prefix}.task_start"]
        successes = [m for m in mine if m.name == f"{prefix}.task_success"]
        timings = [m for m in mine if m.name == f"{prefix}.task_duration"]
        assert [(m.value, m.kind, m.tags) for m in starts] == [
            (1.0, "c", {"task": task, "attempt": "1", "status": "running",
                        "retry": "false"})
        ], mine  # fmt: skip
        assert [(m.value, m.kind, m.tags) for m in successes] == [
            (1.0, "c", {"task": task, "attempt": "1", "status": "success"})
        ], mine
        assert len(timings) == 1, mine
        assert timings[0].kind == "ms"
        assert timings[0].tags == {"task": task, "attempt": "1", "status": "success"}
        assert timings[0].value >= 0
        assert not [m for m in mine if m.name == f"{prefix}.task_failure"]
    assert (
        f"{prefix}.task_start:1|c|#task:discover_next_phase,attempt:1,"
        "status:running,retry:false"
    ) in wire
    volume = published.run["codexVolume"]
    async with httpx.AsyncClient(base_url=stack.base_url, timeout=10) as client:
        records: list[dict[str, Any]] = []
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:  # the sink stores what the services shipped
            reply = await client.get(
                "/api/logs", params={"runId": run_id, "limit": 500, "order": "asc"}
            )
            assert reply.status_code == 200, reply.text
            records = reply.json()["items"]
            if {r["service"] for r in records} >= SERVICES:
                break
            await asyncio.sleep(0.1)
        services = {r["service"] for r in records}
        assert services >= SERVICES, services
        assert {r["runId"] for r in records} == {run_id}
        assert GITHUB_TOKEN not in reply.text
        assert CODEX_KEY not in reply.text
        runner = await client.get(
            "/api/logs", params={"runId": run_id, "details.codex_volume": volume}
        )
    found = runner.json()["items"]
    assert found, "no line of the run names its Codex volume"
    assert {r["details"]["codex_volume"] for r in found} == {volume}
    assert "codex_runner" in {r["service"] for r in found}
    codex_log = "".join(stack.log(f"codex_runner-{n}") for n in range(SHARDS))
    assert CODEX_KEY not in codex_log
    assert GITHUB_TOKEN not in codex_log
    assert GITHUB_TOKEN not in stack.log("publisher")


@dataclass(frozen=True)
class Metric:
    name: str
    value: float
    kind: str
    tags: dict[str, str]


def parse_metric(line: str) -> Metric:
    """`name:value|type|#k:v,k:v` (DogStatsD) into its parts."""
    head, _, rest = line.partition("|")
    name, _, value = head.rpartition(":")
    kind, _, tag_part = rest.partition("|#")
    tags = dict(pair.split(":", 1) for pair in tag_part.split(",") if pair)
    return Metric(name, float(value), kind, tags)


def running(pid: int) -> bool:
    """Alive and not a zombie.

    An exited child of a finished `up` may wait for a reaper.
    """
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except FileNotFoundError:
        return False
    return state not in ("Z", "X")


async def test_down_stops_exactly_the_started_processes(stack: Stack) -> None:
    pids = {p.stem: int(p.read_text()) for p in (stack.var_dir / "run").glob("*.pid")}
    assert pids
    stopped = stack.cli("down")
    assert stopped.returncode == 0, stopped.stdout + stopped.stderr
    for name, pid in pids.items():
        assert not running(pid), f"{name} (pid {pid}) is still alive after down"
    assert list((stack.var_dir / "run").glob("*.pid")) == []
    restarted = stack.cli("up")  # leave the stack up for the fixture's own `down`
    assert restarted.returncode == 0, restarted.stdout + restarted.stderr
