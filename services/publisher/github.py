"""The publisher's GitHub REST calls: token scopes, find, create, adopt a PR.

Every answer is handed to `record(step, json)` (stored under `github/<step>.json`).
5xx and network errors are retried in place, then raised as retryable.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import httpx

from shared.redaction import redact_text

RETRIES = 3
Record = Callable[[str, Any], None]


class GithubError(Exception):
    def __init__(self, code: str, message: str, *, retryable: bool) -> None:
        super().__init__(message)
        self.code, self.retryable = code, retryable


@dataclass(frozen=True)
class Pull:
    number: int
    url: str
    title: str
    body: str | None

    @classmethod
    def of(cls, data: dict[str, Any]) -> Pull:
        return cls(
            int(data["number"]), str(data["html_url"]), data["title"], data.get("body")
        )


class GithubClient:
    """One repository, one token; use as an async context manager."""

    def __init__(
        self, api_url: str, token: str, repository: str, record: Record
    ) -> None:
        self.repository = repository
        self.owner = repository.split("/", 1)[0]
        self._record = record
        self._client = httpx.AsyncClient(
            base_url=api_url.rstrip("/"),
            timeout=30.0,
            headers={
                "Authorization": f"Bearer {token}",
                "Accept": "application/vnd.github+json",
                "X-GitHub-Api-Version": "2022-11-28",
                "User-Agent": "moonmind-spec-workflow",
            },
        )

    async def __aenter__(self) -> GithubClient:
        return self

    async def __aexit__(self, *_exc: object) -> None:
        await self._client.aclose()

    async def _call(
        self, step: str, method: str, path: str, **kwargs: Any
    ) -> httpx.Response:
        delay = 0.5
        for attempt in range(RETRIES):
            try:
                response = await self._client.request(method, path, **kwargs)
            except httpx.HTTPError as exc:
                problem = type(exc).__name__
            else:
                if response.status_code < 500:
                    self._keep(step, response)
                    return response
                problem = f"HTTP {response.status_code}"
            if attempt + 1 < RETRIES:
                await asyncio.sleep(delay)
                delay *= 2
        raise GithubError(
            "github_unavailable",
            f"GitHub did not answer {method} {path} ({problem})",
            retryable=True,
        )

    def _keep(self, step: str, response: httpx.Response) -> None:
        try:
            body = response.json()
        except ValueError:
            body = response.text[:2000]
        self._record(step, {"status": response.status_code, "body": body})

    @staticmethod
    def _refused(response: httpx.Response, what: str) -> GithubError:
        said = redact_text(response.text[:300])
        if response.status_code == 401:
            return GithubError(
                "github_auth_failed",
                f"GitHub rejected the token while {what} (401): store a valid one",
                retryable=False,
            )
        if response.status_code in (403, 404):
            return GithubError(
                "github_permission_denied",
                f"the token may not {what} in {response.url.path} "
                f"({response.status_code}): {said}",
                retryable=False,
            )
        return GithubError(
            "github_rejected",
            f"GitHub answered {response.status_code} while {what}: {said}",
            retryable=False,
        )

    async def scopes(self) -> set[str] | None:
        """A classic token's scopes; None for fine-grained and app tokens."""
        response = await self._call("user", "GET", "/user")
        if response.status_code != 200:
            raise self._refused(response, "reading the token's user")
        header = response.headers.get("x-oauth-scopes")
        if header is None:
            return None
        return {s.strip() for s in header.split(",") if s.strip()}

    async def open_pull(self, branch: str, step: str = "pulls_list") -> Pull | None:
        response = await self._call(
            step,
            "GET",
            f"/repos/{self.repository}/pulls",
            params={"head": f"{self.owner}:{branch}", "state": "open"},
        )
        if response.status_code != 200:
            raise self._refused(response, "listing pull requests")
        found = response.json()
        return Pull.of(found[0]) if found else None

    async def create_pull(
        self, branch: str, base: str, title: str, body: str, *, draft: bool
    ) -> Pull | None:
        """The new pull request, or None when GitHub says one already exists."""
        payload = {"head": branch, "base": base, "title": title, "body": body}
        response = await self._call(
            "pulls_create",
            "POST",
            f"/repos/{self.repository}/pulls",
            json=payload | {"draft": draft},
        )
        if response.status_code == 201:
            return Pull.of(response.json())
        if response.status_code == 422 and "already exists" in response.text:
            return None
        raise self._refused(response, "creating the pull request")

    async def update_pull(self, pull: Pull, title: str, body: str) -> Pull:
        response = await self._call(
            "pulls_update",
            "PATCH",
            f"/repos/{self.repository}/pulls/{pull.number}",
            json={"title": title, "body": body},
        )
        if response.status_code != 200:
            raise self._refused(response, "updating the pull request")
        return Pull.of(response.json())

    async def add_labels(self, pull: Pull, labels: list[str]) -> None:
        response = await self._call(
            "labels",
            "POST",
            f"/repos/{self.repository}/issues/{pull.number}/labels",
            json={"labels": labels},
        )
        if response.status_code != 200:
            raise self._refused(response, "labelling the pull request")
