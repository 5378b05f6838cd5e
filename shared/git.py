"""Running git against a remote with a token that never reaches a URL, argv or log.

The token travels as an `http.extraHeader` set through `GIT_CONFIG_*` environment
variables of the git process only. Outputs are redacted before they are kept.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import shutil
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from shared.names import GITHUB_SLUG_RE
from shared.redaction import redact_text, register_secret

MAX_OUTPUT = 4000


class GitError(Exception):
    """A git command failed; `code` says why in the vocabulary of task errors."""

    def __init__(self, code: str, message: str, *, retryable: bool) -> None:
        super().__init__(message)
        self.code, self.retryable = code, retryable


@dataclass(frozen=True)
class Remote:
    url: str
    github: bool
    """Whether the repository lives on GitHub (an `owner/name` reference)."""


def remote_for(repository: str, github_git_url: str) -> Remote:
    """`owner/name` on GitHub (at GITHUB_GIT_URL), or the https/file URL as given."""
    if GITHUB_SLUG_RE.fullmatch(repository):
        return Remote(f"{github_git_url.rstrip('/')}/{repository}.git", github=True)
    return Remote(repository, github=False)


def auth_env(token: str | None) -> dict[str, str]:
    """Environment for one git process: no prompts, no user config, the token header."""
    env = {
        "GIT_TERMINAL_PROMPT": "0",
        "GIT_ASKPASS": "true",
        "GIT_CONFIG_NOSYSTEM": "1",
        "GIT_CONFIG_GLOBAL": "/dev/null",
        "GIT_ALLOW_PROTOCOL": "http:https:file",
        "LC_ALL": "C",
        "PATH": "/usr/local/bin:/usr/bin:/bin",
        "HOME": "/nonexistent",
    }
    if token:
        register_secret(token)
        basic = base64.b64encode(f"x-access-token:{token}".encode()).decode()
        register_secret(basic)
        env |= {
            "GIT_CONFIG_COUNT": "1",
            "GIT_CONFIG_KEY_0": "http.extraHeader",
            "GIT_CONFIG_VALUE_0": f"Authorization: Basic {basic}",
        }
    return env


def classify(stderr: str) -> GitError:
    """A failed remote operation, by what git said (LC_ALL=C)."""
    text = stderr.lower()
    said = redact_text(stderr.strip())[-500:]
    if "returned error: 401" in text or "authentication failed" in text:
        return GitError(
            "git_auth_failed",
            f"the remote refused the credentials: {said}",
            retryable=False,
        )
    if "could not read username" in text or "terminal prompts disabled" in text:
        return GitError(
            "git_auth_failed", "the remote asked for credentials", retryable=False
        )
    if "returned error: 403" in text:
        return GitError(
            "git_permission_denied", f"access denied: {said}", retryable=False
        )
    if "returned error: 404" in text or ("not found" in text and "repository" in text):
        return GitError(
            "repository_not_found", f"no such repository: {said}", retryable=False
        )
    if "does not appear to be a git repository" in text:
        return GitError(
            "repository_not_found", f"no such repository: {said}", retryable=False
        )
    if "couldn't find remote ref" in text:
        return GitError(
            "base_branch_not_found", f"no such branch: {said}", retryable=False
        )
    return GitError("git_unavailable", f"git failed: {said}", retryable=True)


async def run_git(
    *args: str,
    cwd: Path | None = None,
    token: str | None = None,
    timeout: float = 120.0,  # noqa: ASYNC109 - expiry is a GitError
    env: Mapping[str, str] | None = None,
) -> bytes:
    """Run `git args…`; stdout on success, a classified GitError otherwise.

    `env` adds variables (a fixed author date); it never replaces the auth ones.
    """
    process = await asyncio.create_subprocess_exec(
        "git",
        *args,
        cwd=cwd,
        env={**(env or {}), **auth_env(token)},
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        stdout, stderr = await asyncio.wait_for(process.communicate(), timeout)
    except TimeoutError:
        with contextlib.suppress(ProcessLookupError):
            process.kill()
        await process.wait()
        raise GitError(
            "git_timeout",
            f"git {args[0]} took longer than {timeout:g}s",
            retryable=True,
        ) from None
    if process.returncode != 0:
        raise classify(stderr.decode(errors="replace")[-MAX_OUTPUT:])
    return stdout


DEEPEN_STEPS = (50, 500)
_ACCESS_CODES = ("git_auth_failed", "repository_not_found", "git_permission_denied")


def safe_directory(workspace: Path) -> tuple[str, ...]:
    """`-c safe.directory=…`: an agent may own the tree while git runs as us."""
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
    """A working tree of `sha` in `workspace` (emptied first), fetched shallowly.

    Fetches the commit itself when the server allows it, else the branch, deepening
    until the commit is there (the branch may have moved since discovery). Raises
    GitError; `base_commit_missing` when the commit is no longer reachable.
    """
    await asyncio.to_thread(_fresh, workspace)
    git = (*safe_directory(workspace), "-C", str(workspace))
    await run_git("init", "-q", str(workspace))
    try:
        await run_git(*git, "fetch", "--depth", "1", "--no-tags", "--", remote.url, sha,
                      token=token, timeout=git_timeout)  # fmt: skip
    except GitError as exc:
        if exc.code in _ACCESS_CODES:
            raise GitError(exc.code, str(exc), retryable=False) from None
        await _fetch_branch_until(remote, token, git, branch, sha, git_timeout)
    await run_git(*git, "checkout", "-q", "--detach", sha)


async def _fetch_branch_until(
    remote: Remote,
    token: str | None,
    git: tuple[str, ...],
    branch: str,
    sha: str,
    git_timeout: float,
) -> None:
    refspec = f"+refs/heads/{branch}:refs/remotes/origin/{branch}"
    for depth in DEEPEN_STEPS:
        args = ("fetch", "--depth", str(depth), "--no-tags", "--", remote.url, refspec)
        await run_git(*git, *args, token=token, timeout=git_timeout)
        try:
            await run_git(*git, "cat-file", "-e", f"{sha}^{{commit}}")
            return
        except GitError:
            continue
    raise GitError(
        "base_commit_missing",
        f"commit {sha[:12]} is no longer reachable from {branch}; retry from discovery",
        retryable=False,
    )


def _fresh(path: Path) -> None:
    shutil.rmtree(path, ignore_errors=True)
    path.mkdir(parents=True)
