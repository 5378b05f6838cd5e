"""Preflight's AMQP adapters: discovery and the Codex/GitHub pre-flight.

Both stages are still stubs: they refuse every command with `stage_not_implemented`
instead of pretending to succeed, so a run fails visibly at the first missing stage.
"""

from __future__ import annotations

from typing import Annotated

from faststream import Depends
from faststream.rabbit import RabbitRouter

from shared import stub
from shared.messages import CancelTask, CodexPreflight, DiscoverNextPhase
from shared.metrics import Metrics, get_metrics
from shared.topology import EXCHANGE, Route, queue_for

SERVICE = "preflight"

router = RabbitRouter()
task_failed = router.publisher(
    exchange=EXCHANGE, routing_key=Route.TASK_FAILED, persist=True
)

MetricsDep = Annotated[Metrics, Depends(get_metrics)]


@router.subscriber(queue_for(SERVICE, Route.DISCOVER_NEXT_PHASE), EXCHANGE)
async def on_discover_next_phase(cmd: DiscoverNextPhase, metrics: MetricsDep) -> None:
    await stub.refuse(cmd, "discovery", task_failed, metrics)


@router.subscriber(queue_for(SERVICE, Route.CODEX_PREFLIGHT), EXCHANGE)
async def on_codex_preflight(cmd: CodexPreflight, metrics: MetricsDep) -> None:
    await stub.refuse(cmd, "codex pre-flight", task_failed, metrics)


@router.subscriber(queue_for(SERVICE, Route.CANCEL_DISCOVER_NEXT_PHASE), EXCHANGE)
@router.subscriber(queue_for(SERVICE, Route.CANCEL_CODEX_PREFLIGHT), EXCHANGE)
async def on_cancel_task(cmd: CancelTask) -> None:
    stub.note_cancel(cmd, "nothing is running here")
