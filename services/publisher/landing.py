"""Landing the patch with git: apply, check the task, commit reproducibly, push once.

The commit's identity, dates and message depend only on the run, the base commit and
the patch, so every attempt of a run builds the same commit and a repeated push is a
no-op. Raises `LandingError` with a task error code.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from pathlib import Path
from uuid import UUID

from services.publisher import policy
from shared.git import GitError, Remote, run_git, safe_directory
from shared.redaction import redact_text

_DENIED = ("git_auth_failed", "git_permission_denied", "repository_not_found")


class LandingError(Exception):
    def __init__(self, code: str, message: str, *, retryable: bool) -> None:
        super().__init__(message)
        self.code, self.retryable = code, retryable


@dataclass(frozen=True)
class Identity:
    name: str
    email: str


class Workspace:
    """git in one fresh clone."""

    def __init__(self, path: Path, git_timeout: float) -> None:
        self.path = path
        self.timeout = git_timeout
        self._git = (*safe_directory(path), "-C", str(path))

    async def git(self, *args: str, token: str | None = None, **env: str) -> str:
        out = await run_git(
            *self._git, *args, token=token, timeout=self.timeout, env=env
        )
        return out.decode(errors="replace")

    async def apply(self, patch: Path) -> list[policy.FileStat]:
        try:
            stats = await self.git("apply", "--numstat", "-z", str(patch))
            await self.git("apply", "--index", "--whitespace=nowarn", str(patch))
        except GitError as exc:
            raise LandingError(
                "patch_conflict",
                f"the patch no longer applies to the base commit: {exc}",
                retryable=False,
            ) from None
        return policy.parse_numstat(stats)

    async def check_task(self, tasks_path: str, task_id: str) -> int | None:
        """Check the task if the agent did not; open tasks left (None: no file)."""
        target = self.path / tasks_path
        try:
            text = await asyncio.to_thread(target.read_text, encoding="utf-8")
        except (OSError, UnicodeDecodeError):
            return None
        changed = policy.mark_done(text, task_id)
        if changed is not None:
            await asyncio.to_thread(target.write_text, changed, encoding="utf-8")
            await self.git("add", "--", tasks_path)
            text = changed
        return policy.open_tasks(text)

    async def commit(self, message: str, who: Identity, base_sha: str) -> str:
        """Commit the index; the dates are the base commit's, so the sha is stable."""
        when = (await self.git("log", "-1", "--format=%ct", base_sha)).strip()
        date = f"{when} +0000"
        subject, _, rest = message.partition("\n\n")
        await self.git(
            "-c", f"user.name={who.name}", "-c", f"user.email={who.email}",
            "commit", "-q", "--no-verify", "--allow-empty", "-m", subject,
            "-m", rest.strip(),
            GIT_AUTHOR_NAME=who.name, GIT_AUTHOR_EMAIL=who.email,
            GIT_COMMITTER_NAME=who.name, GIT_COMMITTER_EMAIL=who.email,
            GIT_AUTHOR_DATE=date, GIT_COMMITTER_DATE=date,
        )  # fmt: skip
        return (await self.git("rev-parse", "HEAD")).strip()

    async def push(
        self, remote: Remote, token: str | None, branch: str, run_id: UUID
    ) -> str:
        """Push HEAD to `branch` unless it is already there; returns the push log."""
        ref = f"refs/heads/{branch}"
        ours = (await self.git("rev-parse", "HEAD")).strip()
        try:
            listed = await self.git("ls-remote", "--", remote.url, ref, token=token)
            theirs = listed.split("\t", 1)[0].strip() or None
            if theirs == ours:
                return f"{ref} already at {ours}: nothing to push\n"
            if theirs is not None:
                await self._own_earlier_push(remote, token, ref, run_id)
            lease = f"--force-with-lease={ref}:{theirs or ''}"
            out = await self.git(
                "push", "--porcelain", lease, "--", remote.url, f"HEAD:{ref}",
                token=token,
            )  # fmt: skip
        except GitError as exc:
            # Another copy of this command may have pushed the same commit meanwhile
            # (the lease, or the ref lock, then fails ours): the branch is as wanted.
            if exc.code not in _DENIED and await self._holds(remote, token, ref, ours):
                return f"{ref} already at {ours}: pushed meanwhile\n"
            raise _push_error(exc) from None
        return redact_text(out)

    async def _holds(
        self, remote: Remote, token: str | None, ref: str, sha: str
    ) -> bool:
        """Whether the remote branch is at `sha` now (False when it can't tell)."""
        try:
            listed = await self.git("ls-remote", "--", remote.url, ref, token=token)
        except GitError:
            return False
        return listed.split("\t", 1)[0].strip() == sha

    async def _own_earlier_push(
        self, remote: Remote, token: str | None, ref: str, run_id: UUID
    ) -> None:
        """The branch has another commit: replace it only if this run made it."""
        await self.git(
            "fetch", "-q", "--depth", "1", "--no-tags", "--", remote.url, ref,
            token=token,
        )  # fmt: skip
        message = await self.git("log", "-1", "--format=%B", "FETCH_HEAD")
        if not policy.carries_run(message, run_id):
            raise LandingError(
                "branch_conflict",
                f"{ref} already exists with commits this run did not make; "
                "delete the branch or change PUBLISH_BRANCH_PREFIX",
                retryable=False,
            )


def _push_error(exc: GitError) -> LandingError:
    text = str(exc)
    if exc.code in _DENIED:
        return LandingError(
            "push_denied",
            f"the remote refused the push ({exc.code}): {text} — fix the token's "
            "access, then retry the run",
            retryable=False,
        )
    if "workflow" in text and "scope" in text:
        return LandingError("workflow_scope_missing", text, retryable=False)
    if "stale info" in text or "[rejected]" in text or "non-fast-forward" in text:
        return LandingError(
            "branch_conflict",
            f"the branch moved during the push: {text}",
            retryable=True,
        )
    return LandingError(
        "push_unavailable", f"the push failed: {text}", retryable=exc.retryable
    )
