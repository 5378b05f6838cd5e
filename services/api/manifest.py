"""`manifest.json`: the index of a finished run's artifacts, written by finalize_run."""

from __future__ import annotations

import os
from datetime import UTC, datetime
from pathlib import Path

import orjson
from sqlalchemy.ext.asyncio import AsyncSession

from services.api import direct
from services.api.models import Run

MANIFEST = "manifest.json"


async def write(session: AsyncSession, run: Run, artifacts_root: Path) -> str:
    """Write the manifest atomically into the run's directory.

    Returns its relative path.
    """
    rows = await direct.artifacts_of(session, run.id)
    body = {
        "runId": str(run.id),
        "repository": run.repository,
        "featureKey": run.feature_key,
        "attempt": run.attempt,
        "status": run.status,
        "result": run.result,
        "baseSha": run.base_sha,
        "branchName": run.branch_name,
        "prUrl": run.pr_url,
        "codexTaskId": run.codex_task_id,
        "writtenAt": datetime.now(UTC).isoformat(),
        "artifacts": [
            {
                "path": a["path"],
                "artifactType": a["artifact_type"],
                "task": a["task_name"],
                "attempt": a["attempt"],
            }
            for a in rows
            if a["path"] != MANIFEST
        ],
    }
    run_dir = artifacts_root / str(run.id)
    run_dir.mkdir(parents=True, exist_ok=True)
    partial = run_dir / f".{MANIFEST}.partial"
    partial.write_bytes(orjson.dumps(body, option=orjson.OPT_INDENT_2))
    os.replace(partial, run_dir / MANIFEST)
    return MANIFEST
