"""Publisher handlers via TestRabbitBroker: the stage refuses honestly until built."""

from __future__ import annotations

from collections.abc import Iterator
from unittest.mock import ANY
from uuid import uuid4

import pytest
from fast_depends import dependency_provider
from faststream.rabbit import RabbitBroker, TestRabbitBroker

from services.publisher.handlers import router, task_failed
from shared.messages import (
    ApplyAndPublish,
    ArtifactRef,
    CancelTask,
    DiscoveredTask,
    PublishMode,
    TaskError,
    TaskFailed,
    TaskName,
    new_message,
)
from shared.metrics import TASK_DURATION, TASK_FAILURE, TASK_START, get_metrics
from shared.topology import EXCHANGE, Route
from tests.support.fakes import CapturedLogs, RecordingMetrics


def publish_command() -> ApplyAndPublish:
    return new_message(
        ApplyAndPublish,
        run_id=uuid4(),
        task=TaskName.APPLY_AND_PUBLISH,
        attempt=1,
        repository="acme/shop",
        feature_key="042-checkout",
        base_branch="main",
        base_sha="0" * 40,
        spec_task=DiscoveredTask(task_id="T012", description="Add the checkout form"),
        publish_mode=PublishMode.PR,
        patch=ArtifactRef(path="codex/patch.diff", artifact_type="patch"),
        codex_task_id="codex-task-9",
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


async def test_apply_and_publish_fails_as_not_implemented(
    broker: RabbitBroker, metrics: RecordingMetrics, logs: CapturedLogs
) -> None:
    cmd = publish_command()

    async with TestRabbitBroker(broker) as br:
        await br.publish(cmd, exchange=EXCHANGE, routing_key=Route.APPLY_AND_PUBLISH)

        error = TaskError(
            code="stage_not_implemented",
            message="apply and publish is not implemented yet in this build",
        )
        expected = cmd.reply(TaskFailed, error=error)
        task_failed.mock.assert_called_once_with(
            expected.model_dump(mode="json") | {"occurred_at": ANY}
        )

    (started,) = logs.matching("Spec workflow task apply_and_publish started")
    assert '"codex_task_id":"codex-task-9"' in started["message"]
    assert '"publish_mode":"pr"' in started["message"]
    assert metrics.names() == [TASK_START, TASK_DURATION, TASK_FAILURE]
    assert (
        metrics.count(
            TASK_FAILURE, task="apply_and_publish", attempt=1, status="failure"
        )
        == 1
    )


async def test_cancel_only_logs_because_nothing_runs(
    broker: RabbitBroker, metrics: RecordingMetrics, logs: CapturedLogs
) -> None:
    cancel = new_message(
        CancelTask,
        run_id=uuid4(),
        task=TaskName.APPLY_AND_PUBLISH,
        attempt=1,
        repository="acme/shop",
        feature_key="042-checkout",
    )

    async with TestRabbitBroker(broker) as br:
        await br.publish(
            cancel, exchange=EXCHANGE, routing_key=Route.CANCEL_APPLY_AND_PUBLISH
        )

        task_failed.mock.assert_not_called()

    assert logs.matching(
        f"Cancel of task apply_and_publish for run {cancel.run_id} (attempt 1)"
    )
    assert metrics.records == []
