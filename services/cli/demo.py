"""`demo`: create one run through the HTTP API and follow it until it ends."""

from __future__ import annotations

import time
from typing import Any

import httpx
import typer

RUNS = "/api/workflows/speckit/runs"
TERMINAL = frozenset({"succeeded", "failed", "cancelled"})


def run_demo(base_url: str, repository: str, feature_key: str, timeout: float) -> int:
    """0 once the run ends (whatever its status), 1 on an HTTP error or a timeout."""
    body = {"repository": repository, "featureKey": feature_key}
    with httpx.Client(base_url=base_url, timeout=10.0) as client:
        response = client.post(RUNS, json=body)
        if response.status_code != httpx.codes.ACCEPTED:
            return _http_error("POST", RUNS, response)
        run: dict[str, Any] = response.json()
        url = f"{RUNS}/{run['id']}"
        typer.echo(f"run {run['id']} created for {repository} {feature_key}")
        deadline = time.monotonic() + timeout
        last: tuple[Any, Any] | None = None
        while True:
            now = (run.get("status"), run.get("phase"))
            if now != last:
                typer.echo(f"  status={now[0]} phase={now[1]}")
                last = now
            if now[0] in TERMINAL:
                break
            if time.monotonic() >= deadline:
                typer.echo(f"run {run['id']} did not end within {timeout:g}s", err=True)
                return 1
            time.sleep(1.0)
            response = client.get(url)
            if response.status_code != httpx.codes.OK:
                return _http_error("GET", url, response)
            run = response.json()
    typer.echo(describe(run))
    return 0


def describe(run: dict[str, Any]) -> str:
    """The run's outcome and every task attempt, one per line."""
    lines = [f"run {run['id']}: {run.get('status')} errorCode={run.get('errorCode')}"]
    for task in run.get("tasks") or []:
        name, attempt = task.get("taskName"), task.get("attempt")
        lines.append(f"  {name:<20} attempt {attempt}  {task.get('status')}")
    return "\n".join(lines)


def _http_error(method: str, url: str, response: httpx.Response) -> int:
    typer.echo(f"{method} {url}: {response.status_code} {response.text}", err=True)
    return 1
