"""Publisher's AMQP adapters: apply the patch, push, open or adopt the pull request.

The handler announces the start (with a lease), runs `publish.run_publish` and
publishes the outcome. An expected failure is a TaskFailed event; anything else
raises and the message is dead-lettered (the API then fails the attempt).
"""

from __future__ import annotations

from datetime import timedelta
from typing import Annotated

from faststream import Depends
from faststream.rabbit import RabbitRouter

from services.publisher.publish import Deps, run_publish
from shared import stub
from shared.messages import ApplyAndPublish, CancelTask
from shared.metrics import Metrics, get_metrics
from shared.stage import Holder, report, serving, task_events
from shared.topology import EXCHANGE, Route, queue_for

SERVICE = "publisher"
LEASE = timedelta(minutes=15)

router = RabbitRouter()
events = task_events(router)
task_started, task_succeeded, task_failed = (
    events.started,
    events.succeeded,
    events.failed,
)

deps_holder: Holder[Deps] = Holder("the publisher's Deps")
configure = deps_holder.set
get_deps = deps_holder.get

MetricsDep = Annotated[Metrics, Depends(get_metrics)]
DepsDep = Annotated[Deps, Depends(get_deps)]


@router.subscriber(queue_for(SERVICE, Route.APPLY_AND_PUBLISH), EXCHANGE)
async def on_apply_and_publish(
    cmd: ApplyAndPublish, deps: DepsDep, metrics: MetricsDep
) -> None:
    details = stub.command_details(cmd)
    async with serving(
        cmd, events, metrics, details, LEASE, deps.started_after
    ) as seen:
        outcome = await run_publish(cmd, deps)
        await report(
            cmd,
            events,
            seen,
            summary=outcome.summary,
            error=outcome.error,
            artifacts=outcome.artifacts,
        )


@router.subscriber(queue_for(SERVICE, Route.CANCEL_APPLY_AND_PUBLISH), EXCHANGE)
async def on_cancel_task(cmd: CancelTask) -> None:
    stub.note_cancel(cmd, "publishing is short and idempotent; the outcome stands")
