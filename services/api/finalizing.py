"""finalize_run, which the API serves itself: inline in apply_and_publish's success
transaction (`recorder`'s closer), or as a command (`finalize_command`: a retry that
resumes there, or one queued by an older version). Either way observed as the task it
is, and the run's manifest written with it."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from loguru import logger
from sqlalchemy.ext.asyncio import AsyncSession

from services.api import closing, event_tx, guards, manifest, transitions
from services.api.db import Database
from services.api.models import Run
from services.api.settings import Settings
from shared.messages import FinalizeRun, TaskName, TaskSucceeded
from shared.metrics import get_metrics
from shared.observer import observe_task


def recorder(
    settings: Settings,
) -> Callable[[AsyncSession, TaskSucceeded], Awaitable[guards.Outcome]]:
    """The TaskSucceeded transition with this API's Codex shards, whose
    apply_and_publish success closes the run inline (`_closer`)."""
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


async def finalize_command(
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
            outcome = await event_tx.apply(session, cmd, _finalizer(settings))
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
