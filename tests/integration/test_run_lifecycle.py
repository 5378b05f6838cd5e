"""Runs driven through real RabbitMQ and Postgres by the scripted stages.

Success, failure, retry and cancel.
"""

from __future__ import annotations

import uuid

import httpx
import pytest

from shared.messages import PIPELINE, ApplyAndPublish, SubmitCodexJob, TaskName
from tests.support.api import RUNS, create_run, wait_for
from tests.support.harness import BASE_SHA, StageHarness

STAGES = [t for t in PIPELINE if t is not TaskName.FINALIZE_RUN]


def feature() -> str:
    return f"f-{uuid.uuid4().hex[:10]}"


async def test_run_succeeds_through_every_stage(
    api: httpx.AsyncClient, stages: StageHarness
) -> None:
    key = feature()
    created = await create_run(api, key, notes="keep it small")
    assert created["status"] == "pending"
    assert created["currentTask"] == TaskName.DISCOVER_NEXT_PHASE

    run = await wait_for(api, created["id"])

    assert run["status"] == "succeeded", run
    assert run["phase"] == "complete"
    assert run["result"] == "published"
    assert run["baseSha"] == BASE_SHA
    assert run["prUrl"].startswith("https://github.example/acme/shop/pull/")
    assert run["branchName"].startswith(f"speckit/{key}/T001-")
    assert run["codexTaskId"] == f"thread-{run['id']}"
    assert run["codexShardIndex"] in (0, 1, 2)
    assert run["codexQueue"] == f"codex-{run['codexShardIndex']}"
    assert run["codexVolume"] == f"codex_auth_{run['codexShardIndex']}"
    assert run["codexPreflightStatus"] == "passed"
    assert run["codexPatchPath"] == "patch.diff"
    assert run["finishedAt"] is not None
    assert run["startedAt"] is not None
    assert [t["taskName"] for t in run["taskSummary"]] == list(PIPELINE)
    assert {t["status"] for t in run["tasks"]} == {"succeeded"}
    assert run["credentialAudit"]["githubStatus"] == "valid"
    assert {a["path"] for a in run["artifacts"]} == {"patch.diff", "manifest.json"}
    codex_cmd = stages.commands(key, TaskName.SUBMIT_CODEX_JOB)[0]
    assert isinstance(codex_cmd, SubmitCodexJob)
    assert codex_cmd.notes == "keep it small"
    assert codex_cmd.shard.codex_shard_index == run["codexShardIndex"]


@pytest.mark.usefixtures("stages")
async def test_timeline_is_ordered_and_resumable(api: httpx.AsyncClient) -> None:
    run = await wait_for(api, (await create_run(api, feature()))["id"])

    events = (await api.get(f"{RUNS}/{run['id']}/events")).json()
    seqs = [e["seq"] for e in events["items"]]
    assert seqs == list(range(1, len(seqs) + 1))
    kinds = [e["kind"] for e in events["items"]]
    assert kinds[0] == "run_created"
    assert kinds[-1] == "run_succeeded"
    assert kinds.count("task_succeeded") == len(PIPELINE)
    later = (await api.get(f"{RUNS}/{run['id']}/events", params={"after": 3})).json()
    assert [e["seq"] for e in later["items"]] == seqs[3:]
    assert later["lastSeq"] == seqs[-1]


@pytest.mark.usefixtures("stages")
async def test_artifact_download_serves_the_stage_file(
    api: httpx.AsyncClient,
) -> None:
    run = await wait_for(api, (await create_run(api, feature()))["id"])
    listing = (await api.get(f"{RUNS}/{run['id']}/artifacts")).json()["items"]
    patch = next(a for a in listing if a["artifactType"] == "patch")
    manifest = next(a for a in listing if a["artifactType"] == "manifest")

    body = await api.get(f"{RUNS}/{run['id']}/artifacts/{patch['id']}")
    assert body.status_code == 200
    assert body.text == "diff for T001\n"
    index = (await api.get(f"{RUNS}/{run['id']}/artifacts/{manifest['id']}")).json()
    assert index["runId"] == run["id"]
    assert [a["path"] for a in index["artifacts"]] == ["patch.diff"]
    missing = await api.get(f"{RUNS}/{run['id']}/artifacts/{uuid.uuid4()}")
    assert missing.status_code == 404
    assert missing.json()["detail"]["code"] == "artifact_not_found"


async def test_no_work_ends_succeeded_without_later_stages(
    api: httpx.AsyncClient, stages: StageHarness
) -> None:
    key = feature()
    stages.script(key, no_work=True)
    run = await wait_for(api, (await create_run(api, key))["id"])

    assert run["status"] == "succeeded"
    assert run["result"] == "no_work"
    assert run["phase"] == "complete"
    assert [t["taskName"] for t in run["tasks"]] == [TaskName.DISCOVER_NEXT_PHASE]
    assert stages.commands(key, TaskName.CODEX_PREFLIGHT) == []


@pytest.mark.parametrize("stage", STAGES)
async def test_run_fails_at_the_failing_stage(
    api: httpx.AsyncClient, stages: StageHarness, stage: TaskName
) -> None:
    key = feature()
    stages.script(key, fail_at=stage, fail_code=f"{stage}_broken")
    run = await wait_for(api, (await create_run(api, key))["id"])

    assert run["status"] == "failed"
    assert run["errorCode"] == f"{stage}_broken"
    assert run["errorMessage"] == "scripted failure"
    latest = {t["taskName"]: t["status"] for t in run["taskSummary"]}
    assert latest[stage] == "failed"
    assert all(latest[t] == "succeeded" for t in PIPELINE[: PIPELINE.index(stage)])
    assert all(t not in latest for t in PIPELINE[PIPELINE.index(stage) + 1 :])
    if stage is TaskName.CODEX_PREFLIGHT:
        assert run["codexPreflightStatus"] == "failed"


async def test_retry_resumes_at_the_failed_stage_reusing_earlier_outputs(
    api: httpx.AsyncClient, stages: StageHarness
) -> None:
    key = feature()
    stages.script(key, fail_at=TaskName.APPLY_AND_PUBLISH, fail_code="push_rejected")
    failed = await wait_for(api, (await create_run(api, key))["id"])
    assert failed["errorCode"] == "push_rejected"

    retried = await api.post(
        f"{RUNS}/{failed['id']}/retry", json={"notes": "token fixed"}
    )
    assert retried.status_code == 202, retried.text
    assert retried.json()["attempt"] == 2
    assert retried.json()["status"] == "pending"
    run = await wait_for(api, failed["id"])

    assert run["status"] == "succeeded"
    assert run["errorCode"] is None
    assert run["notes"] == "token fixed"
    for earlier in (
        TaskName.DISCOVER_NEXT_PHASE,
        TaskName.CODEX_PREFLIGHT,
        TaskName.SUBMIT_CODEX_JOB,
    ):
        assert len(stages.commands(key, earlier)) == 1, f"{earlier} ran again"
    first, second = stages.commands(key, TaskName.APPLY_AND_PUBLISH)
    assert isinstance(first, ApplyAndPublish)
    assert isinstance(second, ApplyAndPublish)
    assert (first.attempt, second.attempt) == (1, 2)
    assert second.patch == first.patch
    assert second.base_sha == first.base_sha
    summary = {t["taskName"]: (t["attempt"], t["status"]) for t in run["taskSummary"]}
    assert summary[TaskName.SUBMIT_CODEX_JOB] == (1, "succeeded")
    assert summary[TaskName.APPLY_AND_PUBLISH] == (2, "succeeded")
    assert summary[TaskName.FINALIZE_RUN] == (2, "succeeded")
    attempts = [(t["taskName"], t["attempt"], t["status"]) for t in run["tasks"]]
    assert (TaskName.APPLY_AND_PUBLISH, 1, "failed") in attempts


async def test_retry_is_refused_for_running_and_succeeded_runs(
    api: httpx.AsyncClient, stages: StageHarness
) -> None:
    key = feature()
    stages.script(key, hold=frozenset({TaskName.SUBMIT_CODEX_JOB}))
    run = await create_run(api, key)
    await wait_for(
        api,
        run["id"],
        frozenset({"running"}),
        where=lambda r: r["currentTask"] == "submit_codex_job",
    )
    running = await api.post(f"{RUNS}/{run['id']}/retry")
    assert running.status_code == 409
    assert running.json()["detail"]["code"] == "retry_not_allowed"

    stages.release(run["id"])
    await wait_for(api, run["id"], frozenset({"succeeded"}))
    done = await api.post(f"{RUNS}/{run['id']}/retry")
    assert done.status_code == 409
    missing = await api.post(f"{RUNS}/{uuid.uuid4()}/retry")
    assert missing.status_code == 404
    assert missing.json()["detail"]["code"] == "workflow_not_found"


async def test_cancel_stops_the_stage_holding_the_run(
    api: httpx.AsyncClient, stages: StageHarness
) -> None:
    key = feature()
    stages.script(key, hold=frozenset({TaskName.SUBMIT_CODEX_JOB}))
    run = await create_run(api, key)
    await wait_for(
        api,
        run["id"],
        frozenset({"running"}),
        where=lambda r: r["currentTask"] == "submit_codex_job",
    )

    cancelled = await api.post(f"{RUNS}/{run['id']}/cancel")
    assert cancelled.status_code == 202, cancelled.text
    assert cancelled.json()["status"] == "cancelled"
    final = await wait_for(
        api,
        run["id"],
        frozenset({"cancelled"}),
        where=lambda r: any(e["status"] == "cancelled" for e in r["tasks"]),
    )
    assert final["taskSummary"][-1]["taskName"] == TaskName.SUBMIT_CODEX_JOB
    assert final["taskSummary"][-1]["status"] == "cancelled"
    cancel = await stages.wait_for_cancel(run["id"])  # delivered through the relay
    assert cancel.task is TaskName.SUBMIT_CODEX_JOB
    assert cancel.shard is not None
    assert cancel.shard.codex_shard_index == final["codexShardIndex"]
    again = await api.post(f"{RUNS}/{run['id']}/cancel")
    assert again.status_code == 409
    assert again.json()["detail"]["code"] == "cancel_not_allowed"

    # The stage's late report cannot revive a cancelled run.
    await wait_for(api, run["id"], frozenset({"cancelled"}))
    resumed = await api.post(f"{RUNS}/{run['id']}/retry")
    assert resumed.status_code == 202
    stages.release(run["id"])
    assert (await wait_for(api, run["id"]))["status"] == "succeeded"
    assert len(stages.commands(key, TaskName.DISCOVER_NEXT_PHASE)) == 1


async def test_cancel_of_a_pending_run_before_any_stage_reports(
    api: httpx.AsyncClient, stages: StageHarness
) -> None:
    key = feature()
    stages.script(key, hold=frozenset({TaskName.DISCOVER_NEXT_PHASE}))
    run = await create_run(api, key)
    response = await api.post(f"{RUNS}/{run['id']}/cancel")
    assert response.status_code == 202
    assert response.json()["status"] == "cancelled"
    final = await wait_for(api, run["id"])
    assert final["status"] == "cancelled"
    assert final["tasks"][0]["status"] == "cancelled"


async def test_retry_while_another_run_of_the_feature_is_active_is_a_409(
    api: httpx.AsyncClient, stages: StageHarness
) -> None:
    key = feature()
    stages.script(key, fail_at=TaskName.CODEX_PREFLIGHT, fail_attempts=frozenset({1}))
    first = await wait_for(api, (await create_run(api, key))["id"])
    assert first["status"] == "failed"
    stages.script(key, hold=frozenset({TaskName.DISCOVER_NEXT_PHASE}))
    second = await create_run(api, key)

    response = await api.post(f"{RUNS}/{first['id']}/retry")

    assert response.status_code == 409
    assert response.json()["detail"]["code"] == "active_run_exists"
    assert response.json()["detail"]["activeRunId"] == second["id"]
    assert (await api.get(f"{RUNS}/{first['id']}")).json()["attempt"] == 1
    stages.release(second["id"])
    await wait_for(api, second["id"])


async def test_credential_audits_keep_one_entry_per_attempt(
    api: httpx.AsyncClient, stages: StageHarness
) -> None:
    key = feature()
    stages.script(
        key,
        fail_at=TaskName.CODEX_PREFLIGHT,
        fail_code="codex_login_missing",
        fail_summary={
            "codex_status": "missing",
            "github_status": "valid",
            "notes": "codex_auth_1 has no login",
        },
    )
    failed = await wait_for(api, (await create_run(api, key, notes="first try"))["id"])
    assert failed["credentialAudit"]["codexStatus"] == "missing"
    assert failed["credentialAudit"]["notes"] == "first try\ncodex_auth_1 has no login"

    await api.post(f"{RUNS}/{failed['id']}/retry", json={"notes": "logged in now"})
    run = await wait_for(api, failed["id"])

    assert run["status"] == "succeeded"
    history = [
        (a["attempt"], a["codexStatus"], a["notes"]) for a in run["credentialAudits"]
    ]
    assert history == [
        (1, "missing", "first try\ncodex_auth_1 has no login"),
        (2, "logged_in", "logged in now\nscripted"),
    ]
    assert run["credentialAudit"]["attempt"] == 2
