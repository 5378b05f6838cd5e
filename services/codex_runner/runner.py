"""submit_codex_job as a plain function: workspace, agent, live JSONL, patch, verdict.

The handler publishes what this returns; heartbeats and progress go out through the
callbacks it passes in. Nothing here imports FastStream.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson
from loguru import logger

from services.codex_runner.agent import (
    Agent,
    AgentOutcome,
    AgentRun,
    ExecResult,
    Executor,
    ExecutorError,
)
from services.codex_runner.workspace import (
    WorkspaceError,
    build_prompt,
    clone_at,
    make_patch,
    remove,
)
from shared import artifacts
from shared.git import remote_for
from shared.internal_api import InternalApiError, SecretSource
from shared.messages import ArtifactRef, SubmitCodexJob, TaskError
from shared.redaction import redact_text
from shared.summaries import CodexSummary

INFRA_MARKERS = (
    "high demand",
    "429",
    "500",
    "502",
    "503",
    "connection failed",
    "stream disconnected",
    "error sending request",
    "timed out",
)


@dataclass
class JobOutcome:
    summary: dict[str, Any] | None = None
    error: TaskError | None = None
    cancelled: bool = False
    artifacts: list[ArtifactRef] = field(default_factory=list)


def shard_labels(deployment: str, shard: int) -> dict[str, str]:
    """What marks an agent as this deployment's, on this shard (for cleanup)."""
    return {"moonmind.deployment": deployment, "codex_shard_index": str(shard)}


class RunnerDeps:
    """What a job needs, built once by `main.py` (a plain class: see preflight Deps)."""

    def __init__(
        self,
        *,
        executor: Executor,
        agent: Agent,
        internal_api: SecretSource,
        artifacts_root: Path,
        workspaces_root: Path,
        github_git_url: str,
        git_timeout: float,
        timeout: float,
        idle_timeout: float,
        deployment: str = "default",
    ) -> None:
        self.executor, self.agent, self.internal_api = executor, agent, internal_api
        self.artifacts_root, self.workspaces_root = artifacts_root, workspaces_root
        self.github_git_url, self.git_timeout = github_git_url, git_timeout
        self.timeout, self.idle_timeout = timeout, idle_timeout
        self.deployment = deployment
        """Several deployments may share one engine: only ours is cleaned up."""


Progress = Callable[[dict[str, Any]], Awaitable[None]]


def _fail(code: str, message: str, *, retryable: bool = False) -> JobOutcome:
    return JobOutcome(
        error=TaskError(code=code, message=message[:2000], retryable=retryable)
    )


async def run_job(
    cmd: SubmitCodexJob, deps: RunnerDeps, progress: Progress
) -> JobOutcome:
    try:
        keys = await deps.internal_api.secrets(cmd.run_id, ["github", "openai"])
    except InternalApiError as exc:
        return _fail(exc.code, str(exc), retryable=exc.retryable)
    workspace = deps.workspaces_root / str(cmd.run_id) / str(cmd.attempt)
    out_rel = f"codex/{cmd.attempt}"
    out_dir = artifacts.run_dir(deps.artifacts_root, cmd.run_id) / out_rel
    try:
        await clone_at(
            remote_for(cmd.repository, deps.github_git_url),
            keys.get("github"),
            branch=cmd.base_branch,
            sha=cmd.base_sha,
            workspace=workspace,
            git_timeout=deps.git_timeout,
        )
        return await _run_agent(cmd, deps, keys, workspace, out_dir, out_rel, progress)
    except WorkspaceError as exc:
        return _fail(exc.code, str(exc), retryable=exc.retryable)
    finally:
        await remove(workspace)


async def _run_agent(
    cmd: SubmitCodexJob,
    deps: RunnerDeps,
    keys: dict[str, str],
    workspace: Path,
    out_dir: Path,
    out_rel: str,
    progress: Progress,
) -> JobOutcome:
    await asyncio.to_thread(out_dir.mkdir, parents=True, exist_ok=True)
    run = AgentRun(
        run_id=cmd.run_id,
        attempt=cmd.attempt,
        workspace=workspace,
        output_dir=out_dir,
        prompt=build_prompt(cmd, workspace),
        auth_volume=cmd.shard.codex_volume,
        credentials={k: v for k, v in keys.items() if k == "openai"},
        labels=shard_labels(deps.deployment, cmd.shard.codex_shard_index),
    )
    parser = deps.agent.parser()
    log = LiveLog(out_dir / "events.jsonl", parser, progress)
    try:
        result = await deps.executor.run(
            run,
            deps.agent,
            log.line,
            timeout=deps.timeout,
            idle_timeout=deps.idle_timeout,
        )
    except ExecutorError as exc:
        return _fail(exc.code, str(exc), retryable=exc.retryable)
    finally:
        await log.close()
    outcome = parser.outcome()
    refs = [ArtifactRef(path=f"{out_rel}/events.jsonl", artifact_type="codex_log")]
    last = out_dir / "last_message.txt"
    if last.is_file():
        refs.append(
            ArtifactRef(
                path=f"{out_rel}/last_message.txt", artifact_type="codex_last_message"
            )
        )
    verdict = _verdict(result, outcome)
    if verdict is not None:
        verdict.artifacts = refs
        return verdict
    patch = await make_patch(workspace, cmd.base_sha)
    if not patch.diff.strip():
        return JobOutcome(
            error=TaskError(
                code="no_changes",
                message="Codex finished without changing any file",
                retryable=False,
            ),
            artifacts=refs,
        )  # fmt: skip
    patch_ref = artifacts.write_bytes(
        deps.artifacts_root, cmd.run_id, "patch.diff", patch.diff, "patch"
    )
    summary = CodexSummary(
        patch=patch_ref,
        codex_task_id=outcome.thread_id,
        files_changed=len(patch.files),
        logs_path=f"{out_rel}/events.jsonl",
    ).model_dump(mode="json") | {
        "files": patch.files,
        "usage": outcome.usage,
        "commands": outcome.commands,
        "items": outcome.items,
        "last_message": (outcome.last_message or "")[:2000],
    }
    return JobOutcome(summary=summary, artifacts=[patch_ref, *refs])


def _verdict(result: ExecResult, outcome: AgentOutcome) -> JobOutcome | None:
    """The failure an execution amounts to; None when it may have made a patch."""
    if result.cancelled:
        return JobOutcome(cancelled=True)
    if result.timed_out:
        return _fail("codex_timeout", "Codex ran past CODEX_TIMEOUT and was stopped")
    if result.stalled:
        return _fail("codex_stalled", "Codex wrote no event for CODEX_IDLE_TIMEOUT and "
                     "was stopped", retryable=True)  # fmt: skip
    if outcome.turn_error or result.exit_code != 0 or not outcome.completed:
        message = (
            outcome.turn_error
            or redact_text(result.stderr_tail)[-500:]
            or (f"codex exited with {result.exit_code}")
        )
        infra = any(marker in message.lower() for marker in INFRA_MARKERS)
        return _fail("codex_failed", f"Codex failed: {message}", retryable=infra)
    if outcome.failed_changes:
        files = ", ".join(outcome.failed_changes[:10])
        return _fail("codex_edit_failed", f"Codex could not apply its edits to {files}")
    return None


class LiveLog:
    """events.jsonl written line by line as it arrives, and progress summaries."""

    def __init__(self, path: Path, parser: Any, progress: Progress, every: float = 5.0):
        self._file = path.open("ab")
        self._parser, self._progress, self._every = parser, progress, every
        self._last_sent = 0.0
        self._pending: dict[str, Any] = {}

    async def line(self, text: str) -> None:
        self._file.write(redact_text(text).encode() + b"\n")
        self._file.flush()
        for item in self._parser.feed(text):
            self._pending[item.kind] = item.data
        if self._pending and time.monotonic() - self._last_sent >= self._every:
            await self._flush()

    async def _flush(self) -> None:
        summary = self._summary()
        self._pending.clear()
        self._last_sent = time.monotonic()
        try:
            await self._progress(summary)
        except Exception as exc:  # a missed progress note must not stop the agent
            logger.warning("Progress not published: {}", type(exc).__name__)

    def _summary(self) -> dict[str, Any]:
        outcome = self._parser.outcome()
        return {
            "thread_id": outcome.thread_id,
            "items": outcome.items,
            "commands": outcome.commands,
            "files_changed": len(outcome.files_changed),
            "usage": outcome.usage,
        }

    async def close(self) -> None:
        if self._pending:
            await self._flush()
        self._file.close()
        logger.debug("events.jsonl closed: {}", orjson.dumps(self._summary()).decode())
