"""Preflight's AMQP adapters: discovery, the Codex/GitHub pre-flight, volume probes.

Each handler announces the start (with a lease), runs the check from `checks.py` and
publishes the outcome. An expected failure is a TaskFailed event; anything else raises
and the message is dead-lettered (the API then fails the attempt).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from datetime import timedelta
from typing import Annotated, Any

from faststream import Depends
from faststream.rabbit import RabbitRouter
from loguru import logger

from services.preflight import checks, verdicts
from services.preflight.checks import Deps, Outcome
from shared import stub
from shared.messages import (
    CancelTask,
    CodexPreflight,
    Command,
    DiscoverNextPhase,
    ProbeCodexVolume,
)
from shared.metrics import Metrics, get_metrics
from shared.stage import Holder, publisher, report, serving, task_events
from shared.topology import EXCHANGE, Route, queue_for

SERVICE = "preflight"
LEASE = timedelta(minutes=10)

router = RabbitRouter()
events = task_events(router)
task_started, task_succeeded, task_failed = (
    events.started,
    events.succeeded,
    events.failed,
)
volume_checked = publisher(router, Route.CODEX_VOLUME_CHECKED)

deps_holder: Holder[Deps] = Holder("the preflight Deps")
configure = deps_holder.set
get_deps = deps_holder.get

MetricsDep = Annotated[Metrics, Depends(get_metrics)]
DepsDep = Annotated[Deps, Depends(get_deps)]


async def _serve(
    cmd: Command,
    details: dict[str, Any],
    check: Callable[[], Awaitable[Outcome]],
    metrics: Metrics,
    started_after: timedelta,
) -> None:
    """Announce the start with a lease, run the check, publish its outcome."""
    async with serving(cmd, events, metrics, details, LEASE, started_after) as seen:
        outcome = await check()
        if outcome.volume is not None:
            await volume_checked.publish(outcome.volume)
        await report(
            cmd,
            events,
            seen,
            summary=outcome.summary,
            error=outcome.error,
            artifacts=outcome.artifacts,
        )


@router.subscriber(queue_for(SERVICE, Route.DISCOVER_NEXT_PHASE), EXCHANGE)
async def on_discover_next_phase(
    cmd: DiscoverNextPhase, deps: DepsDep, metrics: MetricsDep
) -> None:
    details = stub.command_details(cmd) | {"requested_task_id": cmd.requested_task_id}
    await _serve(
        cmd,
        details,
        lambda: checks.run_discovery(cmd, deps),
        metrics,
        deps.started_after,
    )


@router.subscriber(queue_for(SERVICE, Route.CODEX_PREFLIGHT), EXCHANGE)
async def on_codex_preflight(
    cmd: CodexPreflight, deps: DepsDep, metrics: MetricsDep
) -> None:
    details = stub.command_details(cmd)
    await _serve(
        cmd,
        details,
        lambda: checks.run_preflight(cmd, deps),
        metrics,
        deps.started_after,
    )


@router.subscriber(queue_for(SERVICE, Route.PROBE_CODEX_VOLUME), EXCHANGE)
async def on_probe_codex_volume(cmd: ProbeCodexVolume, deps: DepsDep) -> None:
    """An operator asked for a fresh verdict on a run's auth volume."""
    volume = cmd.shard.codex_volume
    with logger.contextualize(run_id=str(cmd.run_id), codex_volume=volume):
        result, cached = await deps.probes.get(volume, refresh=cmd.force_refresh)
        logger.info("Codex volume {} probed on request: {}", volume, result.state)
        await volume_checked.publish(verdicts.volume_verdict(cmd, cmd.shard, result))
        del cached


@router.subscriber(queue_for(SERVICE, Route.CANCEL_DISCOVER_NEXT_PHASE), EXCHANGE)
@router.subscriber(queue_for(SERVICE, Route.CANCEL_CODEX_PREFLIGHT), EXCHANGE)
async def on_cancel_task(cmd: CancelTask) -> None:
    stub.note_cancel(cmd, "preflight tasks are short; the next event is ignored")
