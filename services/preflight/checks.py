"""The two preflight tasks as plain functions: what they check and what they report.

Each returns an `Outcome` (a success summary or a task error, plus artifacts); the
handlers publish it. Nothing here imports FastStream.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any
from uuid import uuid4

from loguru import logger

from services.preflight import verdicts
from services.preflight.discovery import Discovery, DiscoveryError, discover
from services.preflight.github import GithubUnavailable, check_github
from services.preflight.probe import ProbeCache
from shared import artifacts
from shared.git import GitError, Remote, remote_for, run_git
from shared.internal_api import InternalApiError, SecretSource
from shared.messages import (
    STARTED_AFTER,
    ArtifactRef,
    CodexPreflight,
    CodexVolumeChecked,
    DiscoveredTask,
    DiscoverNextPhase,
    PublishMode,
    TaskError,
)
from shared.summaries import DiscoverySummary, PreflightSummary


@dataclass
class Outcome:
    summary: dict[str, Any] | None = None
    error: TaskError | None = None
    artifacts: list[ArtifactRef] = field(default_factory=list)
    volume: CodexVolumeChecked | None = None
    """The probe verdict to announce to the shard registry, if a probe ran."""


class Deps:
    """What the checks need, built once by `main.py`.

    A plain class, not a dataclass: FastStream's dependency injection validates
    parameters with pydantic, which would try to rebuild a dataclass field by field.
    """

    def __init__(
        self,
        *,
        internal_api: SecretSource,
        probes: ProbeCache,
        artifacts_root: Path,
        workspaces_root: Path,
        github_api_url: str,
        github_git_url: str,
        git_timeout: float,
        codex_image: str,
        started_after: timedelta = STARTED_AFTER,
    ) -> None:
        self.started_after = started_after
        self.internal_api = internal_api
        self.probes = probes
        self.artifacts_root = artifacts_root
        self.workspaces_root = workspaces_root
        self.github_api_url = github_api_url
        self.github_git_url = github_git_url
        self.git_timeout = git_timeout
        self.codex_image = codex_image


def _fail(code: str, message: str, *, retryable: bool = False) -> TaskError:
    return TaskError(code=code, message=message, retryable=retryable)


async def _github_token(deps: Deps, cmd: Any) -> tuple[str | None, TaskError | None]:
    try:
        found = await deps.internal_api.secrets(cmd.run_id, ["github"])
    except InternalApiError as exc:
        return None, _fail(exc.code, str(exc), retryable=exc.retryable)
    return found.get("github"), None


def _git_error(exc: GitError, remote: Remote, token: str | None) -> TaskError:
    if exc.code in ("git_auth_failed", "repository_not_found") and token is None:
        return _fail(
            "github_token_missing" if remote.github else exc.code,
            f"{exc} — no GitHub token is stored for this user: "
            "PUT /api/me/credentials/github, then retry the run",
        )
    return _fail(exc.code, str(exc), retryable=exc.retryable)


async def run_discovery(cmd: DiscoverNextPhase, deps: Deps) -> Outcome:
    token, error = await _github_token(deps, cmd)
    if error is not None:
        return Outcome(error=error)
    remote = remote_for(cmd.repository, deps.github_git_url)
    # One folder per execution: a duplicate delivery of this command may run at the
    # same time (another replica, or this one), and a shared folder would be emptied
    # under the other's feet (git_unavailable, feature_not_found).
    name = f"discover-{cmd.attempt}-{uuid4().hex[:8]}"
    workdir = deps.workspaces_root / str(cmd.run_id) / name
    try:
        found = await discover(
            remote,
            token,
            feature_key=cmd.feature_key,
            base_branch=cmd.base_branch,
            task_id=cmd.requested_task_id,
            workdir=workdir,
            git_timeout=deps.git_timeout,
        )
    except DiscoveryError as exc:
        return Outcome(error=_fail(exc.code, str(exc), retryable=exc.retryable))
    except GitError as exc:
        return Outcome(error=_git_error(exc, remote, token))
    summary = _summary(found)
    record = artifacts.write_json(
        deps.artifacts_root,
        cmd.run_id,
        "discovery.json",
        {
            "repository": cmd.repository,
            "featureKey": cmd.feature_key,
            "tasksPath": found.tasks_path,
            "attempt": cmd.attempt,
            **summary.model_dump(mode="json"),
        },
        "discovery",
    )
    return Outcome(summary=summary.model_dump(mode="json"), artifacts=[record])


def _summary(found: Discovery) -> DiscoverySummary:
    task = found.task
    return DiscoverySummary(
        result="task_found" if task else "no_work",
        base_branch=found.base_branch,
        base_sha=found.base_sha,
        discovered=DiscoveredTask(
            task_id=task.task_id,
            description=task.description,
            phase=task.phase,
            line=task.line,
            parallel=task.parallel,
            user_story=task.user_story,
        )
        if task
        else None,
        spec_title=found.spec_title,
        has_plan=found.has_plan,
        remaining_tasks=found.remaining,
    )


async def run_preflight(cmd: CodexPreflight, deps: Deps) -> Outcome:
    try:
        keys = await deps.internal_api.secrets(cmd.run_id, ["github", "openai"])
    except InternalApiError as exc:
        return Outcome(error=_fail(exc.code, str(exc), retryable=exc.retryable))
    volume = cmd.shard.codex_volume
    result, cached = await deps.probes.get(volume)
    codex, codex_error, codex_note = verdicts.codex_status(
        result, "openai" in keys, volume, deps.codex_image
    )
    # API-key mode passes a volume that is not logged in: verdict follows status.
    verdict = "passed" if codex_error is None else "failed"
    logger.bind(
        codex_volume=volume, codex_queue=cmd.shard.codex_queue,
        codex_shard_index=cmd.shard.codex_shard_index, exit_code=result.exit_code,
        output=result.output, cached=cached, codex_mode=codex_note,
    ).info("Codex pre-flight check {}", verdict)  # fmt: skip
    github, github_error, github_notes = await _check_remote(
        cmd, deps, keys.get("github")
    )
    notes = "; ".join([codex_note, *github_notes])
    summary = PreflightSummary(
        codex_status=codex,
        github_status=github,
        codex_preflight_message=f"{verdict}: {result.output}"[:512],
        notes=notes,
    ).model_dump(mode="json")
    record = artifacts.write_json(
        deps.artifacts_root,
        cmd.run_id,
        "preflight.json",
        {"attempt": cmd.attempt, "codexVolume": volume, "probeState": result.state,
         "probeExitCode": result.exit_code, "probeCached": cached, **summary},
        "preflight",
    )  # fmt: skip
    return Outcome(
        summary=summary,
        error=codex_error or github_error,
        artifacts=[record],
        volume=verdicts.volume_verdict(cmd, cmd.shard, result) if not cached else None,
    )


async def _check_remote(
    cmd: CodexPreflight, deps: Deps, token: str | None
) -> tuple[str, TaskError | None, list[str]]:
    remote = remote_for(cmd.repository, deps.github_git_url)
    if not remote.github:
        try:
            await run_git("ls-remote", "--heads", "--", remote.url, token=token,
                          timeout=deps.git_timeout)  # fmt: skip
        except GitError as exc:
            status = "missing" if token is None else "invalid"
            return status, _git_error(exc, remote, token), [f"ls-remote: {exc.code}"]
        return "valid", None, ["ls-remote: read access"]
    needs_push = cmd.publish_mode is not PublishMode.NONE
    try:
        check = await check_github(
            deps.github_api_url, token, cmd.repository, cmd.base_branch,
            needs_push=needs_push,
        )  # fmt: skip
    except GithubUnavailable as exc:
        error = _fail("github_unavailable", str(exc), retryable=True)
        return "invalid", error, [str(exc)]
    errors = {
        "missing": ("github_token_missing", "store a GitHub token: "
                    "PUT /api/me/credentials/github"),
        "invalid": ("github_token_invalid", "GitHub rejects the stored token: "
                    "store a new one"),
        "scope_missing": ("github_scope_missing", "the GitHub token cannot "
                          f"{'push to' if needs_push else 'read'} {cmd.repository}: "
                          "grant it repo access (contents: write)"),
    }  # fmt: skip
    if check.status in errors:
        code, message = errors[check.status]
        return check.status, _fail(code, message), check.notes
    if check.branch_missing:
        message = f"base branch {cmd.base_branch} no longer exists on GitHub"
        return check.status, _fail("base_branch_not_found", message), check.notes
    return check.status, None, check.notes
