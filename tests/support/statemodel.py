"""Random steps against the real run state machine; invariants checked after each.

The legal edges are written out here, not imported from `lifecycle.py`, so that a wrong
rule there turns the property test red instead of agreeing with itself.

Other writers (the API's own consumers, the relay's lease reaper, the scripted stages
when the test session started them) may move the same runs between two steps. Their
changes are checked too, against the transitive closure of the legal edges, since
several of their transactions may fall in between.
"""

from __future__ import annotations

import asyncio
import threading
from collections import Counter, defaultdict
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from typing import Any, TypeVar
from uuid import UUID, uuid4

from hypothesis import strategies as st
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from services.api import (
    closing,
    guards,
    leases,
    run_control,
    runlock,
    runrows,
    runs,
    stops,
    transitions,
)
from services.api.db import Database
from services.api.dead_letters import inbox_copy
from services.api.errors import ActiveRunExists, RunNotCancellable, RunNotRetryable
from services.api.models import (
    DEFAULT_USER_ID,
    Artifact,
    CredentialAudit,
    Run,
    RunEvent,
    TaskState,
)
from shared.messages import (
    PIPELINE,
    ArtifactRef,
    DiscoveredTask,
    FinalizeRun,
    Message,
    TaskCancelled,
    TaskError,
    TaskFailed,
    TaskHeartbeat,
    TaskName,
    TaskStarted,
    TaskSucceeded,
)
from shared.summaries import (
    CodexSummary,
    DiscoverySummary,
    PreflightSummary,
    PublishSummary,
)

T = TypeVar("T")
REPOSITORY = "acme/shop"
SHARDS = 3
MAX_REDISPATCH = 1

# ------------------------------------------------- the rules, as the design states them

QUEUED, RUNNING = "queued", "running"
SUCCEEDED, FAILED, SKIPPED, CANCELLED = "succeeded", "failed", "skipped", "cancelled"
PENDING = "pending"
OPEN = frozenset({QUEUED, RUNNING})
TASK_END = frozenset({SUCCEEDED, FAILED, SKIPPED, CANCELLED})
ACTIVE = frozenset({PENDING, RUNNING})
RUN_END = frozenset({SUCCEEDED, FAILED, CANCELLED})

TASK_EDGES = frozenset(
    {(QUEUED, RUNNING), (RUNNING, QUEUED), (QUEUED, SKIPPED)}
    | {(a, b) for a in OPEN for b in (SUCCEEDED, FAILED, CANCELLED)}
)
RETRY_EDGES = frozenset({(FAILED, PENDING), (CANCELLED, PENDING)})
RUN_EDGES_WITHOUT_RETRY = frozenset(
    {(PENDING, RUNNING)} | {(a, b) for a in ACTIVE for b in RUN_END}
)
RUN_EDGES = RUN_EDGES_WITHOUT_RETRY | RETRY_EDGES
PHASE_OF = {
    TaskName.DISCOVER_NEXT_PHASE: "discover",
    TaskName.CODEX_PREFLIGHT: "discover",
    TaskName.SUBMIT_CODEX_JOB: "submit",
    TaskName.APPLY_AND_PUBLISH: "publish",
    TaskName.FINALIZE_RUN: "complete",
}


def reachable(edges: frozenset[tuple[str, str]], start: str, goal: str) -> bool:
    """`goal` can follow `start` after zero or more edges."""
    seen, frontier = {start}, [start]
    while frontier:
        here = frontier.pop()
        for a, b in edges:
            if a == here and b not in seen:
                seen.add(b)
                frontier.append(b)
    return goal in seen


# ---------------------------------------------------------------- steps


class Kind(StrEnum):
    STARTED = "started"
    HEARTBEAT = "heartbeat"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"
    FINALIZE = "finalize"
    DEAD_LETTER = "dead_letter"


class Near(StrEnum):
    """A task named relative to the one the run waits on (as last seen)."""

    CURRENT = "current"
    PREVIOUS = "previous"  # usually done: a late or second copy of its events
    NEXT = "next"  # not dispatched yet


def resolve(near: TaskName | Near, current: TaskName) -> TaskName:
    if isinstance(near, TaskName):
        return near
    index = (
        PIPELINE.index(current)
        + {Near.CURRENT: 0, Near.PREVIOUS: -1, Near.NEXT: 1}[near]
    )
    return PIPELINE[min(max(index, 0), len(PIPELINE) - 1)]


@dataclass(frozen=True)
class Create:
    """Create a run for feature key `key` (refused while one is active)."""

    key: int


@dataclass(frozen=True)
class Emit:
    """A stage event for run `run`, about any task.

    `attempt` is added to the run's attempt as last seen (-1: stale, +1: future).
    `hold` keeps it back for a later `Deliver`: how messages overtake each other.
    """

    run: int
    kind: Kind
    task: TaskName | Near
    attempt: int
    variant: int
    hold: bool


@dataclass(frozen=True)
class Progress:
    """A stage doing its job: TaskStarted (unless `quiet`), then a good outcome."""

    run: int
    quiet: bool
    variant: int


@dataclass(frozen=True)
class Deliver:
    """Deliver a held message (out of order)."""

    index: int


@dataclass(frozen=True)
class Redeliver:
    """Deliver an already delivered message again (same message_id)."""

    index: int


@dataclass(frozen=True)
class Echo:
    """A delivered message again under a new id: a re-sent command run twice."""

    index: int


@dataclass(frozen=True)
class Retry:
    run: int


@dataclass(frozen=True)
class Cancel:
    run: int


@dataclass(frozen=True)
class Reap:
    """What the lease reaper does for (run, task, attempt), expired or not."""

    run: int
    task: TaskName | Near
    attempt: int


Step = Create | Emit | Progress | Deliver | Redeliver | Echo | Retry | Cancel | Reap

_runs = st.integers(0, 3)
_tasks = st.one_of(
    st.sampled_from([Near.CURRENT, Near.CURRENT, Near.PREVIOUS, Near.NEXT]),
    st.sampled_from(PIPELINE),
)
_variants = st.integers(0, 15)
_emit = st.builds(
    Emit,
    run=_runs,
    kind=st.sampled_from([Kind.SUCCEEDED, Kind.STARTED, *Kind]),
    task=_tasks,
    attempt=st.sampled_from([0, 0, 0, 0, -1, 1]),
    variant=_variants,
    hold=st.sampled_from([False, False, False, True]),
)
_progress = st.builds(
    Progress, run=_runs, quiet=st.sampled_from([False, False, True]), variant=_variants
)
# Weighted by repetition: mostly stage traffic, so that runs get deep into the pipeline.
STEPS: st.SearchStrategy[Step] = st.one_of(
    _progress,
    _progress,
    _progress,
    _progress,
    _emit,
    _emit,
    _emit,
    st.builds(Deliver, index=st.integers(0, 7)),
    st.builds(Redeliver, index=st.integers(0, 31)),
    st.builds(Echo, index=st.integers(0, 31)),
    st.builds(Echo, index=st.integers(0, 31)),
    st.builds(
        Reap,
        run=_runs,
        task=_tasks,
        attempt=st.sampled_from([0, 0, 0, -1]),
    ),
    st.builds(Retry, run=_runs),
    st.one_of(st.builds(Cancel, run=_runs), st.builds(Create, key=st.integers(0, 1))),
)


# ---------------------------------------------------------------- what a step sees


@dataclass(frozen=True)
class Snapshot:
    """One run as committed (or as about to be committed by the step's transaction)."""

    run: dict[str, Any]
    tasks: dict[tuple[str, int], dict[str, Any]]
    events: tuple[tuple[int, str], ...]
    artifacts: int
    audits: int

    @property
    def status(self) -> str:
        return str(self.run["status"])

    @property
    def attempt(self) -> int:
        return int(self.run["attempt"])

    def describe(self) -> str:
        tasks = sorted(
            (a, PIPELINE.index(TaskName(t)), t, row["status"])
            for (t, a), row in self.tasks.items()
        )
        return (
            f"run {self.status} attempt {self.attempt} phase {self.run['phase']} "
            f"current {self.run['current_task']}; tasks "
            + ", ".join(f"{t}#{a}={s}" for a, _, t, s in tasks)
        )


async def snapshot(session: AsyncSession, run_id: UUID) -> Snapshot:
    """Read through Core (no identity map) after flushing what the step changed."""
    await session.flush()
    runs_t, tasks_t, events_t = Run.__table__, TaskState.__table__, RunEvent.__table__
    run = (
        (await session.execute(select(runs_t).where(runs_t.c.id == run_id)))
        .mappings()
        .one()
    )
    tasks = (
        (await session.execute(select(tasks_t).where(tasks_t.c.run_id == run_id)))
        .mappings()
        .all()
    )
    events = (
        await session.execute(
            select(events_t.c.seq, events_t.c.kind)
            .where(events_t.c.run_id == run_id)
            .order_by(events_t.c.seq)
        )
    ).all()
    artifacts = await session.scalar(
        select(func.count()).where(Artifact.__table__.c.run_id == run_id)
    )
    audits = await session.scalar(
        select(func.count()).where(CredentialAudit.__table__.c.run_id == run_id)
    )
    return Snapshot(
        run=dict(run),
        tasks={(row["task_name"], row["attempt"]): dict(row) for row in tasks},
        events=tuple((seq, kind) for seq, kind in events),
        artifacts=int(artifacts or 0),
        audits=int(audits or 0),
    )


# ---------------------------------------------------------------- invariants


def check_state(s: Snapshot) -> None:
    """What holds of every committed run, whoever wrote it last."""
    run, status, attempt = s.run, s.status, s.attempt
    where = s.describe()
    assert status in ACTIVE | RUN_END, where
    assert [seq for seq, _ in s.events] == list(range(1, run["event_seq"] + 1)), (
        f"timeline seq has gaps: {[seq for seq, _ in s.events]} / {run['event_seq']}"
    )
    assert s.tasks, "a run always has its first task"
    assert attempt == max(a for _, a in s.tasks), f"attempt is not the newest: {where}"
    by_attempt: dict[int, list[dict[str, Any]]] = defaultdict(list)
    for (_, a), row in s.tasks.items():
        assert row["status"] in OPEN | TASK_END, where
        by_attempt[a].append(row)
    for a, rows in by_attempt.items():
        open_rows = [row for row in rows if row["status"] in OPEN]
        assert len(open_rows) <= 1, f"two open tasks in attempt {a}: {where}"
        ended = a < attempt or status in RUN_END
        if not ended:
            assert len(open_rows) == 1, f"an active run waits on no task: {where}"
            assert open_rows[0]["task_name"] == run["current_task"], where
            continue
        assert not open_rows, f"attempt {a} ended with an open task: {where}"
        # Each attempt ends in exactly one terminal state: all succeeded, or one
        # failure, or one cancel.
        endings = Counter(row["status"] for row in rows if row["status"] != SUCCEEDED)
        if a < attempt:
            assert endings in (Counter({FAILED: 1}), Counter({CANCELLED: 1})), (
                f"attempt {a} ended as {dict(endings)}: {where}"
            )
        elif status == SUCCEEDED:
            assert not endings, f"a succeeded run has {dict(endings)}: {where}"
        else:
            assert endings == Counter({status: 1}), (
                f"a {status} run ended its attempt as {dict(endings)}: {where}"
            )
    current = by_attempt[attempt]
    newest = max(current, key=lambda row: PIPELINE.index(TaskName(row["task_name"])))
    assert run["current_task"] == newest["task_name"], where
    if status == SUCCEEDED:
        assert run["phase"] == "complete", where
    else:
        assert run["phase"] == PHASE_OF[TaskName(run["current_task"])], where
    if status == PENDING:
        assert [row["status"] for row in current] == [QUEUED], (
            f"a pending run already started: {where}"
        )


def check_between(before: Snapshot, now: Snapshot) -> None:
    """What other writers may have done since this test last saw the run."""
    where = f"{before.describe()}  ->  {now.describe()}"
    assert now.attempt == before.attempt, (
        f"only an operator retry adds an attempt: {where}"
    )
    assert reachable(RUN_EDGES_WITHOUT_RETRY, before.status, now.status), where
    if before.status in RUN_END:
        assert now.run == before.run, f"an ended run changed: {where}"
    _check_tasks(before, now, closure=True)
    assert now.events[: len(before.events)] == before.events, "timeline rewritten"


def check_step(
    before: Snapshot, after: Snapshot, *, applied: bool, retried: bool
) -> None:
    """One transaction's effect: single legal edges, and nothing at all when ignored."""
    where = f"{before.describe()}  ->  {after.describe()}"
    if not applied:
        assert after == before, (
            f"an ignored step changed the run: {_diff(before, after)}"
        )
        return
    assert (
        before.status == after.status or (before.status, after.status) in RUN_EDGES
    ), f"illegal run edge: {where}"
    retry_edge = (before.status, after.status) in RETRY_EDGES
    assert retry_edge == retried, f"only a retry re-opens a run: {where}"
    assert after.attempt == before.attempt + (1 if retried else 0), where
    _check_tasks(before, after, closure=False)
    assert len(after.tasks) - len(before.tasks) <= 1, f"two dispatches at once: {where}"
    assert after.events[: len(before.events)] == before.events, "timeline rewritten"


def _check_tasks(before: Snapshot, after: Snapshot, *, closure: bool) -> None:
    where = f"{before.describe()}  ->  {after.describe()}"
    for key, old in before.tasks.items():
        assert key in after.tasks, f"task row {key} vanished"
        new = after.tasks[key]
        if old["status"] in TASK_END:
            assert new == old, f"ended task {key} changed: {_row_diff(old, new)}"
            continue
        edge = (old["status"], new["status"])
        legal = (
            reachable(TASK_EDGES, *edge)
            if closure
            else edge[0] == edge[1] or edge in TASK_EDGES
        )
        assert legal, f"illegal task edge {edge} for {key}: {where}"
    for key in after.tasks.keys() - before.tasks.keys():
        assert key[1] == after.attempt, (
            f"task row {key} added to an old attempt: {where}"
        )
        if not closure:
            assert after.tasks[key]["status"] == QUEUED, f"{key} born not queued"


def _row_diff(old: dict[str, Any], new: dict[str, Any]) -> dict[str, Any]:
    return {
        k: (old.get(k), new.get(k))
        for k in old.keys() | new.keys()
        if old.get(k) != new.get(k)
    }


def _diff(before: Snapshot, after: Snapshot) -> str:
    parts = [f"run {_row_diff(before.run, after.run)}"]
    for key in before.tasks.keys() | after.tasks.keys():
        if before.tasks.get(key) != after.tasks.get(key):
            old, new = before.tasks.get(key) or {}, after.tasks.get(key) or {}
            parts.append(f"task {key} {_row_diff(old, new)}")
    if before.events != after.events:
        parts.append(f"timeline +{after.events[len(before.events) :]}")
    if before.artifacts != after.artifacts:
        parts.append(f"artifacts {before.artifacts} -> {after.artifacts}")
    if before.audits != after.audits:
        parts.append(f"audits {before.audits} -> {after.audits}")
    return "; ".join(parts)


# --------------------------------------------------------- messages a stage might send


@dataclass(frozen=True)
class Delivery:
    """A message as the API receives it; `error` marks a dead letter of `message`."""

    message: Message
    error: TaskError | None = None

    @property
    def inbox_message(self) -> Message:
        return inbox_copy(self.message) if self.error is not None else self.message


def _summary(task: TaskName, variant: int) -> tuple[dict[str, Any], list[ArtifactRef]]:
    if variant == 1 and task is not TaskName.FINALIZE_RUN:
        # Unreadable for every stage but publish, whose summary fields are all optional.
        return {"result": "maybe", "patch": 7}, []
    if task is TaskName.DISCOVER_NEXT_PHASE:
        found = DiscoveredTask(task_id=f"T00{variant % 3}", description="Add the cart")
        summary = DiscoverySummary(
            result="no_work" if variant == 0 else "task_found",
            base_branch="main",
            base_sha="0" * 40,
            discovered=None if variant == 0 else found,
            spec_title="Checkout",
        )
        return summary.model_dump(mode="json"), []
    if task is TaskName.CODEX_PREFLIGHT:
        return PreflightSummary(codex_status="ok", github_status="ok").model_dump(), []
    if task is TaskName.SUBMIT_CODEX_JOB:
        patch = ArtifactRef(path=f"patch-{variant}.diff", artifact_type="patch")
        return CodexSummary(patch=patch, codex_task_id="thread").model_dump(), [patch]
    if task is TaskName.APPLY_AND_PUBLISH:
        return PublishSummary(branch_name="b", pr_url="https://pr").model_dump(), []
    return {}, []


def make_delivery(
    kind: Kind, run_id: UUID, task: TaskName, attempt: int, variant: int
) -> Delivery:
    now = datetime.now(UTC)
    common: dict[str, Any] = {
        "message_id": uuid4(),
        "run_id": run_id,
        "task": task,
        "attempt": attempt,
        "occurred_at": now,
    }
    # Even variants carry a lease that already ran out: the reaper's business.
    lease = now + (timedelta(hours=-1) if variant % 2 == 0 else timedelta(hours=1))
    if kind is Kind.STARTED:
        return Delivery(TaskStarted(**common, lease_until=lease))
    if kind is Kind.HEARTBEAT:
        return Delivery(TaskHeartbeat(**common, lease_until=lease))
    if kind is Kind.SUCCEEDED:
        summary, artifacts = _summary(task, variant)
        return Delivery(TaskSucceeded(**common, summary=summary, artifacts=artifacts))
    if kind is Kind.FAILED:
        audit = {"codex_status": "logged_out", "github_status": "ok"}
        return Delivery(
            TaskFailed(
                **common,
                error=TaskError(code="stage_failed", message="scripted"),
                summary=audit if task is TaskName.CODEX_PREFLIGHT else {},
                artifacts=[
                    ArtifactRef(path=f"logs/{task}-{variant}.log", artifact_type="log")
                ],
            )
        )
    if kind is Kind.CANCELLED:
        return Delivery(TaskCancelled(**common, reason="stopped"))
    if kind is Kind.FINALIZE:
        return Delivery(FinalizeRun(**common, repository=REPOSITORY, feature_key="k"))
    return Delivery(
        Message(**common),
        TaskError(code="handler_crashed", message="died", retryable=True),
    )


async def deliver(session: AsyncSession, delivery: Delivery) -> guards.Outcome:
    """What `events.py` does with a delivery: the inbox check (which locks the run and
    reads the task's status, as `event_tx.apply` does), the transition, the flush."""
    message = delivery.inbox_message
    task = (message.task, message.attempt)
    if not await runlock.first_delivery(
        session, message.message_id, lock=message.run_id, task=task
    ):
        return guards.Outcome(False, "duplicate")
    outcome = await _transition(session, delivery, message)
    await runrows.flush(session)
    return outcome


async def _transition(
    session: AsyncSession, delivery: Delivery, message: Message
) -> guards.Outcome:
    if delivery.error is not None:
        return await stops.fail_dead_letter(session, message, delivery.error)
    if isinstance(message, TaskStarted):
        return await transitions.record_started(session, message)
    if isinstance(message, TaskHeartbeat):
        return await transitions.record_heartbeat(session, message)
    if isinstance(message, TaskSucceeded):
        return await transitions.record_succeeded(session, message, shards=SHARDS)
    if isinstance(message, TaskFailed):
        return await stops.record_failed(session, message)
    if isinstance(message, TaskCancelled):
        return await stops.record_cancelled(session, message)
    assert isinstance(message, FinalizeRun)
    return (await closing.finalize(session, message))[1]


# ---------------------------------------------------------------- playing a scenario


@dataclass
class Scenario:
    """One generated example: its runs, messages in flight and what was last seen."""

    db: Database
    keys: tuple[str, str] = field(
        default_factory=lambda: (f"prop-{uuid4().hex[:10]}", f"prop-{uuid4().hex[:10]}")
    )
    runs: list[UUID] = field(default_factory=list)
    seen: dict[UUID, Snapshot] = field(default_factory=dict)
    held: list[Delivery] = field(default_factory=list)
    delivered: list[Delivery] = field(default_factory=list)

    async def play(self, steps: list[Step]) -> list[str]:
        """Run the steps; returns how each run ended, for hypothesis' statistics."""
        await self.create(Create(0))
        for step in steps:
            await self.step(step)
        for run_id in self.runs:
            await self._on_run(run_id, lambda _s, _b: _noop())
        await self._one_active_run_per_key()
        return [
            f"run {s.status} at {s.run['current_task']}, attempt {s.attempt}"
            for s in (self.seen[run_id] for run_id in self.runs)
        ]

    async def step(self, step: Step) -> None:
        if isinstance(step, Create):
            await self.create(step)
        elif isinstance(step, Emit):
            run_id = self._run(step.run)
            seen = self.seen[run_id]
            task = resolve(step.task, TaskName(seen.run["current_task"]))
            attempt = seen.attempt + step.attempt
            attempt = attempt if attempt >= 1 else 2  # no attempt 0: a future one
            delivery = make_delivery(step.kind, run_id, task, attempt, step.variant)
            if step.hold:
                self.held.append(delivery)
            else:
                await self.send(delivery)
        elif isinstance(step, Progress):
            seen = self.seen[self._run(step.run)]
            task = TaskName(seen.run["current_task"])
            kinds = [Kind.SUCCEEDED] if step.quiet else [Kind.STARTED, Kind.SUCCEEDED]
            for kind in kinds:
                # Odd: a lease in the future. 2..15: a readable summary that finds work.
                variant = (
                    step.variant | 1 if kind is Kind.STARTED else step.variant % 14 + 2
                )
                await self.send(
                    make_delivery(kind, seen.run["id"], task, seen.attempt, variant)
                )
        elif isinstance(step, Deliver) and self.held:
            await self.send(self.held.pop(step.index % len(self.held)))
        elif isinstance(step, Redeliver) and self.delivered:
            await self.send(
                self.delivered[step.index % len(self.delivered)], again=True
            )
        elif isinstance(step, Echo) and self.delivered:
            earlier = self.delivered[step.index % len(self.delivered)]
            fresh = earlier.message.model_copy(update={"message_id": uuid4()})
            await self.send(Delivery(fresh, earlier.error))
        elif isinstance(step, Retry):
            await self.retry(self._run(step.run))
        elif isinstance(step, Cancel):
            await self.cancel(self._run(step.run))
        elif isinstance(step, Reap):
            await self.reap(step)

    def _run(self, index: int) -> UUID:
        return self.runs[index % len(self.runs)]

    async def _on_run(
        self,
        run_id: UUID,
        act: Callable[[AsyncSession, Snapshot], Awaitable[tuple[bool, bool]]],
    ) -> None:
        """Lock the run, check what others did, act, check the act; one transaction."""
        async with self.db.new_session() as session, session.begin():
            await session.execute(
                select(Run.__table__.c.id)
                .where(Run.__table__.c.id == run_id)
                .with_for_update()
            )
            before = await snapshot(session, run_id)
            check_between(self.seen[run_id], before)
            check_state(before)
            applied, retried = await act(session, before)
            after = await snapshot(session, run_id)
            check_step(before, after, applied=applied, retried=retried)
            check_state(after)
        self.seen[run_id] = after

    async def create(self, step: Create) -> None:
        key = self.keys[step.key % len(self.keys)]
        request = runs.NewRun(REPOSITORY, key, None, None, "pr", None)
        async with self.db.new_session() as session, session.begin():
            active = await self._lock_active(session, key)
            try:
                async with session.begin_nested():
                    run, created = await runs.create_run(
                        session, request, user_id=DEFAULT_USER_ID, idempotency_key=None
                    )
            except ActiveRunExists:
                assert active, f"refused a run for {key} with no active run"
                return
            assert created
            assert not active, f"a second active run for {key}"
            after = await snapshot(session, run.id)
            assert after.status == PENDING
            assert after.attempt == 1
            assert list(after.tasks) == [(TaskName.DISCOVER_NEXT_PHASE, 1)]
            check_state(after)
        self.runs.append(run.id)
        self.seen[run.id] = after

    async def send(self, delivery: Delivery, *, again: bool = False) -> None:
        message = delivery.message

        async def act(session: AsyncSession, before: Snapshot) -> tuple[bool, bool]:
            outcome = await deliver(session, delivery)
            if again:
                assert outcome.reason == "duplicate", (
                    f"a redelivery was applied: {outcome}"
                )
            elif message.attempt != before.attempt:
                assert outcome.reason == "stale_attempt", f"{message!r}: {outcome}"
            elif outcome.applied and not isinstance(message, TaskCancelled):
                assert before.status in ACTIVE, f"{message!r} moved an ended run"
            return outcome.applied, False

        await self._on_run(message.run_id, act)
        if not again:
            self.delivered.append(delivery)

    async def retry(self, run_id: UUID) -> None:
        key = self.seen[run_id].run["feature_key"]

        async def act(session: AsyncSession, before: Snapshot) -> tuple[bool, bool]:
            others = await self._lock_active(session, key, but=run_id)
            try:
                # A savepoint stands in for the route's transaction, undone on error.
                async with session.begin_nested():
                    run = await run_control.start_retry(
                        session, run_id, notes=None, owner=None
                    )
            except RunNotRetryable:
                assert before.status not in (FAILED, CANCELLED), before.describe()
                return False, False
            except ActiveRunExists:
                assert before.status in (FAILED, CANCELLED), before.describe()
                assert others, (
                    f"retry refused with no other active run: {before.describe()}"
                )
                return False, False
            assert before.status in (FAILED, CANCELLED), before.describe()
            assert not others, f"retry made a second active run for {key}"
            assert run.current_task == resume_point(before), before.describe()
            return True, True

        await self._on_run(run_id, act)

    async def cancel(self, run_id: UUID) -> None:
        async def act(session: AsyncSession, before: Snapshot) -> tuple[bool, bool]:
            try:
                async with session.begin_nested():
                    await run_control.cancel_run(session, run_id, owner=None)
            except RunNotCancellable:
                assert before.status not in ACTIVE, before.describe()
                return False, False
            assert before.status in ACTIVE, before.describe()
            return True, False

        await self._on_run(run_id, act)

    @staticmethod
    async def _lock_active(
        session: AsyncSession, key: str, *, but: UUID | None = None
    ) -> list[UUID]:
        """This key's active runs, locked so that no other writer ends one meanwhile."""
        runs_t = Run.__table__
        rows = (
            await session.execute(
                select(runs_t.c.id, runs_t.c.status)
                .where(runs_t.c.feature_key == key)
                .order_by(runs_t.c.id)
                .with_for_update()
            )
        ).all()
        return [run_id for run_id, status in rows if status in ACTIVE and run_id != but]

    async def reap(self, step: Reap) -> None:
        run_id = self._run(step.run)
        seen = self.seen[run_id]
        task = resolve(step.task, TaskName(seen.run["current_task"]))
        key = (run_id, task, max(seen.attempt + step.attempt, 1))

        async def act(session: AsyncSession, _before: Snapshot) -> tuple[bool, bool]:
            outcome = await leases.reap(
                session, key, now=datetime.now(UTC), max_redispatch=MAX_REDISPATCH
            )
            return outcome.applied, False

        await self._on_run(run_id, act)

    async def _one_active_run_per_key(self) -> None:
        runs_t = Run.__table__
        async with self.db.new_session() as session:
            rows = (
                (
                    await session.execute(
                        select(runs_t.c.feature_key).where(
                            runs_t.c.feature_key.in_(self.keys),
                            runs_t.c.status.in_(ACTIVE),
                        )
                    )
                )
                .scalars()
                .all()
            )
        assert max(Counter(rows).values(), default=0) <= 1, (
            f"active runs per key: {Counter(rows)}"
        )


def resume_point(s: Snapshot) -> TaskName:
    """First task whose latest attempt did not succeed (later attempts win)."""
    latest = {
        task: row["status"]
        for (task, _), row in sorted(s.tasks.items(), key=lambda kv: kv[0][1])
    }
    return next(task for task in PIPELINE if latest.get(task) != SUCCEEDED)


async def _noop() -> tuple[bool, bool]:
    return False, False


# ------------------------------------------------------------ an event loop of its own


class LoopThread:
    """An event loop in a worker thread.

    asyncpg connections made here never meet pytest-asyncio's session loop.
    """

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(
            target=self.loop.run_forever, name="statemodel", daemon=True
        )
        self.thread.start()

    def run(self, coro: Coroutine[Any, Any, T], timeout: float = 120.0) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def close(self) -> None:
        self.run(self.loop.shutdown_asyncgens())
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)
        self.loop.close()
