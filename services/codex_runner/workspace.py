"""The run's workspace: a fresh clone at the base commit, the prompt, and the patch."""

from __future__ import annotations

import asyncio
import shutil
from dataclasses import dataclass
from pathlib import Path

from shared.git import GitError, Remote, run_git
from shared.git import clone_at as git_clone_at
from shared.messages import SubmitCodexJob

MAX_SPEC_BYTES = 30_000
MAX_PROMPT_CHARS = 100_000
"""The prompt travels as one argv string: Linux caps a single one at 128 KiB."""


class WorkspaceError(Exception):
    def __init__(self, code: str, message: str, *, retryable: bool) -> None:
        super().__init__(message)
        self.code, self.retryable = code, retryable


def _safe(workspace: Path) -> tuple[str, ...]:
    # The agent runs as uid 1000; git here runs as the runner's user.
    return ("-c", f"safe.directory={workspace}")


async def clone_at(
    remote: Remote,
    token: str | None,
    *,
    branch: str,
    sha: str,
    workspace: Path,
    git_timeout: float,
) -> None:
    """A working tree of `sha` in `workspace` (see `shared.git.clone_at`)."""
    try:
        await git_clone_at(
            remote,
            token,
            branch=branch,
            sha=sha,
            workspace=workspace,
            git_timeout=git_timeout,
        )
    except GitError as exc:
        raise WorkspaceError(exc.code, str(exc), retryable=exc.retryable) from None


def _read(path: Path) -> str | None:
    try:
        data = path.read_bytes()
    except OSError:
        return None
    text = data[:MAX_SPEC_BYTES].decode("utf-8", errors="replace")
    return text + ("\n[… cut]" if len(data) > MAX_SPEC_BYTES else "")


def build_prompt(cmd: SubmitCodexJob, workspace: Path) -> str:
    """What the agent is asked: the task, the rules, the operator's notes, the spec."""
    folder = workspace / "specs" / cmd.feature_key
    task = cmd.spec_task
    title = cmd.spec_title or cmd.feature_key
    parts = [
        f'You are implementing one task of the Spec Kit feature "{title}" '
        f"(specs/{cmd.feature_key}) in this repository.",
        "",
        f"Task {task.task_id}"
        + (f" ({task.phase})" if task.phase else "")
        + f": {task.description}",
        "",
        "Rules:",
        f"- Implement task {task.task_id} only; keep the change focused.",
        f"- Mark it done in specs/{cmd.feature_key}/tasks.md (`- [X] {task.task_id}`).",
        "- Do not commit, push or create branches: leave changes in the working tree.",
        "- Do not touch .github/workflows unless the task says so.",
    ]
    if cmd.notes:
        parts += ["", "Operator notes:", cmd.notes]
    for name in ("spec.md", "plan.md", "tasks.md"):
        text = _read(folder / name)
        if text is not None:
            parts += ["", f"----- specs/{cmd.feature_key}/{name} -----", text.rstrip()]
    prompt = "\n".join(parts) + "\n"
    if len(prompt) > MAX_PROMPT_CHARS:
        prompt = prompt[:MAX_PROMPT_CHARS] + "\n[… the spec files were cut here]\n"
    return prompt


@dataclass(frozen=True)
class Patch:
    diff: bytes
    files: list[dict[str, object]]
    """`{"path", "added", "deleted"}` per changed file (binary: None counts)."""


async def make_patch(workspace: Path, base_sha: str) -> Patch:
    """Everything the agent changed against the base, new files included."""
    git = (*_safe(workspace), "-C", str(workspace))
    await run_git(*git, "add", "-A")
    diff = await run_git(*git, "diff", "--cached", "--binary", base_sha)
    numstat = await run_git(*git, "diff", "--cached", "--numstat", "-z", base_sha)
    files: list[dict[str, object]] = []
    for record in numstat.decode(errors="replace").split("\0"):
        if not record.strip():
            continue
        fields = record.split("\t", 2)
        if len(fields) == 3:
            added, deleted, path = fields
            files.append({
                "path": path,
                "added": int(added) if added.isdigit() else None,
                "deleted": int(deleted) if deleted.isdigit() else None,
            })  # fmt: skip
    return Patch(diff, files)


async def remove(path: Path) -> None:
    await asyncio.to_thread(shutil.rmtree, path, True)
