"""Preflight handlers via TestRabbitBroker: each stage refuses honestly until built."""

from __future__ import annotations

from collections.abc import Iterator
from unittest.mock import ANY
from uuid import uuid4

import pytest
from fast_depends import dependency_provider
from faststream.rabbit import RabbitBroker, TestRabbitBroker

from services.preflight.handlers import router, task_failed
from shared.messages import (
    CancelTask,
    CodexPreflight,
    CodexShard,
    DiscoveredTask,
    DiscoverNextPhase,
    TaskError,
    TaskFailed,
    TaskName,
    new_message,
)
from shared.metrics import TASK_DURATION, TASK_FAILURE, TASK_START, get_metrics
from shared.topology import EXCHANGE, Route
from tests.support.fakes import CapturedLogs, RecordingMetrics

SHARD = CodexShard(
    codex_queue="codex-1", codex_volume="codex_auth_1", codex_shard_index=1
)
SPEC_TASK = DiscoveredTask(
    task_id="T012", description="Add the checkout form in src/checkout.py"
)


def discover_command(attempt: int = 1) -> DiscoverNextPhase:
    return new_message(
        DiscoverNextPhase,
        run_id=uuid4(),
        task=TaskName.DISCOVER_NEXT_PHASE,
        attempt=attempt,
        repository="acme/shop",
        feature_key="042-checkout",
        base_branch="main",
    )


def preflight_command() -> CodexPreflight:
    return new_message(
        CodexPreflight,
        run_id=uuid4(),
        task=TaskName.CODEX_PREFLIGHT,
        attempt=1,
        repository="acme/shop",
        feature_key="042-checkout",
        base_branch="main",
        base_sha="0" * 40,
        shard=SHARD,
        spec_task=SPEC_TASK,
    )


def not_implemented(stage: str) -> TaskError:
    return TaskError(
        code="stage_not_implemented",
        message=f"{stage} is not implemented yet in this build",
    )


@pytest.fixture
def metrics() -> Iterator[RecordingMetrics]:
    recording = RecordingMetrics()
    with dependency_provider.scope(get_metrics, lambda: recording):
        yield recording


@pytest.fixture
def broker() -> RabbitBroker:
    broker = RabbitBroker()
    broker.include_router(router)
    return broker


@pytest.fixture
def logs() -> Iterator[CapturedLogs]:
    with CapturedLogs.capture() as captured:
        yield captured


async def test_discover_next_phase_fails_as_not_implemented(
    broker: RabbitBroker, metrics: RecordingMetrics
) -> None:
    cmd = discover_command(attempt=2)

    async with TestRabbitBroker(broker) as br:
        await br.publish(cmd, exchange=EXCHANGE, routing_key=Route.DISCOVER_NEXT_PHASE)

        expected = cmd.reply(TaskFailed, error=not_implemented("discovery"))
        task_failed.mock.assert_called_once_with(
            expected.model_dump(mode="json") | {"occurred_at": ANY}
        )

    assert metrics.names() == [TASK_START, TASK_DURATION, TASK_FAILURE]
    assert metrics.tags_of(TASK_START) == [
        {
            "task": "discover_next_phase",
            "attempt": "2",
            "status": "running",
            "retry": "true",
        }
    ]
    assert (
        metrics.count(
            TASK_FAILURE, task="discover_next_phase", attempt=2, status="failure"
        )
        == 1
    )


async def test_codex_preflight_fails_as_not_implemented_and_logs_the_shard(
    broker: RabbitBroker, metrics: RecordingMetrics, logs: CapturedLogs
) -> None:
    cmd = preflight_command()

    async with TestRabbitBroker(broker) as br:
        await br.publish(cmd, exchange=EXCHANGE, routing_key=Route.CODEX_PREFLIGHT)

        expected = cmd.reply(TaskFailed, error=not_implemented("codex pre-flight"))
        task_failed.mock.assert_called_once_with(
            expected.model_dump(mode="json") | {"occurred_at": ANY}
        )

    (started,) = logs.matching("Spec workflow task codex_preflight started")
    assert (
        '"codex_queue":"codex-1","codex_shard_index":1,"codex_volume":"codex_auth_1"'
        in started["message"]
    )
    assert started["extra"]["run_id"] == str(cmd.run_id)
    (failed,) = logs.matching("Spec workflow task codex_preflight failed")
    assert '"code":"stage_not_implemented"' in failed["message"]
    assert metrics.count(TASK_FAILURE, task="codex_preflight", attempt=1) == 1


@pytest.mark.parametrize(
    ("task", "route"),
    [
        (TaskName.DISCOVER_NEXT_PHASE, Route.CANCEL_DISCOVER_NEXT_PHASE),
        (TaskName.CODEX_PREFLIGHT, Route.CANCEL_CODEX_PREFLIGHT),
    ],
)
async def test_cancel_only_logs_because_nothing_runs(
    broker: RabbitBroker,
    metrics: RecordingMetrics,
    logs: CapturedLogs,
    task: TaskName,
    route: Route,
) -> None:
    cancel = new_message(
        CancelTask,
        run_id=uuid4(),
        task=task,
        attempt=1,
        repository="acme/shop",
        feature_key="042-checkout",
    )

    async with TestRabbitBroker(broker) as br:
        await br.publish(cancel, exchange=EXCHANGE, routing_key=route)

        task_failed.mock.assert_not_called()

    (line,) = logs.matching("Cancel of task")
    assert line["message"] == (
        f"Cancel of task {task} for run {cancel.run_id} (attempt 1):"
        " nothing is running here"
    )
    assert line["extra"]["run_id"] == str(cancel.run_id)
    assert metrics.records == []
