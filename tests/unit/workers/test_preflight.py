"""Preflight handlers via TestRabbitBroker, with local git repositories and fakes.

Git runs for real against `file://` bare repositories (no network); the login probe
and the API's secrets endpoint are fakes here (the real ones are integration-tested).
"""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from unittest.mock import ANY
from uuid import uuid4

import pytest
from fast_depends import dependency_provider
from faststream.rabbit import RabbitBroker, TestRabbitBroker

from services.preflight.checks import Deps
from services.preflight.handlers import (
    get_deps,
    router,
    task_failed,
    task_started,
    task_succeeded,
    volume_checked,
)
from services.preflight.probe import ProbeCache
from shared.internal_api import InternalApiError
from shared.messages import (
    CodexPreflight,
    CodexShard,
    DiscoveredTask,
    DiscoverNextPhase,
    ProbeCodexVolume,
    PublishMode,
    TaskName,
    new_message,
)
from shared.metrics import TASK_FAILURE, TASK_START, TASK_SUCCESS, get_metrics
from shared.topology import EXCHANGE, Route
from tests.support.fakes import FakeLoginProbe, FakeSecrets, RecordingMetrics
from tests.support.specrepo import FEATURE_KEY, Variant, commit_files, feature_files

SHARD = CodexShard(
    codex_queue="codex-1", codex_volume="codex_auth_1", codex_shard_index=1
)


def bare_repo(root: Path, variant: Variant = Variant.TYPICAL) -> tuple[str, str]:
    path = root / f"repo-{uuid4().hex[:6]}.git"
    path.mkdir()
    subprocess.run(["git", "init", "-q", "--bare", "-b", "main", str(path)], check=True)
    sha = commit_files(path, feature_files(variant), branch="main")
    return f"file://{path}", sha


def discover_command(repository: str, **fields: object) -> DiscoverNextPhase:
    return new_message(
        DiscoverNextPhase,
        run_id=uuid4(),
        task=TaskName.DISCOVER_NEXT_PHASE,
        attempt=1,
        repository=repository,
        feature_key=FEATURE_KEY,
        **fields,
    )


def preflight_command(repository: str, **fields: object) -> CodexPreflight:
    values: dict[str, object] = {
        "base_branch": "main",
        "base_sha": "0" * 40,
        "shard": SHARD,
        "spec_task": DiscoveredTask(task_id="T005", description="d"),
    }
    return new_message(
        CodexPreflight,
        run_id=uuid4(),
        task=TaskName.CODEX_PREFLIGHT,
        attempt=1,
        repository=repository,
        feature_key=FEATURE_KEY,
        **(values | fields),
    )


@pytest.fixture
def metrics() -> Iterator[RecordingMetrics]:
    recording = RecordingMetrics()
    with dependency_provider.scope(get_metrics, lambda: recording):
        yield recording


def make_deps(tmp_path: Path, secrets: FakeSecrets, probe: FakeLoginProbe) -> Deps:
    return Deps(
        internal_api=secrets,
        probes=ProbeCache(probe, ttl=300),
        artifacts_root=tmp_path / "artifacts",
        workspaces_root=tmp_path / "work",
        github_api_url="http://127.0.0.1:9",
        github_git_url="http://127.0.0.1:9",
        git_timeout=30,
        codex_image="localhost/codex:test",
        started_after=timedelta(0),  # TaskStarted at once: these tests check it
    )


def sent(mock: object) -> dict[str, object]:
    calls = mock.call_args_list  # type: ignore[attr-defined]
    assert len(calls) == 1, calls
    return dict(calls[0].args[0])


@pytest.mark.usefixtures("metrics")
async def test_discovery_finds_the_first_open_task(tmp_path: Path) -> None:
    url, sha = bare_repo(tmp_path)
    cmd = discover_command(url)
    deps = make_deps(tmp_path, FakeSecrets(), FakeLoginProbe({}))
    broker = RabbitBroker()
    broker.include_router(router)
    with dependency_provider.scope(get_deps, lambda: deps):
        async with TestRabbitBroker(broker) as br:
            await br.publish(
                cmd, exchange=EXCHANGE, routing_key=Route.DISCOVER_NEXT_PHASE
            )

            started = sent(task_started.mock)
            done = sent(task_succeeded.mock)
            task_failed.mock.assert_not_called()
    assert started["lease_until"] is not None
    summary = done["summary"]
    assert isinstance(summary, dict)
    assert summary["result"] == "task_found"
    assert summary["base_sha"] == sha
    assert summary["base_branch"] == "main"
    assert summary["discovered"]["task_id"] == "T003"
    assert summary["spec_title"] == "Checkout"
    assert summary["has_plan"] is True
    assert done["artifacts"] == [
        {"path": "discovery.json", "artifact_type": "discovery"}
    ]
    assert (tmp_path / "artifacts" / str(cmd.run_id) / "discovery.json").is_file()
    assert list((tmp_path / "work" / str(cmd.run_id)).glob("discover-*")) == []


@pytest.mark.usefixtures("metrics")
@pytest.mark.parametrize(
    ("variant", "fields", "code"),
    [
        (Variant.MISSING_FEATURE, {}, "feature_not_found"),
        (Variant.MISSING_TASKS, {}, "tasks_file_missing"),
        (Variant.BINARY_TASKS, {}, "spec_file_unreadable"),
        (Variant.TYPICAL, {"requested_task_id": "T999"}, "task_not_found"),
        (Variant.TYPICAL, {"requested_task_id": "T001"}, "task_already_done"),
        (Variant.TYPICAL, {"base_branch": "nope"}, "base_branch_not_found"),
        (Variant.TYPICAL, {"base_branch": "-upload-pack=x"}, "invalid_request"),
    ],
)
async def test_discovery_failures_have_specific_codes(
    tmp_path: Path, variant: Variant, fields: dict[str, object], code: str
) -> None:
    url, _ = bare_repo(tmp_path, variant)
    cmd = discover_command(url, **fields)
    deps = make_deps(tmp_path, FakeSecrets(), FakeLoginProbe({}))
    broker = RabbitBroker()
    broker.include_router(router)
    with dependency_provider.scope(get_deps, lambda: deps):
        async with TestRabbitBroker(broker) as br:
            await br.publish(
                cmd, exchange=EXCHANGE, routing_key=Route.DISCOVER_NEXT_PHASE
            )

            failed = sent(task_failed.mock)
            task_succeeded.mock.assert_not_called()
    error = failed["error"]
    assert isinstance(error, dict)
    assert error["code"] == code, error
    assert error["message"]


@pytest.mark.usefixtures("metrics")
async def test_discovery_of_a_finished_feature_is_no_work(tmp_path: Path) -> None:
    url, _ = bare_repo(tmp_path, Variant.ALL_DONE)
    cmd = discover_command(url)
    deps = make_deps(tmp_path, FakeSecrets(), FakeLoginProbe({}))
    broker = RabbitBroker()
    broker.include_router(router)
    with dependency_provider.scope(get_deps, lambda: deps):
        async with TestRabbitBroker(broker) as br:
            await br.publish(
                cmd, exchange=EXCHANGE, routing_key=Route.DISCOVER_NEXT_PHASE
            )
            done = sent(task_succeeded.mock)
    assert done["summary"]["result"] == "no_work"  # type: ignore[index]
    assert done["summary"]["discovered"] is None  # type: ignore[index]


async def test_preflight_passes_with_a_logged_in_volume(
    tmp_path: Path, metrics: RecordingMetrics
) -> None:
    url, _ = bare_repo(tmp_path)
    probe = FakeLoginProbe({"codex_auth_1": "api_key"})
    deps = make_deps(tmp_path, FakeSecrets(), probe)
    broker = RabbitBroker()
    broker.include_router(router)
    with dependency_provider.scope(get_deps, lambda: deps):
        async with TestRabbitBroker(broker) as br:
            for _ in range(2):  # the second run reuses the cached verdict
                cmd = preflight_command(url)
                await br.publish(
                    cmd, exchange=EXCHANGE, routing_key=Route.CODEX_PREFLIGHT
                )
            assert task_succeeded.mock.call_count == 2
            summary = task_succeeded.mock.call_args.args[0]["summary"]
            volume_checked.mock.assert_called_once_with(ANY)
            verdict = volume_checked.mock.call_args.args[0]
            task_failed.mock.assert_not_called()
    assert probe.calls == ["codex_auth_1"]
    assert summary["codex_status"] == "valid"
    assert summary["github_status"] == "valid"  # file:// remote: ls-remote read access
    assert verdict["status"] == "ready"
    assert verdict["shard"]["codex_volume"] == "codex_auth_1"
    assert metrics.count(TASK_START, task="codex_preflight") == 2
    assert metrics.count(TASK_SUCCESS, task="codex_preflight") == 2


@pytest.mark.usefixtures("metrics")
@pytest.mark.parametrize(
    ("state", "keys", "code", "codex_status"),
    [
        ("logged_out", {}, "codex_login_missing", "missing"),
        ("volume_missing", {}, "codex_volume_missing", "missing"),
        ("error", {}, "codex_auth_invalid", "invalid"),
        ("image_missing", {}, "codex_image_missing", "invalid"),
        ("timeout", {}, "codex_probe_unavailable", "invalid"),
        ("logged_out", {"openai": "sk-user-key-0123456789"}, None, "valid"),
    ],
)
async def test_preflight_verdicts(
    tmp_path: Path,
    state: str,
    keys: dict[str, str],
    code: str | None,
    codex_status: str,
) -> None:
    url, _ = bare_repo(tmp_path)
    deps = make_deps(
        tmp_path, FakeSecrets(keys), FakeLoginProbe({"codex_auth_1": state})
    )
    cmd = preflight_command(url)
    broker = RabbitBroker()
    broker.include_router(router)
    with dependency_provider.scope(get_deps, lambda: deps):
        async with TestRabbitBroker(broker) as br:
            await br.publish(cmd, exchange=EXCHANGE, routing_key=Route.CODEX_PREFLIGHT)
            outcome = (task_failed if code else task_succeeded).mock.call_args.args[0]
            (task_succeeded if code else task_failed).mock.assert_not_called()
    assert outcome["summary"]["codex_status"] == codex_status
    if code:
        assert outcome["error"]["code"] == code
        if code in ("codex_login_missing", "codex_volume_missing"):
            assert "codex login" in outcome["error"]["message"]
            assert "codex_auth_1" in outcome["error"]["message"]


async def test_preflight_reports_an_unreachable_api_as_retryable(
    tmp_path: Path, metrics: RecordingMetrics
) -> None:
    url, _ = bare_repo(tmp_path)
    error = InternalApiError("internal_api_unreachable", "down", retryable=True)
    deps = make_deps(tmp_path, FakeSecrets(error=error), FakeLoginProbe({}))
    broker = RabbitBroker()
    broker.include_router(router)
    with dependency_provider.scope(get_deps, lambda: deps):
        async with TestRabbitBroker(broker) as br:
            await br.publish(
                preflight_command(url),
                exchange=EXCHANGE,
                routing_key=Route.CODEX_PREFLIGHT,
            )
            failed = sent(task_failed.mock)
    assert failed["error"] == {
        "code": "internal_api_unreachable",
        "message": "down",
        "retryable": True,
    }
    assert metrics.count(TASK_FAILURE, task="codex_preflight") == 1


async def test_probe_request_bypasses_the_cache(tmp_path: Path) -> None:
    probe = FakeLoginProbe({"codex_auth_1": "chatgpt"})
    deps = make_deps(tmp_path, FakeSecrets(), probe)
    cmd = new_message(
        ProbeCodexVolume,
        run_id=uuid4(),
        task=TaskName.CODEX_PREFLIGHT,
        attempt=1,
        repository="acme/shop",
        feature_key=FEATURE_KEY,
        shard=SHARD,
        force_refresh=True,
    )
    broker = RabbitBroker()
    broker.include_router(router)
    with dependency_provider.scope(get_deps, lambda: deps):
        async with TestRabbitBroker(broker) as br:
            await deps.probes.get("codex_auth_1")
            await br.publish(
                cmd, exchange=EXCHANGE, routing_key=Route.PROBE_CODEX_VOLUME
            )
            verdict = sent(volume_checked.mock)
    assert probe.calls == ["codex_auth_1", "codex_auth_1"]
    assert verdict["status"] == "ready"
    assert verdict["state"] == "chatgpt"


@pytest.mark.usefixtures("metrics")
async def test_publish_mode_none_needs_no_push(tmp_path: Path) -> None:
    url, _ = bare_repo(tmp_path)
    deps = make_deps(
        tmp_path, FakeSecrets(), FakeLoginProbe({"codex_auth_1": "api_key"})
    )
    cmd = preflight_command(url, publish_mode=PublishMode.NONE)
    broker = RabbitBroker()
    broker.include_router(router)
    with dependency_provider.scope(get_deps, lambda: deps):
        async with TestRabbitBroker(broker) as br:
            await br.publish(cmd, exchange=EXCHANGE, routing_key=Route.CODEX_PREFLIGHT)
            sent(task_succeeded.mock)
