"""Property tests of the pure run rules: edges, resume point, shards, pipeline order."""

from __future__ import annotations

import string

import pytest
from hypothesis import given
from hypothesis import strategies as st

from services.api.lifecycle import (
    OPEN_TASK,
    PHASES,
    RETRYABLE_RUN,
    RUN_ALLOWED_FROM,
    TASK_ALLOWED_FROM,
    TERMINAL_RUN,
    TERMINAL_TASK,
    Phase,
    RunStatus,
    TaskStatus,
    next_task,
    resume_point,
    run_may_enter,
    shard_for,
    task_may_enter,
)
from shared.messages import PIPELINE, TaskName

task_statuses = st.sampled_from(TaskStatus)
run_statuses = st.sampled_from(RunStatus)


@given(target=task_statuses, current=st.sampled_from(sorted(TERMINAL_TASK)))
def test_no_edge_leaves_a_terminal_task_status(
    target: TaskStatus, current: TaskStatus
) -> None:
    assert not task_may_enter(target, current)


@given(
    current=st.sampled_from(sorted(OPEN_TASK)),
    outcome=st.sampled_from(
        [TaskStatus.SUCCEEDED, TaskStatus.FAILED, TaskStatus.CANCELLED]
    ),
)
def test_an_open_task_accepts_any_outcome(
    current: TaskStatus, outcome: TaskStatus
) -> None:
    # An outcome may overtake its TaskStarted (they travel on different queues).
    assert task_may_enter(outcome, current)


@given(st.lists(task_statuses, max_size=40))
def test_once_terminal_a_task_walk_stays_put(targets: list[TaskStatus]) -> None:
    status, first_terminal = TaskStatus.QUEUED, None
    for target in targets:
        if task_may_enter(target, status):
            status = target
        if status in TERMINAL_TASK and first_terminal is None:
            first_terminal = status
        if first_terminal is not None:
            assert status == first_terminal


def test_the_edge_tables_name_every_status() -> None:
    assert set(TASK_ALLOWED_FROM) == set(TaskStatus)
    assert set(RUN_ALLOWED_FROM) == set(RunStatus)
    assert not any(TERMINAL_TASK & sources for sources in TASK_ALLOWED_FROM.values())


@given(target=run_statuses, current=run_statuses)
def test_a_run_leaves_a_terminal_status_only_by_a_retry(
    target: RunStatus, current: RunStatus
) -> None:
    if current in TERMINAL_RUN and run_may_enter(target, current):
        assert current in RETRYABLE_RUN
        assert target is RunStatus.PENDING
    if current is RunStatus.SUCCEEDED:
        assert not run_may_enter(target, current)


@given(st.lists(run_statuses, max_size=40))
def test_a_run_walk_leaves_an_end_only_to_retry_and_never_leaves_success(
    targets: list[RunStatus],
) -> None:
    status, succeeded = RunStatus.PENDING, False
    for target in targets:
        if run_may_enter(target, status):
            if status in TERMINAL_RUN:
                assert status in RETRYABLE_RUN, f"{status} -> {target}"
                assert target is RunStatus.PENDING, f"{status} -> {target}"
            status = target
        succeeded = succeeded or status is RunStatus.SUCCEEDED
        assert status is RunStatus.SUCCEEDED or not succeeded


def latest_statuses() -> st.SearchStrategy[dict[TaskName, TaskStatus]]:
    """Latest statuses, often a succeeded prefix (so 'all succeeded' comes up)."""
    prefix = st.integers(0, len(PIPELINE)).flatmap(
        lambda n: st.fixed_dictionaries(
            {task: st.just(TaskStatus.SUCCEEDED) for task in PIPELINE[:n]},
            optional={task: task_statuses for task in PIPELINE[n:]},
        )
    )
    return st.one_of(st.dictionaries(st.sampled_from(TaskName), task_statuses), prefix)


@given(latest_statuses())
def test_resume_point_is_the_first_task_that_did_not_succeed(
    latest: dict[TaskName, TaskStatus],
) -> None:
    unfinished = [task for task in PIPELINE if latest.get(task) != TaskStatus.SUCCEEDED]
    if unfinished:
        assert resume_point(latest) == unfinished[0]
    else:
        with pytest.raises(ValueError, match="nothing to resume"):
            resume_point(latest)


def test_resume_point_raises_only_when_every_task_succeeded() -> None:
    with pytest.raises(ValueError, match="nothing to resume"):
        resume_point(dict.fromkeys(PIPELINE, TaskStatus.SUCCEEDED))
    assert resume_point({}) is TaskName.DISCOVER_NEXT_PHASE


@given(
    repository=st.text(max_size=40),
    feature_key=st.text(max_size=40),
    task_id=st.text(max_size=20),
    shards=st.integers(1, 64),
)
def test_shard_is_in_range_and_repeatable(
    repository: str, feature_key: str, task_id: str, shards: int
) -> None:
    shard = shard_for(repository, feature_key, task_id, shards)
    assert 0 <= shard < shards
    assert shard_for(repository, feature_key, task_id, shards) == shard
    assert shard_for(repository.lower(), feature_key, task_id, shards) == shard


@given(
    repository=st.text(string.ascii_letters + string.digits + "/-_.", max_size=40),
    feature_key=st.text(max_size=20),
    task_id=st.text(max_size=10),
)
def test_shard_ignores_the_repository_case(
    repository: str, feature_key: str, task_id: str
) -> None:
    assert shard_for(repository.swapcase(), feature_key, task_id, 7) == shard_for(
        repository, feature_key, task_id, 7
    )


@pytest.mark.parametrize(
    ("repository", "feature_key", "task_id", "shards", "expected"),
    [
        # Pinned: a shard must not move between processes or releases.
        ("acme/shop", "checkout", "T001", 3, 1),
        ("Acme/Shop", "checkout", "T001", 3, 1),
        ("acme/shop", "checkout", "T003", 3, 2),
        ("acme/shop", "checkout", "T004", 3, 0),
        ("acme/shop", "checkout", "T002", 16, 14),
        ("octo/repo", "001-login", "T042", 8, 6),
        ("octo/repo", "001-login", "T042", 1, 0),
    ],
)
def test_shard_is_stable_across_processes(
    repository: str, feature_key: str, task_id: str, shards: int, expected: int
) -> None:
    assert shard_for(repository, feature_key, task_id, shards) == expected


def test_next_task_walks_the_pipeline_once() -> None:
    walk = [PIPELINE[0]]
    while (following := next_task(walk[-1])) is not None:
        walk.append(following)
        assert len(walk) <= len(PIPELINE)
    assert tuple(walk) == PIPELINE


@given(st.sampled_from(PIPELINE))
def test_next_task_is_the_following_pipeline_task(task: TaskName) -> None:
    index = PIPELINE.index(task)
    expected = PIPELINE[index + 1] if index + 1 < len(PIPELINE) else None
    assert next_task(task) == expected


@given(st.sampled_from(PIPELINE), st.sampled_from(PIPELINE))
def test_phases_never_go_back_along_the_pipeline(
    first: TaskName, second: TaskName
) -> None:
    order = list(Phase)
    if PIPELINE.index(first) <= PIPELINE.index(second):
        assert order.index(PHASES[first]) <= order.index(PHASES[second])
    assert PHASES[TaskName.FINALIZE_RUN] is Phase.COMPLETE
