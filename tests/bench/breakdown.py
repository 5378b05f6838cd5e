"""Where a run's time and database work go, for `make bench`.

- `counters`: one database's line of pg_stat_database (commits, rows written); the
  difference over the measured rounds divided by the runs gives the work per run.
- `hops`: the latency of our sequential runs split by hop, from the timestamps the
  system itself records (outbox `created_at`/`sent_at`, task `started_at`/
  `finished_at`) and the driver's wall clock (submit, POST answered, event
  received). A quick stage sends no TaskStarted, so it has no start hop;
  finalize_run has no command of its own (it is served inline).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING

import asyncpg

from services.cli.broker import vhost_path
from shared.messages import PIPELINE
from tests.bench.stats import percentile

if TYPE_CHECKING:
    from tests.bench.drivers import Timing
    from tests.support.infra import Infra


@dataclass(frozen=True)
class Counters:
    commits: int = 0
    rollbacks: int = 0
    inserted: int = 0
    updated: int = 0
    deleted: int = 0

    def __sub__(self, other: Counters) -> Counters:
        return Counters(
            self.commits - other.commits,
            self.rollbacks - other.rollbacks,
            self.inserted - other.inserted,
            self.updated - other.updated,
            self.deleted - other.deleted,
        )


async def counters(admin: asyncpg.Connection, database: str | None) -> Counters:
    row = await admin.fetchrow(
        "SELECT xact_commit, xact_rollback, tup_inserted, tup_updated, tup_deleted "
        "FROM pg_stat_database WHERE datname = $1",
        database,
    )
    return Counters(*(int(v) for v in row.values())) if row else Counters()


async def broker_counts(infra: Infra) -> tuple[int, int]:
    """(published, delivered) so far on the infra's vhost, from the management API
    (its statistics lag up to 5 s)."""
    async with infra.management() as client:
        answer = await client.get(f"/vhosts/{vhost_path(infra.vhost)}")
    answer.raise_for_status()
    stats = answer.json().get("message_stats", {})
    return int(stats.get("publish", 0)), int(stats.get("deliver_get", 0))


TASK_HOPS = """
SELECT r.id::text AS run_id, t.task_name, o.created_at AS queued, o.sent_at AS sent,
       t.started_at, t.finished_at
FROM spec_workflow_runs r
JOIN spec_workflow_task_states t ON t.run_id = r.id
LEFT JOIN outbox o ON o.id = (t.payload->>'message_id')::uuid
WHERE r.feature_key LIKE $1
"""
RUN_EVENT = """
SELECT r.id::text AS run_id, o.created_at AS queued, o.sent_at AS sent
FROM spec_workflow_runs r
JOIN outbox o ON o.routing_key = 'evt.run.succeeded'
             AND o.payload->>'run_id' = r.id::text
WHERE r.feature_key LIKE $1
"""


@dataclass
class Hops:
    """Per hop, the per-run durations (ms)."""

    runs: int = 0
    ms: dict[str, list[float]] = field(default_factory=dict)

    def add(self, hop: str, value: float) -> None:
        self.ms.setdefault(hop, []).append(value)

    def rows(self) -> list[tuple[str, float, float]]:
        """(hop, p50, p90) in pipeline order."""
        return [
            (hop, percentile(values, 50), percentile(values, 90))
            for hop, values in self.ms.items()
        ]


def _ms(later: datetime | None, earlier: datetime | None) -> float | None:
    if later is None or earlier is None:
        return None
    return (later - earlier).total_seconds() * 1000


async def hops(dsn: str, pattern: str, timings: dict[str, Timing]) -> Hops:
    connection = await asyncpg.connect(dsn)
    try:
        tasks = await connection.fetch(TASK_HOPS, pattern)
        events = {r["run_id"]: r for r in await connection.fetch(RUN_EVENT, pattern)}
    finally:
        await connection.close()
    by_run: dict[str, dict[str, asyncpg.Record]] = {}
    for row in tasks:
        by_run.setdefault(row["run_id"], {})[row["task_name"]] = row
    found = Hops()
    order = [str(task) for task in PIPELINE]
    for run_id, timing in timings.items():
        rows, event = by_run.get(run_id), events.get(run_id)
        if rows is None or event is None or set(rows) != set(order):
            continue
        found.runs += 1
        found.add(
            "POST /runs answered (driver)", (timing.posted - timing.submitted) * 1e3
        )
        for task in order:
            row = rows[task]
            if row["queued"] is None:  # no command: finalize_run is served inline
                continue
            relay = _ms(row["sent"], row["queued"])
            if relay is not None:
                found.add(f"{task}: outbox row -> published", relay)
            if task != order[-1]:
                started = _ms(row["started_at"], row["sent"])
                if started is not None:
                    found.add(f"{task}: published -> TaskStarted recorded", started)
            done = _ms(row["finished_at"], row["sent"])
            if done is not None:
                found.add(f"{task}: published -> outcome recorded", done)
        relay = _ms(event["sent"], event["queued"])
        if relay is not None:
            found.add("evt.run.succeeded: outbox row -> published", relay)
        if event["sent"] is not None:
            received = timing.done - event["sent"].timestamp()
            found.add("evt.run.succeeded: published -> driver", received * 1e3)
        found.add("total (driver)", (timing.done - timing.submitted) * 1e3)
    return found
