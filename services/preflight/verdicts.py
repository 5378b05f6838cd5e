"""The pre-flight's verdicts on a Codex auth volume: the registry's
`CodexVolumeChecked` and the run's audit status, error and finding, with the hint
that tells an operator how to log the volume in.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from services.preflight.probe import ProbeResult
from shared.messages import (
    CodexShard,
    CodexVolumeChecked,
    TaskError,
    TaskName,
    new_message,
)


def volume_verdict(
    cmd: Any, shard: CodexShard, result: ProbeResult
) -> CodexVolumeChecked:
    status = (
        "ready"
        if result.logged_in
        else "needs_auth"
        if result.state in ("logged_out", "volume_missing")
        else "error"
    )
    return new_message(
        CodexVolumeChecked,
        run_id=cmd.run_id,
        task=TaskName.CODEX_PREFLIGHT,
        attempt=cmd.attempt,
        shard=shard,
        status=status,
        state=result.state,
        exit_code=result.exit_code,
        output=result.output,
        checked_at=datetime.fromtimestamp(result.checked_at, UTC),
    )


def reauth_hint(volume: str, image: str) -> str:
    return (
        f"log the volume in once: `docker run --rm -it -v {volume}:/home/app/.codex "
        f'{image} codex login` (ChatGPT), or `echo "$OPENAI_API_KEY" | docker run '
        f"--rm -i -v {volume}:/home/app/.codex {image} codex login --with-api-key`; "
        "or store an OpenAI key for API-key mode: PUT /api/me/credentials/openai"
    )


def codex_status(
    result: ProbeResult, has_openai_key: bool, volume: str, image: str
) -> tuple[str, TaskError | None, str]:
    """(audit status, error or None, finding) for a probe verdict."""
    if result.logged_in:
        return "valid", None, f"{volume}: logged in ({result.state})"
    if result.state in ("logged_out", "volume_missing") and has_openai_key:
        note = f"{volume}: not logged in; API-key mode with the user's OpenAI key"
        return "valid", None, note
    if result.state == "volume_missing":
        return (
            "missing",
            TaskError(
                code="codex_volume_missing",
                message=f"auth volume {volume} does not exist; create it and "
                + reauth_hint(volume, image),
            ),
            f"{volume}: no such volume",
        )
    if result.state == "logged_out":
        return (
            "missing",
            TaskError(
                code="codex_login_missing",
                message=f"Codex is not logged in on {volume}: "
                + reauth_hint(volume, image),
            ),
            f"{volume}: not logged in",
        )
    if result.state == "image_missing":
        return (
            "invalid",
            TaskError(
                code="codex_image_missing",
                message=f"the Codex image {image} is not on the container host; "
                "build or load it (CODEX_IMAGE)",
            ),
            f"image {image} missing",
        )
    if result.state in ("timeout", "engine_unavailable"):
        return (
            "invalid",
            TaskError(
                code="codex_probe_unavailable",
                message=f"the login probe could not run ({result.state}: "
                f"{result.output}); check DOCKER_HOST",
                retryable=True,
            ),
            (f"{volume}: probe {result.state}"),
        )
    return (
        "invalid",
        TaskError(
            code="codex_auth_invalid",
            message=f"{volume} holds an unusable Codex login ({result.output}): "
            + reauth_hint(volume, image),
        ),
        f"{volume}: login unusable",
    )
