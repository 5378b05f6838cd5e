"""Publisher's AMQP adapters: apply the patch, push, open or adopt the pull request.

The stage is still a stub: it refuses every command with `stage_not_implemented`
instead of pretending to succeed.
"""

from __future__ import annotations

from typing import Annotated

from faststream import Depends
from faststream.rabbit import RabbitRouter

from shared import stub
from shared.messages import ApplyAndPublish, CancelTask
from shared.metrics import Metrics, get_metrics
from shared.topology import EXCHANGE, Route, queue_for

SERVICE = "publisher"

router = RabbitRouter()
task_failed = router.publisher(
    exchange=EXCHANGE, routing_key=Route.TASK_FAILED, persist=True
)

MetricsDep = Annotated[Metrics, Depends(get_metrics)]


@router.subscriber(queue_for(SERVICE, Route.APPLY_AND_PUBLISH), EXCHANGE)
async def on_apply_and_publish(cmd: ApplyAndPublish, metrics: MetricsDep) -> None:
    await stub.refuse(cmd, "apply and publish", task_failed, metrics)


@router.subscriber(queue_for(SERVICE, Route.CANCEL_APPLY_AND_PUBLISH), EXCHANGE)
async def on_cancel_task(cmd: CancelTask) -> None:
    stub.note_cancel(cmd, "nothing is running here")
