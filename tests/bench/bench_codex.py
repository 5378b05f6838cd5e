"""`make bench-codex`: `submit_codex_job` through the bus against `codex exec` alone.

One invocation, the two modes alternated per iteration (a, b, a, b, ...):

- a. direct: the Codex agent command through the `DockerExecutor` on a fresh clone of
  the seeded Spec Kit repository (cloned before the clock starts), nothing else;
- b. pipeline: a `SubmitCodexJob` published to `codex-0` on a private vhost, served by
  the real runner handler (secrets, clone, container, live log, patch, events) and
  timed until its `TaskSucceeded` arrives on an exclusive queue.

Both run the same image, command, prompt, limits and auth volume against the same
scripted model (one `apply_patch`, then a final message). The report goes to stdout
and replaces the `## bench-codex` section of docs/benchmarks.md. Numbers are only
comparable within one run (../shared/notes/messaging-reliability.md §11).
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import platform
import secrets
import statistics
import sys
import tempfile
import time
from collections.abc import Sequence
from contextlib import AsyncExitStack
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from uuid import UUID, uuid4

import aio_pika
import aiodocker
from aio_pika.abc import AbstractConnection, AbstractIncomingMessage
from faststream.rabbit import Channel, RabbitBroker
from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from services.codex_runner import handlers
from services.codex_runner.agent import Agent, AgentRun, ExecResult, OnLine
from services.codex_runner.codex import CodexAgent, CodexOutputParser
from services.codex_runner.executors import DockerExecutor
from services.codex_runner.runner import RunnerDeps
from services.codex_runner.workspace import build_prompt, clone_at, remove
from shared.git import remote_for
from shared.logging import configure_logging
from shared.messages import (
    CodexShard,
    DiscoveredTask,
    SubmitCodexJob,
    TaskName,
    new_message,
)
from shared.routing import Route, codex_queue_name, submit_codex_route
from shared.topology import EXCHANGE, declare_topology
from tests.bench.sections import DOCUMENT, BenchError, run_and_write
from tests.support.containers import (
    ContainerEngine,
    container_engine,
    create_volume,
    delete_volume,
)
from tests.support.fakes import FakeSecrets
from tests.support.gitserver import GitSmartHTTPServer
from tests.support.infra import Infra, provision
from tests.support.model import ScriptedModel, patch, say
from tests.support.specrepo import (
    FEATURE_DIR,
    FEATURE_TITLE,
    FIRST_OPEN_TASK,
    TASKS,
    SeededRepo,
    seed_spec_repo,
)

SECTION = "## bench-codex"
SHARD = 0
KEY = "sk-bench-" + secrets.token_hex(16)
GITHUB_TOKEN = "ghp_bench" + secrets.token_hex(16)
TASK = next(t for t in TASKS if t.id == FIRST_OPEN_TASK)
PATCH = f"""\
*** Begin Patch
*** Add File: src/checkout/models.py
+class Order: ...
+
+
+class Payment: ...
*** Update File: {FEATURE_DIR}/tasks.md
@@
-{TASK.line()}
+{TASK.line().replace("- [ ]", "- [X]", 1)}
*** End Patch
"""
STEPS = [[patch("c1", PATCH)], [say(f"Done: {TASK.id}.")]]
EXPECTED_FILES = {"src/checkout/models.py", f"{FEATURE_DIR}/tasks.md"}
CODEX_TIMEOUT = 120.0
IDLE_TIMEOUT = 60.0
EVENT_TIMEOUT = 180.0
GIT_TIMEOUT = 60.0
HEARTBEAT_INTERVAL = 30.0  # the runner's default; a run here takes seconds


class BenchSettings(BaseSettings):
    """Environment only: `make bench-codex BENCH_N=20`."""

    model_config = SettingsConfigDict(env_ignore_empty=True, extra="ignore")

    n: int = Field(10, ge=1, validation_alias="BENCH_N")
    warmup: int = Field(1, ge=0, validation_alias="BENCH_WARMUP")
    output: Path = Field(DOCUMENT, validation_alias="BENCH_OUT")


class TimedExecutor:
    """The pipeline's `DockerExecutor`, noting how long each `run` took."""

    def __init__(self, inner: DockerExecutor) -> None:
        self.inner = inner
        self.seconds: dict[UUID, float] = {}

    async def run(
        self,
        run: AgentRun,
        agent: Agent,
        on_line: OnLine,
        *,
        timeout: float,  # noqa: ASYNC109 - the Executor protocol's signature
        idle_timeout: float,
    ) -> ExecResult:
        started = time.perf_counter()
        try:
            return await self.inner.run(
                run, agent, on_line, timeout=timeout, idle_timeout=idle_timeout
            )
        finally:
            self.seconds[run.run_id] = time.perf_counter() - started

    async def cancel(self, run_id: UUID) -> bool:
        return await self.inner.cancel(run_id)

    async def cleanup(self, labels: dict[str, str]) -> int:
        return await self.inner.cleanup(labels)


Outcome = tuple[str, dict[str, Any], float]
"""Routing key, body, and the `perf_counter` at arrival."""


class Events:
    """An exclusive queue on the task outcome events; one future per awaited run."""

    def __init__(self) -> None:
        self._waiting: dict[str, asyncio.Future[Outcome]] = {}
        self._connection: AbstractConnection | None = None

    async def start(self, url: str) -> None:
        self._connection = await aio_pika.connect(url)
        channel = await self._connection.channel()
        queue = await channel.declare_queue(exclusive=True, auto_delete=True)
        for key in (Route.TASK_SUCCEEDED, Route.TASK_FAILED, Route.TASK_CANCELLED):
            await queue.bind(EXCHANGE.name, routing_key=key)
        await queue.consume(self._seen, no_ack=True)

    async def _seen(self, message: AbstractIncomingMessage) -> None:
        arrived = time.perf_counter()
        body = json.loads(message.body)
        waiter = self._waiting.pop(str(body.get("run_id")), None)
        if waiter is not None and not waiter.done():
            waiter.set_result((message.routing_key or "", body, arrived))

    def expect(self, run_id: UUID) -> asyncio.Future[Outcome]:
        waiter: asyncio.Future[Outcome] = asyncio.get_running_loop().create_future()
        self._waiting[str(run_id)] = waiter
        return waiter

    async def close(self) -> None:
        if self._connection is not None:
            await self._connection.close()


@dataclass
class Rig:
    repo: SeededRepo
    git_url: str
    agent: CodexAgent
    executor: TimedExecutor
    volume: str
    root: Path
    client: RabbitBroker
    events: Events

    def job(self) -> SubmitCodexJob:
        return new_message(
            SubmitCodexJob,
            run_id=uuid4(),
            task=TaskName.SUBMIT_CODEX_JOB,
            attempt=1,
            repository=self.repo.full_name,
            feature_key=self.repo.feature_key,
            base_branch=self.repo.base_branch,
            base_sha=self.repo.base_sha,
            shard=CodexShard(
                codex_queue=codex_queue_name(SHARD),
                codex_volume=self.volume,
                codex_shard_index=SHARD,
            ),
            spec_task=DiscoveredTask(task_id=TASK.id, description=TASK.description),
            spec_title=FEATURE_TITLE,
            has_plan=True,
        )


async def direct(rig: Rig) -> float:
    """a: `codex exec` in its container on a ready clone; seconds."""
    cmd = rig.job()
    workspace = rig.root / "direct" / str(cmd.run_id)
    await clone_at(
        remote_for(cmd.repository, rig.git_url),
        GITHUB_TOKEN,
        branch=cmd.base_branch,
        sha=cmd.base_sha,
        workspace=workspace,
        git_timeout=GIT_TIMEOUT,
    )
    run = AgentRun(
        run_id=cmd.run_id,
        attempt=cmd.attempt,
        workspace=workspace,
        output_dir=rig.root / "direct-out" / str(cmd.run_id),
        prompt=build_prompt(cmd, workspace),  # the prompt the runner would build
        auth_volume=rig.volume,
        credentials={"openai": KEY},
        labels={"codex_shard_index": str(SHARD)},
    )
    parser = CodexOutputParser()

    async def on_line(line: str) -> None:
        parser.feed(line)

    try:
        started = time.perf_counter()
        result = await rig.executor.inner.run(
            run, rig.agent, on_line, timeout=CODEX_TIMEOUT, idle_timeout=IDLE_TIMEOUT
        )
        elapsed = time.perf_counter() - started
        outcome = parser.outcome()
        if result.exit_code != 0 or not outcome.completed or outcome.failed_changes:
            raise BenchError(
                f"direct run: exit {result.exit_code}, completed={outcome.completed}, "
                f"turn error {outcome.turn_error!r}, "
                f"stderr {result.stderr_tail[-500:]!r}"
            )
        if not (workspace / "src/checkout/models.py").is_file():
            raise BenchError("direct run: Codex exited 0 but the patch is not there")
    finally:
        await remove(workspace)
    return elapsed


async def pipeline(rig: Rig) -> tuple[float, float]:
    """b: publish -> TaskSucceeded; seconds in all, and in the runner's executor."""
    cmd = rig.job()
    arrival = rig.events.expect(cmd.run_id)
    started = time.perf_counter()
    await rig.client.publish(
        cmd,
        exchange=EXCHANGE,
        routing_key=submit_codex_route(SHARD),
        persist=True,
        mandatory=True,
        message_id=str(cmd.message_id),
        correlation_id=str(cmd.run_id),
    )
    key, body, arrived = await asyncio.wait_for(arrival, EVENT_TIMEOUT)
    if key != Route.TASK_SUCCEEDED:
        raise BenchError(f"pipeline run ended with {key}: {body.get('error')}")
    files = {f["path"] for f in body["summary"].get("files", [])}
    if files != EXPECTED_FILES:
        raise BenchError(f"pipeline run: unexpected patch of {sorted(files)}")
    return arrived - started, rig.executor.seconds.pop(cmd.run_id)


@dataclass(frozen=True)
class Pair:
    """One iteration, in ms."""

    direct: float
    pipeline: float
    container: float
    """The pipeline's own `executor.run` (container create to delete)."""


@dataclass
class Report:
    settings: BenchSettings
    started: datetime
    machine: list[tuple[str, str]]
    pairs: list[Pair] = field(default_factory=list)


def host_facts() -> list[tuple[str, str]]:
    cpu = "unknown"
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            cpu = line.split(":", 1)[1].strip()
            break
    memory = "unknown"
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemTotal:"):
            memory = f"{int(line.split()[1]) / 2**20:.1f} GiB"
            break
    try:
        system = platform.freedesktop_os_release().get("PRETTY_NAME", "Linux")
    except OSError:
        system = platform.system()
    cores = f"{os.cpu_count()} logical ({len(os.sched_getaffinity(0))} usable)"
    return [
        ("CPU", cpu),
        ("cores", cores),
        ("memory", memory),
        ("kernel", f"{platform.release()} ({platform.machine()})"),
        ("OS", system),
        ("python", f"{platform.python_implementation()} {platform.python_version()}"),
        ("load average at start", " / ".join(f"{v:.2f}" for v in os.getloadavg())),
    ]


async def command_output(*argv: str) -> str:
    process = await asyncio.create_subprocess_exec(
        *argv, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT
    )
    out, _ = await process.communicate()
    return out.decode(errors="replace").strip().splitlines()[0]


async def machine(
    engine: ContainerEngine, docker: aiodocker.Docker, infra: Infra
) -> list[tuple[str, str]]:
    facts = await asyncio.to_thread(host_facts)
    version = await docker.version()
    podman = next(
        (
            c.get("Version")
            for c in version.get("Components", [])
            if "podman" in str(c.get("Name", "")).lower()
        ),
        version.get("Version"),
    )
    codex = await command_output(str(engine.codex_bin), "--version")
    async with infra.management() as client:
        overview = (await client.get("/overview")).json()
    git = await command_output("git", "--version")
    return [
        *facts,
        ("podman", f"{podman} (Docker API {version.get('ApiVersion')})"),
        ("codex", f"{codex}, image `{engine.codex_image}`"),
        (
            "RabbitMQ",
            f"{overview.get('rabbitmq_version')} "
            f"(Erlang {overview.get('erlang_version')}), one node on loopback",
        ),
        ("git", git),
    ]


async def bench(settings: BenchSettings) -> Report:
    # As a deployed runner would log, minus INFO: per-message lines would cost time
    # in the pipeline only and flood this report.
    configure_logging("codex_runner", level="WARNING", json=False)
    engine = await container_engine()
    async with AsyncExitStack() as stack:
        infra = await stack.enter_async_context(provision())
        root = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="bench-")))
        git = stack.enter_context(GitSmartHTTPServer())
        repo = seed_spec_repo(git)
        git.grant(GITHUB_TOKEN, repo.full_name)
        model = stack.enter_context(ScriptedModel(STEPS, api_key=KEY))
        docker = await stack.enter_async_context(engine.docker())
        report = Report(
            settings, datetime.now(UTC), await machine(engine, docker, infra)
        )
        volume = await create_volume(docker, f"moonmind-bench-{secrets.token_hex(6)}")
        stack.push_async_callback(delete_volume, docker, volume)

        # The host network: the scripted model listens on the host's 127.0.0.1.
        executor = TimedExecutor(DockerExecutor(engine.url, network_mode="host"))
        agent = CodexAgent(engine.codex_image, provider=model.provider())
        handlers.configure(
            RunnerDeps(
                executor=executor,
                agent=agent,
                internal_api=FakeSecrets({"github": GITHUB_TOKEN, "openai": KEY}),
                artifacts_root=root / "artifacts",
                workspaces_root=root / "workspaces",
                github_git_url=git.base_url,
                git_timeout=GIT_TIMEOUT,
                timeout=CODEX_TIMEOUT,
                idle_timeout=IDLE_TIMEOUT,
            ),
            HEARTBEAT_INTERVAL,
        )
        # What build_worker makes for the runner: prefetch 1, the whole topology.
        runner = RabbitBroker(
            infra.rabbitmq_url,
            default_channel=Channel(prefetch_count=1),
            logger=logging.getLogger("codex_runner.broker"),
        )
        runner.include_router(handlers.shard_router(SHARD))
        await runner.connect()
        stack.push_async_callback(runner.stop)
        await declare_topology(runner, SHARD + 1)
        await runner.start()
        # The API's side: a relay-like publisher and an observer of the outcome.
        client = RabbitBroker(
            infra.rabbitmq_url, logger=logging.getLogger("bench.client")
        )
        await client.connect()
        stack.push_async_callback(client.stop)
        events = Events()
        await events.start(infra.rabbitmq_url)
        stack.push_async_callback(events.close)

        rig = Rig(repo, git.base_url, agent, executor, volume, root, client, events)
        for _ in range(settings.warmup):  # image cache, connections, first clone
            await direct(rig)
            await pipeline(rig)
        for index in range(1, settings.n + 1):
            a = await direct(rig)
            b, container = await pipeline(rig)
            report.pairs.append(Pair(a * 1000, b * 1000, container * 1000))
            sys.stderr.write(
                f"[bench-codex] {index}/{settings.n}: direct {a * 1000:.0f} ms, "
                f"pipeline {b * 1000:.0f} ms\n"
            )
        if model.auth_failures:
            raise BenchError(f"{model.auth_failures} model requests without the key")
    return report


def summary(values: Sequence[float]) -> tuple[float, float, float, float, float]:
    """p50, p90, mean, min, max."""
    ordered = sorted(values)
    p90 = (
        statistics.quantiles(ordered, n=10, method="inclusive")[-1]
        if len(ordered) > 1
        else ordered[0]
    )
    return (
        statistics.median(ordered),
        p90,
        statistics.fmean(ordered),
        ordered[0],
        ordered[-1],
    )


def render(report: Report) -> str:
    settings, pairs = report.settings, report.pairs
    a = summary([p.direct for p in pairs])
    b = summary([p.pipeline for p in pairs])
    c = summary([p.container for p in pairs])
    outside = summary([p.pipeline - p.container for p in pairs])
    paired = statistics.median(p.pipeline - p.direct for p in pairs)
    when = report.started.strftime("%Y-%m-%d %H:%M:%S UTC")

    def row(name: str, stats: tuple[float, ...]) -> str:
        cells = " | ".join(f"{v:,.0f}" for v in stats)
        return f"| {name} | {len(pairs)} | {cells} |"

    lines = [
        SECTION,
        "",
        f"Last run: {when}, `make bench-codex`, BENCH_N={settings.n} "
        f"(after {settings.warmup} uncounted warm-up pair(s)), modes alternated "
        "a, b, a, b, ... in one process.",
        "",
        "- **a. direct**: the Codex agent command (`codex exec --json ...`) through "
        "the `DockerExecutor` (create, start, follow, wait, delete) on a fresh "
        "clone made before the clock starts; nothing else.",
        "- **b. pipeline**: `SubmitCodexJob` published (persistent, confirmed, "
        "mandatory) to `codex-0` on a private vhost; the real runner handler "
        "(`shard_router`, prefetch 1) takes it: `TaskStarted`, secrets, clone over "
        "smart HTTP at the base commit, the same container, `events.jsonl`, progress "
        "heartbeat, `git add -A` + diff, artifacts, `TaskSucceeded`; the clock stops "
        "when that event reaches an exclusive queue.",
        "- Both: image, command, prompt, limits (2 CPUs, 4 GiB), auth volume and a "
        "scripted local model (one `apply_patch` adding a file and ticking the task, "
        "then a final message), host networking. The model answers at once, so Codex "
        "time here is start-up and tool plumbing, not thinking.",
        "",
        "### Machine",
        "",
        "| | |",
        "|---|---|",
        *(f"| {name} | {value} |" for name, value in report.machine),
        "",
        "### Results (ms)",
        "",
        "| mode | n | p50 | p90 | mean | min | max |",
        "|---|--:|--:|--:|--:|--:|--:|",
        row("a. direct", a),
        row("b. pipeline", b),
        row("b's container part", c),
        row("b outside its container", outside),
        "",
        f"- **pipeline / direct**: p50 {b[0] / a[0]:.2f}x, mean {b[2] / a[2]:.2f}x.",
        f"- **overhead**: p50 {b[0] - a[0]:+,.0f} ms, mean {b[2] - a[2]:+,.0f} ms; "
        f"median of the per-iteration differences (b - a) {paired:+,.0f} ms.",
        "- *b's container part* is the runner's own `executor.run`; *b outside its "
        "container* is the rest (publish to event: queue, secrets, clone, patch, "
        "artifacts, events).",
        "",
        "### Per iteration (ms, in run order)",
        "",
        "| # | a. direct | b. pipeline | b - a | b's container part | b outside it |",
        "|--:|--:|--:|--:|--:|--:|",
        *(
            f"| {i} | {p.direct:,.0f} | {p.pipeline:,.0f} | "
            f"{p.pipeline - p.direct:+,.0f} | {p.container:,.0f} | "
            f"{p.pipeline - p.container:,.0f} |"
            for i, p in enumerate(pairs, 1)
        ),
        "",
        "### Reading",
        "",
        "- Container start and Codex start-up vary by hundreds of ms between "
        "iterations of the same mode, so with a small N the overhead is uncertain "
        "to about that much; the pipeline's time outside its container varies "
        "less. Rerun both modes side by side rather than comparing against an old "
        "run.",
        "- The ratio holds for an instant model only. A real Codex turn takes "
        "minutes, so the absolute overhead is what carries over, and the ratio "
        "tends to 1.",
        "- Not in the path: the API, Postgres, the outbox relay (the publish stands "
        "in for it) and a process hop (the runner's broker runs in this process). "
        "Logging is at WARNING.",
        "",
    ]
    return "\n".join(lines)


def main() -> int:
    settings = BenchSettings()
    return run_and_write(SECTION, settings.output, bench(settings), render)


if __name__ == "__main__":
    sys.exit(main())
