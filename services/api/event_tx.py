"""One event's transaction on the API: the inbox check, which also locks the run,
then the transition and the run row's flush; retried in place while Postgres is
down, counted and logged when the event changes nothing."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import TypeVar

from loguru import logger
from sqlalchemy.ext.asyncio import AsyncSession

from services.api import guards, runlock, runrows
from services.api.db import Database, retry_while_unavailable
from shared.messages import Message
from shared.metrics import Metrics, get_metrics

E = TypeVar("E", bound=Message)


async def apply(
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


async def applied(
    database: Database,
    event: E,
    action: Callable[[AsyncSession, E], Awaitable[guards.Outcome]],
) -> guards.Outcome:
    async with database.new_session() as session:
        return await apply(session, event, action)
