"""Shipped log records: parsing keeps the valid ones and counts the rest."""

from __future__ import annotations

import json
from uuid import uuid4

from services.api.logsink import level_no, parse


def record(**overrides: object) -> dict[str, object]:
    base: dict[str, object] = {
        "time": "2026-01-02T03:04:05.000006+00:00",
        "level": "WARNING",
        "service": "api",
        "message": "hello\x00",
        "run_id": None,
        "task": None,
        "attempt": None,
        "details": {"codex_queue": "codex-1"},
    }
    return {**base, **overrides}


def test_a_batch_keeps_valid_records_and_counts_malformed_ones() -> None:
    run = uuid4()
    body = json.dumps(
        [
            record(run_id=str(run), task="x", attempt=1),
            record(time="yesterday"),
            record(time="2026-01-02T03:04:05"),  # no offset
            "not a record",
            record(level="info"),
        ]
    ).encode()

    rows, bad = parse(body)

    assert bad == 3
    assert [r["level"] for r in rows] == ["WARNING", "INFO"]
    assert rows[0]["run_id"] == run
    assert rows[0]["level_no"] == 30
    assert rows[0]["message"] == "hello"
    assert rows[0]["details"] == {"codex_queue": "codex-1"}


def test_a_body_that_is_not_json_is_one_malformed_record() -> None:
    assert parse(b"\xff{") == ([], 1)


def test_a_single_record_object_is_accepted() -> None:
    rows, bad = parse(json.dumps(record()).encode())
    assert (len(rows), bad) == (1, 0)


def test_levels_are_case_insensitive() -> None:
    assert level_no("warning") == 30
    assert level_no("nope") is None
