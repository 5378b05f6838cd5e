"""What each stage reports on success (`TaskSucceeded.summary`), typed per task: the
API validates a summary against its task's model and fails the run with
`invalid_message` when a stage sends one it cannot read."""

from __future__ import annotations

from typing import Literal

from shared.messages import ArtifactRef, DiscoveredTask, TaskName, Wire


class DiscoverySummary(Wire):
    result: Literal["task_found", "no_work"]
    base_branch: str
    base_sha: str
    discovered: DiscoveredTask | None = None
    spec_title: str | None = None
    has_plan: bool = False
    remaining_tasks: int = 0


class PreflightSummary(Wire):
    codex_status: str
    github_status: str
    codex_preflight_message: str | None = None
    notes: str | None = None


class CodexSummary(Wire):
    patch: ArtifactRef
    codex_task_id: str | None = None
    files_changed: int = 0
    logs_path: str | None = None


class PublishSummary(Wire):
    branch_name: str | None = None
    pr_url: str | None = None
    commit_sha: str | None = None
    pr_number: int | None = None
    adopted: bool = False
    """An open pull request with this head existed (a retry or a redelivery)."""


SUMMARY_TYPES: dict[TaskName, type[Wire]] = {
    TaskName.DISCOVER_NEXT_PHASE: DiscoverySummary,
    TaskName.CODEX_PREFLIGHT: PreflightSummary,
    TaskName.SUBMIT_CODEX_JOB: CodexSummary,
    TaskName.APPLY_AND_PUBLISH: PublishSummary,
}
"""How the API reads each stage's success summary; finalize_run has none."""
