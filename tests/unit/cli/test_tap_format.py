"""What `spec-workflow tap` prints for each message, and what it binds."""

from __future__ import annotations

import json
from datetime import UTC, datetime

from services.cli.tap import bindings, decode, line, record, summary, where

AT = datetime(2025, 1, 2, 3, 4, 5, 678000, tzinfo=UTC)
RUN = "7b1f6c1e-5a36-4f7e-9a0d-3f4c3f1d2b10"


def tapped(body: object, key: str = "evt.task.failed") -> str:
    raw = json.dumps(body).encode()
    return line(decode("spec_workflow", key, raw, AT))


def test_a_line_has_time_key_run_task_attempt_and_summary() -> None:
    body = {
        "run_id": RUN,
        "task": "submit_codex_job",
        "attempt": 2,
        "error": {"code": "codex_failed", "message": "secret stuff", "retryable": True},
        "summary": {"files_changed": 3, "patch": {"path": "patch.diff"}},
    }

    text = tapped(body)

    clock = AT.astimezone().strftime("%H:%M:%S.678")
    assert text.split() == [
        clock,
        "evt.task.failed",
        RUN,
        "submit_codex_job",
        "#2",
        "error=codex_failed",
        "(retryable)",
        "summary:",
        "files_changed,patch",
    ]
    assert "secret stuff" not in text  # keys and codes only, never payloads


def test_run_status_and_progress_summaries() -> None:
    status = {"status": "failed", "result": None, "error_code": "lease_expired"}
    beat = {"progress": {"items": 3, "commands": 1}}

    assert summary(status) == "status=failed  error_code=lease_expired"
    assert summary(beat) == "progress: commands,items"
    assert summary({}) == ""


def test_a_command_line_without_extras_ends_at_the_attempt() -> None:
    body = {"run_id": RUN, "task": "codex_preflight", "attempt": 1}

    assert tapped(body, "cmd.codex_preflight").endswith("codex_preflight       #1")


def test_malformed_and_foreign_bodies_are_printed_as_such() -> None:
    broken = decode("spec_workflow", "evt.x", b"\xff{oops", AT)
    listed = decode("spec_workflow", "evt.x", b"[1]", AT)

    assert line(broken).endswith("malformed body (6 bytes): \\xff{oops")
    assert line(listed).endswith("not a message: [1]")
    assert record(broken)["malformed"] == "\\xff{oops"
    assert record(broken)["body"] is None


def test_long_malformed_bodies_are_cut() -> None:
    text = line(decode("spec_workflow", "evt.x", b"z" * 500, AT))

    assert text.endswith("z" * 60 + "…")


def test_json_record_keeps_the_body_and_where_it_came_from() -> None:
    body = {"run_id": RUN, "task": "finalize_run", "attempt": 1, "status": "x"}
    got = record(decode("spec_workflow", "evt.run.x", json.dumps(body).encode(), AT))

    assert got == {
        "received_at": "2025-01-02T03:04:05.678000+00:00",
        "exchange": "spec_workflow",
        "routing_key": "evt.run.x",
        "body": body,
    }


def test_log_records_show_level_and_message() -> None:
    record_body = {"level": "ERROR", "message": "Spec workflow task x failed"}

    assert summary(record_body) == "level=ERROR  Spec workflow task x failed"


def test_bindings_default_to_everything_and_logs_add_their_exchange() -> None:
    assert bindings([], logs=False) == [("spec_workflow", "#")]
    assert bindings(["evt.#", "cmd.*"], logs=False) == [
        ("spec_workflow", "evt.#"),
        ("spec_workflow", "cmd.*"),
    ]
    assert bindings([], logs=True) == [("spec_workflow.logs", "#")]
    assert bindings(["evt.#"], logs=True) == [
        ("spec_workflow", "evt.#"),
        ("spec_workflow.logs", "#"),
    ]


def test_where_hides_the_credentials() -> None:
    assert where("amqp://u:pw@rabbit:5673/vh") == "rabbit:5673/vh"
    assert where("amqp://u:pw@rabbit") == "rabbit:5672/"
