"""`make bench-logs`: the log sink's sustained ingest rate and `GET /api/logs` latency.

One invocation on a private database and vhost (`tests.support.infra.provision`),
the real API app (`create_app`, its lifespan started, so its AMQP subscribers run):

1. ingest: `BENCH_LOG_RECORDS` records shaped as `shared.logshape.shape` writes them go
   through a real `LogShipper` (its buffer, batching and `broker_publisher`) on its own
   broker connection to `spec_workflow.logs`; the API's `api.log_records` subscriber
   (`logsink.store_shipped`) inserts them into `log_records`. The clock runs from the
   first publish until `count(*)` reaches the total. Target >= 5,000 records/s.
2. query: the table is bulk-loaded to `BENCH_LOG_ROWS` rows (`INSERT ... SELECT
   generate_series`) over `BENCH_LOG_RUNS` run ids with realistic `details`, then
   ANALYZEd; `GET /api/logs?runId=<random run>` (default page, 100 newest) is timed
   `BENCH_LOG_QUERIES` times through the app over `httpx.ASGITransport` (in process,
   no socket), plus `details.codex_queue=codex-1` queries. Target p99 <= 50 ms.

The report goes to stdout and replaces the `## bench-logs` section of
docs/benchmarks.md, keeping the others.
"""

from __future__ import annotations

import asyncio
import base64
import logging
import os
import random
import secrets
import statistics
import sys
import time
from collections.abc import Sequence
from contextlib import AsyncExitStack
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from uuid import uuid4

import asyncpg
import httpx
from faststream.rabbit import RabbitBroker
from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict
from sqlalchemy.engine import make_url

from services.api.main import create_app
from services.api.migrate import prepare_database
from services.api.settings import Settings
from shared.logship import LogShipper, broker_publisher
from tests.bench.bench_codex import host_facts, summary
from tests.bench.sections import DOCUMENT, BenchError, run_and_write
from tests.support.infra import Infra, provision
from tests.support.lifespan import lifespan

SECTION = "## bench-logs"
INGEST_TARGET = 5_000.0  # records/s
P99_TARGET = 50.0  # ms
INGEST_TIMEOUT = 600.0
SERVICES = ("orchestrator", "codex_runner", "api", "relay")
TASKS = ("discover_next_phase", "submit_codex_job", "apply_and_publish", "finalize_run")


class BenchSettings(BaseSettings):
    """Environment only: `make bench-logs BENCH_LOG_RECORDS=100000`."""

    model_config = SettingsConfigDict(env_ignore_empty=True, extra="ignore")

    records: int = Field(200_000, ge=1_000, validation_alias="BENCH_LOG_RECORDS")
    rows: int = Field(1_000_000, ge=10_000, validation_alias="BENCH_LOG_ROWS")
    runs: int = Field(2_000, ge=10, validation_alias="BENCH_LOG_RUNS")
    queries: int = Field(500, ge=10, validation_alias="BENCH_LOG_QUERIES")
    details_queries: int = Field(
        100, ge=1, validation_alias="BENCH_LOG_DETAILS_QUERIES"
    )
    output: Path = Field(DOCUMENT, validation_alias="BENCH_OUT")


def record(n: int, run_ids: Sequence[str]) -> dict[str, Any]:
    """One record as `shared.logshape.shape` makes it for a task line."""
    run = run_ids[n % len(run_ids)]
    shard = n % 3
    return {
        "time": datetime.now(UTC).isoformat(),
        "level": "INFO" if n % 10 else "WARNING",
        "service": SERVICES[n % len(SERVICES)],
        "message": f"Spec workflow task progress step={n} shard={shard}",
        "run_id": run,
        "task": TASKS[n % len(TASKS)],
        "attempt": 1 + n % 2,
        "details": {
            "logger_name": "services.codex_runner.runner",
            "codex_queue": f"codex-{shard}",
            "codex_shard_index": shard,
            "elapsed_ms": n % 5_000,
            "summary": {"files": n % 7, "lines": n % 211},
        },
    }


@dataclass
class Ingest:
    records: int
    seconds: float
    publish_seconds: float
    dropped: int
    batches: int

    @property
    def rate(self) -> float:
        return self.records / self.seconds


@dataclass
class Latency:
    name: str
    ms: list[float]
    rows: int

    def stats(self) -> tuple[float, float, float, float, float, float]:
        p50, p90, mean, low, high = summary(self.ms)
        p99 = statistics.quantiles(sorted(self.ms), n=100, method="inclusive")[-1]
        return p50, p90, p99, mean, low, high


@dataclass
class Report:
    settings: BenchSettings
    started: datetime
    machine: list[tuple[str, str]]
    ingest: Ingest | None = None
    load_seconds: float = 0.0
    table_size: str = ""
    latencies: list[Latency] = field(default_factory=list)
    plans: list[tuple[str, str]] = field(default_factory=list)


async def count(connection: asyncpg.Connection) -> int:
    return int(await connection.fetchval("SELECT count(*) FROM log_records"))


async def ingest(
    settings: BenchSettings, infra: Infra, connection: asyncpg.Connection
) -> Ingest:
    run_ids = [str(uuid4()) for _ in range(200)]
    payload = [record(n, run_ids) for n in range(settings.records)]
    broker = RabbitBroker(infra.rabbitmq_url, logger=logging.getLogger("bench.ship"))
    await broker.connect()
    try:
        shipper = LogShipper("bench", broker_publisher(broker))
        batches = 0
        started = time.perf_counter()
        # The shipper's own loop, driven inline: fill its bounded buffer as a busy
        # service would, publish batch by batch (`flush_batch`, as `_ship_forever`).
        index = 0
        while index < len(payload):
            room = shipper.maxsize - len(shipper.buffer)
            shipper.buffer.extend(payload[index : index + room])
            index += room
            while shipper.buffer:
                await shipper.flush_batch()
                batches += 1
        published = time.perf_counter() - started
        while (seen := await count(connection)) < settings.records:
            if time.perf_counter() - started > INGEST_TIMEOUT:
                raise BenchError(f"{seen} of {settings.records} records stored")
            await asyncio.sleep(0.05)
        elapsed = time.perf_counter() - started
    finally:
        await broker.stop()
    if shipper.dropped or seen != settings.records:
        raise BenchError(f"{shipper.dropped} dropped, {seen} stored")
    return Ingest(settings.records, elapsed, published, shipper.dropped, batches)


LOAD = """
INSERT INTO log_records
    (ts, service, level, level_no, message, run_id, task, attempt, details)
SELECT
    now() - make_interval(secs => ($1 - g) * 0.05),
    (ARRAY['orchestrator','codex_runner','api','relay'])[1 + g % 4],
    CASE WHEN g % 10 = 0 THEN 'WARNING' ELSE 'INFO' END,
    CASE WHEN g % 10 = 0 THEN 30 ELSE 20 END,
    'Spec workflow task progress step=' || g || ' shard=' || g % 3,
    runs.ids[1 + (hashint4(g) & 2147483647) % $2],
    (ARRAY['discover_next_phase','submit_codex_job','apply_and_publish',
           'finalize_run'])[1 + g % 4],
    1 + g % 2,
    jsonb_build_object(
        'logger_name', 'services.codex_runner.runner',
        'codex_queue', 'codex-' || g % 3,
        'codex_shard_index', g % 3,
        'elapsed_ms', g % 5000,
        'summary', jsonb_build_object('files', g % 7, 'lines', g % 211))
FROM generate_series(1, $1) AS g,
     (SELECT $3::uuid[] AS ids) AS runs
"""


async def load(
    settings: BenchSettings, connection: asyncpg.Connection
) -> tuple[list[str], float]:
    """Top the table up to `rows` rows over `runs` run ids; ANALYZE."""
    run_ids = [str(uuid4()) for _ in range(settings.runs)]
    missing = settings.rows - await count(connection)
    started = time.perf_counter()
    if missing > 0:
        await connection.execute(LOAD, missing, settings.runs, run_ids, timeout=3_600)
    await connection.execute("VACUUM ANALYZE log_records", timeout=3_600)
    return run_ids, time.perf_counter() - started


async def timed(
    client: httpx.AsyncClient, name: str, params: Sequence[dict[str, str]]
) -> Latency:
    for warm in params[:5]:
        (await client.get("/api/logs", params=warm)).raise_for_status()
    ms: list[float] = []
    rows = 0
    for query in params:
        started = time.perf_counter()
        response = await client.get("/api/logs", params=query)
        ms.append((time.perf_counter() - started) * 1000)
        if response.status_code != 200:
            raise BenchError(f"GET /api/logs {query}: {response.status_code}")
        rows += len(response.json()["items"])
    return Latency(name, ms, rows)


async def explain(connection: asyncpg.Connection, where: str, arg: str) -> str:
    rows = await connection.fetch(
        "EXPLAIN (ANALYZE, COSTS OFF, TIMING ON) SELECT * FROM log_records "
        f"WHERE {where} ORDER BY id DESC LIMIT 101",
        arg,
    )
    return "\n".join(r[0] for r in rows)


async def machine(
    connection: asyncpg.Connection, infra: Infra
) -> list[tuple[str, str]]:
    facts = await asyncio.to_thread(host_facts)
    version = await connection.fetchval("SHOW server_version")
    shared_buffers = await connection.fetchval("SHOW shared_buffers")
    async with infra.management() as client:
        overview = (await client.get("/overview")).json()
    return [
        *facts,
        ("PostgreSQL", f"{version} (shared_buffers {shared_buffers}), loopback"),
        (
            "RabbitMQ",
            f"{overview.get('rabbitmq_version')} "
            f"(Erlang {overview.get('erlang_version')}), one node on loopback",
        ),
    ]


async def bench(settings: BenchSettings) -> Report:
    async with AsyncExitStack() as stack:
        infra = await stack.enter_async_context(provision())
        await prepare_database(infra.database_url)
        dsn = make_url(infra.database_url).set(drivername="postgresql")
        connection = await asyncpg.connect(dsn.render_as_string(hide_password=False))
        stack.push_async_callback(connection.close)
        report = Report(settings, datetime.now(UTC), await machine(connection, infra))
        app = create_app(
            Settings(
                **{  # type: ignore[arg-type]
                    "DATABASE_URL": infra.database_url,
                    "RABBITMQ_URL": infra.rabbitmq_url,
                    "LOG_JSON": False,
                    "LOG_LEVEL": "WARNING",
                    "SECRETS_KEY": base64.urlsafe_b64encode(os.urandom(32)).decode(),
                    "INTERNAL_API_TOKEN": secrets.token_hex(24),
                }
            )
        )
        await stack.enter_async_context(lifespan(app))
        client = await stack.enter_async_context(
            httpx.AsyncClient(
                transport=httpx.ASGITransport(app=app), base_url="http://api"
            )
        )

        sys.stderr.write(f"[bench-logs] ingest of {settings.records:,} records\n")
        report.ingest = await ingest(settings, infra, connection)
        sys.stderr.write(f"[bench-logs] {report.ingest.rate:,.0f} records/s\n")

        sys.stderr.write(f"[bench-logs] bulk load to {settings.rows:,} rows\n")
        run_ids, report.load_seconds = await load(settings, connection)
        report.table_size = await connection.fetchval(
            "SELECT pg_size_pretty(pg_total_relation_size('log_records'))"
        )
        rng = random.Random(7)
        by_run = [{"runId": rng.choice(run_ids)} for _ in range(settings.queries)]
        report.latencies.append(await timed(client, "runId=<random>", by_run))
        by_details = [{"details.codex_queue": "codex-1"}] * settings.details_queries
        report.latencies.append(
            await timed(client, "details.codex_queue=codex-1", by_details)
        )
        mixed = [
            {"runId": rng.choice(run_ids), "details.codex_queue": "codex-1"}
            for _ in range(settings.details_queries)
        ]
        report.latencies.append(
            await timed(client, "runId=<random>&details.codex_queue=codex-1", mixed)
        )
        report.plans.append(
            ("runId", await explain(connection, "run_id = $1::uuid", run_ids[0]))
        )
        report.plans.append(
            (
                "details.codex_queue",
                await explain(
                    connection, "details @> $1::jsonb", '{"codex_queue":"codex-1"}'
                ),
            )
        )
    return report


def render(report: Report) -> str:
    settings, ingest_ = report.settings, report.ingest
    assert ingest_ is not None
    when = report.started.strftime("%Y-%m-%d %H:%M:%S UTC")
    met = ingest_.rate >= INGEST_TARGET
    by_run = report.latencies[0].stats()
    p99_met = by_run[2] <= P99_TARGET
    lines = [
        SECTION,
        "",
        f"Last run: {when}, `make bench-logs`, BENCH_LOG_RECORDS={settings.records}, "
        f"BENCH_LOG_ROWS={settings.rows}, BENCH_LOG_RUNS={settings.runs}, "
        f"BENCH_LOG_QUERIES={settings.queries}, "
        f"BENCH_LOG_DETAILS_QUERIES={settings.details_queries}; one process, a private "
        "database and vhost, the real API app (`create_app`, lifespan started).",
        "",
        "- **ingest**: records shaped as `shared.logshape.shape` does (run, task, "
        "attempt, five `details` keys) go through a real `LogShipper` (bounded buffer, "
        "500-record batches grouped by `log.<service>.<level>`, `broker_publisher`: "
        "transient, 2 s limit) on its own connection to `spec_workflow.logs`; the "
        "API's "
        "`api.log_records` subscriber (`logsink.store_shipped`: parse, validate, one "
        "insert per message) stores them. Clock: first publish until `count(*)` of "
        "`log_records` reaches the total.",
        "- **query**: the table topped up to the row count by `INSERT ... SELECT "
        "generate_series` over the run ids (random spread, the same `details` shape), "
        "then `VACUUM ANALYZE`; `GET /api/logs` (default page: 100 newest) through "
        "the FastAPI app over `httpx.ASGITransport` (in process, no socket: HTTP "
        "parsing by uvicorn is not counted), one request at a time, 5 uncounted "
        "warm-up requests per kind.",
        "",
        "### Machine",
        "",
        "| | |",
        "|---|---|",
        *(f"| {name} | {value} |" for name, value in report.machine),
        "",
        "### Ingest",
        "",
        "| records | batches published | publish done (s) | stored (s) | records/s "
        "| dropped | target >= 5,000/s |",
        "|--:|--:|--:|--:|--:|--:|---|",
        f"| {ingest_.records:,} | {ingest_.batches:,} | {ingest_.publish_seconds:.1f} "
        f"| {ingest_.seconds:.1f} | **{ingest_.rate:,.0f}** | {ingest_.dropped} "
        f"| {'met' if met else 'MISSED'} ({ingest_.rate / INGEST_TARGET:.2f}x) |",
        "",
        "### Query latency (ms)",
        "",
        f"{settings.rows:,} rows ({report.table_size} with indexes), bulk load + "
        f"VACUUM ANALYZE {report.load_seconds:.0f} s.",
        "",
        "| query | n | rows/answer | p50 | p90 | p99 | mean | min | max |",
        "|---|--:|--:|--:|--:|--:|--:|--:|--:|",
        *(
            f"| `{lat.name}` | {len(lat.ms)} | {lat.rows / len(lat.ms):.0f} | "
            + " | ".join(f"{v:.1f}" for v in lat.stats())
            + " |"
            for lat in report.latencies
        ),
        "",
        f"- **runId p99 {by_run[2]:.1f} ms**: target <= 50 ms "
        f"{'met' if p99_met else 'MISSED'}.",
        f"- **ingest {ingest_.rate:,.0f} records/s**: target >= 5,000/s "
        f"{'met' if met else 'MISSED'}.",
        "",
        "### Plans (EXPLAIN ANALYZE of the core SELECT, page of 101)",
        "",
        *(
            line
            for name, plan in report.plans
            for line in (f"`{name}`:", "", "```", plan, "```", "")
        ),
    ]
    return "\n".join(lines)


def main() -> int:
    settings = BenchSettings()
    return run_and_write(SECTION, settings.output, bench(settings), render)


if __name__ == "__main__":
    sys.exit(main())
