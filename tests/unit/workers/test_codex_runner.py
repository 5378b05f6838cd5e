"""Codex runner handlers via TestRabbitBroker, for the one shard a process serves."""

from __future__ import annotations

from collections.abc import Iterator
from unittest.mock import ANY
from uuid import uuid4

import pytest
from fast_depends import dependency_provider
from faststream.exceptions import SubscriberNotFound
from faststream.rabbit import RabbitBroker, TestRabbitBroker
from pydantic import ValidationError

from services.codex_runner.handlers import shard_router, task_failed
from services.codex_runner.settings import Settings
from shared.messages import (
    CancelTask,
    CodexShard,
    DiscoveredTask,
    SubmitCodexJob,
    TaskError,
    TaskFailed,
    TaskName,
    new_message,
)
from shared.metrics import TASK_FAILURE, TASK_START, get_metrics
from shared.routing import cancel_codex_route, submit_codex_route
from shared.topology import EXCHANGE
from tests.support.fakes import CapturedLogs, RecordingMetrics

SERVED_SHARD = 1


def codex_job(shard: int = SERVED_SHARD) -> SubmitCodexJob:
    return new_message(
        SubmitCodexJob,
        run_id=uuid4(),
        task=TaskName.SUBMIT_CODEX_JOB,
        attempt=1,
        repository="acme/shop",
        feature_key="042-checkout",
        base_branch="main",
        base_sha="0" * 40,
        shard=CodexShard(
            codex_queue=f"codex-{shard}",
            codex_volume=f"codex_auth_{shard}",
            codex_shard_index=shard,
        ),
        spec_task=DiscoveredTask(task_id="T012", description="Add the checkout form"),
    )


@pytest.fixture
def metrics() -> Iterator[RecordingMetrics]:
    recording = RecordingMetrics()
    with dependency_provider.scope(get_metrics, lambda: recording):
        yield recording


@pytest.fixture
def broker() -> RabbitBroker:
    broker = RabbitBroker()
    broker.include_router(shard_router(SERVED_SHARD))
    return broker


@pytest.fixture
def logs() -> Iterator[CapturedLogs]:
    with CapturedLogs.capture() as captured:
        yield captured


async def test_codex_job_fails_as_not_implemented_and_logs_the_shard(
    broker: RabbitBroker, metrics: RecordingMetrics, logs: CapturedLogs
) -> None:
    cmd = codex_job()

    async with TestRabbitBroker(broker) as br:
        await br.publish(
            cmd, exchange=EXCHANGE, routing_key=submit_codex_route(SERVED_SHARD)
        )

        error = TaskError(
            code="stage_not_implemented",
            message="codex run is not implemented yet in this build",
        )
        expected = cmd.reply(TaskFailed, error=error)
        task_failed.mock.assert_called_once_with(
            expected.model_dump(mode="json") | {"occurred_at": ANY}
        )

    (started,) = logs.matching("Spec workflow task submit_codex_job started")
    assert (
        '"codex_queue":"codex-1","codex_shard_index":1,"codex_volume":"codex_auth_1"'
        in started["message"]
    )
    assert metrics.tags_of(TASK_START) == [
        {
            "task": "submit_codex_job",
            "attempt": "1",
            "status": "running",
            "retry": "false",
        }
    ]
    assert metrics.count(TASK_FAILURE, task="submit_codex_job", status="failure") == 1


async def test_jobs_of_other_shards_are_not_consumed(
    broker: RabbitBroker, metrics: RecordingMetrics
) -> None:
    async with TestRabbitBroker(broker) as br:
        with pytest.raises(SubscriberNotFound):
            await br.publish(
                codex_job(shard=0), exchange=EXCHANGE, routing_key=submit_codex_route(0)
            )

        task_failed.mock.assert_not_called()
    assert metrics.records == []


async def test_cancel_only_logs_because_no_container_runs(
    broker: RabbitBroker, metrics: RecordingMetrics, logs: CapturedLogs
) -> None:
    cancel = new_message(
        CancelTask,
        run_id=uuid4(),
        task=TaskName.SUBMIT_CODEX_JOB,
        attempt=1,
        repository="acme/shop",
        feature_key="042-checkout",
        shard=CodexShard(
            codex_queue="codex-1",
            codex_volume="codex_auth_1",
            codex_shard_index=SERVED_SHARD,
        ),
    )

    async with TestRabbitBroker(broker) as br:
        await br.publish(
            cancel, exchange=EXCHANGE, routing_key=cancel_codex_route(SERVED_SHARD)
        )

        task_failed.mock.assert_not_called()

    assert logs.matching(
        f"Cancel of task submit_codex_job for run {cancel.run_id} (attempt 1)"
    )
    assert metrics.records == []


@pytest.fixture
def worker_env(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    monkeypatch.setenv("RABBITMQ_URL", "amqp://guest:guest@127.0.0.1:5672/")
    for name in ("CODEX_SHARD_INDEX", "CODEX_SHARDS"):
        monkeypatch.delenv(name, raising=False)
    return monkeypatch


def test_settings_serve_shard_zero_by_default(worker_env: pytest.MonkeyPatch) -> None:
    worker_env.setenv("CODEX_SHARDS", "3")

    assert Settings(_env_file=None).codex_shard_index == 0


def test_settings_read_the_shard_index(worker_env: pytest.MonkeyPatch) -> None:
    worker_env.setenv("CODEX_SHARD_INDEX", "2")

    assert Settings(_env_file=None).codex_shard_index == 2


def test_settings_reject_a_shard_outside_codex_shards(
    worker_env: pytest.MonkeyPatch,
) -> None:
    worker_env.setenv("CODEX_SHARDS", "2")
    worker_env.setenv("CODEX_SHARD_INDEX", "2")

    with pytest.raises(
        ValidationError, match="CODEX_SHARD_INDEX=2 is outside CODEX_SHARDS=2"
    ):
        Settings(_env_file=None)
