"""The API part of `make bench`: run reads under concurrent load over many stored runs.

`load_runs` bulk-inserts finished runs with SQL (`INSERT ... SELECT generate_series`):
each with its five task rows, two artifacts and a credential audit, shaped like the
rows a real run leaves, then `VACUUM ANALYZE`. `measure` sends requests to the real
API process over HTTP (uvicorn, loopback) from `concurrency` clients at once, each
client's next request as soon as its last one is answered.

The clients are plain keep-alive HTTP/1.1 connections (`rawhttp.Connection`), not
httpx (see `rawhttp`).
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import datetime
from urllib.parse import urlencode
from uuid import UUID

import asyncpg
import httpx
from sqlalchemy.engine import make_url

from services.api import cursor, reads
from services.api.models import DEFAULT_USER_ID
from services.api.runs import ListFilter
from tests.bench.rawhttp import BadAnswer, Connection
from tests.bench.stats import Latency

RUNS = "/api/workflows/speckit/runs"
PREFIX = "bulk-"

RUN_ROWS = """
INSERT INTO spec_workflow_runs
    (id, repository, feature_key, base_branch, base_sha, publish_mode, status, phase,
     result, error_code, error_message, attempt, current_task, branch_name, pr_url,
     codex_task_id, codex_queue, codex_volume, codex_shard_index,
     codex_preflight_status, codex_preflight_message, codex_patch_path, outputs,
     event_seq, created_by, started_at, finished_at, created_at, updated_at)
SELECT
    gen_random_uuid(), 'acme/repo-' || g % 500, 'bulk-' || g, 'main',
    md5(g::text) || '01234567', 'pr',
    CASE WHEN g % 10 = 0 THEN 'failed' ELSE 'succeeded' END,
    CASE WHEN g % 10 = 0 THEN 'publish' ELSE 'complete' END,
    CASE WHEN g % 10 = 0 THEN NULL ELSE 'published' END,
    CASE WHEN g % 10 = 0 THEN 'push_rejected' END,
    CASE WHEN g % 10 = 0 THEN 'the remote rejected the push' END,
    1, 'finalize_run', 'speckit/bulk-' || g || '/T001',
    'https://github.example/acme/repo/pull/' || g, 'thread-' || g,
    'codex-' || g % 3, 'codex_auth_' || g % 3, g % 3, 'passed', NULL, 'patch.diff',
    jsonb_build_object(
        'discover_next_phase', jsonb_build_object(
            'result', 'task_found', 'base_branch', 'main',
            'base_sha', md5(g::text) || '01234567',
            'discovered', jsonb_build_object(
                'task_id', 'T001', 'description', 'Add the cart model'),
            'spec_title', 'Checkout', 'has_plan', true),
        'codex_preflight', jsonb_build_object(
            'codex_status', 'logged_in', 'github_status', 'valid'),
        'submit_codex_job', jsonb_build_object(
            'patch', jsonb_build_object('path', 'patch.diff',
                                        'artifact_type', 'patch'),
            'codex_task_id', 'thread-' || g, 'files_changed', 1),
        'apply_and_publish', jsonb_build_object(
            'branch_name', 'speckit/bulk-' || g || '/T001',
            'pr_url', 'https://github.example/acme/repo/pull/' || g)),
    14, '00000000-0000-0000-0000-000000000000',
    ts, ts + interval '40 seconds', ts, ts + interval '40 seconds'
FROM generate_series(1, $1) AS g,
     LATERAL (SELECT now() - make_interval(secs => ($1 - g) * 30.0) AS ts) AS t
"""
TASK_ROWS = """
INSERT INTO spec_workflow_task_states
    (id, run_id, task_name, attempt, status, payload, summary, redispatches,
     started_at, finished_at, created_at, updated_at)
SELECT gen_random_uuid(), r.id, t.name, 1, 'succeeded',
    jsonb_build_object(
        'message_id', gen_random_uuid(), 'run_id', r.id, 'task', t.name,
        'attempt', 1, 'occurred_at', r.created_at,
        'repository', r.repository, 'feature_key', r.feature_key,
        'base_branch', 'main', 'base_sha', r.base_sha),
    jsonb_build_object('outcome', 'ok'), 0,
    r.created_at + t.n * interval '8 seconds',
    r.created_at + (t.n + 1) * interval '8 seconds',
    r.created_at + t.n * interval '8 seconds',
    r.created_at + (t.n + 1) * interval '8 seconds'
FROM spec_workflow_runs r,
     unnest(ARRAY['discover_next_phase', 'codex_preflight', 'submit_codex_job',
                  'apply_and_publish', 'finalize_run']) WITH ORDINALITY AS t(name, n)
WHERE r.feature_key LIKE 'bulk-%'
"""
ARTIFACT_ROWS = """
INSERT INTO workflow_artifacts
    (id, run_id, artifact_type, path, task_name, attempt, created_at)
SELECT gen_random_uuid(), r.id, a.kind, a.path, a.task, 1, r.created_at
FROM spec_workflow_runs r,
     (VALUES ('patch', 'patch.diff', 'submit_codex_job'),
             ('manifest', 'manifest.json', 'finalize_run')) AS a(kind, path, task)
WHERE r.feature_key LIKE 'bulk-%'
"""
AUDIT_ROWS = """
INSERT INTO workflow_credential_audits
    (id, run_id, attempt, codex_status, github_status, notes, checked_at)
SELECT gen_random_uuid(), r.id, 1, 'logged_in', 'valid', 'bulk', r.created_at
FROM spec_workflow_runs r
WHERE r.feature_key LIKE 'bulk-%'
"""
TABLES = (
    "spec_workflow_runs",
    "spec_workflow_task_states",
    "workflow_artifacts",
    "workflow_credential_audits",
)


@dataclass
class Loaded:
    runs: int
    inserted: int
    seconds: float
    size: str


async def load_runs(connection: asyncpg.Connection, total: int) -> Loaded:
    """Top `spec_workflow_runs` up to `total` rows; returns what it took."""
    present = int(await connection.fetchval("SELECT count(*) FROM spec_workflow_runs"))
    missing = max(total - present, 0)
    started = time.perf_counter()
    if missing:
        async with connection.transaction():
            await connection.execute(RUN_ROWS, missing, timeout=3_600)
            for statement in (TASK_ROWS, ARTIFACT_ROWS, AUDIT_ROWS):
                await connection.execute(statement, timeout=3_600)
    # Every table, not only the loaded ones: the orchestration bench before left
    # inbox, outbox and timeline rows for autovacuum to visit during the reads. Then
    # the dirty pages written now, not by the checkpointer during the reads.
    await connection.execute("VACUUM ANALYZE", timeout=3_600)
    await connection.execute("CHECKPOINT", timeout=3_600)
    size = await connection.fetchval(
        "SELECT pg_size_pretty(sum(pg_total_relation_size(c))::bigint) "
        "FROM unnest($1::regclass[]) AS c",
        list(TABLES),
    )
    runs = int(await connection.fetchval("SELECT count(*) FROM spec_workflow_runs"))
    return Loaded(runs, missing, time.perf_counter() - started, str(size))


@dataclass
class Targets:
    """What the clients ask for: run ids and list cursors, chosen at random."""

    run_ids: list[str]
    cursors: list[str]

    @classmethod
    async def sample(cls, connection: asyncpg.Connection, n: int = 2_000) -> Targets:
        rows = await connection.fetch(
            "SELECT id, created_at FROM spec_workflow_runs ORDER BY random() LIMIT $1",
            n,
        )
        return cls(
            [str(r["id"]) for r in rows],
            [cursor.encode(r["created_at"], r["id"]) for r in rows],
        )


Target = tuple[str, dict[str, str]]
Endpoint = tuple[str, Callable[[random.Random], Target]]


def endpoints(targets: Targets) -> list[Endpoint]:
    return [
        (
            "GET /runs/{id}",
            lambda rng: (f"{RUNS}/{rng.choice(targets.run_ids)}", {}),
        ),
        ("GET /runs (first page)", lambda _rng: (RUNS, {})),
        (
            "GET /runs?cursor= (random page)",
            lambda rng: (RUNS, {"cursor": rng.choice(targets.cursors)}),
        ),
    ]


@dataclass
class Load:
    endpoint: str
    concurrency: int
    round: int
    ms: list[float]
    seconds: float
    cpu: dict[str, float] = field(default_factory=dict)
    """CPU seconds used during the counted requests, by process (group)."""

    @property
    def latency(self) -> Latency:
        return Latency.of(self.ms)

    @property
    def rate(self) -> float:
        return len(self.ms) / self.seconds


async def get(connection: Connection, path: str, params: dict[str, str]) -> int:
    """The status of GET `path?params`; the body is read and dropped."""
    target = f"{path}?{urlencode(params)}" if params else path
    status, _ = await connection.request("GET", target)
    return status


async def measure(
    client: httpx.AsyncClient,
    endpoint: Endpoint,
    *,
    concurrency: int,
    requests: int,
    rng: random.Random,
    round_: int = 1,
    warmup: int = 0,
    cpu: Callable[[], Awaitable[dict[str, float]]] | None = None,
) -> Load:
    """`requests` GETs from `concurrency` connections at `client.base_url` (with its
    Authorization header, if any), after
    `warmup` uncounted ones from the same clients; `client` sends a few more first.
    `cpu`, if given, says each process's CPU seconds so far: the load reports what
    the counted requests used."""
    name, make = endpoint
    ms: list[float] = []
    todo = [make(rng) for _ in range(requests)]

    async def client_loop(
        connection: Connection, todo: list[Target], ms: list[float]
    ) -> None:
        while todo:
            path, params = todo.pop()
            started = time.perf_counter()
            status = await get(connection, path, params)
            ms.append((time.perf_counter() - started) * 1000)
            if status != 200:
                raise BadAnswer(f"{name}: {status}")

    for path, params in todo[:5]:  # uncounted warm-up
        (await client.get(path, params=params)).raise_for_status()
    authorization = client.headers.get("authorization")
    connections = [
        await Connection.open(client.base_url, authorization)
        for _ in range(concurrency)
    ]
    try:
        # uncounted too: one answer on each connection, all at once, then `warmup`
        await asyncio.gather(*(get(c, *todo[-1]) for c in connections))
        warm = [make(rng) for _ in range(warmup)]
        await asyncio.gather(*(client_loop(c, warm, []) for c in connections))
        before = await cpu() if cpu else {}
        started = time.perf_counter()
        await asyncio.gather(*(client_loop(c, todo, ms) for c in connections))
        seconds = time.perf_counter() - started
        after = await cpu() if cpu else {}
    finally:
        await asyncio.gather(*(c.close() for c in connections))
    used = {name: after[name] - before.get(name, 0.0) for name in after}
    return Load(name, concurrency, round_, ms, seconds, used)


async def list_plans(database_url: str) -> list[tuple[str, str]]:
    """EXPLAIN ANALYZE of the SELECT the list route runs (`reads.list_query`): the
    first page, and a page from the middle."""
    dsn = make_url(database_url).set(drivername="postgresql")
    connection = await asyncpg.connect(dsn.render_as_string(hide_password=False))
    plans: list[tuple[str, str]] = []
    try:
        middle = await connection.fetchrow(
            "SELECT created_at, id FROM spec_workflow_runs"
            " ORDER BY created_at DESC, id DESC"
            " OFFSET (SELECT count(*) / 2 FROM spec_workflow_runs) LIMIT 1"
        )
        pages: list[tuple[str, tuple[datetime, UUID] | None]] = [
            ("first page", None),
            ("a cursor halfway down", (middle["created_at"], middle["id"])),
        ]
        for name, after in pages:
            statement, parameters = reads.list_query(
                ListFilter(),
                owner=DEFAULT_USER_ID,
                limit=20,
                after=after,
                artifacts_root="/artifacts",
            )
            rows = await connection.fetch(
                f"EXPLAIN (ANALYZE, COSTS OFF) {statement}", *parameters
            )
            plans.append((name, "\n".join(row[0] for row in rows)))
    finally:
        await connection.close()
    return plans
