"""Publisher handlers via TestRabbitBroker: started, then succeeded or failed."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from unittest.mock import ANY
from uuid import uuid4

import pytest
from fast_depends import dependency_provider
from faststream.rabbit import RabbitBroker, TestRabbitBroker

from services.publisher.handlers import (
    get_deps,
    router,
    task_failed,
    task_started,
    task_succeeded,
)
from services.publisher.publish import Deps
from shared import artifacts
from shared.messages import (
    ApplyAndPublish,
    ArtifactRef,
    CancelTask,
    DiscoveredTask,
    PublishMode,
    TaskError,
    TaskFailed,
    TaskName,
    TaskSucceeded,
    new_message,
)
from shared.metrics import TASK_DURATION, TASK_FAILURE, TASK_START, get_metrics
from shared.topology import EXCHANGE, Route
from tests.support.fakes import CapturedLogs, FakeSecrets, RecordingMetrics

PATCH = ArtifactRef(path="patch.diff", artifact_type="patch")


def publish_command(mode: PublishMode = PublishMode.PR) -> ApplyAndPublish:
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
        publish_mode=mode,
        patch=PATCH,
        codex_task_id="codex-task-9",
    )


@pytest.fixture
def metrics() -> Iterator[RecordingMetrics]:
    recording = RecordingMetrics()
    with dependency_provider.scope(get_metrics, lambda: recording):
        yield recording


@pytest.fixture
def secrets() -> FakeSecrets:
    return FakeSecrets({"github": "tok-unit-test-123456"})


@pytest.fixture
def deps(tmp_path: Path, secrets: FakeSecrets) -> Iterator[Deps]:
    made = Deps(
        internal_api=secrets,
        artifacts_root=tmp_path / "artifacts",
        workspaces_root=tmp_path / "workspaces",
        github_api_url="http://127.0.0.1:9",  # never called in these tests
        github_git_url="http://127.0.0.1:9",
        git_timeout=5,
        started_after=timedelta(0),  # TaskStarted at once: these tests check it
    )
    with dependency_provider.scope(get_deps, lambda: made):
        yield made


@pytest.fixture
def broker() -> RabbitBroker:
    broker = RabbitBroker()
    broker.include_router(router)
    return broker


@pytest.fixture
def logs() -> Iterator[CapturedLogs]:
    with CapturedLogs.capture() as captured:
        yield captured


async def test_apply_and_publish_fails_without_the_patch(
    broker: RabbitBroker, deps: Deps, metrics: RecordingMetrics, logs: CapturedLogs
) -> None:
    cmd = publish_command()

    async with TestRabbitBroker(broker) as br:
        await br.publish(cmd, exchange=EXCHANGE, routing_key=Route.APPLY_AND_PUBLISH)

        task_started.mock.assert_called_once()
        error = TaskError(code="patch_missing", message="no patch at patch.diff")
        expected = cmd.reply(TaskFailed, error=error)
        task_failed.mock.assert_called_once_with(
            expected.model_dump(mode="json") | {"occurred_at": ANY}
        )
        task_succeeded.mock.assert_not_called()

    (started,) = logs.matching("Spec workflow task apply_and_publish started")
    assert '"publish_mode":"pr"' in started["message"]
    assert metrics.names() == [TASK_START, TASK_DURATION, TASK_FAILURE]
    del deps


async def test_apply_and_publish_none_keeps_the_patch_only(
    broker: RabbitBroker, deps: Deps, secrets: FakeSecrets, metrics: RecordingMetrics
) -> None:
    cmd = publish_command(PublishMode.NONE)
    artifacts.write_bytes(
        deps.artifacts_root, cmd.run_id, PATCH.path, b"diff --git a/x b/x\n", "patch"
    )

    async with TestRabbitBroker(broker) as br:
        await br.publish(cmd, exchange=EXCHANGE, routing_key=Route.APPLY_AND_PUBLISH)

        summary = {
            "branch_name": None,
            "pr_url": None,
            "commit_sha": None,
            "pr_number": None,
            "adopted": False,
            "patch": "patch.diff",
        }
        expected = cmd.reply(TaskSucceeded, summary=summary, artifacts=[PATCH])
        task_succeeded.mock.assert_called_once_with(
            expected.model_dump(mode="json") | {"occurred_at": ANY}
        )
        task_failed.mock.assert_not_called()

    assert secrets.asked == []  # no push: no token fetched
    assert metrics.names()[0] == TASK_START


async def test_cancel_only_logs_because_publishing_is_short(
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
