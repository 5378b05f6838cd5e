"""`make up` for real: five kinds of process over HTTP, RabbitMQ and Postgres.

Discovery, pre-flight, the Codex runner and the publisher are real: a run ends with a
pull request on the GitHub fake, through the real outbox, relay, broker, workers and
state machine.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import orjson

from shared.messages import PIPELINE
from tests.support.specrepo import FEATURE_KEY, FIRST_OPEN_TASK
from tests.support.stack import CODEX_KEY, GITHUB_TOKEN, SHARDS, Stack

RUNS = "/api/workflows/speckit/runs"


async def wait_terminal(
    client: httpx.AsyncClient, run_id: str, attempt: int
) -> dict[str, Any]:
    for _ in range(300):
        run = (await client.get(f"{RUNS}/{run_id}")).json()
        if run["attempt"] == attempt and run["status"] in (
            "succeeded",
            "failed",
            "cancelled",
        ):
            return dict(run)
        await asyncio.sleep(0.1)
    raise AssertionError(f"run {run_id} did not end: {run}")


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


async def test_run_publishes_a_pull_request_from_a_real_patch(
    stack: Stack,
) -> None:
    """Discovery, pre-flight (a Codex login probe in a container), the real Codex CLI
    in a container against the scripted model, and the publisher all run: the run
    ends with one pull request whose branch holds the agent's change."""
    stack.datagrams()  # drop what earlier tests sent
    async with httpx.AsyncClient(base_url=stack.base_url, timeout=10) as client:
        created = await client.post(
            RUNS, json={"repository": "acme/shop", "featureKey": FEATURE_KEY}
        )
        assert created.status_code == 202, created.text
        run_id = created.json()["id"]
        run = await wait_terminal(client, run_id, 1)

        assert run["status"] == "succeeded", run
        assert run["baseSha"] == stack.repo.base_sha
        assert run["codexPreflightStatus"] == "passed"
        assert run["credentialAudit"]["codexStatus"] == "valid"
        assert run["credentialAudit"]["githubStatus"] == "valid"
        assert run["codexTaskId"]  # the thread id Codex reported
        assert run["codexPatchPath"] == "patch.diff"
        summary = {t["taskName"]: t["status"] for t in run["taskSummary"]}
        assert summary["apply_and_publish"] == "succeeded", summary
        discovered = run["tasks"][0]["summary"]["discovered"]
        assert discovered["task_id"] == FIRST_OPEN_TASK
        (pull,) = stack.github.pulls_created
        assert run["prUrl"].endswith(f"/pull/{pull.number}")
        branch = run["branchName"]
        assert branch == f"speckit/{FEATURE_KEY}/{FIRST_OPEN_TASK}-{run_id[:8]}"
        assert pull.head == branch
        tasks = stack.git.show("acme/shop", branch, f"specs/{FEATURE_KEY}/tasks.md")
        assert f"- [X] {FIRST_OPEN_TASK} " in tasks.decode()
        paths = {a["path"] for a in run["artifacts"]}
        assert {"discovery.json", "preflight.json", "patch.diff"} <= paths
        assert "codex/1/events.jsonl" in paths
        patch_file = next(a for a in run["artifacts"] if a["path"] == "patch.diff")
        diff = (await client.get(f"{RUNS}/{run_id}/artifacts/{patch_file['id']}")).text
        assert "+class Order:" in diff
        assert f"+- [X] {FIRST_OPEN_TASK} " in diff
        codex_task = next(
            t for t in run["tasks"] if t["taskName"] == "submit_codex_job"
        )
        assert codex_task["summary"]["usage"]
        assert len(stack.model.requests) == 2  # one patch step, one final message
        shards = (await client.get("/api/workflows/speckit/codex/shards")).json()
        volume = next(
            s for s in shards["items"] if s["shardIndex"] == run["codexShardIndex"]
        )
        assert volume["volumeStatus"] == "ready"
        assert volume["status"] == "registered"  # the runner heartbeats its shard

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
    await asyncio.sleep(0.2)
    wire = stack.datagrams()
    prefix = "moonmind.spec_workflow"
    lines = [parse_metric(w) for w in wire]
    for task in PIPELINE:  # every task of the run, by the runbook's names and tags
        mine = [m for m in lines if m.tags.get("task") == task]
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
    async with httpx.AsyncClient(base_url=stack.base_url, timeout=10) as client:
        records: list[dict[str, Any]] = []
        for _ in range(100):  # the sink stores what the services shipped
            reply = await client.get(
                "/api/logs", params={"runId": run_id, "limit": 500, "order": "asc"}
            )
            assert reply.status_code == 200, reply.text
            records = reply.json()["items"]
            if {"preflight", "codex_runner", "publisher", "api"} <= {
                r["service"] for r in records
            }:
                break
            await asyncio.sleep(0.1)
        services = {r["service"] for r in records}
        assert {"preflight", "codex_runner", "publisher", "api"} <= services, services
        runner = await client.get(
            "/api/logs",
            params={"runId": run_id, "details.codex_volume": "codex_auth_0"},
        )
        shard_volumes = {
            r["details"].get("codex_volume") for r in runner.json()["items"]
        }
        assert shard_volumes <= {"codex_auth_0"}
        assert GITHUB_TOKEN not in reply.text
    assert (
        f"{prefix}.task_start:1|c|#task:discover_next_phase,attempt:1,"
        "status:running,retry:false"
    ) in wire
    assert any(
        w.startswith(f"{prefix}.task_success:1|c|#task:apply_and_publish,attempt:1")
        for w in wire
    )
    assert any(
        w.startswith(f"{prefix}.task_success:1|c|#task:codex_preflight,attempt:1")
        for w in wire
    )
    assert any(
        w.startswith(f"{prefix}.task_success:1|c|#task:submit_codex_job,attempt:1")
        for w in wire
    )
    codex_log = stack.log("codex_runner-0") + stack.log("codex_runner-1")
    assert CODEX_KEY not in codex_log
    assert GITHUB_TOKEN not in codex_log
    publisher_log = stack.log("publisher")
    assert GITHUB_TOKEN not in publisher_log


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
