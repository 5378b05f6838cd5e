"""AMQP subscribers of the API: task events, finalize_run and dead letters.

Each one is a thin adapter around `transitions.py` (or `closing.py`) inside one
transaction that starts with the inbox check.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from faststream.message import StreamMessage
from faststream.rabbit import Channel, RabbitRouter
from loguru import logger
from sqlalchemy.ext.asyncio import AsyncSession

from services.api import (
    closing,
    dead_letters,
    guards,
    logsink,
    manifest,
    runlock,
    runrows,
    shards,
    transitions,
)
from services.api.db import Database, retry_while_unavailable
from services.api.models import Run
from services.api.settings import Settings
from shared.messages import (
    CodexVolumeChecked,
    FinalizeRun,
    Message,
    TaskCancelled,
    TaskFailed,
    TaskHeartbeat,
    TaskName,
    TaskStarted,
    TaskSucceeded,
)
from shared.metrics import Metrics, get_metrics
from shared.observer import observe_task
from shared.routing import Route
from shared.topology import (
    DEAD_LETTERS,
    DLX,
    EXCHANGE,
    LOG_RECORDS,
    LOGS_EXCHANGE,
    queue_for,
)

E = TypeVar("E", bound=Message)


async def _apply(
    session: AsyncSession,
    event: E,
    action: Callable[[AsyncSession, E], Awaitable[guards.Outcome]],
) -> guards.Outcome:
    """Inbox check plus the transition, in one transaction.

    The inbox statement also locks the event's run, which every transition starts
    with. Retried in place while Postgres is down.
    """

    async def attempt() -> guards.Outcome:
        # No autoflush: the run row's changes, the timeline and the task moves go
        # out once, in `runrows.flush`'s one statement, not before every statement.
        async with session.begin():
            with session.no_autoflush:
                if not await runlock.first_delivery(
                    session,
                    event.message_id,
                    lock=event.run_id,
                    task=(event.task, event.attempt),
                ):
                    return guards.Outcome(False, "duplicate")
                outcome = await action(session, event)
                await runrows.flush(session)
                return outcome

    with logger.contextualize(
        run_id=str(event.run_id),
        task=event.task,
        attempt=event.attempt,
        message_id=str(event.message_id),
    ):
        outcome = await retry_while_unavailable(attempt)
        metrics: Metrics = get_metrics()
        if outcome.applied:
            logger.debug("Applied {kind}", kind=type(event).__name__)
        else:
            metrics.incr("event_ignored", task=event.task, reason=outcome.reason)
            logger.info(
                "Ignored {kind}: {reason}",
                kind=type(event).__name__,
                reason=outcome.reason,
            )
        return outcome


async def _applied(
    database: Database,
    event: E,
    action: Callable[[AsyncSession, E], Awaitable[guards.Outcome]],
) -> guards.Outcome:
    async with database.new_session() as session:
        return await _apply(session, event, action)


def _recorder(
    settings: Settings,
) -> Callable[[AsyncSession, TaskSucceeded], Awaitable[guards.Outcome]]:
    closer = _closer(settings)

    async def record(s: AsyncSession, e: TaskSucceeded) -> guards.Outcome:
        return await transitions.record_succeeded(
            s,
            e,
            shards=settings.codex_shards,
            volume_prefix=settings.codex_volume_prefix,
            closer=closer,
        )

    return record


async def _finalize_command(
    database: Database, settings: Settings, cmd: FinalizeRun
) -> None:
    """finalize_run is served here: the API owns the run row and the manifest.

    A copy that is no longer current (redelivered, stale) is no task execution: it is
    dropped before the observer would count it.
    """
    async with database.new_session() as session:
        async with session.begin():
            current = await closing.task_is_open(session, cmd)
        if not current:
            logger.info("Ignored FinalizeRun for run {}: not current", str(cmd.run_id))
            return
        with observe_task(get_metrics(), cmd.task, cmd.run_id, cmd.attempt) as task:
            outcome = await _apply(session, cmd, _finalizer(settings))
            task.succeeded({"outcome": outcome.reason})


def _finalizer(
    settings: Settings,
) -> Callable[[AsyncSession, FinalizeRun], Awaitable[guards.Outcome]]:
    """A finalize_run command (a retry resuming there, or one queued by an older
    version): close the run, then its manifest."""

    async def finalize(session: AsyncSession, cmd: FinalizeRun) -> guards.Outcome:
        run, outcome = await closing.finalize(session, cmd)
        if run is not None:
            await _write_manifest(session, run, settings)
        return outcome

    return finalize


async def _write_manifest(session: AsyncSession, run: Run, settings: Settings) -> None:
    path = await manifest.write(session, run, settings.artifacts_root)
    await closing.record_manifest(session, run, path)


def _closer(settings: Settings) -> closing.Closer:
    """finalize_run served inline, in apply_and_publish's success transaction:
    observed as the task it is (metrics, log lines), then the manifest."""

    async def close(session: AsyncSession, run: Run) -> None:
        metrics = get_metrics()
        with observe_task(metrics, TaskName.FINALIZE_RUN, run.id, run.attempt) as task:
            await _write_manifest(session, run, settings)
            task.succeeded({"outcome": "applied"})

    return close


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
        return await transitions.fail_dead_letter(s, m, error)

    get_metrics().incr("dead_letter", task=cause.task, code=error.code)
    await _applied(database, dead_letters.inbox_copy(cause), fail)


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
    """A fresh router with every API subscriber; one per app (FastStreamAPI wraps).

    The handlers take their message only: the app's settings and database are bound
    here, not resolved per message by FastAPI's dependency injection (which cost
    about a tenth of a short event's CPU).
    """
    record_succeeded = _recorder(settings)

    async def on_task_started(event: TaskStarted) -> None:
        await _applied(database, event, transitions.record_started)

    async def on_task_heartbeat(event: TaskHeartbeat) -> None:
        await _applied(database, event, transitions.record_heartbeat)

    async def on_task_succeeded(event: TaskSucceeded) -> None:
        await _applied(database, event, record_succeeded)

    async def on_task_failed(event: TaskFailed) -> None:
        await _applied(database, event, transitions.record_failed)

    async def on_task_cancelled(event: TaskCancelled) -> None:
        await _applied(database, event, transitions.record_cancelled)

    async def on_finalize_run(cmd: FinalizeRun) -> None:
        await _finalize_command(database, settings, cmd)

    async def on_dead_letter(dead: dead_letters.DeadLetter) -> None:
        await _dead_letter(database, dead)

    async def on_codex_volume_checked(event: CodexVolumeChecked) -> None:
        await _volume_checked(database, event)

    on_finalize_run.__doc__ = _finalize_command.__doc__
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
    )(logsink.on_log_records)
    return router
