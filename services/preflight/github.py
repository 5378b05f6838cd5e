"""The GitHub half of the pre-flight: a known token, push rights, an existing branch.

Statuses follow the credential audit: `valid`, `invalid` (GitHub rejects the token),
`scope_missing` (known token, but it cannot see or push to the repository), `missing`
(no token stored).
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field

import httpx

from shared.redaction import redact_text

RETRIES = 3
REPO_SCOPES = {"repo", "public_repo"}


@dataclass
class GithubCheck:
    status: str
    notes: list[str] = field(default_factory=list)
    branch_missing: bool = False
    """The token is fine but the base branch does not exist."""


class GithubUnavailable(Exception):
    """GitHub answered 5xx or not at all, after retries: worth trying again later."""


async def _get(client: httpx.AsyncClient, path: str) -> httpx.Response:
    delay = 0.5
    for attempt in range(RETRIES):
        try:
            response = await client.get(path)
        except httpx.HTTPError as exc:
            problem = f"{type(exc).__name__}"
        else:
            if response.status_code < 500:
                return response
            problem = f"HTTP {response.status_code}"
        if attempt + 1 < RETRIES:
            await asyncio.sleep(delay)
            delay *= 2
    raise GithubUnavailable(f"GitHub did not answer {path} ({problem})")


async def check_github(
    api_url: str,
    token: str | None,
    repository: str,
    base_branch: str,
    *,
    needs_push: bool,
) -> GithubCheck:
    """Check the token against GITHUB_API_URL for `owner/name` at `base_branch`."""
    if not token:
        return GithubCheck(
            "missing",
            ["no GitHub token is stored: PUT /api/me/credentials/github"],
        )
    headers = {
        "Authorization": f"Bearer {token}",
        "Accept": "application/vnd.github+json",
        "X-GitHub-Api-Version": "2022-11-28",
        "User-Agent": "moonmind-spec-workflow",
    }
    async with httpx.AsyncClient(
        base_url=api_url.rstrip("/"), headers=headers, timeout=15.0
    ) as client:
        user = await _get(client, "/user")
        if user.status_code == 401:
            return GithubCheck(
                "invalid", ["GitHub rejected the token (401): store a valid one"]
            )
        login = user.json().get("login", "?") if user.status_code == 200 else "?"
        notes = [f"token of GitHub user {login}"]
        scopes = user.headers.get("x-oauth-scopes")
        if scopes is not None:  # classic tokens say their scopes; fine-grained do not
            granted = {s.strip() for s in scopes.split(",") if s.strip()}
            if not granted & REPO_SCOPES:
                notes.append(f"token scopes {sorted(granted)} lack repo")
                return GithubCheck("scope_missing", notes)
        repo = await _get(client, f"/repos/{repository}")
        if repo.status_code in (403, 404):
            notes.append(f"the token cannot see {repository} ({repo.status_code})")
            return GithubCheck("scope_missing", notes)
        if repo.status_code != 200:
            detail = redact_text(repo.text[:200])
            raise GithubUnavailable(f"GitHub answered {repo.status_code}: {detail}")
        permissions = repo.json().get("permissions") or {}
        if needs_push and not permissions.get("push"):
            notes.append(f"the token may not push to {repository}")
            return GithubCheck("scope_missing", notes)
        notes.append("push allowed" if permissions.get("push") else "read allowed")
        branch = await _get(client, f"/repos/{repository}/branches/{base_branch}")
        if branch.status_code == 404:
            notes.append(f"branch {base_branch} does not exist")
            return GithubCheck("valid", notes, branch_missing=True)
        if branch.status_code != 200:
            raise GithubUnavailable(
                f"GitHub answered {branch.status_code} for the branch"
            )
        return GithubCheck("valid", notes)
