"""Codex runner's AMQP adapters for the one shard this process serves.

The Codex stage is still a stub: it refuses every job with `stage_not_implemented`
instead of pretending to succeed. The shard is known only at start-up, so the
subscribers come from `shard_router(shard)`; the publishers stay module-level objects
(their `.mock` is what tests assert on).
"""

from __future__ import annotations

from typing import Annotated

from faststream import Depends
from faststream.rabbit import RabbitRouter

from shared import stub
from shared.messages import CancelTask, SubmitCodexJob
from shared.metrics import Metrics, get_metrics
from shared.topology import EXCHANGE, Route, codex_cancel_queue, codex_queue

SERVICE = "codex_runner"

router = RabbitRouter()
task_failed = router.publisher(
    exchange=EXCHANGE, routing_key=Route.TASK_FAILED, persist=True
)

MetricsDep = Annotated[Metrics, Depends(get_metrics)]


async def on_submit_codex_job(cmd: SubmitCodexJob, metrics: MetricsDep) -> None:
    await stub.refuse(cmd, "codex run", task_failed, metrics)


async def on_cancel_codex_job(cmd: CancelTask) -> None:
    stub.note_cancel(cmd, "no Codex container is running")


def shard_router(shard: int) -> RabbitRouter:
    """Subscribers of queue `codex-<shard>` and its cancel queue, plus publishers."""
    shard_routes = RabbitRouter()
    shard_routes.subscriber(codex_queue(shard), EXCHANGE)(on_submit_codex_job)
    shard_routes.subscriber(codex_cancel_queue(shard), EXCHANGE)(on_cancel_codex_job)
    shard_routes.include_router(router)
    return shard_routes
