"""AMQP subscribers of the API: task events, finalize_run and dead letters.

Each one is a thin adapter around `transitions.py`, `stops.py` or `finalizing.py`
inside one transaction that starts with the inbox check (`event_tx.py`).
"""

from __future__ import annotations

from typing import Any

from faststream.message import StreamMessage
from faststream.rabbit import Channel, RabbitRouter
from loguru import logger
from sqlalchemy.ext.asyncio import AsyncSession

from services.api import (
    dead_letters,
    event_tx,
    finalizing,
    guards,
    logsink,
    shards,
    stops,
    transitions,
)
from services.api.db import Database, retry_while_unavailable
from services.api.settings import Settings
from shared.messages import (
    CodexVolumeChecked,
    FinalizeRun,
    Message,
    TaskCancelled,
    TaskFailed,
    TaskHeartbeat,
    TaskStarted,
    TaskSucceeded,
)
from shared.metrics import get_metrics
from shared.routing import Route
from shared.topology import (
    DEAD_LETTERS,
    DLX,
    EXCHANGE,
    LOG_RECORDS,
    LOGS_EXCHANGE,
    queue_for,
)


async def _decode_dead_letter(message: StreamMessage[Any]) -> dict[str, str]:
    """Never fails: the body is kept byte for byte as latin-1 text.

    x-death is read from the headers. The default decoder would raise on a body that is
    not JSON, and this queue has no DLX to catch that.
    """
    reason, queue, routing_key = dead_letters.death(dict(message.headers or {}))
    return {
        "raw": message.body.decode("latin-1"),
        "reason": reason,
        "queue": queue,
        "routing_key": routing_key,
    }


async def _dead_letter(database: Database, dead: dead_letters.DeadLetter) -> None:
    """Fail the run a dead message belonged to.

    Never raises for bad input: this queue has no DLX.
    """
    found = dead_letters.identify(dead)
    if found is None:
        get_metrics().incr("dead_letter_unidentified", queue=dead.queue)
        logger.warning(
            "Dead letter from {queue} without a readable run id dropped ({reason})",
            queue=dead.queue,
            reason=dead.reason,
        )
        return
    cause, error = found

    async def fail(s: AsyncSession, m: Message) -> guards.Outcome:
        return await stops.fail_dead_letter(s, m, error)

    get_metrics().incr("dead_letter", task=cause.task, code=error.code)
    await event_tx.applied(database, dead_letters.inbox_copy(cause), fail)


async def _volume_checked(database: Database, event: CodexVolumeChecked) -> None:
    """The shard registry keeps each volume's newest probe verdict (no inbox needed:
    the upsert is guarded by the probe time)."""

    async def record() -> bool:
        async with database.new_session() as session, session.begin():
            return await shards.record_volume(session, event)

    if not await retry_while_unavailable(record):
        logger.info(
            "Older verdict for {volume} ignored", volume=event.shard.codex_volume
        )


def build_router(settings: Settings, database: Database) -> RabbitRouter:
    """A fresh router with every API subscriber; one per app.

    The handlers take their message only: the app's settings and database are bound
    here, not resolved per message by FastAPI's dependency injection (which cost
    about a tenth of a short event's CPU).
    """
    record_succeeded = finalizing.recorder(settings)

    async def on_task_started(event: TaskStarted) -> None:
        await event_tx.applied(database, event, transitions.record_started)

    async def on_task_heartbeat(event: TaskHeartbeat) -> None:
        await event_tx.applied(database, event, transitions.record_heartbeat)

    async def on_task_succeeded(event: TaskSucceeded) -> None:
        await event_tx.applied(database, event, record_succeeded)

    async def on_task_failed(event: TaskFailed) -> None:
        await event_tx.applied(database, event, stops.record_failed)

    async def on_task_cancelled(event: TaskCancelled) -> None:
        await event_tx.applied(database, event, stops.record_cancelled)

    async def on_finalize_run(cmd: FinalizeRun) -> None:
        await finalizing.finalize_command(database, settings, cmd)

    async def on_dead_letter(dead: dead_letters.DeadLetter) -> None:
        await _dead_letter(database, dead)

    async def on_codex_volume_checked(event: CodexVolumeChecked) -> None:
        await _volume_checked(database, event)

    async def on_log_records(body: str) -> None:
        """Store a shipped batch; drops (and counts) what cannot be stored."""
        await logsink.store_shipped(database, body)

    on_finalize_run.__doc__ = finalizing.finalize_command.__doc__
    on_dead_letter.__doc__ = _dead_letter.__doc__
    on_codex_volume_checked.__doc__ = _volume_checked.__doc__

    router = RabbitRouter()
    router.subscriber(queue_for("api", Route.TASK_STARTED), EXCHANGE)(on_task_started)
    router.subscriber(queue_for("api", Route.TASK_HEARTBEAT), EXCHANGE)(
        on_task_heartbeat
    )
    router.subscriber(queue_for("api", Route.TASK_SUCCEEDED), EXCHANGE)(
        on_task_succeeded
    )
    router.subscriber(queue_for("api", Route.TASK_FAILED), EXCHANGE)(on_task_failed)
    router.subscriber(queue_for("api", Route.TASK_CANCELLED), EXCHANGE)(
        on_task_cancelled
    )
    router.subscriber(queue_for("api", Route.FINALIZE_RUN), EXCHANGE)(on_finalize_run)
    router.subscriber(DEAD_LETTERS, DLX, decoder=_decode_dead_letter)(on_dead_letter)
    router.subscriber(queue_for("api", Route.CODEX_VOLUME_CHECKED), EXCHANGE)(
        on_codex_volume_checked
    )
    # One batch at a time, on its own channel: the sink then stores a process's
    # records in the order it shipped them (ids follow emission order).
    router.subscriber(
        LOG_RECORDS,
        LOGS_EXCHANGE,
        decoder=logsink.decode_raw,
        channel=Channel(prefetch_count=1),
    )(on_log_records)
    return router
