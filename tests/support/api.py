"""Driving the API over HTTP in tests: wait for a run to reach a status."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import httpx

RUNS = "/api/workflows/speckit/runs"
TERMINAL = frozenset({"succeeded", "failed", "cancelled"})


async def create_run(
    client: httpx.AsyncClient, feature_key: str, **fields: Any
) -> dict[str, Any]:
    response = await client.post(
        RUNS, json={"repository": "acme/shop", "featureKey": feature_key, **fields}
    )
    assert response.status_code == 202, response.text
    return dict(response.json())


async def wait_for(
    client: httpx.AsyncClient,
    run_id: str,
    statuses: frozenset[str] = TERMINAL,
    timeout: float = 20.0,  # noqa: ASYNC109 - expiry is an AssertionError
    where: Any = None,
    headers: dict[str, str] | None = None,
) -> dict[str, Any]:
    """Poll the run until its status is in `statuses` (and `where(run)`, if given)."""
    deadline = time.monotonic() + timeout
    run: dict[str, Any] = {}
    while time.monotonic() < deadline:
        response = await client.get(f"{RUNS}/{run_id}", headers=headers)
        assert response.status_code == 200, response.text
        run = response.json()
        if run["status"] in statuses and (where is None or where(run)):
            return run
        await asyncio.sleep(0.05)
    raise AssertionError(
        f"run {run_id} still {run.get('status')} after {timeout}s: {run}"
    )
