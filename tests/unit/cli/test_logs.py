"""`spec-workflow logs`: human lines, JSONL and cursor-following pages."""

from __future__ import annotations

import asyncio
import json

import httpx

from services.cli.logs import line, print_logs


def record(n: int, **extra: object) -> dict[str, object]:
    return {
        "id": n,
        "time": "2026-01-02T03:04:05.123456+00:00",
        "level": "WARNING",
        "service": "preflight",
        "message": f"m{n}",
        "runId": None,
        "task": "discover_next_phase",
        "attempt": 2,
        "details": {},
        "exception": None,
        **extra,
    }


def test_a_line_shows_time_level_where_message_and_details() -> None:
    text = line(record(1, details={"codex_queue": "codex-1"}, exception="Trace\n"))
    assert text == (
        "2026-01-02 03:04:05.123 WARNING  preflight discover_next_phase#2: m1 "
        '{"codex_queue": "codex-1"}\nTrace'
    )


async def test_pages_are_followed_with_the_cursor_oldest_first() -> None:
    seen: list[dict[str, str]] = []
    pages = {
        None: {"items": [record(1), record(2)], "nextCursor": "2"},
        "2": {"items": [record(3)], "nextCursor": None},
        "3": {"items": [], "nextCursor": None},
    }
    stop = asyncio.Event()

    def handle(request: httpx.Request) -> httpx.Response:
        params = dict(request.url.params)
        seen.append(params)
        body = pages[params.get("cursor")]
        if params.get("cursor") == "3":
            stop.set()
        return httpx.Response(200, json=body)

    out: list[str] = []
    async with httpx.AsyncClient(
        transport=httpx.MockTransport(handle), base_url="http://api"
    ) as client:
        printed = await print_logs(
            client,
            {"runId": "r", "level": None},
            emit=out.append,
            as_json=True,
            follow=True,
            interval=0.01,
            stop=stop,
        )

    assert printed == 3
    assert [json.loads(o)["id"] for o in out] == [1, 2, 3]
    assert seen[0] == {"runId": "r", "order": "asc", "limit": "500"}
    assert [s.get("cursor") for s in seen] == [None, "2", "3"]
