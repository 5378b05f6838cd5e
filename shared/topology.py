"""The spec_workflow exchanges and the queue factory (quorum queues with a DLX)."""

from __future__ import annotations

from faststream.rabbit import (
    ExchangeType,
    QueueType,
    RabbitBroker,
    RabbitExchange,
    RabbitQueue,
)
from faststream.rabbit.schemas.queue import QuorumQueueArgs

from shared.routing import (
    CODEX_QUEUE_PREFIX,
    CODEX_VOLUME_PREFIX,
    Route,
    cancel_codex_route,
    codex_queue_name,
    codex_volume_name,
    route_of,
    submit_codex_route,
)

__all__ = [
    "CODEX_QUEUE_PREFIX",
    "CODEX_VOLUME_PREFIX",
    "DLX",
    "EXCHANGE",
    "LOGS_EXCHANGE",
    "LOG_RECORDS",
    "Route",
    "all_queues",
    "codex_cancel_queue",
    "codex_queue",
    "codex_queue_name",
    "codex_volume_name",
    "declare_topology",
    "log_queue",
    "queue_for",
    "route_of",
]

EXCHANGE = RabbitExchange(
    "spec_workflow", type=ExchangeType.TOPIC
)  # durable by default
DLX = RabbitExchange("spec_workflow.dlx", type=ExchangeType.FANOUT)
LOGS_EXCHANGE = RabbitExchange("spec_workflow.logs", type=ExchangeType.TOPIC)


def _quorum_arguments(*, single_active: bool = False) -> QuorumQueueArgs:
    # at-least-once dead-lettering needs reject-publish overflow; tunables
    # (delivery-limit) live in a policy.
    arguments: QuorumQueueArgs = {
        "x-dead-letter-exchange": DLX.name,
        "x-dead-letter-strategy": "at-least-once",
        "x-overflow": "reject-publish",
    }
    if single_active:
        arguments["x-single-active-consumer"] = True
    return arguments


def queue_for(service: str, route: Route) -> RabbitQueue:
    """Quorum queue `<service>.<purpose>`.

    Rejected or over-delivered messages go to the DLX.
    """
    purpose = route.name.lower()
    return RabbitQueue(
        f"{service}.{purpose}",
        queue_type=QueueType.QUORUM,
        routing_key=route.value,
        arguments=_quorum_arguments(),
    )


def codex_queue(shard: int) -> RabbitQueue:
    """Shard queue `codex-<n>`: a single active consumer, one run per Codex login."""
    return RabbitQueue(
        codex_queue_name(shard),
        queue_type=QueueType.QUORUM,
        routing_key=submit_codex_route(shard),
        arguments=_quorum_arguments(single_active=True),
    )


def codex_cancel_queue(shard: int) -> RabbitQueue:
    return RabbitQueue(
        f"{codex_queue_name(shard)}.cancel",
        queue_type=QueueType.QUORUM,
        routing_key=cancel_codex_route(shard),
        arguments=_quorum_arguments(),
    )


LOG_QUEUE_MAX_LENGTH = 200_000


def log_queue(service: str, purpose: str = "log_records") -> RabbitQueue:
    """Quorum queue `<service>.<purpose>` bound to `spec_workflow.logs` with `log.#`.

    No DLX: a log record that cannot be stored is dropped, never dead-lettered, and
    past `LOG_QUEUE_MAX_LENGTH` the oldest records go first (logs are lossy by
    design; the shipper already drops when the broker is slow).
    """
    arguments: QuorumQueueArgs = {
        "x-max-length": LOG_QUEUE_MAX_LENGTH,
        "x-overflow": "drop-head",
    }
    return RabbitQueue(
        f"{service}.{purpose}",
        queue_type=QueueType.QUORUM,
        routing_key="log.#",
        arguments=arguments,
    )


LOG_RECORDS = log_queue("api")
"""The API's sink consumer stores these in `log_records`."""

DEAD_LETTERS = RabbitQueue(
    "api.dead_letters", queue_type=QueueType.QUORUM, routing_key=""
)
"""Bound to the DLX; it has no DLX of its own: its consumer never rejects."""

WORKER_QUEUES: tuple[RabbitQueue, ...] = (
    queue_for("preflight", Route.DISCOVER_NEXT_PHASE),
    queue_for("preflight", Route.CODEX_PREFLIGHT),
    queue_for("preflight", Route.CANCEL_DISCOVER_NEXT_PHASE),
    queue_for("preflight", Route.CANCEL_CODEX_PREFLIGHT),
    queue_for("preflight", Route.PROBE_CODEX_VOLUME),
    queue_for("publisher", Route.APPLY_AND_PUBLISH),
    queue_for("publisher", Route.CANCEL_APPLY_AND_PUBLISH),
)
API_QUEUES: tuple[RabbitQueue, ...] = (
    queue_for("api", Route.FINALIZE_RUN),
    queue_for("api", Route.TASK_STARTED),
    queue_for("api", Route.TASK_HEARTBEAT),
    queue_for("api", Route.TASK_SUCCEEDED),
    queue_for("api", Route.TASK_FAILED),
    queue_for("api", Route.TASK_CANCELLED),
    queue_for("api", Route.CODEX_VOLUME_CHECKED),
)


def all_queues(shards: int) -> list[RabbitQueue]:
    """Every durable queue for `shards` Codex shards (dead letters excluded).

    `LOG_RECORDS` is bound to `spec_workflow.logs`, the others to `spec_workflow`.
    """
    codex = [q for n in range(shards) for q in (codex_queue(n), codex_cancel_queue(n))]
    return [*API_QUEUES, *WORKER_QUEUES, *codex, LOG_RECORDS]


async def declare_topology(broker: RabbitBroker, shards: int) -> None:
    """Declare exchanges, queues and bindings.

    Idempotent, so every service runs it at start-up. Commands are published
    `mandatory`, so their queues must exist before the first publish, whichever service
    starts first.
    """
    exchange = await broker.declare_exchange(EXCHANGE)
    dlx = await broker.declare_exchange(DLX)
    logs = await broker.declare_exchange(LOGS_EXCHANGE)
    dead = await broker.declare_queue(DEAD_LETTERS)
    await dead.bind(dlx, routing_key="")
    for queue in all_queues(shards):
        declared = await broker.declare_queue(queue)
        target = logs if queue.name == LOG_RECORDS.name else exchange
        await declared.bind(target, routing_key=queue.routing())
