"""Writing a run's artifacts under ARTIFACTS_ROOT/<run_id>/; the system picks names."""

from __future__ import annotations

import os
from pathlib import Path, PurePosixPath
from typing import Any
from uuid import UUID

import orjson

from shared.messages import ArtifactRef
from shared.redaction import redact


def run_dir(root: Path, run_id: UUID) -> Path:
    return root / str(run_id)


def inside(folder: Path, relative: str) -> Path | None:
    """`folder / relative` if it stays inside `folder` once symlinks are resolved, else
    None (absolute paths, `..`, NUL, links pointing out)."""
    if not relative or "\x00" in relative or PurePosixPath(relative).is_absolute():
        return None
    base = folder.resolve()
    target = (base / relative).resolve()
    return target if target.is_relative_to(base) and target != base else None


def write_bytes(
    root: Path, run_id: UUID, name: str, data: bytes, artifact_type: str
) -> ArtifactRef:
    """Write atomically (temp file, then rename); `name` is a fixed relative path."""
    relative = PurePosixPath(name)
    if relative.is_absolute() or ".." in relative.parts:
        raise ValueError(f"artifact names are relative and stay inside the run: {name}")
    target = run_dir(root, run_id) / relative
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = target.with_name(f".{target.name}.partial")
    partial.write_bytes(data)
    os.replace(partial, target)
    return ArtifactRef(path=str(relative), artifact_type=artifact_type)


def write_json(
    root: Path, run_id: UUID, name: str, data: Any, artifact_type: str
) -> ArtifactRef:
    """JSON, redacted by key and value before it touches the disk."""
    body = orjson.dumps(redact(data), option=orjson.OPT_INDENT_2 | orjson.OPT_SORT_KEYS)
    return write_bytes(root, run_id, name, body, artifact_type)
