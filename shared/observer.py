"""observe_task(): the runbook's task log lines and task metrics (design.md §8).

    with observe_task(metrics, cmd.task, cmd.run_id, cmd.attempt, details=...) as obs:
        ...
        obs.failed(error)            # or obs.succeeded(summary)

Entering logs `Spec workflow task <task> started for run <id> (attempt <n>) | details=…`
and counts `task_start`; `succeeded()`/`failed()` log the outcome line and count
`task_success`/`task_failure` plus the `task_duration` timer. An exception escaping the
block is a failure with code `handler_crashed` and is re-raised.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from types import TracebackType
from typing import Any, Self
from uuid import UUID

import orjson
from loguru import logger

from shared.messages import TaskError, TaskName
from shared.metrics import (
    TASK_DURATION,
    TASK_FAILURE,
    TASK_START,
    TASK_SUCCESS,
    Metrics,
)
from shared.redaction import redact, redact_text

HANDLER_CRASHED = "handler_crashed"
MAX_ERROR_MESSAGE = 512


def to_json(payload: Mapping[str, Any]) -> str:
    """Redacted JSON with sorted keys, for the `details=`/`summary=`/`error=` parts."""
    options = orjson.OPT_SORT_KEYS | orjson.OPT_NON_STR_KEYS
    return orjson.dumps(redact(payload), option=options, default=str).decode()


class TaskObservation:
    """One task attempt being observed; report exactly one outcome."""

    def __init__(
        self,
        metrics: Metrics,
        task: TaskName | str,
        run_id: UUID | str,
        attempt: int,
        details: Mapping[str, Any],
        retry: bool,
    ) -> None:
        self.metrics, self.task, self.run_id = metrics, str(task), str(run_id)
        self.attempt, self.details, self.retry = attempt, dict(details), retry
        self.outcome: str | None = None
        self._log = logger.bind(run_id=self.run_id, task=self.task, attempt=attempt)
        self._started = time.monotonic()

    def __enter__(self) -> Self:
        self._started = time.monotonic()
        self._log.info(
            "Spec workflow task {} started for run {} (attempt {}) | details={}",
            self.task,
            self.run_id,
            self.attempt,
            to_json(self.details),
        )
        self.metrics.incr(
            TASK_START,
            task=self.task,
            attempt=self.attempt,
            status="running",
            retry=self.retry,
        )
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        if exc is None:
            if self.outcome is None:
                self._log.warning(
                    "Spec workflow task {} ended without an outcome", self.task
                )
        elif not isinstance(exc, Exception):  # cancelled or interrupted: no verdict
            self._log.warning(
                "Spec workflow task {} interrupted ({})", self.task, exc_type
            )
        elif self.outcome is None:
            message = redact_text(f"{type(exc).__name__}: {exc}")[:MAX_ERROR_MESSAGE]
            self.failed(
                {"code": HANDLER_CRASHED, "message": message, "retryable": False}
            )

    def succeeded(self, summary: Mapping[str, Any] | None = None) -> None:
        elapsed = self._finish("success")
        self._log.info(
            "Spec workflow task {} succeeded for run {} (attempt {}) in {:.3f}s"
            " | summary={}",
            self.task,
            self.run_id,
            self.attempt,
            elapsed,
            to_json(summary or {}),
        )
        self.metrics.incr(
            TASK_SUCCESS, task=self.task, attempt=self.attempt, status="success"
        )

    def failed(
        self,
        error: TaskError | Mapping[str, Any],
        details: Mapping[str, Any] | None = None,
    ) -> None:
        """Report a failure; `details` defaults to the ones given at start."""
        elapsed = self._finish("failure")
        error_payload = (
            error.model_dump(mode="json") if isinstance(error, TaskError) else error
        )
        self._log.error(
            "Spec workflow task {} failed for run {} (attempt {}) after {:.3f}s"
            " | error={} | details={}",
            self.task,
            self.run_id,
            self.attempt,
            elapsed,
            to_json(error_payload),
            to_json(self.details if details is None else details),
        )
        self.metrics.incr(
            TASK_FAILURE, task=self.task, attempt=self.attempt, status="failure"
        )

    def _finish(self, status: str) -> float:
        if self.outcome is not None:
            raise RuntimeError(f"task {self.task} already reported {self.outcome}")
        self.outcome = status
        elapsed = time.monotonic() - self._started
        self.metrics.timing(
            TASK_DURATION,
            elapsed * 1000,
            task=self.task,
            attempt=self.attempt,
            status=status,
        )
        return elapsed


def observe_task(
    metrics: Metrics,
    task: TaskName | str,
    run_id: UUID | str,
    attempt: int,
    *,
    details: Mapping[str, Any] | None = None,
    retry: bool | None = None,
) -> TaskObservation:
    """Observe one task attempt; `retry` defaults to `attempt > 1`."""
    is_retry = attempt > 1 if retry is None else retry
    return TaskObservation(metrics, task, run_id, attempt, details or {}, is_retry)
