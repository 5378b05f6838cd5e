"""`spec-workflow logs`: stored log records of a run (`GET /api/logs`).

Oldest first; `--follow` keeps polling with the last cursor until interrupted.
`--json` prints one JSON object per line (JSONL) as the API returns it.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from typing import Any

import httpx

from services.cli import api_client

PAGE = 500
POLL_INTERVAL = 1.0


def line(record: dict[str, Any]) -> str:
    """A human line: time, level, service, task/attempt, message, details, traceback."""
    when = str(record.get("time") or "")[:23].replace("T", " ")
    where = str(record.get("service") or "-")
    if record.get("task"):
        where += f" {record['task']}"
        if record.get("attempt") is not None:
            where += f"#{record['attempt']}"
    level = str(record.get("level") or "-")
    text = f"{when} {level:<8} {where}: {record.get('message')}"
    details = record.get("details") or {}
    if details:
        text += " " + json.dumps(details, sort_keys=True, default=str)
    exception = record.get("exception")
    if exception:
        text += "\n" + str(exception).rstrip()
    return text


async def print_logs(
    client: httpx.AsyncClient,
    filters: dict[str, str | int | None],
    *,
    emit: Callable[[str], None],
    as_json: bool,
    follow: bool,
    interval: float = POLL_INTERVAL,
    stop: asyncio.Event | None = None,
) -> int:
    """Print every matching record oldest first; returns how many were printed."""
    cursor: str | None = None
    printed = 0
    while True:
        page = await api_client.list_logs(
            client, {**filters, "order": "asc", "limit": PAGE, "cursor": cursor}
        )
        items: list[dict[str, Any]] = page.get("items", [])
        for record in items:
            emit(json.dumps(record, default=str) if as_json else line(record))
            printed += 1
        if items:
            cursor = str(items[-1]["id"])
        if page.get("nextCursor"):
            continue
        if not follow or (stop is not None and stop.is_set()):
            return printed
        await asyncio.sleep(interval)
