"""observe_task(): the runbook's log lines (design.md §8) and the task metrics."""

from __future__ import annotations

import re
from collections.abc import Iterator
from uuid import UUID, uuid4

import pytest

from shared.messages import TaskError, TaskName
from shared.metrics import TASK_DURATION, TASK_FAILURE, TASK_START, TASK_SUCCESS
from shared.observer import observe_task
from tests.support.fakes import CapturedLogs, RecordingMetrics

CODEX_DETAILS = {
    "codex_queue": "codex-1",
    "codex_volume": "codex_auth_1",
    "codex_shard_index": 1,
}


@pytest.fixture
def logs() -> Iterator[CapturedLogs]:
    with CapturedLogs.capture() as captured:
        yield captured


@pytest.fixture
def metrics() -> RecordingMetrics:
    return RecordingMetrics()


@pytest.fixture
def run_id() -> UUID:
    return uuid4()


def test_start_logs_details_and_counts_task_start(
    logs: CapturedLogs, metrics: RecordingMetrics, run_id: UUID
) -> None:
    with observe_task(
        metrics, TaskName.SUBMIT_CODEX_JOB, run_id, 1, details=CODEX_DETAILS
    ) as observed:
        observed.succeeded({})

    assert logs.messages()[0] == (
        f"Spec workflow task submit_codex_job started for run {run_id} (attempt 1) | "
        'details={"codex_queue":"codex-1","codex_shard_index":1,"codex_volume":"codex_auth_1"}'
    )
    assert logs[0]["extra"] == {
        "run_id": str(run_id),
        "task": "submit_codex_job",
        "attempt": 1,
    }
    assert metrics.records[0] == (
        TASK_START,
        1,
        {
            "task": "submit_codex_job",
            "attempt": "1",
            "status": "running",
            "retry": "false",
        },
    )


def test_success_logs_summary_and_counts_success_with_duration(
    logs: CapturedLogs, metrics: RecordingMetrics, run_id: UUID
) -> None:
    with observe_task(
        metrics, TaskName.APPLY_AND_PUBLISH, run_id, 2, details={}
    ) as observed:
        observed.succeeded(
            {"pr_url": "https://github.com/acme/shop/pull/7", "branch_name": "spec/042"}
        )

    assert re.fullmatch(
        rf"Spec workflow task apply_and_publish succeeded for run {run_id}"
        rf" \(attempt 2\) in \d+\.\d{{3}}s"
        r' \| summary=\{"branch_name":"spec/042","pr_url":"https://github.com/acme/shop/pull/7"\}',
        logs.messages()[1],
    )
    assert metrics.tags_of(TASK_START) == [
        {
            "task": "apply_and_publish",
            "attempt": "2",
            "status": "running",
            "retry": "true",
        }
    ]
    assert (
        metrics.count(
            TASK_SUCCESS, task="apply_and_publish", attempt=2, status="success"
        )
        == 1
    )
    assert metrics.find(
        TASK_DURATION, task="apply_and_publish", attempt=2, status="success"
    )
    assert metrics.count(TASK_FAILURE) == 0


def test_failure_logs_error_and_details_and_counts_failure(
    logs: CapturedLogs, metrics: RecordingMetrics, run_id: UUID
) -> None:
    error = TaskError(
        code="codex_login_missing", message="no login on codex_auth_1", retryable=False
    )

    with observe_task(
        metrics, "codex_preflight", run_id, 1, details=CODEX_DETAILS
    ) as observed:
        observed.failed(error)

    assert re.fullmatch(
        rf"Spec workflow task codex_preflight failed for run {run_id}"
        rf" \(attempt 1\) after \d+\.\d{{3}}s"
        r' \| error=\{"code":"codex_login_missing",'
        r'"message":"no login on codex_auth_1","retryable":false\}'
        r' \| details=\{"codex_queue":"codex-1","codex_shard_index":1,'
        r'"codex_volume":"codex_auth_1"\}',
        logs.messages()[1],
    )
    assert logs[1]["level"].name == "ERROR"
    assert (
        metrics.count(TASK_FAILURE, task="codex_preflight", attempt=1, status="failure")
        == 1
    )
    assert metrics.find(TASK_DURATION, status="failure")
    assert metrics.count(TASK_SUCCESS) == 0


def test_failure_may_replace_the_details(
    logs: CapturedLogs, metrics: RecordingMetrics, run_id: UUID
) -> None:
    with observe_task(
        metrics, "discover_next_phase", run_id, 1, details={"a": 1}
    ) as observed:
        observed.failed(
            {"code": "spec_missing", "message": "m"},
            details={"spec_path": "specs/042/tasks.md"},
        )

    assert logs.messages()[1].endswith('| details={"spec_path":"specs/042/tasks.md"}')


def test_escaping_exception_is_a_handler_crash_and_is_reraised(
    logs: CapturedLogs, metrics: RecordingMetrics, run_id: UUID
) -> None:
    with (
        pytest.raises(KeyError),
        observe_task(metrics, "discover_next_phase", run_id, 1),
    ):
        raise KeyError("missing")

    assert '"code":"handler_crashed"' in logs.messages()[1]
    assert "KeyError: 'missing'" in logs.messages()[1]
    assert (
        metrics.count(TASK_FAILURE, task="discover_next_phase", status="failure") == 1
    )


def test_payloads_are_redacted_but_identifiers_kept(
    logs: CapturedLogs, metrics: RecordingMetrics, run_id: UUID
) -> None:
    details = {
        "feature_key": "042-checkout",
        "github_token": "plain-value",
        "remote": "https://u:p@github.com/a",
    }

    with observe_task(
        metrics, "apply_and_publish", run_id, 1, details=details
    ) as observed:
        observed.failed({"code": "push_rejected", "message": "auth ghp_" + "Z" * 36})

    started, failed = logs.messages()
    assert '"feature_key":"042-checkout"' in started
    assert '"github_token":"***"' in started
    assert '"remote":"https://***@github.com/a"' in started
    assert '"message":"auth ghp_***"' in failed


def test_reporting_twice_is_a_bug(metrics: RecordingMetrics, run_id: UUID) -> None:
    with observe_task(metrics, "finalize_run", run_id, 1) as observed:
        observed.succeeded()
        with pytest.raises(RuntimeError, match="already reported success"):
            observed.failed({"code": "x", "message": "y"})


def test_retry_tag_follows_the_attempt_unless_given(
    metrics: RecordingMetrics, run_id: UUID
) -> None:
    with observe_task(metrics, "finalize_run", run_id, 3, retry=False) as observed:
        observed.succeeded()
    with observe_task(metrics, "finalize_run", run_id, 3) as observed:
        observed.succeeded()

    assert [tags["retry"] for tags in metrics.tags_of(TASK_START)] == ["false", "true"]
