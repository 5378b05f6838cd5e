"""Runs: create one, lock one, and the reads behind the API (retry and cancel:
`run_control`).

Every function takes the caller's session and never commits: the route owns the
transaction.
"""

from __future__ import annotations

from dataclasses import dataclass
from uuid import UUID, uuid4

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import selectinload

from services.api import runlock, runrows
from services.api.dispatch import dispatch, timeline
from services.api.errors import (
    ActiveRunExists,
    IdempotencyKeyReused,
    RunNotFound,
)
from services.api.lifecycle import (
    Phase,
    RunStatus,
)
from services.api.models import ACTIVE_RUN_STATUSES, Run, TaskState
from shared.messages import PIPELINE, TaskName


@dataclass(frozen=True)
class NewRun:
    """A validated run request."""

    repository: str
    feature_key: str
    base_branch: str | None
    task_id: str | None
    publish_mode: str
    notes: str | None

    def matches(self, run: Run) -> bool:
        return (
            run.repository,
            run.feature_key,
            run.base_branch,
            run.requested_task_id,
            run.publish_mode,
            run.notes,
        ) == (
            self.repository,
            self.feature_key,
            self.base_branch,
            self.task_id,
            self.publish_mode,
            self.notes,
        )


@dataclass(frozen=True)
class ListFilter:
    """GET /runs' filters (`reads.runs_json`)."""

    status: str | None = None
    feature_key: str | None = None
    repository: str | None = None


async def lock_run(
    session: AsyncSession, run_id: UUID, *, owner: UUID | None = None
) -> Run | None:
    """The run row, locked for this transaction.

    Every transition of a run is serialised on it.
    """
    held = runlock.holds_lock(session, run_id)
    if held is not None:  # locked earlier in this transaction
        return held if owner is None or held.created_by == owner else None
    if session.identity_key(Run, (run_id,)) not in session.identity_map:
        return await runlock.lock_run(session, run_id, owner=owner)
    # the session holds it already: the ORM reloads it over what it has
    query = select(Run).where(Run.id == run_id).with_for_update()
    if owner is not None:
        query = query.where(Run.created_by == owner)
    run = (
        await session.scalars(query.execution_options(populate_existing=True))
    ).one_or_none()
    return None if run is None else runlock.note_lock(session, run)


async def _by_idempotency_key(
    session: AsyncSession, user_id: UUID, key: str
) -> Run | None:
    query = select(Run).where(Run.created_by == user_id, Run.idempotency_key == key)
    return (await session.scalars(query)).one_or_none()


async def active_run_id(
    session: AsyncSession, repository: str, feature_key: str
) -> UUID | None:
    query = select(Run.id).where(
        func.lower(Run.repository) == repository.lower(),
        Run.feature_key == feature_key,
        Run.status.in_(ACTIVE_RUN_STATUSES),
    )
    return (await session.scalars(query)).first()


async def create_run(
    session: AsyncSession,
    request: NewRun,
    *,
    user_id: UUID,
    idempotency_key: str | None,
) -> tuple[Run, bool]:
    """Insert the run, its first task and the discovery command.

    Returns (run, created).
    """
    if idempotency_key is not None:
        existing = await _by_idempotency_key(session, user_id, idempotency_key)
        if existing is not None:
            return _replay(existing, request), False
    run = await runlock.insert_run(
        session,
        {
            "id": uuid4(),
            "repository": request.repository,
            "feature_key": request.feature_key,
            "base_branch": request.base_branch,
            "requested_task_id": request.task_id,
            "publish_mode": request.publish_mode,
            "notes": request.notes,
            "status": RunStatus.PENDING,
            "phase": Phase.DISCOVER,
            "attempt": 1,
            "outputs": {},
            "event_seq": 0,
            "created_by": user_id,
            "idempotency_key": idempotency_key,
        },
    )
    if run is None:
        # The partial unique indexes decide races that a check-then-insert would lose.
        # A concurrent request with the same key may trip either index first: the key
        # decides.
        if idempotency_key is not None:
            existing = await _by_idempotency_key(session, user_id, idempotency_key)
            if existing is not None:
                return _replay(existing, request), False
        active = await active_run_id(session, request.repository, request.feature_key)
        raise ActiveRunExists(
            f"run {active} is still active for {request.repository}"
            f" feature {request.feature_key}",
            str(active) if active else None,
        )
    timeline(
        session,
        run,
        "run_created",
        attempt=1,
        repository=run.repository,
        featureKey=run.feature_key,
    )
    await dispatch(session, run, TaskName.DISCOVER_NEXT_PHASE)
    await runrows.flush(session)
    return run, True


def _replay(existing: Run, request: NewRun) -> Run:
    if not request.matches(existing):
        raise IdempotencyKeyReused(
            "this Idempotency-Key was used for a different request"
        )
    return existing


async def get_run(
    session: AsyncSession,
    run_id: UUID,
    *,
    owner: UUID | None,
    tasks: bool = True,
    artifacts: bool = True,
    audits: bool = True,
) -> Run:
    options = []
    if tasks:
        options.append(selectinload(Run.tasks))
    if artifacts:
        options.append(selectinload(Run.artifacts))
    if audits:
        options.append(selectinload(Run.credential_audits))
    query = select(Run).where(Run.id == run_id).options(*options)
    if owner is not None:
        query = query.where(Run.created_by == owner)
    run = (await session.scalars(query)).one_or_none()
    if run is None:
        raise RunNotFound(f"no run {run_id}")
    return run


async def visible_run(
    session: AsyncSession, run_id: UUID, *, owner: UUID | None
) -> Run:
    """The run without its relations: for routes that only need it to exist for
    the caller (else RunNotFound)."""
    return await get_run(
        session, run_id, owner=owner, tasks=False, artifacts=False, audits=False
    )


def task_summary(run: Run) -> list[TaskState]:
    """Latest attempt of each task, in pipeline order."""
    latest: dict[str, TaskState] = {}
    for state in run.tasks:
        current = latest.get(state.task_name)
        if current is None or state.attempt > current.attempt:
            latest[state.task_name] = state
    return [latest[task] for task in PIPELINE if task in latest]
