"""`make up` for real: five kinds of process over HTTP, RabbitMQ and Postgres.

The stage workers are not implemented yet (issues 4-6) and must say so: a run fails at
its first stage with `stage_not_implemented`, through the real outbox, relay, broker,
worker and state machine.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import httpx
import orjson

from tests.e2e.conftest import SHARDS, Stack

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


async def test_run_fails_honestly_at_the_unimplemented_stage_and_retries(
    stack: Stack,
) -> None:
    stack.datagrams()  # drop what earlier tests sent
    async with httpx.AsyncClient(base_url=stack.base_url, timeout=10) as client:
        created = await client.post(
            RUNS, json={"repository": "acme/shop", "featureKey": "042-checkout"}
        )
        assert created.status_code == 202, created.text
        run_id = created.json()["id"]
        run = await wait_terminal(client, run_id, 1)

        assert run["status"] == "failed"
        assert run["errorCode"] == "stage_not_implemented"
        assert run["currentTask"] == "discover_next_phase"
        retried = await client.post(f"{RUNS}/{run_id}/retry")
        assert retried.status_code == 202
        again = await wait_terminal(client, run_id, 2)
        assert again["errorCode"] == "stage_not_implemented"
        assert [(t["taskName"], t["attempt"], t["status"]) for t in again["tasks"]] == [
            ("discover_next_phase", 1, "failed"),
            ("discover_next_phase", 2, "failed"),
        ]
        cancel = await client.post(f"{RUNS}/{run_id}/cancel")
        assert cancel.status_code == 409
        events = (await client.get(f"{RUNS}/{run_id}/events")).json()["items"]
        assert [e["kind"] for e in events].count("task_failed") == 2

    lines = [
        orjson.loads(line)
        for line in stack.log("preflight").splitlines()
        if line.startswith("{")
    ]
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
            f"Spec workflow task discover_next_phase failed for run {run_id}"
            " (attempt 2)"
        )
        for m in messages
    ), messages
    await asyncio.sleep(0.2)
    wire = stack.datagrams()
    assert (
        "moonmind.spec_workflow.task_start:1|c|#task:discover_next_phase,attempt:1,status:running,retry:false"
        in wire
    )
    assert (
        "moonmind.spec_workflow.task_start:1|c|#task:discover_next_phase,attempt:2,status:running,retry:true"
        in wire
    )
    assert any(
        w.startswith(
            "moonmind.spec_workflow.task_failure:1|c|#task:discover_next_phase,attempt:2"
        )
        for w in wire
    )
    assert any(
        w.startswith("moonmind.spec_workflow.task_duration:") and "status:failure" in w
        for w in wire
    )


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
