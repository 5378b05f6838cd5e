"""Preflight's AMQP adapters: discovery, the Codex/GitHub pre-flight, volume probes.

Each handler announces the start (with a lease), runs the check from `checks.py` and
publishes the outcome. An expected failure is a TaskFailed event; anything else raises
and the message is dead-lettered (the API then fails the attempt).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any

from faststream import Depends
from faststream.rabbit import RabbitRouter
from loguru import logger

from services.preflight import checks
from services.preflight.checks import Deps, Outcome
from shared import stub
from shared.messages import (
    CancelTask,
    CodexPreflight,
    Command,
    DiscoverNextPhase,
    ProbeCodexVolume,
    TaskFailed,
    TaskStarted,
    TaskSucceeded,
)
from shared.metrics import Metrics, get_metrics
from shared.observer import observe_task
from shared.topology import EXCHANGE, Route, queue_for

SERVICE = "preflight"
LEASE = timedelta(minutes=10)

router = RabbitRouter()
task_started = router.publisher(
    exchange=EXCHANGE, routing_key=Route.TASK_STARTED, persist=True
)
task_succeeded = router.publisher(
    exchange=EXCHANGE, routing_key=Route.TASK_SUCCEEDED, persist=True
)
task_failed = router.publisher(
    exchange=EXCHANGE, routing_key=Route.TASK_FAILED, persist=True
)
volume_checked = router.publisher(
    exchange=EXCHANGE, routing_key=Route.CODEX_VOLUME_CHECKED, persist=True
)

_deps: Deps | None = None


def configure(deps: Deps) -> None:
    """Called once by `main.py`; tests override `get_deps` instead."""
    global _deps
    _deps = deps


def get_deps() -> Deps:
    if _deps is None:
        raise RuntimeError("services.preflight.handlers.configure() was not called")
    return _deps


MetricsDep = Annotated[Metrics, Depends(get_metrics)]
DepsDep = Annotated[Deps, Depends(get_deps)]


async def _report(cmd: Command, outcome: Outcome, observed: Any) -> None:
    if outcome.volume is not None:
        await volume_checked.publish(outcome.volume)
    if outcome.error is None:
        await task_succeeded.publish(
            cmd.reply(
                TaskSucceeded,
                summary=outcome.summary or {},
                artifacts=outcome.artifacts,
            )
        )
        observed.succeeded(outcome.summary)
    else:
        await task_failed.publish(
            cmd.reply(
                TaskFailed,
                error=outcome.error,
                summary=outcome.summary or {},
                artifacts=outcome.artifacts,
            )
        )
        observed.failed(outcome.error)


async def _serve(
    cmd: Command,
    details: dict[str, Any],
    check: Callable[[], Awaitable[Outcome]],
    metrics: Metrics,
) -> None:
    """Announce the start with a lease, run the check, publish its outcome."""
    with (
        logger.contextualize(
            run_id=str(cmd.run_id), task=cmd.task, attempt=cmd.attempt
        ),
        observe_task(
            metrics, cmd.task, cmd.run_id, cmd.attempt, details=details
        ) as seen,
    ):
        lease = datetime.now(UTC) + LEASE
        await task_started.publish(cmd.reply(TaskStarted, lease_until=lease))
        await _report(cmd, await check(), seen)


@router.subscriber(queue_for(SERVICE, Route.DISCOVER_NEXT_PHASE), EXCHANGE)
async def on_discover_next_phase(
    cmd: DiscoverNextPhase, deps: DepsDep, metrics: MetricsDep
) -> None:
    details = stub.command_details(cmd) | {"requested_task_id": cmd.requested_task_id}
    await _serve(cmd, details, lambda: checks.run_discovery(cmd, deps), metrics)


@router.subscriber(queue_for(SERVICE, Route.CODEX_PREFLIGHT), EXCHANGE)
async def on_codex_preflight(
    cmd: CodexPreflight, deps: DepsDep, metrics: MetricsDep
) -> None:
    details = stub.command_details(cmd)
    await _serve(cmd, details, lambda: checks.run_preflight(cmd, deps), metrics)


@router.subscriber(queue_for(SERVICE, Route.PROBE_CODEX_VOLUME), EXCHANGE)
async def on_probe_codex_volume(cmd: ProbeCodexVolume, deps: DepsDep) -> None:
    """An operator asked for a fresh verdict on a run's auth volume."""
    volume = cmd.shard.codex_volume
    with logger.contextualize(run_id=str(cmd.run_id), codex_volume=volume):
        result, cached = await deps.probes.get(volume, refresh=cmd.force_refresh)
        logger.info("Codex volume {} probed on request: {}", volume, result.state)
        await volume_checked.publish(checks.volume_verdict(cmd, cmd.shard, result))
        del cached


@router.subscriber(queue_for(SERVICE, Route.CANCEL_DISCOVER_NEXT_PHASE), EXCHANGE)
@router.subscriber(queue_for(SERVICE, Route.CANCEL_CODEX_PREFLIGHT), EXCHANGE)
async def on_cancel_task(cmd: CancelTask) -> None:
    stub.note_cancel(cmd, "preflight tasks are short; the next event is ignored")
