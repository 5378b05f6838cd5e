"""Executor mechanics without a container engine or a model: line following, the
container config, ownership hand-over, and the process executor with a stand-in
agent (a Python script)."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path
from uuid import uuid4

import pytest

from services.codex_runner.agent import AgentRun, ExecutorError, OnLine
from services.codex_runner.codex import CodexAgent, CodexOutputParser
from services.codex_runner.executors import (
    DockerExecutor,
    ProcessExecutor,
    claim_for_agent,
)
from services.codex_runner.executors.process import RUNNING_DIR, start_time
from services.codex_runner.executors.streaming import Ended, LineFollower, stderr_tail

KEY = "sk-test-abcdefghijklmnop0123"

pytestmark = pytest.mark.timeout(30)


async def scripted_chunks(*steps: str | bytes | float) -> AsyncIterator[str | bytes]:
    """Yields chunks; a float step sleeps that long first."""
    for step in steps:
        if isinstance(step, float):
            await asyncio.sleep(step)
        else:
            yield step


def collector() -> tuple[list[str], OnLine]:
    lines: list[str] = []

    async def on_line(line: str) -> None:
        lines.append(line)

    return lines, on_line


def deadline(seconds: float) -> float:
    return asyncio.get_running_loop().time() + seconds


async def test_follower_joins_split_chunks_and_multibyte_characters() -> None:
    lines, on_line = collector()
    snow = "☃".encode()
    chunks = scripted_chunks(b'{"a":', b'1}\n{"b":"' + snow[:1], snow[1:] + b'"}\ntail')
    follower = LineFollower(chunks, on_line)

    assert await follower.follow(deadline=deadline(5), idle_timeout=5) is Ended.EOF
    assert lines == ['{"a":1}', '{"b":"☃"}', "tail"]


async def test_follower_reports_a_stall_then_drains_to_eof() -> None:
    lines, on_line = collector()
    follower = LineFollower(scripted_chunks("one\n", 0.3, "two\n"), on_line)

    ended = await follower.follow(deadline=deadline(5), idle_timeout=0.1)
    assert ended is Ended.STALLED
    assert await follower.drain(2)
    assert lines == ["one", "two"]
    await follower.close()


async def test_follower_reports_timeout_while_lines_flow() -> None:
    lines, on_line = collector()
    chunks = scripted_chunks(*[s for n in range(20) for s in (0.05, f"{n}\n")])
    follower = LineFollower(chunks, on_line)

    ended = await follower.follow(deadline=deadline(0.3), idle_timeout=0.2)
    assert ended is Ended.TIMED_OUT
    assert 2 <= len(lines) < 20
    await follower.close()


async def test_follower_partial_line_does_not_reset_idle_clock() -> None:
    _, on_line = collector()
    steps = ("a", 0.08, "b", 0.08, "c", 0.08, "d\n")
    follower = LineFollower(scripted_chunks(*steps), on_line)

    assert (
        await follower.follow(deadline=deadline(5), idle_timeout=0.15) is Ended.STALLED
    )
    await follower.close()


def test_stderr_tail_masks_credentials_and_keeps_the_end() -> None:
    text = "x" * 5000 + f"\nauth failed for {KEY} and Bearer abcdefgh12345\nlast"
    tail = stderr_tail(text, [KEY])

    assert KEY not in tail
    assert "abcdefgh12345" not in tail
    assert tail.endswith("last")
    assert len(tail) == 2000


def agent_run(tmp_path: Path, **fields: object) -> AgentRun:
    values: dict[str, object] = {
        "run_id": uuid4(),
        "attempt": 2,
        "workspace": tmp_path / "ws",
        "output_dir": tmp_path / "out",
        "prompt": "do it",
        "auth_volume": "codex_auth_1",
        "credentials": {"openai": KEY},
        "labels": {"codex_shard_index": "1"},
    }
    return AgentRun(**(values | fields))  # type: ignore[arg-type]


def test_container_config_mounts_limits_and_never_autoremoves(tmp_path: Path) -> None:
    run = agent_run(tmp_path)
    executor = DockerExecutor("unix:///x.sock", network_mode="none", pids_limit=99)
    config = executor.container_config(run, CodexAgent("codex-image:1"))

    assert config["Image"] == "codex-image:1"
    assert config["User"] == "1000:1000"
    assert config["OpenStdin"] is False
    assert config["Labels"] == {
        "codex_shard_index": "1",
        "run_id": str(run.run_id),
        "attempt": "2",
    }
    host = config["HostConfig"]
    assert host["Binds"] == [
        f"{tmp_path}/ws:/workspace:rw",
        f"{tmp_path}/out:/home/app/out:rw",
        "codex_auth_1:/home/app/.codex:rw",
    ]
    assert host["AutoRemove"] is False
    assert host["NetworkMode"] == "none"
    assert host["PidsLimit"] == 99
    assert {u["Name"] for u in host["Ulimits"]} == {"nofile", "nproc"}
    cmd = config["Cmd"]
    assert cmd[cmd.index("-C") + 1] == "/workspace"
    assert cmd[cmd.index("-o") + 1] == "/home/app/out/last_message.txt"
    assert f"CODEX_API_KEY={KEY}" in config["Env"]
    assert "CODEX_HOME=/home/app/.codex" in config["Env"]
    assert KEY not in json.dumps({k: v for k, v in config.items() if k != "Env"})


@pytest.mark.skipif(os.geteuid() != 0, reason="chown needs root")
def test_claim_for_agent_hands_the_tree_to_uid_1000(tmp_path: Path) -> None:
    (tmp_path / "ws/.git").mkdir(parents=True)
    (tmp_path / "ws/.git/HEAD").write_text("ref: refs/heads/main\n")
    (tmp_path / "ws/link").symlink_to("/etc/passwd")

    claim_for_agent([tmp_path / "ws", tmp_path / "out"])

    for path in [tmp_path / "ws", tmp_path / "ws/.git/HEAD", tmp_path / "out"]:
        assert (path.stat().st_uid, path.stat().st_gid) == (1000, 1000)
    assert os.lstat(tmp_path / "ws/link").st_uid == 1000
    assert Path("/etc/passwd").stat().st_uid == 0  # symlinks are not followed


class ScriptAgent(CodexAgent):
    """Runs a Python script instead of Codex; stdout is its 'JSONL'."""

    def __init__(self, script: str) -> None:
        super().__init__("unused", codex_bin=sys.executable)
        self.script = script

    def command(self, workspace: str, last_message: str, prompt: str) -> list[str]:
        return [sys.executable, "-c", self.script, workspace, last_message, prompt]


REPORT = """
import json, os, sys
print(json.dumps({"type": "thread.started", "thread_id": "t1"}), flush=True)
report = {"stdin": sys.stdin.read(), "cwd": os.getcwd(), "env": dict(os.environ)}
print(json.dumps(report))
open(sys.argv[2], "w").write("bye")
print("to stderr " + os.environ.get("CODEX_API_KEY", ""), file=sys.stderr)
"""


async def test_process_executor_environment_and_paths(tmp_path: Path) -> None:
    executor = ProcessExecutor(tmp_path / "homes", base_env={"PATH": "/usr/bin:/bin"})
    run = agent_run(tmp_path)
    run.workspace.mkdir()
    lines, on_line = collector()

    result = await executor.run(
        run, ScriptAgent(REPORT), on_line, timeout=20, idle_timeout=20
    )

    assert result.exit_code == 0
    report = json.loads(lines[1])
    assert report["stdin"] == ""  # stdin is /dev/null, not a pipe left open
    assert report["cwd"] == str(run.workspace)
    env = report["env"]
    assert env["CODEX_HOME"] == str(tmp_path / "homes/codex_auth_1")
    assert env["CODEX_API_KEY"] == KEY
    assert set(env) <= {"PATH", "CODEX_HOME", "HOME", "CODEX_API_KEY", "LC_CTYPE"}
    assert (tmp_path / "homes/codex_auth_1").is_dir()
    assert (run.output_dir / "last_message.txt").read_text() == "bye"
    assert KEY not in result.stderr_tail
    assert "to stderr ***" in result.stderr_tail
    parser = CodexOutputParser()
    for line in lines:
        parser.feed(line)
    assert parser.outcome().thread_id == "t1"
    assert not list((tmp_path / "homes" / RUNNING_DIR).iterdir())


SPAWNS_AND_WAITS = """
import subprocess, sys, time
child = subprocess.Popen(["sleep", "300"])
print(child.pid, flush=True)
time.sleep(300)
"""


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


async def gone(pid: int, within: float = 3.0) -> bool:
    """Whether `pid` exits within `within` s: a signalled grandchild dies a moment
    after its group leader, on a loaded machine a scheduling slice later."""
    deadline = time.monotonic() + within
    while alive(pid):
        if time.monotonic() > deadline:
            return False
        await asyncio.sleep(0.02)
    return True


async def test_process_executor_stall_kills_the_whole_group(tmp_path: Path) -> None:
    executor = ProcessExecutor(tmp_path / "homes")
    run = agent_run(tmp_path)
    run.workspace.mkdir()
    lines, on_line = collector()

    result = await executor.run(
        run, ScriptAgent(SPAWNS_AND_WAITS), on_line, timeout=20, idle_timeout=0.5
    )

    assert result.stalled
    assert result.exit_code == 128 + signal.SIGKILL
    assert await gone(int(lines[0]))  # the agent's own child went with it


async def test_process_executor_cancel_terminates_the_group(tmp_path: Path) -> None:
    executor = ProcessExecutor(tmp_path / "homes", stop_timeout=2)
    run = agent_run(tmp_path)
    run.workspace.mkdir()
    lines: list[str] = []
    first = asyncio.Event()

    async def on_line(line: str) -> None:
        lines.append(line)
        first.set()

    task = asyncio.create_task(
        executor.run(
            run, ScriptAgent(SPAWNS_AND_WAITS), on_line, timeout=20, idle_timeout=20
        )
    )
    await asyncio.wait_for(first.wait(), 10)
    started = time.monotonic()

    assert await executor.cancel(run.run_id)

    result = await task
    assert result.cancelled
    assert result.exit_code == 128 + signal.SIGTERM
    assert time.monotonic() - started < 2
    assert await gone(int(lines[0]))
    assert not await executor.cancel(run.run_id)


async def test_process_executor_missing_binary_is_not_retryable(tmp_path: Path) -> None:
    executor = ProcessExecutor(tmp_path / "homes")
    run = agent_run(tmp_path)
    run.workspace.mkdir()
    agent = CodexAgent("unused", codex_bin=str(tmp_path / "no-codex"))

    with pytest.raises(ExecutorError) as raised:
        await executor.run(run, agent, collector()[1], timeout=5, idle_timeout=5)

    assert raised.value.code == "codex_binary_missing"
    assert not raised.value.retryable


async def test_process_cleanup_kills_what_a_crashed_runner_left(tmp_path: Path) -> None:
    executor = ProcessExecutor(tmp_path / "homes")
    records = tmp_path / "homes" / RUNNING_DIR
    records.mkdir(parents=True)
    orphan = await asyncio.create_subprocess_exec(
        "sleep", "300", start_new_session=True
    )
    try:
        mine = {"codex_shard_index": "1", "run_id": "r1", "attempt": "1"}
        other = {"codex_shard_index": "2", "run_id": "r2", "attempt": "1"}
        entry = {"pid": orphan.pid, "start": start_time(orphan.pid), "labels": mine}
        (records / "r1-1.json").write_text(json.dumps(entry))
        (records / "r2-1.json").write_text(json.dumps(entry | {"labels": other}))
        (records / "stale.json").write_text(json.dumps(entry | {"pid": 999999999}))
        (records / "junk.json").write_text("{not json")

        assert await executor.cleanup({"codex_shard_index": "1"}) == 1

        assert await asyncio.wait_for(orphan.wait(), 5) == -signal.SIGKILL
    finally:
        if orphan.returncode is None:
            orphan.kill()
            await orphan.wait()
    assert sorted(p.name for p in records.iterdir()) == ["junk.json", "r2-1.json"]
