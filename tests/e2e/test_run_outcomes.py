"""Runs that end other than "one run, one PR", on the session's stack.

A feature with nothing left to do; a push the remote refuses, fixed and retried
without running Codex again; three runs on three shards at once. Each scenario has
repositories of its own on the shared git host and GitHub fake, and marks its runs
in the operator notes (which reach the prompt) to find its model requests.
"""

from __future__ import annotations

import asyncio
import itertools
from datetime import datetime
from typing import Any

import httpx
import pytest

from services.api.lifecycle import shard_for
from tests.support.api import RUNS, create_run, wait_for
from tests.support.model import Rendezvous
from tests.support.specrepo import (
    AGENT_FILE,
    FEATURE_KEY,
    FIRST_OPEN_TASK,
    Variant,
    seed_spec_repo,
)
from tests.support.stack import GITHUB_TOKEN, SHARDS, Stack

DONE_REPO = "acme/finished"
LOCKED_REPO = "acme/locked"


def fan_repos(shards: int) -> dict[int, str]:
    """One repository per shard: the first `acme/fan-<n>` whose run of the typical
    feature's first open task the API routes to that shard (its `shard_for`)."""
    found: dict[int, str] = {}
    for n in itertools.count():
        name = f"acme/fan-{n}"
        found.setdefault(shard_for(name, FEATURE_KEY, FIRST_OPEN_TASK, shards), name)
        if len(found) == shards:
            return found
    raise AssertionError("unreachable")


FAN = fan_repos(SHARDS)
pytestmark = pytest.mark.usefixtures("repos")


@pytest.fixture(scope="module")
def repos(stack: Stack) -> None:
    """This module's repositories, readable and writable by the stack's token."""
    seed_spec_repo(stack.git, DONE_REPO, Variant.ALL_DONE)
    for name in (LOCKED_REPO, *FAN.values()):
        seed_spec_repo(stack.git, name)
    for name in (DONE_REPO, LOCKED_REPO, *FAN.values()):
        stack.github.add_repo(name)
        stack.github.grant("octo", name, "write")


def asked(stack: Stack, marker: str) -> int:
    return sum(1 for r in list(stack.model.requests) if r.mentions(marker))


def tasks_of(run: dict[str, Any], name: str) -> list[dict[str, Any]]:
    return sorted(
        (t for t in run["tasks"] if t["taskName"] == name), key=lambda t: t["attempt"]
    )


def pushes(stack: Stack, repo: str) -> list[tuple[str, int]]:
    """(method, status) of every `git-receive-pack` request the git host answered:
    a push is `GET …/info/refs` (where access is checked), then `POST`."""
    return [
        (r.method, r.status)
        for r in stack.git.requests
        if r.path.startswith(f"/{repo}.git/") and r.service == "git-receive-pack"
    ]


async def test_no_work_ends_the_run_after_discovery(stack: Stack) -> None:
    """Every task of the feature is checked: the run succeeds with `no_work` right
    after discovery, with no pre-flight, no Codex job and no push."""
    marker = "scenario:no-work"
    before = len(stack.model.requests)
    async with httpx.AsyncClient(base_url=stack.base_url, timeout=10) as client:
        created = await create_run(
            client, FEATURE_KEY, repository=DONE_REPO, notes=marker
        )
        run = await wait_for(client, created["id"], timeout=60)
        timeline = (await client.get(f"{RUNS}/{run['id']}/events")).json()["items"]

    assert (run["status"], run["result"]) == ("succeeded", "no_work"), run
    assert [t["taskName"] for t in run["tasks"]] == ["discover_next_phase"]
    assert run["tasks"][0]["summary"]["result"] == "no_work"
    assert run["codexShardIndex"] is None
    assert run["codexTaskId"] is None
    assert (run["branchName"], run["prUrl"]) == (None, None)
    dispatched = {e["taskName"] for e in timeline if e["taskName"]}
    assert dispatched == {"discover_next_phase"}, timeline
    assert len(stack.model.requests) == before  # Codex never ran
    assert pushes(stack, DONE_REPO) == []
    assert set(stack.git.branches(DONE_REPO)) == {"main"}
    assert stack.github.pulls(DONE_REPO) == []


async def test_refused_push_retried_after_the_fix_reuses_the_patch(
    stack: Stack,
) -> None:
    """The token may read but not push (GitHub still reports the user's write role,
    as for a fine-grained token without contents:write): the run fails at publish
    with `push_denied`. Push access granted and the run retried, it resumes at
    publish with the stored patch: Codex does not run again."""
    marker = "scenario:locked"
    # REST (pre-flight) says write; the git host refuses the push itself.
    stack.git.grant(GITHUB_TOKEN, LOCKED_REPO, push=False, label="octo")
    async with httpx.AsyncClient(base_url=stack.base_url, timeout=10) as client:
        created = await create_run(
            client, FEATURE_KEY, repository=LOCKED_REPO, notes=marker
        )
        run_id = created["id"]
        failed = await wait_for(client, run_id, timeout=60)
        assert (failed["status"], failed["errorCode"]) == ("failed", "push_denied")
        assert pushes(stack, LOCKED_REPO) == [("GET", 403)]
        codex_requests = asked(stack, marker)
        assert codex_requests == 2  # the patch step and the final message

        stack.git.grant(GITHUB_TOKEN, LOCKED_REPO, push=True, label="octo")
        retried = await client.post(f"{RUNS}/{run_id}/retry")
        assert retried.status_code == 202, retried.text
        final = await wait_for(
            client, run_id, timeout=60, where=lambda r: r["attempt"] == 2
        )
        timeline = (await client.get(f"{RUNS}/{run_id}/events")).json()["items"]

    assert final["status"] == "succeeded", final
    assert final["result"] == "published"
    (codex,) = tasks_of(final, "submit_codex_job")  # no second attempt
    assert (codex["attempt"], codex["status"]) == (1, "succeeded")
    assert final["codexTaskId"] == failed["codexTaskId"]
    publishes = tasks_of(final, "apply_and_publish")
    assert [(t["attempt"], t["status"]) for t in publishes] == [
        (1, "failed"),
        (2, "succeeded"),
    ]
    assert publishes[0]["error"]["code"] == "push_denied"
    assert [t["attempt"] for t in tasks_of(final, "codex_preflight")] == [1]
    (retry,) = [e for e in timeline if e["kind"] == "run_retried"]
    assert retry["data"]["resumeAt"] == "apply_and_publish"
    assert asked(stack, marker) == codex_requests  # the model heard nothing new
    patches = [a for a in final["artifacts"] if a["path"] == "patch.diff"]
    assert len(patches) == 1, final["artifacts"]
    assert pushes(stack, LOCKED_REPO) == [
        ("GET", 403),
        ("GET", 200),
        ("POST", 200),
    ]
    (pull,) = stack.github.pulls(LOCKED_REPO)
    assert pull.head == final["branchName"]
    assert final["prUrl"].endswith(f"/pull/{pull.number}")
    assert stack.git.show(LOCKED_REPO, pull.head, AGENT_FILE).startswith(
        b"class Order:"
    )


def started_finished(run: dict[str, Any]) -> tuple[datetime, datetime]:
    (codex,) = tasks_of(run, "submit_codex_job")
    return (
        datetime.fromisoformat(codex["startedAt"]),
        datetime.fromisoformat(codex["finishedAt"]),
    )


async def test_three_runs_on_three_shards_run_codex_at_once(stack: Stack) -> None:
    """One run per shard, started together: each goes to its own shard's runner,
    and the three Codex containers run at the same time. The model holds each run's
    first request until all three have asked (a rendezvous with a deadline), and the
    API's task times overlap."""
    markers = {shard: f"scenario:fan-{shard}" for shard in FAN}
    rendezvous = Rendezvous(markers.values(), timeout=60)
    previous, stack.model.choose = stack.model.choose, rendezvous.choose
    try:
        async with httpx.AsyncClient(base_url=stack.base_url, timeout=10) as client:
            created = await asyncio.gather(
                *(
                    create_run(client, FEATURE_KEY, repository=FAN[shard], notes=marker)
                    for shard, marker in markers.items()
                )
            )
            runs = [await wait_for(client, run["id"], timeout=120) for run in created]
    finally:
        stack.model.choose = previous

    for shard, run in zip(markers, runs, strict=True):
        assert run["status"] == "succeeded", run
        assert run["repository"] == FAN[shard]
        assert run["codexShardIndex"] == shard
        assert run["codexQueue"] == f"codex-{shard}"
        assert run["codexVolume"] == stack.volume(shard)
        logs = {n: stack.log(f"codex_runner-{n}") for n in range(SHARDS)}
        assert [n for n, text in logs.items() if run["id"] in text] == [shard]
        (pull,) = stack.github.pulls(FAN[shard])
        assert pull.head == run["branchName"]
    assert rendezvous.met, f"only {sorted(rendezvous.arrived)} reached the model"
    spans = [started_finished(run) for run in runs]
    # Each job had started before any of them finished: all three at once.
    assert max(start for start, _ in spans) < min(end for _, end in spans), spans
