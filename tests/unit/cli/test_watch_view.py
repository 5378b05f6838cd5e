"""`runs watch`: the table and the exit code a sequence of timeline events yields."""

from __future__ import annotations

import io
from datetime import UTC, datetime, timedelta
from typing import Any

from rich.console import Console

from services.cli.watch import RunView, render, summarize

T0 = datetime(2025, 1, 2, 3, 4, 5, tzinfo=UTC)


def event(
    seq: int,
    kind: str,
    task: str | None = None,
    *,
    attempt: int | None = 1,
    at: float = 0.0,
    **data: Any,
) -> dict[str, Any]:
    return {
        "seq": seq,
        "kind": kind,
        "taskName": task,
        "attempt": attempt,
        "data": data,
        "createdAt": (T0 + timedelta(seconds=at)).isoformat(),
    }


def view_of(*events: dict[str, Any]) -> RunView:
    view = RunView("r-1")
    for e in events:
        view.apply(e)
    return view


SUCCESS = [
    event(1, "run_created"),
    event(2, "task_dispatched", "discover_next_phase"),
    event(3, "task_started", "discover_next_phase", at=1),
    event(4, "run_running", at=1, phase="discover"),
    event(5, "task_succeeded", "discover_next_phase", at=3.5),
    event(6, "task_dispatched", "submit_codex_job", at=4),
    event(7, "task_started", "submit_codex_job", at=5),
    event(
        8,
        "task_progress",
        "submit_codex_job",
        at=30,
        items=4,
        commands=2,
        thread_id=None,
        files=["a.py", "b.py"],
    ),
]


def test_rows_show_status_attempt_elapsed_and_latest_progress() -> None:
    view = view_of(*SUCCESS)

    rows = view.rows(now=T0 + timedelta(seconds=95))

    assert rows == [
        ("discover_next_phase", "succeeded", "1", "2.5s", ""),
        ("codex_preflight", "-", "", "", ""),
        ("submit_codex_job", "running", "1", "1m30s", "items=4 commands=2 files=2"),
        ("apply_and_publish", "-", "", "", ""),
        ("finalize_run", "-", "", "", ""),
    ]
    assert view.status == "running"
    assert view.exit_code is None


def test_a_succeeded_run_exits_0() -> None:
    view = view_of(
        *SUCCESS,
        event(9, "task_succeeded", "submit_codex_job", at=60),
        event(10, "run_succeeded", at=61, result="published", errorCode=None),
    )

    assert view.exit_code == 0
    assert view.rows(T0)[2][1:4] == ("succeeded", "1", "55.0s")
    assert view.headline() == "run r-1  succeeded  attempt 1  result published"


def test_a_failed_run_exits_1_and_shows_the_error() -> None:
    view = view_of(
        *SUCCESS,
        event(9, "task_failed", "submit_codex_job", at=60, errorCode="codex_failed"),
        event(10, "run_failed", at=60, errorCode="codex_failed"),
    )

    assert view.exit_code == 1
    assert view.rows(T0)[2][1] == "failed"
    assert view.rows(T0)[2][4] == "error codex_failed"
    assert "error codex_failed" in view.headline()


def test_a_cancelled_run_exits_1() -> None:
    view = view_of(
        *SUCCESS,
        event(9, "task_cancelled", "submit_codex_job", reason="cancel requested"),
        event(10, "run_cancelled"),
    )

    assert view.exit_code == 1
    assert view.rows(T0)[2][1::3] == ("cancelled", "cancel requested")


def test_a_retry_starts_the_task_again_as_the_next_attempt() -> None:
    view = view_of(
        *SUCCESS,
        event(9, "task_failed", "submit_codex_job", at=60, errorCode="x"),
        event(10, "run_failed", at=60, errorCode="x"),
        event(11, "run_retried", attempt=2, previousAttempt=1),
        event(12, "task_dispatched", "submit_codex_job", attempt=2, at=70),
    )

    assert view.exit_code is None
    assert (view.status, view.attempt, view.error_code) == ("pending", 2, None)
    assert view.rows(T0)[2] == ("submit_codex_job", "queued", "2", "", "")


def test_replayed_events_are_applied_once() -> None:
    view = view_of(*SUCCESS)
    view.apply(event(3, "task_started", "discover_next_phase", at=50))

    assert view.last_seq == 8
    assert view.rows(T0 + timedelta(seconds=95))[0][3] == "2.5s"


def test_a_lease_redispatch_requeues_the_task() -> None:
    view = view_of(
        *SUCCESS, event(9, "task_redispatched", "submit_codex_job", redispatch=1)
    )

    assert view.rows(T0)[2][1::3] == ("queued", "lease expired: re-dispatched (1)")


def test_finish_takes_the_outcome_from_the_run() -> None:
    view = view_of(*SUCCESS)
    view.finish({"status": "failed", "errorCode": "lease_expired"})

    assert (view.exit_code, view.error_code) == (1, "lease_expired")


def test_summarize_cuts_long_notes() -> None:
    text = summarize({"message": "x" * 100, "n": 1, "empty": ""}, width=30)

    assert len(text) == 30
    assert text.endswith("…")
    assert summarize({"usage": {"input": 1, "output": 2}}) == "usage={input,output}"


def test_render_draws_every_row() -> None:
    out = io.StringIO()
    Console(file=out, width=120, color_system=None).print(
        render(view_of(*SUCCESS), T0 + timedelta(seconds=10))
    )

    text = out.getvalue()
    assert "run r-1  running  attempt 1" in text
    assert "submit_codex_job" in text
    assert "items=4" in text
