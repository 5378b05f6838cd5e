"""HTTP routes for a run's artifacts: the list, and the download (inside the run's
directory only, symlinks resolved).
"""

from __future__ import annotations

import asyncio
import os
from uuid import UUID

from fastapi import APIRouter
from fastapi.responses import FileResponse
from sqlalchemy import select

from services.api import runs
from services.api.db import SessionDep
from services.api.deps import PrincipalDep, SettingsDep
from services.api.errors import ArtifactNotFound
from services.api.models import Artifact
from services.api.schemas import ArtifactList, ArtifactOut

router = APIRouter()  # under `routes.router`: its prefix and its caller check


@router.get("/runs/{run_id}/artifacts")
async def list_artifacts(
    run_id: UUID, session: SessionDep, caller: PrincipalDep
) -> ArtifactList:
    async with session.begin():
        run = await runs.get_run(
            session, run_id, owner=caller.user_id, tasks=False, audits=False
        )
    return ArtifactList(items=[ArtifactOut.model_validate(a) for a in run.artifacts])


def _artifact_file(run_dir: str | os.PathLike[str], path: str) -> str | None:
    """The real path of `path` when it is a regular file inside `run_dir`, else None.

    realpath follows symlinks: a link planted in the tree cannot lead outside the
    run's directory. Blocking filesystem calls: run it in a thread.
    """
    root = os.path.realpath(run_dir)
    target = os.path.realpath(os.path.join(root, path))
    if os.path.commonpath([root, target]) != root or not os.path.isfile(target):
        return None
    return target


@router.get("/runs/{run_id}/artifacts/{artifact_id}", response_class=FileResponse)
async def download_artifact(
    run_id: UUID,
    artifact_id: UUID,
    session: SessionDep,
    settings: SettingsDep,
    caller: PrincipalDep,
) -> FileResponse:
    async with session.begin():
        await runs.visible_run(session, run_id, owner=caller.user_id)
        artifact = await session.scalar(
            select(Artifact).where(
                Artifact.id == artifact_id, Artifact.run_id == run_id
            )
        )
    if artifact is None:
        raise ArtifactNotFound(f"run {run_id} has no artifact {artifact_id}")
    target = await asyncio.to_thread(
        _artifact_file, settings.artifacts_root / str(run_id), artifact.path
    )
    if target is None:
        raise ArtifactNotFound(f"artifact {artifact_id} is not available")
    return FileResponse(
        target, filename=os.path.basename(target), media_type="application/octet-stream"
    )
