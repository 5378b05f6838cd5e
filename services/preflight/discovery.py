"""discover_next_phase: fetch the feature at its base branch, choose the next task."""

from __future__ import annotations

import asyncio
import shutil
from dataclasses import dataclass
from pathlib import Path

from services.preflight.speckit import (
    SpecTask,
    TaskChoiceError,
    choose,
    parse_tasks,
    spec_title,
)
from shared.git import GitError, Remote, run_git
from shared.names import branch_name, spec_kit_name

MAX_FILE_BYTES = 2 * 1024 * 1024


class DiscoveryError(Exception):
    """Discovery failed in a way the operator can act on (`code`, message)."""

    def __init__(self, code: str, message: str, *, retryable: bool = False) -> None:
        super().__init__(message)
        self.code, self.retryable = code, retryable


@dataclass(frozen=True)
class Discovery:
    base_branch: str
    base_sha: str
    task: SpecTask | None
    """None: every task is checked (no work)."""
    remaining: int
    spec_title: str | None
    has_plan: bool
    tasks_path: str


def _validated(feature_key: str, base_branch: str | None, task_id: str | None) -> None:
    # The API validated these; a command is still data from the bus, so check again.
    try:
        spec_kit_name(feature_key, "featureKey")
        if task_id is not None:
            spec_kit_name(task_id, "taskId")
        if base_branch is not None:
            branch_name(base_branch)
    except ValueError as exc:
        raise DiscoveryError("invalid_request", str(exc)) from None


async def default_branch(remote: Remote, token: str | None, git_timeout: float) -> str:
    out = await run_git(
        "ls-remote",
        "--symref",
        "--",
        remote.url,
        "HEAD",
        token=token,
        timeout=git_timeout,
    )
    for line in out.decode(errors="replace").splitlines():
        if line.startswith("ref: refs/heads/") and line.endswith("\tHEAD"):
            return line.removeprefix("ref: refs/heads/").removesuffix("\tHEAD")
    raise DiscoveryError(
        "base_branch_not_found", "the repository has no default branch"
    )


async def _blob(workdir: Path, sha: str, path: str) -> bytes | None:
    try:
        kind = await run_git("cat-file", "-t", f"{sha}:{path}", cwd=workdir)
    except GitError:
        return None
    if kind.strip() != b"blob":
        return None
    size = int(await run_git("cat-file", "-s", f"{sha}:{path}", cwd=workdir))
    if size > MAX_FILE_BYTES:
        raise DiscoveryError(
            "spec_file_unreadable",
            f"{path} is {size} bytes; the limit is {MAX_FILE_BYTES}",
        )
    return await run_git("cat-file", "blob", f"{sha}:{path}", cwd=workdir)


def _text(data: bytes, path: str) -> str:
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        raise DiscoveryError(
            "spec_file_unreadable", f"{path} is not UTF-8 text; save it as UTF-8"
        ) from None


async def discover(
    remote: Remote,
    token: str | None,
    *,
    feature_key: str,
    base_branch: str | None,
    task_id: str | None,
    workdir: Path,
    git_timeout: float,
) -> Discovery:
    """Shallow-fetch the base branch into `workdir` and read the feature.

    `workdir` is emptied first and removed afterwards.
    """
    _validated(feature_key, base_branch, task_id)
    branch = base_branch or await default_branch(remote, token, git_timeout)
    await asyncio.to_thread(_fresh, workdir)
    try:
        await run_git("init", "-q", str(workdir))
        await run_git(
            "fetch", "--depth", "1", "--no-tags", "--", remote.url,
            f"+refs/heads/{branch}:refs/remotes/origin/{branch}",
            cwd=workdir, token=token, timeout=git_timeout,
        )  # fmt: skip
        sha = await run_git("rev-parse", f"refs/remotes/origin/{branch}", cwd=workdir)
        return await _read_feature(
            workdir, sha.decode().strip(), branch, feature_key, task_id
        )
    finally:
        await asyncio.to_thread(shutil.rmtree, workdir, True)


def _fresh(workdir: Path) -> None:
    shutil.rmtree(workdir, ignore_errors=True)
    workdir.mkdir(parents=True)


async def _read_feature(
    workdir: Path, sha: str, branch: str, feature_key: str, task_id: str | None
) -> Discovery:
    folder = f"specs/{feature_key}"
    listing = await run_git(
        "ls-tree", "--name-only", sha, "--", f"{folder}/", cwd=workdir
    )
    if not listing.strip():
        raise DiscoveryError(
            "feature_not_found",
            f"{folder}/ does not exist on {branch} at {sha[:12]}; check featureKey "
            "and baseBranch",
        )
    tasks_path = f"{folder}/tasks.md"
    tasks_blob = await _blob(workdir, sha, tasks_path)
    if tasks_blob is None:
        raise DiscoveryError(
            "tasks_file_missing",
            f"{tasks_path} is missing on {branch}; generate it with Spec Kit's /tasks",
        )
    tasks = parse_tasks(_text(tasks_blob, tasks_path))
    try:
        chosen = choose(tasks, task_id)
    except TaskChoiceError as exc:
        raise DiscoveryError(exc.code, str(exc)) from None
    spec_blob = await _blob(workdir, sha, f"{folder}/spec.md")
    title = spec_title(_text(spec_blob, f"{folder}/spec.md")) if spec_blob else None
    return Discovery(
        base_branch=branch,
        base_sha=sha,
        task=chosen,
        remaining=sum(1 for task in tasks if not task.done),
        spec_title=title,
        has_plan=await _blob(workdir, sha, f"{folder}/plan.md") is not None,
        tasks_path=tasks_path,
    )
