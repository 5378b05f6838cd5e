"""`make bench`: orchestration through the real broker and database against a Celery
chain, API reads over 100,000 stored runs, and the memory of every process.

One invocation, everything side by side on private databases and vhosts
(`tests.support.infra.provision`, dropped at exit, Ctrl-C included):

1. ours: the real API process (`python -m services.api`: uvicorn, routes, event
   handlers, finalize_run), the real relay (`python -m services.api.relay`) and one
   process of instant stage responders (`tests.bench.responders`: the scripted
   harness answering every stage command at once with `TaskStarted` and a valid
   `TaskSucceeded`). A run goes discover_next_phase -> codex_preflight ->
   submit_codex_job -> apply_and_publish -> finalize_run through the outbox, the relay,
   RabbitMQ, the responders and the API's event handlers.
2. Celery: the same five stages as a chain (`tests.bench.celery_chain`: acks_late,
   reject_on_worker_lost, prefetch multiplier 1, confirms, Postgres result backend),
   its worker a subprocess on its own vhost and database, each stage one committed
   UPDATE of the run row; completion signalled by NOTIFY. `AsyncResult.get()` is
   measured separately.
3. Latency: BENCH_SEQUENTIAL runs per system, one at a time, split over BENCH_ROUNDS
   rounds; throughput: BENCH_BURST_ROUNDS bursts of BENCH_RUNS runs with at most
   BENCH_IN_FLIGHT in flight. The systems alternate, and so does which goes first.
   Commits and rows written per run from pg_stat_database; CPU per run of every
   process (/proc/<pid>/stat) during the bursts; a per-hop split of our latency.
4. RSS (VmRSS) of every process at idle and its peak during its system's bursts; the
   real stage services' idle RSS.
5. The API: BENCH_API_RUNS runs bulk-inserted (then VACUUM, CHECKPOINT), GET /runs/{id}
   and the list under BENCH_API_CONCURRENCY concurrent clients (and one, for
   reference), each endpoint's first round after BENCH_API_WARMUP uncounted requests.

The API runs with AUTH_MODE=BENCH_AUTH_MODE (default token, as in production: every
request carries a bearer token of the default user; `disabled` skips the check).

The report goes to stdout and replaces the `## bench` section of docs/benchmarks.md.
Nothing is gated on absolute times. The full default run takes about 7-15 minutes on
2 cores; shrink it with e.g.
`BENCH_RUNS=200 BENCH_SEQUENTIAL=30 BENCH_API_RUNS=5000 BENCH_GET_RUNS=50`.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import os
import random
import secrets
import signal
import socket
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AsyncExitStack
from dataclasses import dataclass, field
from datetime import UTC, datetime
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

import asyncpg
import httpx
from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict
from sqlalchemy.engine import make_url

from services.api import accounts
from services.api.db import Database
from services.api.migrate import prepare_database
from services.api.models import DEFAULT_USER_ID, User
from services.api.settings import AuthMode
from tests.bench import bench_api, drivers, rawhttp
from tests.bench.bench_codex import host_facts
from tests.bench.breakdown import Counters, Hops, broker_counts, counters, hops
from tests.bench.procs import Service, cpu_seconds, pids_named
from tests.bench.render import BROKER, render
from tests.bench.sections import DOCUMENT, BenchError, write_section
from tests.bench.stats import split
from tests.support.infra import Infra, provision

ROOT = Path(__file__).resolve().parents[2]
SECTION = "## bench"
READY_TIMEOUT = 60.0
PROVIDER_KEYS = (
    "OPENAI_API_KEY",
    "GOOGLE_API_KEY",
    "ANTHROPIC_API_KEY",
    "GITHUB_TOKEN",
)


class BenchSettings(BaseSettings):
    """Environment only: `BENCH_RUNS=200 BENCH_SEQUENTIAL=50 make bench`."""

    model_config = SettingsConfigDict(env_ignore_empty=True, extra="ignore")

    runs: int = Field(2_000, ge=10, validation_alias="BENCH_RUNS")
    in_flight: int = Field(100, ge=1, validation_alias="BENCH_IN_FLIGHT")
    sequential: int = Field(300, ge=5, validation_alias="BENCH_SEQUENTIAL")
    rounds: int = Field(3, ge=1, validation_alias="BENCH_ROUNDS")
    """Latency rounds: BENCH_SEQUENTIAL runs per system are split over them."""
    burst_rounds: int = Field(3, ge=1, validation_alias="BENCH_BURST_ROUNDS")
    warmup: int = Field(20, ge=1, validation_alias="BENCH_WARMUP")
    get_sequential: int = Field(40, ge=0, validation_alias="BENCH_GET_SEQUENTIAL")
    get_runs: int = Field(300, ge=0, validation_alias="BENCH_GET_RUNS")
    celery_concurrency: int = Field(
        os.cpu_count() or 2, ge=1, validation_alias="BENCH_CELERY_CONCURRENCY"
    )
    log_level: str = Field("WARNING", validation_alias="BENCH_LOG_LEVEL")
    auth_mode: AuthMode = Field(AuthMode.TOKEN, validation_alias="BENCH_AUTH_MODE")
    """The API's AUTH_MODE. token (as in production): every request carries a bearer
    token of the default user, which the API checks against the database (then
    from its token cache for TOKEN_CACHE_SECONDS)."""
    api_runs: int = Field(100_000, ge=0, validation_alias="BENCH_API_RUNS")
    api_requests: int = Field(600, ge=10, validation_alias="BENCH_API_REQUESTS")
    api_concurrency: int = Field(10, ge=1, validation_alias="BENCH_API_CONCURRENCY")
    api_rounds: int = Field(3, ge=1, validation_alias="BENCH_API_ROUNDS")
    api_warmup: int = Field(300, ge=0, validation_alias="BENCH_API_WARMUP")
    output: Path = Field(DOCUMENT, validation_alias="BENCH_OUT")
    logs: Path | None = Field(None, validation_alias="BENCH_LOGS")
    """Keep the processes' logs here (default: a temporary folder, removed)."""


@dataclass
class Sequential:
    system: str  # "ours" | "celery"
    index: int
    ms: list[float]


@dataclass
class Burst:
    system: str
    index: int
    seconds: float
    ms: list[float]
    cpu: dict[str, float] = field(default_factory=dict)
    """CPU seconds used during the burst, by process (group)."""

    @property
    def rate(self) -> float:
        return len(self.ms) / self.seconds


@dataclass
class Report:
    settings: BenchSettings
    started: datetime
    machine: list[tuple[str, str]]
    load_before: tuple[float, float, float]
    load_after: tuple[float, float, float] = (0.0, 0.0, 0.0)
    seconds: float = 0.0
    sequential: list[Sequential] = field(default_factory=list)
    bursts: list[Burst] = field(default_factory=list)
    get_sequential_ms: list[float] = field(default_factory=list)
    get_burst_seconds: float = 0.0
    commits: dict[tuple[str, str], tuple[int, Counters]] = field(default_factory=dict)
    """(phase, system) -> (runs, pg_stat_database difference)."""
    messages: dict[tuple[str, str], tuple[int, int]] = field(default_factory=dict)
    """(phase, system) -> (published, delivered) on the system's vhost."""
    hops: Hops | None = None
    idle_kib: dict[str, int] = field(default_factory=dict)
    load_kib: dict[str, int] = field(default_factory=dict)
    workers_idle_kib: dict[str, int] = field(default_factory=dict)
    workers_missing: list[str] = field(default_factory=list)
    loaded: bench_api.Loaded | None = None
    api: list[bench_api.Load] = field(default_factory=list)
    plans: list[tuple[str, str]] = field(default_factory=list)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def plain_dsn(database_url: str) -> str:
    url = make_url(database_url).set(drivername="postgresql")
    return url.render_as_string(hide_password=False)


def say(message: str) -> None:
    sys.stderr.write(f"[bench] {message}\n")
    sys.stderr.flush()


@dataclass
class Rig:
    """Where everything lives for this invocation."""

    settings: BenchSettings
    home: Path
    ours: Infra
    celery: Infra
    port: int = field(default_factory=free_port)
    secrets_key: str = field(
        default_factory=lambda: base64.urlsafe_b64encode(os.urandom(32)).decode()
    )
    token: str = field(default_factory=lambda: secrets.token_hex(24))

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def env(self, **extra: str) -> dict[str, str]:
        return {
            **os.environ,
            **dict.fromkeys(PROVIDER_KEYS, ""),
            "PYTHONPATH": str(ROOT),
            "DATABASE_URL": self.ours.database_url,
            "RABBITMQ_URL": self.ours.rabbitmq_url,
            "RABBITMQ_MANAGEMENT_URL": self.ours.management_url,
            "API_HOST": "127.0.0.1",
            "API_PORT": str(self.port),
            "API_URL": self.base_url,
            "LOG_LEVEL": self.settings.log_level,
            "AUTH_MODE": self.settings.auth_mode.value,
            "LOG_JSON": "true",
            "SECRETS_KEY": self.secrets_key,
            "INTERNAL_API_TOKEN": self.token,
            "ARTIFACTS_ROOT": str(self.home / "artifacts"),
            "WORKSPACES_ROOT": str(self.home / "work"),
            "CODEX_HOMES_ROOT": str(self.home / "codex-homes"),
            "VAR_DIR": str(self.home / "var"),
            "DEV_SECRETS_KEY_FILE": str(self.home / "var" / "secrets.key"),
            "CODEX_SHARDS": "3",
            "STATSD_HOST": "",
            "SPEC_WORKFLOW_METRICS_HOST": "",
            **extra,
        }

    def service(self, name: str, *args: str, **extra: str) -> Service:
        return Service(
            name,
            [sys.executable, *args],
            self.env(**extra),
            (self.settings.logs or self.home / "log") / f"{name}.log",
            self.home,
        )

    def ours_services(self) -> list[Service]:
        return [
            self.service("api", "-m", "services.api"),
            self.service(
                "relay",
                "-m",
                "services.api.relay",
                LIVENESS_FILE=str(self.home / "relay.alive"),
            ),
            self.service("responders", "-m", "tests.bench.responders"),
        ]

    def celery_worker(self) -> Service:
        return self.service(
            "celery",
            "-m",
            "celery",
            "-A",
            "tests.bench.celery_chain",
            "worker",
            "--loglevel=WARNING",
            f"--concurrency={self.settings.celery_concurrency}",
            "-n",
            f"bench-{secrets.token_hex(3)}@%h",
            BENCH_CELERY_BROKER=self.celery.rabbitmq_url,
            BENCH_CELERY_DATABASE=plain_dsn(self.celery.database_url),
        )

    def stage_workers(self) -> list[Service]:
        """The real stage services, for their idle memory only."""
        alive = self.home / "alive"
        return [
            self.service(
                "preflight",
                "-m",
                "faststream",
                "run",
                "services.preflight.main:app",
                LIVENESS_FILE=str(alive / "preflight"),
            ),
            self.service(
                "publisher",
                "-m",
                "faststream",
                "run",
                "services.publisher.main:app",
                LIVENESS_FILE=str(alive / "publisher"),
            ),
            self.service(
                "codex_runner-0",
                "-m",
                "faststream",
                "run",
                "services.codex_runner.main:app",
                LIVENESS_FILE=str(alive / "codex_runner-0"),
                EXECUTOR="process",
                CODEX_SHARD_INDEX="0",
            ),
        ]


async def wait_until(
    what: str, check: Callable[[], Awaitable[bool]], services: list[Service]
) -> None:
    deadline = time.monotonic() + READY_TIMEOUT
    while not await check():
        for service in services:
            if not service.alive():
                raise BenchError(f"{service.name} exited:\n{service.tail()}")
        if time.monotonic() > deadline:
            tails = "\n".join(f"--- {s.name}\n{s.tail()}" for s in services)
            raise BenchError(f"{what} not ready in {READY_TIMEOUT:g}s\n{tails}")
        await asyncio.sleep(0.2)


async def start_ours(rig: Rig, stack: AsyncExitStack) -> list[Service]:
    services = rig.ours_services()
    for service in services:
        service.start()
        stack.callback(service.stop)
    responders = services[2]

    async def ready() -> bool:
        try:
            async with httpx.AsyncClient(timeout=2.0) as client:
                answer = await client.get(f"{rig.base_url}/readyz")
        except httpx.TransportError:
            return False
        return (
            answer.status_code == 200
            and (rig.home / "relay.alive").exists()
            and "ready" in responders.tail(5)
        )

    await wait_until("our stack", ready, services)
    return services


async def bearer_headers(rig: Rig) -> dict[str, str]:
    """Token mode: a bearer token of the default user (created by the API at
    start-up), as `spec-workflow tokens create` issues it; disabled mode: none."""
    if rig.settings.auth_mode is not AuthMode.TOKEN:
        return {}
    database = Database(rig.ours.database_url, pool_size=1)
    try:
        async with database.new_session() as session, session.begin():
            user = await session.get(User, DEFAULT_USER_ID)
            if user is None:
                raise BenchError("the API did not create the default user")
            issued = await accounts.issue_token(session, user, name="bench", ttl=None)
    finally:
        await database.dispose()
    return {"Authorization": f"Bearer {issued.token}"}


DRIVER = "driver (this process)"
POSTGRES = "PostgreSQL backends of its database"


class Backends:
    """CPU seconds of one database's backends over a window, sampled while it runs,
    so connections a pool opens and closes within it count too (those living less
    than a sampling interval excepted)."""

    def __init__(self, admin: asyncpg.Connection, database: str | None) -> None:
        self.admin, self.database = admin, database
        self.first: dict[int, float] = {}
        self.last: dict[int, float] = {}
        self.started = False

    async def sample(self) -> None:
        rows = await self.admin.fetch(
            "SELECT pid FROM pg_stat_activity WHERE datname = $1", self.database
        )
        for row in rows:
            pid = int(row["pid"])
            seconds = cpu_seconds(pid)
            if seconds is None:
                continue
            # Backends there at the start count from their value then; later ones
            # were born inside the window and count from 0.
            self.first.setdefault(pid, seconds if not self.started else 0.0)
            self.last[pid] = seconds
        self.started = True

    def used(self) -> float:
        return sum(self.last[pid] - self.first[pid] for pid in self.last)


@contextlib.asynccontextmanager
async def sampling(
    services: list[Service], backends: Backends | None = None
) -> AsyncIterator[None]:
    """Sample the peak RSS of `services` (and the backends' CPU) every 0.25 s while
    the block runs."""

    async def sample() -> None:
        while True:
            for service in services:
                service.sample_peak()
            if backends is not None:
                await backends.sample()
            await asyncio.sleep(0.25)

    if backends is not None:
        await backends.sample()
    task = asyncio.create_task(sample())
    try:
        yield
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        if backends is not None:
            await backends.sample()


def cpu_snapshot(services: list[Service]) -> dict[str, float]:
    """CPU seconds so far: each service, this process and the broker node."""
    snapshot = {service.name: service.cpu() for service in services}
    snapshot[DRIVER] = time.process_time()
    snapshot[BROKER] = sum(cpu_seconds(p) or 0.0 for p in pids_named("beam.smp"))
    return snapshot


def memory(services: list[Service]) -> dict[str, int]:
    found: dict[str, int] = {}
    for service in services:
        found.update(service.memory())
    return found


async def orchestration(
    report: Report,
    rig: Rig,
    ours: drivers.Ours,
    chain: drivers.CeleryChain,
    services: dict[str, list[Service]],
    admin: asyncpg.Connection,
) -> None:
    settings = report.settings
    one = {"ours": ours.one, "celery": chain.one}
    names = {
        "ours": make_url(rig.ours.database_url).database,
        "celery": make_url(rig.celery.database_url).database,
    }
    infras = {"ours": rig.ours, "celery": rig.celery}

    def order(index: int) -> list[str]:
        return ["ours", "celery"] if index % 2 else ["celery", "ours"]

    started = time.perf_counter()
    await asyncio.sleep(STATS_LAG)
    before = await checkpoint(admin, names, infras)
    for index, n in enumerate(split(settings.sequential, settings.rounds), 1):
        for system in order(index):
            say(f"latency round {index}: {system}, {n} sequential runs")
            ours.record = system == "ours"
            ms = await drivers.sequential(one[system], f"seq-{system}-{index}", n)
            ours.record = False
            report.sequential.append(Sequential(system, index, ms))
    before = await commits(
        report, admin, names, infras, before, "sequential", settings.sequential
    )
    for index in range(1, settings.burst_rounds + 1):
        for system in order(index):
            say(
                f"burst {index}: {system}, {settings.runs:,} runs "
                f"(<= {settings.in_flight} in flight)"
            )
            backends = Backends(admin, names[system])
            before_cpu = cpu_snapshot(services[system])
            async with sampling(services[system], backends):
                seconds, ms = await drivers.burst(
                    one[system],
                    f"burst-{system}-{index}",
                    settings.runs,
                    settings.in_flight,
                )
            after_cpu = cpu_snapshot(services[system])
            used = {
                name: seconds - before_cpu.get(name, 0.0)
                for name, seconds in after_cpu.items()
            }
            used[POSTGRES] = backends.used()
            result = Burst(system, index, seconds, ms, used)
            report.bursts.append(result)
            say(f"  {system}: {result.rate:,.1f} runs/s")
    await commits(
        report,
        admin,
        names,
        infras,
        before,
        "burst",
        settings.runs * settings.burst_rounds,
    )
    report.seconds = time.perf_counter() - started
    for group in services.values():
        for service in group:
            report.load_kib.update(service.peak_kib)


STATS_LAG = 6.0
"""Seconds for counters to catch up: backends flush theirs within about 1 s, the
management API samples every 5 s."""
Checkpoint = dict[str, tuple[Counters, tuple[int, int]]]


async def checkpoint(
    admin: asyncpg.Connection,
    names: dict[str, str | None],
    infras: dict[str, Infra],
) -> Checkpoint:
    return {
        system: (await counters(admin, name), await broker_counts(infras[system]))
        for system, name in names.items()
    }


async def commits(
    report: Report,
    admin: asyncpg.Connection,
    names: dict[str, str | None],
    infras: dict[str, Infra],
    before: Checkpoint,
    phase: str,
    runs: int,
) -> Checkpoint:
    """Record the phase's database and broker work; returns the new checkpoint."""
    await asyncio.sleep(STATS_LAG)
    after = await checkpoint(admin, names, infras)
    for system, (database, (published, delivered)) in after.items():
        old_database, (old_published, old_delivered) = before[system]
        report.commits[(phase, system)] = (runs, database - old_database)
        report.messages[(phase, system)] = (
            published - old_published,
            delivered - old_delivered,
        )
    return after


async def celery_get(report: Report, chain: drivers.CeleryChain) -> None:
    settings = report.settings
    if settings.get_sequential:
        say(f"celery AsyncResult.get(): {settings.get_sequential} sequential runs")
        report.get_sequential_ms = await chain.get_sequential(
            "get-seq", settings.get_sequential
        )
    if settings.get_runs:
        say(f"celery AsyncResult.get(): burst of {settings.get_runs}")
        report.get_burst_seconds = await chain.get_burst(
            "get-burst", settings.get_runs, settings.in_flight
        )


async def stage_workers_idle(report: Report, rig: Rig) -> None:
    """Start the real stage services on our vhost, read their idle RSS, stop them."""
    workers = rig.stage_workers()
    try:
        for worker in workers:
            worker.start()
        deadline = time.monotonic() + READY_TIMEOUT
        pending = list(workers)
        while pending and time.monotonic() < deadline:
            pending = [
                w
                for w in pending
                if w.alive() and not (rig.home / "alive" / w.name).exists()
            ]
            await asyncio.sleep(0.2)
        await asyncio.sleep(1.0)
        for worker in workers:
            found = worker.memory()
            if found and (rig.home / "alive" / worker.name).exists():
                report.workers_idle_kib.update(found)
            else:
                report.workers_missing.append(worker.name)
                say(f"{worker.name} did not come up:\n{worker.tail(10)}")
    finally:
        for worker in workers:
            worker.stop()


async def read_cpu(
    api: Service, admin: asyncpg.Connection, database: str | None
) -> dict[str, float]:
    """CPU seconds so far of the API process, this process (the clients) and the
    database's backends alive now (pooled: they outlive a round)."""
    rows = await admin.fetch(
        "SELECT pid FROM pg_stat_activity WHERE datname = $1", database
    )
    backends = (cpu_seconds(int(row["pid"])) for row in rows)
    return {
        api.name: api.cpu(),
        DRIVER: time.process_time(),
        POSTGRES: sum(s for s in backends if s is not None),
    }


async def api_reads(
    report: Report,
    rig: Rig,
    api: Service,
    admin: asyncpg.Connection,
    headers: dict[str, str],
) -> None:
    settings = report.settings
    database = make_url(rig.ours.database_url).database
    connection = await asyncpg.connect(plain_dsn(rig.ours.database_url))
    try:
        say(f"bulk load to {settings.api_runs:,} runs")
        report.loaded = await bench_api.load_runs(connection, settings.api_runs)
        rng = random.Random(9)
        targets = await bench_api.Targets.sample(connection)
    finally:
        await connection.close()
    report.plans = await bench_api.list_plans(rig.ours.database_url)
    limits = httpx.Limits(  # keepalive_expiry: see rawhttp.IDLE_EXPIRY
        max_connections=200, max_keepalive_connections=200, keepalive_expiry=2.0
    )
    async with httpx.AsyncClient(
        base_url=rig.base_url, timeout=30.0, limits=limits, headers=headers
    ) as client:
        levels = [(1, 1), (settings.api_concurrency, settings.api_rounds)]
        for concurrency, rounds in levels:
            for index in range(1, rounds + 1):
                for endpoint in bench_api.endpoints(targets):
                    load = await bench_api.measure(
                        client,
                        endpoint,
                        concurrency=concurrency,
                        requests=settings.api_requests,
                        warmup=settings.api_warmup if index == 1 else 0,
                        rng=rng,
                        round_=index,
                        cpu=lambda: read_cpu(api, admin, database),
                    )
                    report.api.append(load)
                    say(
                        f"{load.endpoint} x{concurrency} round {index}: "
                        f"p50 {load.latency.p50:.1f} ms, p99 {load.latency.p99:.1f} "
                        f"ms, {load.rate:,.0f}/s"
                    )


def versions() -> list[tuple[str, str]]:
    names = (
        "faststream",
        "aio-pika",
        "fastapi",
        "uvicorn",
        "sqlalchemy",
        "asyncpg",
        "celery",
        "kombu",
        "amqp",
        "psycopg2-binary",
    )
    found = []
    for name in names:
        try:
            found.append(f"{name} {version(name)}")
        except PackageNotFoundError:
            found.append(f"{name} (not installed)")
    return [("packages", ", ".join(found))]


async def machine(admin: asyncpg.Connection, infra: Infra) -> list[tuple[str, str]]:
    facts = [
        f for f in await asyncio.to_thread(host_facts) if not f[0].startswith("load")
    ]
    server = await admin.fetchval("SHOW server_version")
    settings = {
        name: await admin.fetchval(f"SHOW {name}")
        for name in ("shared_buffers", "synchronous_commit", "fsync", "wal_sync_method")
    }
    async with infra.management() as client:
        overview = (await client.get("/overview")).json()
    return [
        *facts,
        (
            "PostgreSQL",
            f"{server}, loopback ("
            + ", ".join(f"{k} {v}" for k, v in settings.items())
            + ")",
        ),
        (
            "RabbitMQ",
            f"{overview.get('rabbitmq_version')} "
            f"(Erlang {overview.get('erlang_version')}), one node on loopback",
        ),
        *versions(),
    ]


async def bench(settings: BenchSettings) -> Report:
    async with AsyncExitStack() as stack:
        home = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="bench-")))
        ours_infra = await stack.enter_async_context(provision())
        celery_infra = await stack.enter_async_context(provision())
        admin_url = make_url(ours_infra.database_url).set(
            drivername="postgresql", database="postgres"
        )
        admin = await asyncpg.connect(admin_url.render_as_string(hide_password=False))
        stack.push_async_callback(admin.close)
        report = Report(
            settings,
            datetime.now(UTC),
            await machine(admin, ours_infra),
            os.getloadavg(),
        )
        say("migrating both databases")
        await prepare_database(ours_infra.database_url)
        await prepare_database(celery_infra.database_url)
        rig = Rig(settings, home, ours_infra, celery_infra)

        say("starting the API, the relay, the responders and the Celery worker")
        ours_services = await start_ours(rig, stack)
        worker = rig.celery_worker()
        worker.start()
        stack.callback(worker.stop)

        from tests.bench import celery_chain  # the bench extra: imported only here

        celery_chain.configure(celery_infra.rabbitmq_url, celery_infra.database_url)
        headers = await bearer_headers(rig)
        ours = drivers.Ours(rig.base_url, ours_infra.rabbitmq_url, headers)
        await ours.open()
        stack.push_async_callback(ours.close)
        chain = drivers.CeleryChain(
            plain_dsn(celery_infra.database_url), celery_chain.start
        )
        await chain.open(celery_chain.DONE_CHANNEL, celery_chain.INSERT_RUN)
        stack.push_async_callback(chain.close)

        say(f"warm-up: {settings.warmup} runs each")
        await drivers.sequential(ours.one, "warm-ours", settings.warmup)
        if not worker.alive():
            raise BenchError(f"the Celery worker exited:\n{worker.tail()}")
        await drivers.sequential(chain.one, "warm-celery", settings.warmup)
        await asyncio.sleep(2.0)
        report.idle_kib = memory([*ours_services, worker])

        services = {"ours": ours_services, "celery": [worker]}
        await orchestration(report, rig, ours, chain, services, admin)
        report.hops = await hops(
            plain_dsn(ours_infra.database_url), "seq-ours-%", ours.timings
        )
        await celery_get(report, chain)

        worker.stop()
        ours_services[2].stop()  # the responders: the real stages come up instead
        say("idle memory of the real stage services")
        await stage_workers_idle(report, rig)
        await api_reads(report, rig, ours_services[0], admin, headers)
        report.load_after = os.getloadavg()
    return report


def main() -> int:
    settings = BenchSettings()

    async def run() -> Report:
        task = asyncio.current_task()
        assert task is not None
        asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, task.cancel)
        return await bench(settings)

    try:
        report = asyncio.run(run())
    except (BenchError, drivers.RunFailed, rawhttp.BadAnswer) as exc:
        say(f"failed: {exc}")
        return 1
    except (KeyboardInterrupt, asyncio.CancelledError):
        say("interrupted; processes stopped, databases and vhosts dropped")
        return 130
    write_section(settings.output, render(report), SECTION)
    return 0


if __name__ == "__main__":
    sys.exit(main())
