"""`spec-workflow tap`, the real binary on this session's vhost, while runs go by."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path

import aio_pika
import httpx
from sqlalchemy import func, select

from services.api.db import Database
from services.api.models import OutboxRow
from shared.messages import PIPELINE
from tests.support.api import create_run, wait_for
from tests.support.harness import StageHarness
from tests.support.infra import Infra

CLI = Path(sys.executable).with_name("spec-workflow")


@dataclass
class TapProcess:
    process: asyncio.subprocess.Process
    queue: str
    lines: list[str] = field(default_factory=list)

    async def read_until(self, *wanted: str, timeout: float = 15.0) -> None:  # noqa: ASYNC109 - expiry is an AssertionError
        """Collect stdout lines until one contains every string of `wanted`."""
        assert self.process.stdout is not None
        async with asyncio.timeout(timeout):
            while not any(all(w in line for w in wanted) for line in self.lines):
                raw = await self.process.stdout.readline()
                assert raw, f"tap ended before printing {wanted!r}: {self.lines}"
                self.lines.append(raw.decode().rstrip("\n"))

    async def finish(self, timeout: float = 15.0) -> tuple[int, str]:  # noqa: ASYNC109 - expiry is an AssertionError
        """Exit code and stderr, the rest of stdout collected."""
        out, err = await asyncio.wait_for(self.process.communicate(), timeout)
        self.lines += out.decode().splitlines()
        assert self.process.returncode is not None
        return self.process.returncode, err.decode()


@asynccontextmanager
async def tap(infra: Infra, cwd: Path, *args: str) -> AsyncIterator[TapProcess]:
    """The tap running and bound (its first stderr line names its queue)."""
    process = await asyncio.create_subprocess_exec(
        str(CLI),
        "tap",
        *args,
        cwd=cwd,
        env={**os.environ, "RABBITMQ_URL": infra.rabbitmq_url},
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        assert process.stderr is not None
        ready = (await asyncio.wait_for(process.stderr.readline(), 15)).decode()
        assert ready.startswith("tap amq.gen-"), ready
        yield TapProcess(process, ready.split()[1])
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()


async def queue_names(infra: Infra) -> set[str]:
    return {q.name for q in await infra.list_queues()}


def feature() -> str:
    return f"f-{uuid.uuid4().hex[:10]}"


async def test_tap_prints_a_run_s_traffic_and_leaves_no_queue(
    api: httpx.AsyncClient, stages: StageHarness, infra: Infra, tmp_path: Path
) -> None:
    saved = tmp_path / "tap.jsonl"
    key = feature()
    async with tap(
        infra, tmp_path, "--json", "--seconds", "30", "--save", str(saved)
    ) as t:
        assert t.queue in await queue_names(infra)
        run = await wait_for(api, (await create_run(api, key))["id"])
        await t.read_until('"routing_key": "evt.run.succeeded"', run["id"])
        t.process.send_signal(signal.SIGTERM)
        code, err = await t.finish()

    assert run["status"] == "succeeded"  # the system's queues got every message
    for task in PIPELINE[:-1]:
        assert len(stages.commands(key, task)) == 1
    records = [json.loads(line) for line in t.lines]
    ours = [r for r in records if r["body"].get("run_id") == run["id"]]
    keys = [r["routing_key"] for r in ours]
    shard = run["codexShardIndex"]
    assert keys[0] == "cmd.discover_next_phase"
    assert keys.count("evt.run.succeeded") == 1
    for expected in (
        "cmd.codex_preflight",
        f"cmd.submit_codex_job.{shard}",
        "cmd.apply_and_publish",
        "evt.task.started",
        "evt.task.succeeded",
        "evt.run.running",
    ):
        assert expected in keys
    # finalize_run is served in apply_and_publish's success transaction: no command
    assert "cmd.finalize_run" not in keys
    assert all(r["exchange"] == "spec_workflow" for r in ours)
    assert code == 0, err
    assert "Traceback" not in err
    assert [json.loads(line) for line in saved.read_text().splitlines()] == records
    assert t.queue not in await queue_names(infra)


async def bus_quiet(database: Database, timeout: float = 30.0) -> None:  # noqa: ASYNC109 - expiry is an AssertionError
    """Wait until no outbox row is waiting and none was written for a second.

    Earlier tests (the state machine properties) leave runs whose traffic, still
    going through the API and the relay, would match the tap's patterns.
    """
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        async with database.new_session() as session:
            busy = await session.scalar(
                select(func.count()).where(
                    (OutboxRow.sent_at.is_(None) & (OutboxRow.attempts == 0))
                    | (OutboxRow.created_at > func.now() - timedelta(seconds=1))
                )
            )
        if not busy:
            return
        assert asyncio.get_running_loop().time() < deadline, f"{busy} rows in flight"
        await asyncio.sleep(0.2)


async def test_tap_with_patterns_stops_after_count(
    api: httpx.AsyncClient,
    stages: StageHarness,
    infra: Infra,
    tmp_path: Path,
    database: Database,
) -> None:
    del stages
    await bus_quiet(database)
    patterns = ("cmd.discover_next_phase", "evt.run.succeeded")
    async with tap(infra, tmp_path, *patterns, "--count", "2", "--seconds", "10") as t:
        run = await wait_for(api, (await create_run(api, feature()))["id"])
        code, err = await t.finish()

    assert code == 0, err
    assert len(t.lines) == 2
    first, last = (line.split() for line in t.lines)
    assert first[1:5] == [
        "cmd.discover_next_phase",
        run["id"],
        "discover_next_phase",
        "#1",
    ]
    assert last[1:5] == ["evt.run.succeeded", run["id"], "finalize_run", "#1"]
    assert "status=succeeded" in last
    assert "result=published" in last
    assert "tap done: 2 message(s)" in err
    assert t.queue not in await queue_names(infra)


async def test_tap_prints_malformed_bodies_and_keeps_going(
    infra: Infra, tmp_path: Path, api: httpx.AsyncClient
) -> None:
    del api  # the session app declared the exchange
    route = f"evt.tap_test.{uuid.uuid4().hex[:8]}"
    bodies = [b"\xff\xfe not json", b"[1, 2]", b'{"run_id": "r-1"}']
    async with tap(infra, tmp_path, route, "--count", "3", "--seconds", "10") as t:
        connection = await aio_pika.connect(infra.rabbitmq_url)
        async with connection:
            channel = await connection.channel()
            exchange = await channel.get_exchange("spec_workflow")
            for body in bodies:
                await exchange.publish(aio_pika.Message(body), routing_key=route)
        code, err = await t.finish()

    assert code == 0, err
    assert "malformed body (11 bytes): \\xff\\xfe not json" in t.lines[0]
    assert "not a message: [1, 2]" in t.lines[1]
    assert "r-1" in t.lines[2]
    assert t.queue not in await queue_names(infra)
