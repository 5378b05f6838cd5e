"""`make bench-memory`: every service's resident memory at idle and under real load.

The whole local stack as real processes (`spec-workflow up`, as the e2e tests start
it): the API, the relay, pre-flight, the publisher and one Codex runner per shard, on
a private database and vhost, against the local git smart-HTTP server, the
GitHub-compatible API and the scripted model, with real containers (a Codex login
probe in pre-flight, `codex exec` in the runner). Nothing is stubbed: every run ends
with a branch and a pull request.

VmRSS of each process is read from /proc every SAMPLE seconds: once the stack is up,
after WARMUP sequential runs, and through ROUNDS bursts of RUNS runs submitted at
once (peak), each followed by SETTLE seconds of idle. A service whose idle memory
keeps rising from round to round is leaking. The report replaces the
`## bench-memory` section of docs/benchmarks.md.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import socket
import sys
import tempfile
import time
from contextlib import AsyncExitStack
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import httpx
from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from tests.bench.bench_codex import host_facts
from tests.bench.procs import rss_kib
from tests.bench.render import mib
from tests.bench.sections import DOCUMENT, BenchError, run_and_write
from tests.support.api import RUNS, TERMINAL, create_run, wait_for
from tests.support.containers import codex_volumes, container_engine
from tests.support.containers import unique_volume_prefix as volume_prefix
from tests.support.github import FakeGitHub
from tests.support.gitserver import GitSmartHTTPServer
from tests.support.model import ScriptedModel, patch, say
from tests.support.specrepo import AGENT_PATCH, FEATURE_KEY, seed_spec_repo
from tests.support.stack import CODEX_KEY, GITHUB_TOKEN, SHARDS, Stack, launch

SECTION = "## bench-memory"
SAMPLE = 0.2
PROCESSES = (
    "api",
    "relay",
    "preflight",
    "publisher",
    *(f"codex_runner-{n}" for n in range(SHARDS)),
)
RUN_TIMEOUT = 600.0


class BenchSettings(BaseSettings):
    model_config = SettingsConfigDict(extra="ignore")

    runs: int = Field(30, ge=1, le=100, validation_alias="BENCH_MEMORY_RUNS")
    rounds: int = Field(3, ge=1, validation_alias="BENCH_MEMORY_ROUNDS")
    warmup: int = Field(3, ge=1, validation_alias="BENCH_MEMORY_WARMUP")
    settle: float = Field(5.0, ge=0, validation_alias="BENCH_MEMORY_SETTLE")
    output: Path = Field(DOCUMENT, validation_alias="BENCH_MEMORY_OUT")


@dataclass
class Phase:
    name: str
    kib: dict[str, int]  # process -> VmRSS (idle) or its peak (a burst)
    runs: int = 0
    seconds: float = 0.0


@dataclass
class Report:
    settings: BenchSettings
    started: datetime
    machine: list[tuple[str, str]]
    phases: list[Phase] = field(default_factory=list)


def pids(stack: Stack) -> dict[str, int]:
    return {name: stack.pid(name) for name in PROCESSES}


def sample(running: dict[str, int]) -> dict[str, int]:
    found = {name: rss_kib(pid) for name, pid in running.items()}
    gone = [name for name, kib in found.items() if kib is None]
    if gone:
        raise BenchError(f"process(es) gone: {', '.join(gone)}")
    return {name: kib for name, kib in found.items() if kib is not None}


async def idle(stack: Stack, name: str, settle: float) -> Phase:
    """Memory after `settle` seconds with nothing in flight."""
    await asyncio.sleep(settle)
    return Phase(name, sample(pids(stack)))


def repositories(n: int) -> list[str]:
    """One repository a run in flight: a feature has at most one active run."""
    return [f"acme/shop-{i}" for i in range(n)]


async def burst(stack: Stack, client: httpx.AsyncClient, name: str, n: int) -> Phase:
    """`n` runs submitted at once; each process's peak until every one has ended."""
    running = pids(stack)
    peak = sample(running)
    started = time.monotonic()
    ids = {
        (await create_run(client, FEATURE_KEY, repository=repository))["id"]
        for repository in repositories(n)
    }
    statuses: dict[str, str] = {}
    while True:
        for process, kib in sample(running).items():
            peak[process] = max(peak[process], kib)
        page = await client.get(RUNS, params={"limit": 100})
        page.raise_for_status()
        statuses = {r["id"]: r["status"] for r in page.json()["items"]}
        if all(statuses.get(i) in TERMINAL for i in ids):
            break
        if time.monotonic() - started > RUN_TIMEOUT:
            raise BenchError(f"{name}: runs still open after {RUN_TIMEOUT:.0f}s")
        await asyncio.sleep(SAMPLE)
    seconds = time.monotonic() - started
    failed = sorted(i for i in ids if statuses[i] != "succeeded")
    if failed:
        raise BenchError(f"{name}: {len(failed)} run(s) did not succeed: {failed[:5]}")
    return Phase(name, peak, runs=n, seconds=seconds)


async def bench(settings: BenchSettings) -> Report:
    engine = await container_engine()
    steps = [[patch("c1", AGENT_PATCH)], [say("Added the cart model.")]]
    report = Report(settings, datetime.now(UTC), await asyncio.to_thread(host_facts))
    async with AsyncExitStack() as stack:
        home = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="bench-")))
        statsd = stack.enter_context(socket.socket(socket.AF_INET, socket.SOCK_DGRAM))
        statsd.bind(("127.0.0.1", 0))  # the services' StatsD sends land here, unread
        model = stack.enter_context(ScriptedModel(steps, api_key=CODEX_KEY))
        git = stack.enter_context(GitSmartHTTPServer())
        github = stack.enter_context(FakeGitHub(git=git))
        github.add_user("octo", GITHUB_TOKEN)
        repos = [seed_spec_repo(git, name) for name in repositories(settings.runs)]
        for repo in repos:
            github.add_repo(repo.full_name)
            github.grant("octo", repo.full_name, "write")
        auth = json.dumps({"auth_mode": "apikey", "OPENAI_API_KEY": CODEX_KEY})
        volumes = await stack.enter_async_context(
            codex_volumes(engine, volume_prefix("bench_auth_"), SHARDS, auth)
        )
        services = await stack.enter_async_context(
            launch(
                home,
                statsd=statsd,
                forge=(git, github, repos[0]),
                model=model,
                volumes=volumes,
                overrides={"LOG_LEVEL": "INFO"},  # the production default
            )
        )
        client = await stack.enter_async_context(
            httpx.AsyncClient(base_url=services.base_url, timeout=30)
        )
        report.phases.append(await idle(services, "started", settings.settle))
        for _ in range(settings.warmup):
            created = await create_run(
                client, FEATURE_KEY, repository=repos[0].full_name
            )
            run = await wait_for(client, created["id"], timeout=RUN_TIMEOUT)
            if run["status"] != "succeeded":
                raise BenchError(f"warm-up run {run['id']} ended {run['status']}")
        report.phases.append(
            await idle(services, "idle after warm-up", settings.settle)
        )
        for r in range(1, settings.rounds + 1):
            report.phases.append(
                await burst(services, client, f"peak, burst {r}", settings.runs)
            )
            report.phases.append(
                await idle(services, f"idle after burst {r}", settings.settle)
            )
        pulls = sum(len(github.pulls(repo.full_name)) for repo in repos)
        expected = settings.warmup + settings.rounds * settings.runs
        if pulls != expected:
            raise BenchError(f"{pulls} pull requests for {expected} runs")
    return report


def render(report: Report) -> str:
    s = report.settings
    phases = report.phases
    lines = [
        SECTION,
        "",
        f"Last run: {report.started:%Y-%m-%d %H:%M:%S} UTC, `make bench-memory`, "
        f"BENCH_MEMORY_RUNS={s.runs}, BENCH_MEMORY_ROUNDS={s.rounds}, "
        f"BENCH_MEMORY_WARMUP={s.warmup}, BENCH_MEMORY_SETTLE={s.settle:g}.",
        "",
        "- **What runs**: the whole local stack as real processes (`spec-workflow up`, "
        "as the e2e tests start it, LOG_LEVEL=INFO): the API, the relay, pre-flight, "
        f"the publisher and {SHARDS} Codex runners, on a private database and vhost, "
        "against the local git smart-HTTP server, the GitHub-compatible API and the "
        "scripted model (one `apply_patch`, then a final message), with real "
        "containers through the Docker API (Podman here): a Codex login probe in "
        "pre-flight and `codex exec` in a runner per run. Every run ends with a "
        "branch and a pull request (checked: one per run).",
        "- **Phases**: VmRSS of each process (/proc/<pid>/status) once the stack is "
        f"up; after {s.warmup} sequential warm-up runs; then {s.rounds} burst(s) of "
        f"{s.runs} runs submitted at once, sampled every {SAMPLE:g} s until all have "
        f"ended (peak), each followed by {s.settle:g} s idle. The containers' own "
        "memory is the engine's, not counted here.",
        "",
        "### Machine",
        "",
        "| | |",
        "|---|---|",
        *(f"| {k} | {v} |" for k, v in report.machine),
        "",
        "### VmRSS (MiB)",
        "",
        "| phase | " + " | ".join(PROCESSES) + " | **all** |",
        "|---|" + "--:|" * (len(PROCESSES) + 1),
    ]
    for p in phases:
        cells = " | ".join(mib(p.kib[process]) for process in PROCESSES)
        lines.append(f"| {p.name} | {cells} | **{mib(sum(p.kib.values()))}** |")
    lines.append("")
    for p in phases:
        if p.runs:
            lines.append(
                f"- {p.name}: {p.runs} runs in {p.seconds:.1f} s "
                f"({p.runs / p.seconds:.2f} runs/s on {SHARDS} shards), all succeeded."
            )
    idles = [p for p in phases if not p.runs][1:]  # from the idle after warm-up
    lines.append(
        "- Idle growth over each burst (MiB; idle after it minus idle before it): "
        + "; ".join(
            f"{name} "
            + ", ".join(
                f"{(after.kib[name] - before.kib[name]) / 1024:+.1f}"
                for before, after in itertools.pairwise(idles)
            )
            for name in PROCESSES
        )
        + "."
    )
    lines += [
        "- Peaks are the highest of the samples, so a spike shorter than "
        f"{SAMPLE:g} s can be missed. The orchestration bench (`make bench`) reports "
        "the API and relay under its 2,000-run bursts with instant stage responders.",
        "",
    ]
    return "\n".join(lines)


def main() -> int:
    settings = BenchSettings()
    return run_and_write(SECTION, settings.output, bench(settings), render)


if __name__ == "__main__":
    sys.exit(main())
