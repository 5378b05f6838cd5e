"""The runs API over HTTP: one function per call, each taking an httpx client.

Every function raises `ApiError` for an error answer and lets `httpx.TransportError`
through (the API is unreachable or the connection broke).
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import httpx

from services.cli.settings import ClientSettings
from services.cli.sse import SseParser

RUNS = "/api/workflows/speckit/runs"
# The server sends a keep-alive comment every 15 s: a silent minute is a dead link.
STREAM_TIMEOUT = httpx.Timeout(10.0, read=60.0)


class ApiError(Exception):
    """The API answered with an error (`{"detail": {"code", "message"}}`)."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(f"{code}: {message}")
        self.status, self.code, self.message = status, code, message


@dataclass(frozen=True)
class RunRequest:
    repository: str
    feature_key: str
    base_branch: str | None = None
    task_id: str | None = None
    publish_mode: str | None = None
    notes: str | None = None

    def body(self) -> dict[str, str]:
        fields = {
            "repository": self.repository,
            "featureKey": self.feature_key,
            "baseBranch": self.base_branch,
            "taskId": self.task_id,
            "publishMode": self.publish_mode,
            "notes": self.notes,
        }
        return {name: value for name, value in fields.items() if value is not None}


def api_client(
    settings: ClientSettings, transport: httpx.AsyncBaseTransport | None = None
) -> httpx.AsyncClient:
    """A client for API_URL that sends SPEC_WORKFLOW_TOKEN, when set, as a bearer."""
    headers = {"User-Agent": "spec-workflow-cli"}
    if settings.api_token is not None:
        headers["Authorization"] = f"Bearer {settings.api_token.get_secret_value()}"
    return httpx.AsyncClient(
        base_url=settings.base_url, headers=headers, timeout=10.0, transport=transport
    )


def api_error(response: httpx.Response) -> ApiError:
    try:
        detail = response.json().get("detail")
    except (ValueError, AttributeError):
        detail = None
    if isinstance(detail, dict) and "code" in detail:
        return ApiError(
            response.status_code, str(detail["code"]), str(detail.get("message", ""))
        )
    text = response.text.strip().replace("\n", " ")[:200] or response.reason_phrase
    return ApiError(response.status_code, f"http_{response.status_code}", text)


def _json(response: httpx.Response) -> dict[str, Any]:
    if not response.is_success:
        raise api_error(response)
    body: dict[str, Any] = response.json()
    return body


async def list_runs(
    client: httpx.AsyncClient,
    *,
    status: str | None = None,
    feature_key: str | None = None,
    repository: str | None = None,
    limit: int = 20,
    cursor: str | None = None,
) -> dict[str, Any]:
    params = {
        "status": status,
        "featureKey": feature_key,
        "repository": repository,
        "limit": limit,
        "cursor": cursor,
    }
    query = {name: value for name, value in params.items() if value is not None}
    return _json(await client.get(RUNS, params=query))


async def get_run(client: httpx.AsyncClient, run_id: str) -> dict[str, Any]:
    return _json(await client.get(f"{RUNS}/{run_id}"))


async def create_run(
    client: httpx.AsyncClient, request: RunRequest, idempotency_key: str | None = None
) -> tuple[dict[str, Any], bool]:
    """The run, and whether it was an idempotent replay of an earlier request."""
    headers = {"Idempotency-Key": idempotency_key} if idempotency_key else {}
    response = await client.post(RUNS, json=request.body(), headers=headers)
    replayed = response.headers.get("Idempotent-Replayed") == "true"
    return _json(response), replayed


async def retry_run(
    client: httpx.AsyncClient, run_id: str, notes: str | None = None
) -> dict[str, Any]:
    body = {"notes": notes} if notes is not None else None
    return _json(await client.post(f"{RUNS}/{run_id}/retry", json=body))


async def cancel_run(client: httpx.AsyncClient, run_id: str) -> dict[str, Any]:
    return _json(await client.post(f"{RUNS}/{run_id}/cancel"))


async def follow_events(
    client: httpx.AsyncClient, run_id: str, after: int = 0
) -> AsyncIterator[dict[str, Any]]:
    """The run's timeline events after `after`, live, until the server ends it.

    It ends after the run's terminal event, or at once (204) when the run has
    ended and nothing is left after `after`.
    """
    headers = {"Accept": "text/event-stream", "Last-Event-ID": str(after)}
    async with client.stream(
        "GET", f"{RUNS}/{run_id}/events", headers=headers, timeout=STREAM_TIMEOUT
    ) as response:
        if not response.is_success:
            await response.aread()
            raise api_error(response)
        parser = SseParser()
        async for line in response.aiter_lines():
            event = parser.feed(line)
            if event is not None:
                yield json.loads(event.data)


LOGS = "/api/logs"


async def list_logs(
    client: httpx.AsyncClient, params: dict[str, str | int | None]
) -> dict[str, Any]:
    """One page of `GET /api/logs` (`{"items": [...], "nextCursor": ...}`)."""
    query = {name: value for name, value in params.items() if value is not None}
    return _json(await client.get(LOGS, params=query))
