"""The original design's equivalent for `make bench`: the five stages as a Celery chain.

`chain(discover_next_phase | codex_preflight | submit_codex_job | apply_and_publish |
finalize_run)` on its own RabbitMQ vhost, with the reliable configuration the notes
(§11) measured: `task_acks_late`, `task_reject_on_worker_lost`, worker prefetch
multiplier 1, publisher confirms (`confirm_publish`), and the SQLAlchemy result
backend on Postgres (`db+postgresql://`, psycopg2) in its own database.

State writes, the equivalent of our API's recording of run state: the database has
our schema (the same migrations), the driver INSERTs the `spec_workflow_runs` row
before `apply_async` (as our `POST .../runs` does), and every stage is one committed
transaction that UPDATEs that row (status, phase, current_task, the stage's summary
merged into `outputs`, updated_at). `finalize_run` also sets the terminal status and
sends `pg_notify(DONE_CHANNEL, run_id)` in the same transaction: the driver LISTENs,
so completion is observed without polling. The result backend adds its own
`celery_taskmeta` row per task.

The worker (`celery -A tests.bench.celery_chain worker`) reads BENCH_CELERY_BROKER,
BENCH_CELERY_DATABASE (a `postgresql://` URL); the driver calls `configure`.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from typing import Any

import psycopg2  # type: ignore[import-untyped, import-not-found, unused-ignore]
from celery import Celery, chain  # type: ignore[import-untyped, import-not-found, unused-ignore]

DONE_CHANNEL = "bench_celery_done"
BROKER_ENV = "BENCH_CELERY_BROKER"
DATABASE_ENV = "BENCH_CELERY_DATABASE"
DEFAULT_USER = "00000000-0000-0000-0000-000000000000"

# What the instant responders report, as plain JSON (the same shapes and sizes).
DISCOVERY = {
    "result": "task_found",
    "base_branch": "main",
    "base_sha": "0123456789abcdef0123456789abcdef01234567",
    "discovered": {"task_id": "T001", "description": "Add the cart model"},
    "spec_title": "Checkout",
    "has_plan": True,
}
PREFLIGHT = {"codex_status": "logged_in", "github_status": "valid", "notes": "bench"}
CODEX = {
    "patch": {"path": "patch.diff", "artifact_type": "patch"},
    "codex_task_id": "thread-bench",
    "files_changed": 1,
}
PUBLISH = {"branch_name": "speckit/bench/T001", "pr_url": "https://github.example/1"}

STAGE = """
UPDATE spec_workflow_runs
SET status = 'running', phase = %(phase)s, current_task = %(task)s,
    started_at = coalesce(started_at, clock_timestamp()),
    outputs = outputs || jsonb_build_object(%(task)s, %(summary)s::jsonb),
    updated_at = clock_timestamp()
WHERE id = %(run_id)s
"""
FINAL = """
UPDATE spec_workflow_runs
SET status = 'succeeded', phase = 'complete', current_task = 'finalize_run',
    result = 'published', finished_at = clock_timestamp(),
    updated_at = clock_timestamp()
WHERE id = %(run_id)s
"""
INSERT_RUN = f"""
INSERT INTO spec_workflow_runs
    (id, repository, feature_key, publish_mode, status, phase, attempt, outputs,
     event_seq, created_by)
VALUES ($1, 'acme/shop', $2, 'pr', 'pending', 'discover', 1, '{{}}', 0,
        '{DEFAULT_USER}')
"""
"""Run by the driver (asyncpg) before `apply_async`: the run's creation."""

app: Any = Celery("bench_chain")
app.conf.update(
    task_acks_late=True,
    task_reject_on_worker_lost=True,
    worker_prefetch_multiplier=1,
    broker_transport_options={"confirm_publish": True},
    broker_connection_retry_on_startup=True,
    task_serializer="json",
    result_serializer="json",
    accept_content=["json"],
)


def task(name: str) -> Callable[[Callable[..., Any]], Any]:
    """`app.task(name=...)`, typed for mypy (Celery ships no annotations)."""
    decorate: Callable[[Callable[..., Any]], Any] = app.task(name=name)
    return decorate


def configure(broker_url: str, database_url: str) -> None:
    """Point the app at its vhost and its database (`postgresql://...`)."""
    plain = database_url.replace("postgresql+asyncpg://", "postgresql://", 1)
    # SQLAlchemy 2.1 maps a bare `postgresql://` to psycopg 3: name psycopg2.
    backend = "db+" + plain.replace("postgresql://", "postgresql+psycopg2://", 1)
    app.conf.update(broker_url=broker_url, result_backend=backend)
    os.environ[DATABASE_ENV] = plain


if BROKER_ENV in os.environ and DATABASE_ENV in os.environ:
    configure(os.environ[BROKER_ENV], os.environ[DATABASE_ENV])

_connection: Any = None
_pid = 0


def _db() -> Any:
    """One psycopg2 connection per (forked) worker process."""
    global _connection, _pid
    if _connection is None or _pid != os.getpid():
        _connection = psycopg2.connect(os.environ[DATABASE_ENV])
        _pid = os.getpid()
    return _connection


def _stage(run_id: str, task: str, phase: str, summary: dict[str, Any]) -> None:
    connection = _db()
    with connection, connection.cursor() as cursor:  # one transaction, committed
        cursor.execute(
            STAGE,
            {
                "phase": phase,
                "task": task,
                "summary": json.dumps(summary),
                "run_id": run_id,
            },
        )


@task("bench.discover_next_phase")
def discover_next_phase(run_id: str) -> dict[str, Any]:
    _stage(run_id, "discover_next_phase", "discover", DISCOVERY)
    return {"run_id": run_id, **DISCOVERY}


@task("bench.codex_preflight")
def codex_preflight(previous: dict[str, Any]) -> dict[str, Any]:
    _stage(previous["run_id"], "codex_preflight", "discover", PREFLIGHT)
    return {"run_id": previous["run_id"], **PREFLIGHT}


@task("bench.submit_codex_job")
def submit_codex_job(previous: dict[str, Any]) -> dict[str, Any]:
    _stage(previous["run_id"], "submit_codex_job", "submit", CODEX)
    return {"run_id": previous["run_id"], **CODEX}


@task("bench.apply_and_publish")
def apply_and_publish(previous: dict[str, Any]) -> dict[str, Any]:
    _stage(previous["run_id"], "apply_and_publish", "publish", PUBLISH)
    return {"run_id": previous["run_id"], **PUBLISH}


@task("bench.finalize_run")
def finalize_run(previous: dict[str, Any]) -> dict[str, Any]:
    run_id = previous["run_id"]
    connection = _db()
    with connection, connection.cursor() as cursor:
        cursor.execute(FINAL, {"run_id": run_id})
        cursor.execute("SELECT pg_notify(%s, %s)", (DONE_CHANNEL, run_id))
    return {"run_id": run_id, "status": "succeeded"}


def start(run_id: str) -> Any:
    """Send the chain of one run; returns the AsyncResult of its last task."""
    return chain(
        discover_next_phase.s(run_id),
        codex_preflight.s(),
        submit_codex_job.s(),
        apply_and_publish.s(),
        finalize_run.s(),
    ).apply_async()
