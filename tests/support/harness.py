"""A scripted stand-in for the three stage services, over the real broker.

It consumes the real stage queues and answers with real task events, as the preflight,
Codex runner and publisher services will. What it does for a run is scripted by the
run's feature key.
"""

from __future__ import annotations

import asyncio
import logging
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from faststream.rabbit import RabbitBroker
from faststream.rabbit.schemas import Channel

from shared.messages import (
    ApplyAndPublish,
    ArtifactRef,
    CancelTask,
    CodexPreflight,
    Command,
    DiscoveredTask,
    DiscoverNextPhase,
    Message,
    SubmitCodexJob,
    TaskCancelled,
    TaskError,
    TaskFailed,
    TaskName,
    TaskStarted,
    TaskSucceeded,
)
from shared.routing import Route, route_of
from shared.summaries import (
    CodexSummary,
    DiscoverySummary,
    PreflightSummary,
    PublishSummary,
)
from shared.topology import EXCHANGE, codex_cancel_queue, codex_queue, queue_for

BASE_SHA = "0123456789abcdef0123456789abcdef01234567"


QUICK_TASKS = frozenset(
    {TaskName.DISCOVER_NEXT_PHASE, TaskName.CODEX_PREFLIGHT, TaskName.APPLY_AND_PUBLISH}
)


@dataclass
class Script:
    """What the stages do for runs of one feature key."""

    fail_at: TaskName | None = None
    fail_attempts: frozenset[int] = frozenset({1})
    fail_code: str = "stage_failed"
    fail_summary: dict[str, Any] = field(default_factory=dict)
    no_work: bool = False
    hold: frozenset[TaskName] = frozenset()
    crash_at: TaskName | None = None
    duplicate: bool = False
    outcome_first: bool = False
    lease_seconds: float | None = None
    silent_after_start: frozenset[TaskName] = frozenset()
    discovered_task: str = "T001"
    summary_extra: dict[str, Any] = field(default_factory=dict)
    """Keys added to every success summary (a newer stage's fields)."""


@dataclass
class StageHarness:
    rabbitmq_url: str
    shards: int
    artifacts_root: Path
    scripts: dict[str, Script] = field(default_factory=dict)
    received: dict[tuple[str, TaskName], list[Command]] = field(
        default_factory=lambda: defaultdict(list)
    )
    cancels: list[CancelTask] = field(default_factory=list)
    released: dict[str, asyncio.Event] = field(default_factory=dict)
    published: list[Message] = field(default_factory=list)
    quick_stages: bool = False
    """Like the real preflight and publisher with work under STAGE_STARTED_AFTER: no
    TaskStarted, only the outcome (the Codex runner always sends it)."""
    _background: set[asyncio.Task[None]] = field(default_factory=set)

    def __post_init__(self) -> None:
        self.broker = RabbitBroker(
            self.rabbitmq_url,
            default_channel=Channel(prefetch_count=20),
            logger=logging.getLogger("harness.broker"),
        )
        b = self.broker
        b.subscriber(queue_for("preflight", Route.DISCOVER_NEXT_PHASE), EXCHANGE)(
            self._discover
        )
        b.subscriber(queue_for("preflight", Route.CODEX_PREFLIGHT), EXCHANGE)(
            self._preflight
        )
        b.subscriber(queue_for("publisher", Route.APPLY_AND_PUBLISH), EXCHANGE)(
            self._publish
        )
        for cancel_route in (
            Route.CANCEL_DISCOVER_NEXT_PHASE,
            Route.CANCEL_CODEX_PREFLIGHT,
        ):
            b.subscriber(queue_for("preflight", cancel_route), EXCHANGE)(self._cancel)
        b.subscriber(queue_for("publisher", Route.CANCEL_APPLY_AND_PUBLISH), EXCHANGE)(
            self._cancel
        )
        for shard in range(self.shards):
            b.subscriber(codex_queue(shard), EXCHANGE)(self._codex)
            b.subscriber(codex_cancel_queue(shard), EXCHANGE)(self._cancel)

    async def start(self) -> None:
        await self.broker.start()

    async def stop(self) -> None:
        for event in self.released.values():
            event.set()
        if self._background:
            await asyncio.wait(self._background, timeout=5)
        await self.broker.stop()

    def script(self, feature_key: str, **options: Any) -> Script:
        self.scripts[feature_key] = Script(**options)
        return self.scripts[feature_key]

    def release(self, run_id: str) -> None:
        self.released.setdefault(run_id, asyncio.Event()).set()

    async def wait_for_cancel(self, run_id: str, timeout: float = 10.0) -> CancelTask:  # noqa: ASYNC109 - expiry is an AssertionError
        """The CancelTask the stages received for `run_id`, once it arrives."""
        deadline = asyncio.get_running_loop().time() + timeout
        while asyncio.get_running_loop().time() < deadline:
            for cancel in self.cancels:
                if str(cancel.run_id) == run_id:
                    return cancel
            await asyncio.sleep(0.05)
        raise AssertionError(f"no CancelTask for run {run_id} within {timeout}s")

    def commands(self, feature_key: str, task: TaskName) -> list[Command]:
        return self.received[(feature_key, task)]

    async def emit(self, event: Message) -> None:
        self.published.append(event)
        await self.broker.publish(
            event,
            exchange=EXCHANGE,
            routing_key=route_of(event),
            persist=True,
        )

    # ------------------------------------------------------------------ stage behaviour

    async def _serve(
        self,
        cmd: Command,
        summary: dict[str, Any],
        artifacts: list[ArtifactRef] | None = None,
    ) -> None:
        self.received[(cmd.feature_key, cmd.task)].append(cmd)
        script = self.scripts.get(cmd.feature_key, Script())
        if script.crash_at is cmd.task:
            raise RuntimeError(f"scripted crash in {cmd.task}")
        lease = datetime.now(UTC) + timedelta(seconds=script.lease_seconds or 300)
        started = cmd.reply(TaskStarted, lease_until=lease)
        if script.fail_at is cmd.task and cmd.attempt in script.fail_attempts:
            outcome: Message = cmd.reply(
                TaskFailed,
                error=TaskError(code=script.fail_code, message="scripted failure"),
                summary=script.fail_summary,
            )
        else:
            outcome = cmd.reply(
                TaskSucceeded,
                summary={**summary, **script.summary_extra},
                artifacts=artifacts or [],
            )
        if script.outcome_first:
            await self._emit(outcome, script)
            await self._emit(started, script)
            return
        quick = not (script.hold or script.silent_after_start)
        if not (self.quick_stages and quick and cmd.task in QUICK_TASKS):
            await self._emit(started, script)
        if cmd.task in script.silent_after_start:
            return
        if cmd.task in script.hold:
            # Like the Codex runner's lease design: ack now, finish in the background.
            self._background.add(
                asyncio.create_task(self._after_hold(cmd, outcome, script))
            )
            return
        await self._emit(outcome, script)

    async def _after_hold(self, cmd: Command, outcome: Message, script: Script) -> None:
        await self.released.setdefault(str(cmd.run_id), asyncio.Event()).wait()
        if any(
            (c.run_id, c.task, c.attempt) == (cmd.run_id, cmd.task, cmd.attempt)
            for c in self.cancels
        ):
            outcome = cmd.reply(TaskCancelled, reason="stopped on request")
        await self._emit(outcome, script)

    async def _emit(self, event: Message, script: Script) -> None:
        await self.emit(event)
        if script.duplicate:
            await self.emit(event)

    async def _discover(self, cmd: DiscoverNextPhase) -> None:
        script = self.scripts.get(cmd.feature_key, Script())
        task_id = cmd.requested_task_id or script.discovered_task
        summary = DiscoverySummary(
            result="no_work" if script.no_work else "task_found",
            base_branch=cmd.base_branch or "main",
            base_sha=BASE_SHA,
            discovered=None
            if script.no_work
            else DiscoveredTask(task_id=task_id, description="Add the cart model"),
            spec_title="Checkout",
            has_plan=True,
        )
        await self._serve(cmd, summary.model_dump(mode="json"))

    async def _preflight(self, cmd: CodexPreflight) -> None:
        summary = PreflightSummary(
            codex_status="logged_in", github_status="valid", notes="scripted"
        )
        await self._serve(cmd, summary.model_dump(mode="json"))

    async def _codex(self, cmd: SubmitCodexJob) -> None:
        run_dir = self.artifacts_root / str(cmd.run_id)
        run_dir.mkdir(parents=True, exist_ok=True)
        (run_dir / "patch.diff").write_text(f"diff for {cmd.spec_task.task_id}\n")
        patch = ArtifactRef(path="patch.diff", artifact_type="patch")
        summary = CodexSummary(
            patch=patch, codex_task_id=f"thread-{cmd.run_id}", files_changed=1
        )
        await self._serve(cmd, summary.model_dump(mode="json"), [patch])

    async def _publish(self, cmd: ApplyAndPublish) -> None:
        number = len(self.received) + 1
        summary = PublishSummary(
            branch_name=f"speckit/{cmd.feature_key}/{cmd.spec_task.task_id}-{str(cmd.run_id)[:8]}",
            pr_url=f"https://github.example/{cmd.repository}/pull/{number}",
        )
        await self._serve(cmd, summary.model_dump(mode="json"))

    async def _cancel(self, cmd: CancelTask) -> None:
        self.cancels.append(cmd)
        self.release(str(cmd.run_id))
