"""What GET /runs and GET /runs/{id} answered before `services.api.reads`: the ORM's
objects validated into `RunOut` / `RunList` and dumped as FastAPI dumps a response
model (by alias). The reference the fast read path is compared with, byte for byte.
"""

from __future__ import annotations

from pathlib import Path
from uuid import UUID

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from services.api import cursor, runs
from services.api.models import Run
from services.api.schemas import (
    ArtifactOut,
    CredentialAuditOut,
    RunList,
    RunOut,
    TaskOut,
)


def run_reference(
    run: Run,
    artifacts_root: Path,
    *,
    tasks: bool = False,
    artifacts: bool = False,
    audits: bool = False,
) -> RunOut:
    """`routes.run_out` as it was: the columns, then the relations asked for."""
    fields: dict[str, object] = {
        c.key: getattr(run, c.key) for c in Run.__mapper__.column_attrs
    }
    fields["artifacts_path"] = str(artifacts_root / str(run.id))
    if tasks:
        fields["tasks"] = [TaskOut.model_validate(t) for t in run.tasks]
        fields["task_summary"] = [
            TaskOut.model_validate(t) for t in runs.task_summary(run)
        ]
    if artifacts:
        fields["artifacts"] = [ArtifactOut.model_validate(a) for a in run.artifacts]
    if audits:
        history = [CredentialAuditOut.model_validate(a) for a in run.credential_audits]
        fields["credential_audits"] = history
        fields["credential_audit"] = history[-1] if history else None
    return RunOut.model_validate(fields)


async def run_bytes(
    session: AsyncSession,
    run_id: UUID,
    artifacts_root: Path,
    *,
    tasks: bool = True,
    artifacts: bool = True,
    audits: bool = True,
) -> bytes:
    """GET /runs/{id} the ORM way (`runs.get_run`: selectinload of the relations)."""
    run = await runs.get_run(
        session, run_id, owner=None, tasks=tasks, artifacts=artifacts, audits=audits
    )
    out = run_reference(
        run, artifacts_root, tasks=tasks, artifacts=artifacts, audits=audits
    )
    return out.model_dump_json(by_alias=True).encode()


async def page_bytes(
    session: AsyncSession,
    artifacts_root: Path,
    *,
    owner: UUID,
    repository: str,
    limit: int,
    after: str | None = None,
    status: str | None = None,
) -> bytes:
    """GET /runs?repository=&status=&limit=&cursor= the ORM way."""
    query = (
        select(Run)
        .where(
            Run.created_by == owner,
            func.lower(Run.repository) == repository.lower(),
        )
        .order_by(Run.created_at.desc(), Run.id.desc())
        .limit(limit + 1)
    )
    if status is not None:
        query = query.where(Run.status == status)
    if after is not None:
        created, last_id = cursor.decode(after)
        query = query.where(
            (Run.created_at < created)
            | ((Run.created_at == created) & (Run.id < last_id))
        )
    rows = list((await session.scalars(query)).all())
    page = rows[:limit]
    next_cursor = (
        cursor.encode(page[-1].created_at, page[-1].id) if len(rows) > limit else None
    )
    listing = RunList(
        items=[run_reference(r, artifacts_root) for r in page], next_cursor=next_cursor
    )
    return listing.model_dump_json(by_alias=True).encode()
