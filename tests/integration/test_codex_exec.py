"""The real `codex exec` through both executors, driven by the scripted model server.

The container executor runs Codex in `CODEX_IMAGE` through Podman's Docker API with
host networking (the model listens on 127.0.0.1); the process executor runs
`CODEX_BIN` on the host. Needs `make podman` (or `make test-integration`).
"""

from __future__ import annotations

import asyncio
import json
import secrets
import subprocess
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from uuid import UUID, uuid4

import pytest
import pytest_asyncio

from services.codex_runner.agent import AgentRun, ExecResult, ExecutorError
from services.codex_runner.codex import CodexAgent, CodexOutputParser
from services.codex_runner.executors import (
    LAST_MESSAGE,
    DockerExecutor,
    ProcessExecutor,
)
from tests.support.containers import (
    ContainerEngine,
    container_engine,
    create_volume,
    delete_volume,
)
from tests.support.model import ScriptedModel, Step, error, patch, run, say

pytestmark = pytest.mark.timeout(60)

KEY = "sk-test-" + secrets.token_hex(16)
PATCH = """\
*** Begin Patch
*** Add File: src/new_module.py
+VALUE = 42
*** Update File: README.md
@@
-# demo
+# demo, patched
*** End Patch
"""
ENV_PROBE = "env | grep -c CODEX_API_KEY || true"


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def engine() -> ContainerEngine:
    return await container_engine()


def git(workspace: Path, *args: str) -> str:
    # The container executor hands the workspace to uid 1000: allow it for root's git.
    argv = ["git", "-c", f"safe.directory={workspace}", "-C", str(workspace), *args]
    return subprocess.run(argv, capture_output=True, text=True, check=True).stdout


@pytest.fixture
def workspace(tmp_path: Path) -> Path:
    path = tmp_path / "workspace"
    path.mkdir()
    (path / "README.md").write_text("# demo\n")
    git(path, "init", "-q", "-b", "main")
    git(path, "add", "-A")
    author = ["-c", "user.name=t", "-c", "user.email=t@example.com"]
    git(path, *author, "commit", "-qm", "base")
    return path


@dataclass
class Rig:
    """One executor kind, its agent home and what a run of it left behind."""

    kind: str
    engine: ContainerEngine
    executor: DockerExecutor | ProcessExecutor
    auth: str
    workspace: Path
    output_dir: Path
    lines: list[str] = field(default_factory=list)

    def agent(self, model: ScriptedModel) -> CodexAgent:
        codex_bin = "codex" if self.kind == "docker" else str(self.engine.codex_bin)
        return CodexAgent(
            self.engine.codex_image, provider=model.provider(), codex_bin=codex_bin
        )

    def agent_run(self) -> AgentRun:
        return AgentRun(
            run_id=uuid4(),
            attempt=1,
            workspace=self.workspace,
            output_dir=self.output_dir,
            prompt="Implement task T001.",
            auth_volume=self.auth,
            credentials={"openai": KEY},
            labels={"org.moonmind.test": "1"},
        )

    async def on_line(self, line: str) -> None:
        self.lines.append(line)

    async def execute(
        self,
        model: ScriptedModel,
        *,
        timeout: float = 30,  # noqa: ASYNC109 - passed to the executor
        idle_timeout: float = 20,
    ) -> tuple[ExecResult, CodexOutputParser, AgentRun, float]:
        agent_run = self.agent_run()
        started = time.monotonic()
        result = await self.executor.run(
            agent_run,
            self.agent(model),
            self.on_line,
            timeout=timeout,
            idle_timeout=idle_timeout,
        )
        elapsed = time.monotonic() - started
        parser = CodexOutputParser()
        for line in self.lines:
            parser.feed(line)
        await self.assert_gone(agent_run.run_id)
        return result, parser, agent_run, elapsed

    async def assert_gone(self, run_id: UUID) -> None:
        if self.kind == "docker":
            async with self.engine.docker() as docker:
                filters = {"label": [f"run_id={run_id}"]}
                assert await docker.containers.list(all=True, filters=filters) == []
        assert processes_mentioning(str(self.workspace)) == []


def processes_mentioning(text: str) -> list[int]:
    """Live processes (host or container: rootful Podman shares the pid view) whose
    command line names `text`."""
    found = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            cmdline = (proc / "cmdline").read_bytes().replace(b"\0", b" ")
            state = (proc / "stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:
            continue
        if text.encode() in cmdline and state != "Z":
            found.append(int(proc.name))
    return found


@pytest_asyncio.fixture(params=["docker", "process"], loop_scope="session")
async def rig(
    request: pytest.FixtureRequest,
    engine: ContainerEngine,
    workspace: Path,
    tmp_path: Path,
) -> AsyncIterator[Rig]:
    output_dir = tmp_path / "out"
    if request.param == "process":
        executor = ProcessExecutor(tmp_path / "codex-homes", stop_timeout=2)
        yield Rig("process", engine, executor, "codex_auth_0", workspace, output_dir)
        return
    docker_executor = DockerExecutor(
        engine.url,
        network_mode="host",  # the scripted model listens on the host's 127.0.0.1
        memory_bytes=1024 * 2**20,
        nano_cpus=1_000_000_000,
        pids_limit=256,
        stop_timeout=1,
    )
    async with engine.docker() as docker:
        volume = await create_volume(docker, f"moonmind-test-{secrets.token_hex(6)}")
        try:
            yield Rig("docker", engine, docker_executor, volume, workspace, output_dir)
        finally:
            await delete_volume(docker, volume)  # 409 if a container still used it


@pytest.fixture
def model_server() -> Iterator[list[ScriptedModel]]:
    """Closes every model a test started."""
    started: list[ScriptedModel] = []
    yield started
    for model in started:
        model.close()


def serve(started: list[ScriptedModel], steps: list[Any]) -> ScriptedModel:
    model = ScriptedModel(steps, api_key=KEY).start()
    started.append(model)
    return model


def items(parser_lines: list[str], item_type: str) -> list[dict[str, Any]]:
    events = [json.loads(line) for line in parser_lines if line.startswith("{")]
    return [
        e["item"]
        for e in events
        if e["type"] == "item.completed" and e["item"]["type"] == item_type
    ]


async def test_patch_adds_and_modifies_files(
    rig: Rig, model_server: list[ScriptedModel]
) -> None:
    steps = [[patch("c1", PATCH)], [run("c2", ENV_PROBE)], [say("Done.")]]
    model = serve(model_server, steps)

    result, parser, _, elapsed = await rig.execute(model)

    outcome = parser.outcome()
    assert result.exit_code == 0, result.stderr_tail
    assert not result.timed_out
    assert not result.stalled
    assert not result.cancelled
    assert outcome.completed
    assert outcome.turn_error is None
    assert outcome.thread_id
    changed = sorted(Path(p).name for p in outcome.files_changed)
    assert changed == ["README.md", "new_module.py"]
    assert outcome.failed_changes == []
    assert outcome.last_message == "Done."
    assert (rig.output_dir / LAST_MESSAGE).read_text().strip() == "Done."
    assert (rig.workspace / "src/new_module.py").read_text() == "VALUE = 42\n"
    assert (rig.workspace / "README.md").read_text() == "# demo, patched\n"
    assert git(rig.workspace, "status", "--porcelain").splitlines() == [
        " M README.md",
        "?? src/",
    ]
    # The key reached the model as a bearer token, and never the agent's shell.
    assert len(model.requests) == 3
    assert model.auth_failures == 0
    assert items(rig.lines, "command_execution")[0]["aggregated_output"].strip() == "0"
    assert KEY not in result.stderr_tail
    assert elapsed < 15


async def test_no_changes_completes_without_file_changes(
    rig: Rig, model_server: list[ScriptedModel]
) -> None:
    model = serve(model_server, [[say("Nothing to do.")]])

    result, parser, _, _ = await rig.execute(model)

    assert result.exit_code == 0
    assert parser.outcome().completed
    assert parser.outcome().files_changed == []
    assert parser.outcome().last_message == "Nothing to do."
    assert git(rig.workspace, "status", "--porcelain") == ""
    assert model.auth_failures == 0


@pytest.mark.parametrize(
    ("status", "expected"),
    [(500, "high demand"), (401, "401 Unauthorized"), (429, "429 Too Many Requests")],
)
async def test_model_error_fails_the_turn(
    rig: Rig, model_server: list[ScriptedModel], status: int, expected: str
) -> None:
    model = serve(model_server, [error(status, "scripted failure")])

    result, parser, _, elapsed = await rig.execute(model)

    assert result.exit_code == 1
    assert not parser.outcome().completed
    assert expected in (parser.outcome().turn_error or "")
    assert model.auth_failures == 0
    assert elapsed < 15


async def test_cut_stream_fails_the_turn(
    rig: Rig, model_server: list[ScriptedModel]
) -> None:
    model = serve(model_server, [Step(items=[say("partial")], cut=True)])

    result, parser, _, _ = await rig.execute(model)

    assert result.exit_code == 1
    assert "stream disconnected" in (parser.outcome().turn_error or "")
    assert parser.outcome().last_message == "partial"


async def test_model_stall_past_idle_timeout_is_stalled(
    rig: Rig, model_server: list[ScriptedModel]
) -> None:
    model = serve(model_server, [Step(items=[say("late")], delay=5)])

    result, parser, _, elapsed = await rig.execute(model, idle_timeout=2)

    assert result.stalled
    assert not result.timed_out
    assert not parser.outcome().completed
    assert parser.outcome().thread_id  # it had started: only the model went quiet
    assert 2 <= elapsed < 5


async def test_overall_timeout_is_timed_out_while_output_flows(
    rig: Rig, model_server: list[ScriptedModel]
) -> None:
    steps = [Step(items=[run(f"c{n}", "true")], delay=0.5) for n in range(1, 20)]
    model = serve(model_server, steps)

    result, parser, _, elapsed = await rig.execute(model, timeout=3, idle_timeout=2)

    assert result.timed_out
    assert not result.stalled
    assert parser.outcome().commands >= 1  # lines kept coming: no stall
    assert not parser.outcome().completed
    assert 3 <= elapsed < 8


async def start_stalled_run(
    rig: Rig, model_server: list[ScriptedModel]
) -> tuple[asyncio.Task[ExecResult], AgentRun]:
    """A run whose model answers only after 30 s; returns once Codex has started."""
    model = serve(model_server, [Step(items=[say("late")], delay=30)])
    agent_run = rig.agent_run()
    first_line = asyncio.Event()

    async def on_line(line: str) -> None:
        rig.lines.append(line)
        first_line.set()

    task = asyncio.create_task(
        rig.executor.run(
            agent_run, rig.agent(model), on_line, timeout=30, idle_timeout=20
        )
    )
    await asyncio.wait_for(first_line.wait(), 15)
    return task, agent_run


async def test_cancel_mid_run_stops_the_agent(
    rig: Rig, model_server: list[ScriptedModel]
) -> None:
    task, agent_run = await start_stalled_run(rig, model_server)
    started = time.monotonic()

    assert await rig.executor.cancel(agent_run.run_id)

    result = await asyncio.wait_for(task, 15)
    assert result.cancelled
    assert result.exit_code not in (0, None)
    assert not result.timed_out
    assert not result.stalled
    assert time.monotonic() - started < 6
    await rig.assert_gone(agent_run.run_id)
    assert not await rig.executor.cancel(agent_run.run_id)  # nothing left to stop


async def test_cancelled_runner_task_leaves_nothing_running(
    rig: Rig, model_server: list[ScriptedModel]
) -> None:
    task, agent_run = await start_stalled_run(rig, model_server)

    task.cancel()

    with pytest.raises(asyncio.CancelledError):
        await task
    await rig.assert_gone(agent_run.run_id)


async def test_missing_image_is_not_retryable(
    engine: ContainerEngine, workspace: Path, tmp_path: Path
) -> None:
    executor = DockerExecutor(engine.url)
    agent = CodexAgent("localhost/moonmind-no-such-image:0")
    agent_run = AgentRun(uuid4(), 1, workspace, tmp_path / "out", "p", "unused")

    with pytest.raises(ExecutorError) as raised:
        await executor.run(agent_run, agent, _ignore, timeout=10, idle_timeout=10)

    assert raised.value.code == "codex_image_missing"
    assert not raised.value.retryable


async def test_unreachable_engine_is_retryable(workspace: Path, tmp_path: Path) -> None:
    executor = DockerExecutor(f"unix://{tmp_path}/no-engine.sock")
    agent_run = AgentRun(uuid4(), 1, workspace, tmp_path / "out", "p", "unused")

    with pytest.raises(ExecutorError) as raised:
        await executor.run(
            agent_run, CodexAgent("img"), _ignore, timeout=5, idle_timeout=5
        )

    assert raised.value.code == "executor_unavailable"
    assert raised.value.retryable


async def test_cleanup_removes_a_crashed_runners_containers(
    engine: ContainerEngine,
) -> None:
    executor = DockerExecutor(engine.url, stop_timeout=1)
    shard = f"test-{secrets.token_hex(4)}"
    async with engine.docker() as docker:
        config: dict[str, Any] = {
            "Image": engine.codex_image,
            "Cmd": ["sleep", "60"],
            "Labels": {"codex_shard_index": shard, "org.moonmind.test": "1"},
            "HostConfig": {"NetworkMode": "none"},
        }
        container = await docker.containers.create(config=config)
        await container.start()

        assert await executor.cleanup({"codex_shard_index": shard}) == 1

        filters = {"label": [f"codex_shard_index={shard}"]}
        assert await docker.containers.list(all=True, filters=filters) == []


async def _ignore(line: str) -> None:
    del line
