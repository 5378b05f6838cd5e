"""apply_and_publish as a plain function: land the patch, push once, open or adopt a PR.

The ledger is GitHub itself: the branch name and commit are deterministic per run, the
push is skipped when the branch already holds our commit, and an open pull request
with our head is adopted instead of created. A redelivered command or a retried
attempt therefore ends with the same branch, commit and pull request.
"""

from __future__ import annotations

import asyncio
import shutil
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any
from uuid import uuid4

from services.publisher import policy
from services.publisher.github import GithubClient, GithubError, Pull
from services.publisher.landing import Identity, LandingError, Workspace
from shared import artifacts
from shared.git import GitError, clone_at, remote_for
from shared.internal_api import InternalApiError, SecretSource
from shared.messages import (
    STARTED_AFTER,
    ApplyAndPublish,
    ArtifactRef,
    PublishMode,
    TaskError,
)
from shared.summaries import PublishSummary

BOT = Identity("MoonMind Spec Workflow", "spec-workflow@users.noreply.github.com")


@dataclass
class Outcome:
    summary: dict[str, Any] | None = None
    error: TaskError | None = None
    artifacts: list[ArtifactRef] = field(default_factory=list)


class Deps:
    """What publishing needs, built once by `main.py` (a plain class: see preflight)."""

    def __init__(
        self,
        *,
        internal_api: SecretSource,
        artifacts_root: Path,
        workspaces_root: Path,
        github_api_url: str,
        github_git_url: str,
        git_timeout: float,
        branch_prefix: str = "speckit",
        author: Identity = BOT,
        labels: list[str] | None = None,
        max_files: int = 200,
        max_lines: int = 20000,
        co_author: bool = True,
        started_after: timedelta = STARTED_AFTER,
    ) -> None:
        self.started_after = started_after
        self.internal_api = internal_api
        self.artifacts_root = artifacts_root
        self.workspaces_root = workspaces_root
        self.github_api_url = github_api_url
        self.github_git_url = github_git_url
        self.git_timeout = git_timeout
        self.branch_prefix = branch_prefix
        self.author = author
        self.labels = list(labels or [])
        self.max_files = max_files
        self.max_lines = max_lines
        self.co_author = co_author


def _fail(code: str, message: str, *, retryable: bool = False) -> TaskError:
    return TaskError(code=code, message=message, retryable=retryable)


def last_message(run_dir: Path) -> str | None:
    """The agent's final message of the newest Codex attempt, if it left one."""
    found = sorted(
        run_dir.glob("codex/*/last_message.txt"),
        key=lambda p: int(p.parent.name) if p.parent.name.isdigit() else -1,
    )
    try:
        return (
            found[-1].read_text(encoding="utf-8", errors="replace") if found else None
        )
    except OSError:
        return None


async def run_publish(cmd: ApplyAndPublish, deps: Deps) -> Outcome:
    run_dir = artifacts.run_dir(deps.artifacts_root, cmd.run_id)
    patch = artifacts.inside(run_dir, cmd.patch.path)
    if patch is None:
        message = f"the patch path {cmd.patch.path!r} leaves the run's artifact folder"
        return Outcome(error=_fail("invalid_message", message))
    if not patch.is_file():
        return Outcome(error=_fail("patch_missing", f"no patch at {cmd.patch.path}"))
    if cmd.publish_mode is PublishMode.NONE:
        summary = PublishSummary().model_dump(mode="json") | {"patch": cmd.patch.path}
        return Outcome(summary=summary, artifacts=[cmd.patch])
    try:
        found = await deps.internal_api.secrets(cmd.run_id, ["github"])
    except InternalApiError as exc:
        return Outcome(error=_fail(exc.code, str(exc), retryable=exc.retryable))
    publisher = _Publisher(cmd, deps, found.get("github"), patch)
    try:
        summary = await publisher.publish()
    except (LandingError, GithubError, GitError) as exc:
        error = _fail(exc.code, str(exc), retryable=exc.retryable)
        return Outcome(error=error, artifacts=publisher.kept)
    return Outcome(summary=summary, artifacts=publisher.kept)


class _Publisher:
    """One publish attempt; `kept` lists the artifacts written so far."""

    def __init__(
        self, cmd: ApplyAndPublish, deps: Deps, token: str | None, patch: Path
    ) -> None:
        self.cmd, self.deps, self.token, self.patch = cmd, deps, token, patch
        self.remote = remote_for(cmd.repository, deps.github_git_url)
        self.kept: list[ArtifactRef] = [cmd.patch]

    def _record(self, step: str, data: Any) -> None:
        ref = artifacts.write_json(
            self.deps.artifacts_root,
            self.cmd.run_id,
            f"github/{step}.json",
            data,
            "github_response",
        )
        if ref not in self.kept:
            self.kept.append(ref)

    async def publish(self) -> dict[str, Any]:
        # One working copy per execution, removed afterwards: a duplicate delivery of
        # the command may run at the same time (another replica, or this one), and a
        # shared folder would be emptied under the other's feet.
        name = f"publish-{self.cmd.attempt}-{uuid4().hex[:8]}"
        workdir = self.deps.workspaces_root / str(self.cmd.run_id) / name
        try:
            return await self._publish(workdir)
        finally:
            await asyncio.to_thread(shutil.rmtree, workdir, True)

    async def _publish(self, workdir: Path) -> dict[str, Any]:
        cmd, deps = self.cmd, self.deps
        await clone_at(
            self.remote, self.token, branch=cmd.base_branch, sha=cmd.base_sha,
            workspace=workdir, git_timeout=deps.git_timeout,
        )  # fmt: skip
        space = Workspace(workdir, deps.git_timeout)
        files = await space.apply(self.patch)
        await self._check_policy(files)
        tasks_path = f"specs/{cmd.feature_key}/tasks.md"
        remaining = await space.check_task(tasks_path, cmd.spec_task.task_id)
        message = policy.commit_message(
            cmd.feature_key,
            cmd.spec_task,
            cmd.run_id,
            co_author=cmd.requested_by if deps.co_author else None,
        )
        sha = await space.commit(message, deps.author, cmd.base_sha)
        branch = policy.branch_name(
            deps.branch_prefix, cmd.feature_key, cmd.spec_task.task_id, cmd.run_id
        )
        try:
            log = await space.push(self.remote, self.token, branch, cmd.run_id)
        except LandingError as exc:
            self._push_log(f"{exc.code}: {exc}\n")
            raise
        self._push_log(log)
        summary = PublishSummary(branch_name=branch, commit_sha=sha)
        if cmd.publish_mode in (PublishMode.PR, PublishMode.DRAFT):
            pull, adopted = await self._pull_request(branch, files, remaining)
            summary = summary.model_copy(
                update={
                    "pr_url": pull.url,
                    "pr_number": pull.number,
                    "adopted": adopted,
                }
            )
        return summary.model_dump(mode="json") | {
            "files_changed": len(files),
            "remaining_tasks": remaining,
        }

    def _push_log(self, text: str) -> None:
        self.kept.append(
            artifacts.write_bytes(
                self.deps.artifacts_root, self.cmd.run_id, "publish/push.log",
                text.encode(), "push_log",
            )
        )  # fmt: skip

    async def _check_policy(self, files: list[policy.FileStat]) -> None:
        deps = self.deps
        error = policy.check_limits(files, deps.max_files, deps.max_lines)
        if error is None:
            diff = self.patch.read_bytes().decode("utf-8", errors="replace")
            error = policy.scan_secrets(diff)
        if error is None:
            error = await self._check_workflow_scope(policy.touches_workflows(files))
        if error is not None:
            raise LandingError(error.code, error.message, retryable=error.retryable)

    async def _check_workflow_scope(self, workflows: list[str]) -> TaskError | None:
        if not workflows or not self.remote.github or not self.token:
            return None
        async with self._github() as github:
            scopes = await github.scopes()
        if scopes is None or "workflow" in scopes:
            return None
        return _fail(
            "workflow_scope_missing",
            f"the patch changes {', '.join(workflows[:5])}, and GitHub refuses such a "
            "push from a token without the `workflow` scope: store a token with it, "
            "then retry the run",
        )

    def _github(self) -> GithubClient:
        return GithubClient(
            self.deps.github_api_url,
            self.token or "",
            self.cmd.repository,
            self._record,
        )

    async def _pull_request(
        self, branch: str, files: list[policy.FileStat], remaining: int | None
    ) -> tuple[Pull, bool]:
        """The open pull request for `branch`: adopted if it exists, else created."""
        cmd = self.cmd
        if not self.remote.github:
            raise LandingError(
                "pr_unsupported",
                "pull requests need an owner/name GitHub repository; use "
                "publishMode `branch` for other remotes",
                retryable=False,
            )
        title = policy.pr_title(cmd.spec_task)
        body = policy.pr_body(
            task=cmd.spec_task,
            feature_key=cmd.feature_key,
            spec_title=cmd.spec_title,
            last_message=last_message(
                artifacts.run_dir(self.deps.artifacts_root, cmd.run_id)
            ),
            files=files,
            remaining=remaining,
            run_id=cmd.run_id,
        )
        async with self._github() as github:
            pull = await github.open_pull(branch)
            created = None
            if pull is None:
                created = await github.create_pull(
                    branch, cmd.base_branch, title, body,
                    draft=cmd.publish_mode is PublishMode.DRAFT,
                )  # fmt: skip
                pull = created or await github.open_pull(branch, "pulls_relist")
                if pull is None:
                    raise GithubError(
                        "github_unavailable",
                        "GitHub said the pull request exists but does not list it",
                        retryable=True,
                    )
            if created is None and (pull.title, pull.body) != (title, body):
                pull = await github.update_pull(pull, title, body)
            if self.deps.labels:
                await github.add_labels(pull, self.deps.labels)
        return pull, created is None
