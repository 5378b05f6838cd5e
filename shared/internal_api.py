"""The workers' client for the API's internal endpoints (service token only).

Provider keys are fetched just in time for one run and registered with the log
redactor as they arrive; they never travel in AMQP messages. An API that does not
answer, or answers 5xx (a restart, a database outage: 503), is asked again with
capped backoff for up to `retry_for` seconds before the run fails.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Protocol
from uuid import UUID

import httpx
from loguru import logger

from shared.http import Transport
from shared.redaction import register_secret

FIRST_DELAY = 0.5
MAX_DELAY = 8.0


class InternalApiError(Exception):
    """The API gave no keys; `retryable` says whether trying later may help."""

    def __init__(self, code: str, message: str, *, retryable: bool) -> None:
        super().__init__(message)
        self.code, self.retryable = code, retryable


class SecretSource(Protocol):
    """Where a worker gets a run's provider keys (the API; a fake in tests)."""

    async def secrets(self, run_id: UUID, providers: list[str]) -> dict[str, str]: ...


class InternalApi:
    def __init__(
        self,
        base_url: str,
        token: Callable[[], str | None],
        *,
        timeout: float = 10.0,
        retry_for: float = 60.0,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        """`token` is asked on every call: a token file may appear after start-up.

        Without `transport`, each call gets its own `Transport`: a client closes its
        transport on exit, so one shared by concurrent calls would cut the others'
        connections (ReadError) whenever the first of them finished.
        """
        self._base_url = base_url.rstrip("/")
        self._token = token
        self._timeout = timeout
        self._retry_for = retry_for
        self._transport = transport

    async def secrets(self, run_id: UUID, providers: list[str]) -> dict[str, str]:
        """The run's user's keys among `providers` (absent ones are simply missing).

        Retryable failures are retried in place: the API restarting or waiting for
        its database is no reason to fail the run.
        """
        deadline = time.monotonic() + self._retry_for
        delay = FIRST_DELAY
        while True:
            try:
                return await self._secrets(run_id, providers)
            except InternalApiError as exc:
                if not exc.retryable or time.monotonic() + delay > deadline:
                    raise
                logger.warning(
                    "Credentials of run {} not fetched ({}); again in {:.1f}s",
                    run_id,
                    exc.code,
                    delay,
                )
            await asyncio.sleep(delay)
            delay = min(delay * 2, MAX_DELAY)

    async def _secrets(self, run_id: UUID, providers: list[str]) -> dict[str, str]:
        token = self._token()
        if not token:
            raise InternalApiError(
                "internal_api_unconfigured",
                "this worker has no INTERNAL_API_TOKEN to fetch the run's credentials",
                retryable=False,
            )
        url = f"{self._base_url}/internal/runs/{run_id}/secrets"
        headers = {"Authorization": f"Bearer {token}"}
        try:
            async with httpx.AsyncClient(
                timeout=self._timeout, transport=self._transport or Transport()
            ) as client:
                response = await client.post(
                    url, json={"providers": providers}, headers=headers
                )
        except httpx.HTTPError as exc:
            raise InternalApiError(
                "internal_api_unreachable",
                f"the API at {self._base_url} did not answer ({type(exc).__name__})",
                retryable=True,
            ) from None
        if response.status_code == 401:
            raise InternalApiError(
                "internal_api_unauthorized",
                "the API refused this worker's INTERNAL_API_TOKEN",
                retryable=False,
            )
        if response.status_code == 404:
            raise InternalApiError(
                "run_not_found", f"the API knows no run {run_id}", retryable=False
            )
        if response.status_code != 200:
            raise InternalApiError(
                "internal_api_error",
                f"the API answered {response.status_code} for the run's credentials",
                retryable=response.status_code >= 500,
            )
        found: dict[str, str] = response.json().get("secrets", {})
        for value in found.values():
            register_secret(value)
        return found


class ShardRegistry:
    """A Codex runner's claim on a shard and its heartbeats (internal API)."""

    def __init__(self, base_url: str, token: Callable[[], str | None]) -> None:
        self._base_url = base_url.rstrip("/")
        self._token = token

    def _headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self._token() or ''}"}

    def claim(self, hostname: str, *, wait: float = 60.0) -> int:
        """Blocking, for start-up: the lowest free shard (waits for the API)."""
        deadline = time.monotonic() + wait
        while True:
            try:
                response = httpx.post(
                    f"{self._base_url}/internal/shards/claim",
                    json={"hostname": hostname},
                    headers=self._headers(),
                    timeout=10.0,
                )
            except httpx.HTTPError as exc:
                problem = f"API unreachable ({type(exc).__name__})"
            else:
                if response.status_code == 200:
                    return int(response.json()["shardIndex"])
                problem = f"API answered {response.status_code}: {response.text[:200]}"
                if response.status_code in (401, 409, 422):
                    raise InternalApiError(
                        "shard_claim_refused", problem, retryable=False
                    )
            if time.monotonic() > deadline:
                raise InternalApiError("shard_claim_failed", problem, retryable=True)
            time.sleep(1.0)

    async def heartbeat(self, index: int, hostname: str) -> None:
        async with httpx.AsyncClient(timeout=10.0, transport=Transport()) as client:
            response = await client.post(
                f"{self._base_url}/internal/shards/{index}/heartbeat",
                json={"hostname": hostname},
                headers=self._headers(),
            )
        response.raise_for_status()
