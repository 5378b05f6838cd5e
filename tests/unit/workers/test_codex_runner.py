"""The Codex runner's job flow with a scripted executor: clone, log, patch, verdict.

The real executors and the real Codex binary are integration-tested; here a fake
executor edits the workspace and prints JSONL like Codex would.
"""

from __future__ import annotations

import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from uuid import UUID, uuid4

import orjson
import pytest
from fast_depends import dependency_provider
from faststream.rabbit import RabbitBroker, TestRabbitBroker

from services.codex_runner.agent import (
    AgentOutcome,
    AgentRun,
    ExecResult,
    OnLine,
    Progress,
)
from services.codex_runner.handlers import (
    get_deps,
    shard_router,
    task_cancelled,
    task_failed,
    task_heartbeat,
    task_started,
    task_succeeded,
)
from services.codex_runner.runner import RunnerDeps
from shared.messages import (
    CodexShard,
    DiscoveredTask,
    SubmitCodexJob,
    TaskName,
    new_message,
)
from shared.metrics import TASK_FAILURE, TASK_SUCCESS, get_metrics
from shared.routing import submit_codex_route
from shared.topology import EXCHANGE
from tests.support.fakes import FakeSecrets, RecordingMetrics
from tests.support.specrepo import FEATURE_KEY, commit_files, feature_files

SHARD = CodexShard(
    codex_queue="codex-1", codex_volume="codex_auth_1", codex_shard_index=1
)


class LineParser:
    """Enough of Codex's JSONL for these tests (the real parser has its own tests)."""

    def __init__(self) -> None:
        self._outcome = AgentOutcome()

    def feed(self, line: str) -> list[Progress]:
        event = orjson.loads(line)
        if event["type"] == "thread.started":
            self._outcome.thread_id = event["thread_id"]
        elif event["type"] == "turn.completed":
            self._outcome.completed = True
            self._outcome.usage = event.get("usage", {})
        elif event["type"] == "turn.failed":
            self._outcome.turn_error = event["error"]["message"]
        elif event["type"] == "item.completed":
            self._outcome.items += 1
        return [Progress("item", {})]

    def outcome(self) -> AgentOutcome:
        return self._outcome


class FakeAgent:
    name = "fake"
    image = "fake:latest"

    def command(self, workspace: str, last_message: str, prompt: str) -> list[str]:
        return ["fake", workspace, last_message, prompt[:10]]

    def environment(self, run: AgentRun, agent_home: str) -> dict[str, str]:
        del run, agent_home
        return {}

    def parser(self) -> LineParser:
        return LineParser()


Edit = Callable[[Path], None]


class FakeExecutor:
    def __init__(
        self, edit: Edit | None, lines: list[dict[str, Any]], result: ExecResult
    ):
        self.edit, self.lines, self.result = edit, lines, result
        self.runs: list[AgentRun] = []
        self.cancelled: list[UUID] = []

    async def run(
        self,
        run: AgentRun,
        agent: Any,
        on_line: OnLine,
        *,
        timeout: float,  # noqa: ASYNC109 - the Executor protocol's signature
        idle_timeout: float,
    ) -> ExecResult:
        del agent, timeout, idle_timeout
        self.runs.append(run)
        if self.edit is not None:
            self.edit(run.workspace)
        for event in self.lines:
            await on_line(orjson.dumps(event).decode())
        (run.output_dir / "last_message.txt").write_text("done\n")
        return self.result

    async def cancel(self, run_id: UUID) -> bool:
        self.cancelled.append(run_id)
        return False

    async def cleanup(self, labels: dict[str, str]) -> int:
        del labels
        return 0


GOOD_LINES: list[dict[str, Any]] = [
    {"type": "thread.started", "thread_id": "thread-abc"},
    {"type": "turn.started"},
    {"type": "item.completed", "item": {"id": "1", "type": "file_change"}},
    {"type": "turn.completed", "usage": {"input_tokens": 12, "output_tokens": 3}},
]


def add_cart(workspace: Path) -> None:
    (workspace / "src").mkdir(exist_ok=True)
    (workspace / "src" / "cart.py").write_text("class Cart: ...\n")
    tasks = workspace / "specs" / FEATURE_KEY / "tasks.md"
    tasks.write_text(tasks.read_text().replace("- [ ] T003", "- [X] T003"))


@pytest.fixture
def repo(tmp_path: Path) -> tuple[str, str]:
    path = tmp_path / "origin.git"
    subprocess.run(["git", "init", "-q", "--bare", "-b", "main", str(path)], check=True)
    sha = commit_files(path, feature_files(), branch="main")
    return f"file://{path}", sha


@pytest.fixture
def metrics() -> Iterator[RecordingMetrics]:
    recording = RecordingMetrics()
    with dependency_provider.scope(get_metrics, lambda: recording):
        yield recording


def job(repository: str, sha: str) -> SubmitCodexJob:
    return new_message(
        SubmitCodexJob,
        run_id=uuid4(),
        task=TaskName.SUBMIT_CODEX_JOB,
        attempt=1,
        repository=repository,
        feature_key=FEATURE_KEY,
        base_branch="main",
        base_sha=sha,
        shard=SHARD,
        spec_task=DiscoveredTask(task_id="T003", description="Add the cart model"),
        notes="keep it small",
        spec_title="Checkout",
    )


def deps_for(
    tmp_path: Path, executor: FakeExecutor, keys: dict[str, str]
) -> RunnerDeps:
    return RunnerDeps(
        executor=executor,
        agent=FakeAgent(),
        internal_api=FakeSecrets(keys),
        artifacts_root=tmp_path / "artifacts",
        workspaces_root=tmp_path / "work",
        github_git_url="http://127.0.0.1:9",
        git_timeout=30,
        timeout=60,
        idle_timeout=30,
    )


async def run_one(deps: RunnerDeps, cmd: SubmitCodexJob) -> None:
    broker = RabbitBroker()
    broker.include_router(shard_router(1))
    with dependency_provider.scope(get_deps, lambda: deps):
        async with TestRabbitBroker(broker) as br:
            await br.publish(cmd, exchange=EXCHANGE, routing_key=submit_codex_route(1))


async def test_a_change_becomes_a_patch(
    tmp_path: Path, repo: tuple[str, str], metrics: RecordingMetrics
) -> None:
    executor = FakeExecutor(add_cart, GOOD_LINES, ExecResult(exit_code=0))
    deps = deps_for(tmp_path, executor, {"openai": "sk-user-key-0123456789abcdef"})
    cmd = job(*repo)
    broker = RabbitBroker()
    broker.include_router(shard_router(1))
    with dependency_provider.scope(get_deps, lambda: deps):
        async with TestRabbitBroker(broker) as br:
            await br.publish(cmd, exchange=EXCHANGE, routing_key=submit_codex_route(1))
            task_started.mock.assert_called_once()
            done = task_succeeded.mock.call_args.args[0]
            task_failed.mock.assert_not_called()
            assert task_heartbeat.mock.call_count >= 1  # the progress summary
    summary = done["summary"]
    assert summary["codex_task_id"] == "thread-abc"
    assert summary["files_changed"] == 2
    assert {f["path"] for f in summary["files"]} == {
        "src/cart.py",
        f"specs/{FEATURE_KEY}/tasks.md",
    }
    assert summary["usage"] == {"input_tokens": 12, "output_tokens": 3}
    run_dir = tmp_path / "artifacts" / str(cmd.run_id)
    patch = (run_dir / "patch.diff").read_text()
    assert "+class Cart: ..." in patch
    assert "+- [X] T003" in patch
    events = (run_dir / "codex" / "1" / "events.jsonl").read_text().splitlines()
    assert len(events) == len(GOOD_LINES)
    assert {a["path"] for a in done["artifacts"]} == {
        "patch.diff",
        "codex/1/events.jsonl",
        "codex/1/last_message.txt",
    }
    run = executor.runs[0]
    assert run.credentials == {"openai": "sk-user-key-0123456789abcdef"}
    assert "Task T003" in run.prompt
    assert "keep it small" in run.prompt
    assert "Feature Specification: Checkout" in run.prompt
    assert run.workspace != run.output_dir
    assert not run.workspace.exists()  # cleaned up; artifacts kept
    assert metrics.count(TASK_SUCCESS, task="submit_codex_job") == 1


@pytest.mark.usefixtures("metrics")
@pytest.mark.parametrize(
    ("edit", "lines", "result", "code", "retryable"),
    [
        (None, GOOD_LINES, ExecResult(exit_code=0), "no_changes", False),
        (
            add_cart,
            [{"type": "turn.failed", "error": {"message": "unexpected status 401"}}],
            ExecResult(exit_code=1),
            "codex_failed",
            False,
        ),
        (
            None,
            [{"type": "turn.failed", "error": {"message": "retry limit, 429"}}],
            ExecResult(exit_code=1),
            "codex_failed",
            True,
        ),
        (add_cart, GOOD_LINES[:2], ExecResult(exit_code=None, timed_out=True),
         "codex_timeout", False),
        (add_cart, GOOD_LINES[:2], ExecResult(exit_code=None, stalled=True),
         "codex_stalled", True),
        (add_cart, GOOD_LINES[:2], ExecResult(exit_code=0), "codex_failed", False),
    ],
)  # fmt: skip
async def test_failures_have_their_own_codes(
    tmp_path: Path,
    repo: tuple[str, str],
    edit: Edit | None,
    lines: list[dict[str, Any]],
    result: ExecResult,
    code: str,
    retryable: bool,
) -> None:
    deps = deps_for(tmp_path, FakeExecutor(edit, lines, result), {})
    cmd = job(*repo)
    broker = RabbitBroker()
    broker.include_router(shard_router(1))
    with dependency_provider.scope(get_deps, lambda: deps):
        async with TestRabbitBroker(broker) as br:
            await br.publish(cmd, exchange=EXCHANGE, routing_key=submit_codex_route(1))
            failed = task_failed.mock.call_args.args[0]
            task_succeeded.mock.assert_not_called()
    assert failed["error"]["code"] == code
    assert failed["error"]["retryable"] is retryable
    assert not (tmp_path / "artifacts" / str(cmd.run_id) / "patch.diff").exists()


async def test_a_cancelled_agent_reports_cancelled(
    tmp_path: Path, repo: tuple[str, str], metrics: RecordingMetrics
) -> None:
    executor = FakeExecutor(add_cart, GOOD_LINES[:1], ExecResult(None, cancelled=True))
    deps = deps_for(tmp_path, executor, {})
    cmd = job(*repo)
    broker = RabbitBroker()
    broker.include_router(shard_router(1))
    with dependency_provider.scope(get_deps, lambda: deps):
        async with TestRabbitBroker(broker) as br:
            await br.publish(cmd, exchange=EXCHANGE, routing_key=submit_codex_route(1))
            task_cancelled.mock.assert_called_once()
            task_succeeded.mock.assert_not_called()
            task_failed.mock.assert_not_called()
    assert metrics.count(TASK_FAILURE, task="submit_codex_job") == 1


@pytest.mark.usefixtures("metrics")
async def test_an_unknown_base_commit_fails_before_the_agent(
    tmp_path: Path, repo: tuple[str, str]
) -> None:
    executor = FakeExecutor(add_cart, GOOD_LINES, ExecResult(exit_code=0))
    deps = deps_for(tmp_path, executor, {})
    cmd = job(repo[0], "f" * 40)
    broker = RabbitBroker()
    broker.include_router(shard_router(1))
    with dependency_provider.scope(get_deps, lambda: deps):
        async with TestRabbitBroker(broker) as br:
            await br.publish(cmd, exchange=EXCHANGE, routing_key=submit_codex_route(1))
            failed = task_failed.mock.call_args.args[0]
    assert failed["error"]["code"] == "base_commit_missing"
    assert executor.runs == []
