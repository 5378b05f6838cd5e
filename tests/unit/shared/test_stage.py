"""shared.stage: TaskStarted is deferred by STAGE_STARTED_AFTER; quick work sends only
its outcome, slow work announces first, and an outcome never follows a late start."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from uuid import uuid4

import pytest

from shared.messages import (
    DiscoverNextPhase,
    Message,
    TaskName,
    TaskStarted,
    TaskSucceeded,
)
from shared.stage import TaskEvents, report, serving
from tests.support.fakes import RecordingMetrics

LEASE = timedelta(minutes=10)


class Recorder:
    """Stands in for a RabbitPublisher: keeps what was published, in order."""

    def __init__(self, log: list[Message], delay: float = 0.0) -> None:
        self.log, self.delay = log, delay

    async def publish(self, message: Message) -> None:
        await asyncio.sleep(self.delay)
        self.log.append(message)


def command() -> DiscoverNextPhase:
    return DiscoverNextPhase(
        message_id=uuid4(),
        run_id=uuid4(),
        task=TaskName.DISCOVER_NEXT_PHASE,
        attempt=1,
        occurred_at=datetime.now(UTC),
        repository="acme/shop",
        feature_key="042-checkout",
        base_branch="main",
    )


def events(log: list[Message], started_delay: float = 0.0) -> TaskEvents:
    return TaskEvents(
        Recorder(log, started_delay),  # type: ignore[arg-type]
        Recorder(log),  # type: ignore[arg-type]
        Recorder(log),  # type: ignore[arg-type]
    )


async def serve(
    log: list[Message], started_after: timedelta, work: float, started_delay=0.0
) -> None:
    cmd, ev = command(), events(log, started_delay)
    async with serving(
        cmd, ev, RecordingMetrics(), {}, LEASE, started_after
    ) as current:
        await asyncio.sleep(work)
        await report(cmd, ev, current, summary={"n": 1}, error=None, artifacts=[])


async def test_quick_work_sends_only_its_outcome() -> None:
    log: list[Message] = []
    await serve(log, timedelta(seconds=0.5), work=0.0)
    await asyncio.sleep(0.6)  # nothing left behind to announce later
    assert [type(m) for m in log] == [TaskSucceeded]


async def test_slow_work_announces_with_a_lease_before_its_outcome() -> None:
    log: list[Message] = []
    before = datetime.now(UTC)
    await serve(log, timedelta(seconds=0.05), work=0.3)
    assert [type(m) for m in log] == [TaskStarted, TaskSucceeded]
    started = log[0]
    assert isinstance(started, TaskStarted)
    assert started.lease_until is not None
    assert started.lease_until >= before + LEASE


async def test_zero_announces_at_once() -> None:
    log: list[Message] = []
    await serve(log, timedelta(0), work=0.0)
    assert [type(m) for m in log] == [TaskStarted, TaskSucceeded]


async def test_an_announcement_in_flight_is_dropped_before_the_outcome() -> None:
    """The start timer fires while the work ends: the outcome is not held up by, nor
    followed by, a TaskStarted."""
    log: list[Message] = []
    await serve(log, timedelta(seconds=0.05), work=0.06, started_delay=0.5)
    await asyncio.sleep(0.6)
    assert [type(m) for m in log] == [TaskSucceeded]


async def test_a_crashing_stage_leaves_no_announcement_behind() -> None:
    log: list[Message] = []
    cmd, ev = command(), events(log)
    with pytest.raises(RuntimeError):
        async with serving(
            cmd, ev, RecordingMetrics(), {}, LEASE, timedelta(seconds=0.1)
        ):
            raise RuntimeError("boom")
    await asyncio.sleep(0.2)
    assert log == []
