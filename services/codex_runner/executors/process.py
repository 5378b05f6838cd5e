"""The agent as a host process, for machines without a container engine.

Same contract as the container executor: stdin closed, stdout followed line by line
under the overall and idle timeouts, and nothing left running. The agent gets its own
process group, so killing the group also ends the shells and tools it started.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
from collections.abc import AsyncIterator, Mapping
from pathlib import Path
from uuid import UUID

from services.codex_runner.agent import (
    Agent,
    AgentRun,
    ExecResult,
    ExecutorError,
    OnLine,
)
from services.codex_runner.executors.streaming import (
    LAST_MESSAGE,
    WAIT_GRACE,
    Active,
    Ended,
    LineFollower,
    stderr_tail,
)

DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
RUNNING_DIR = ".running"
"""Under `codex_homes_root`: one record per live agent process group."""
STDERR_KEEP = 64 * 1024


class ProcessExecutor:
    """`CODEX_HOME` is `codex_homes_root / run.auth_volume` (created if missing).

    The process sees `base_env` plus the agent's variables, never the runner's own
    environment, which holds the runner's secrets.
    """

    def __init__(
        self,
        codex_homes_root: Path,
        *,
        base_env: Mapping[str, str] | None = None,
        stop_timeout: float = 10.0,
    ) -> None:
        self.codex_homes_root = codex_homes_root
        self.base_env = dict(base_env or {"PATH": DEFAULT_PATH, "LANG": "C.UTF-8"})
        self.stop_timeout = stop_timeout
        self._active: dict[UUID, Active] = {}

    async def run(
        self,
        run: AgentRun,
        agent: Agent,
        on_line: OnLine,
        *,
        timeout: float,  # noqa: ASYNC109 - the Executor contract; enforced below
        idle_timeout: float,
    ) -> ExecResult:
        deadline = asyncio.get_running_loop().time() + timeout
        home = self.codex_homes_root / run.auth_volume
        last_message = str(run.output_dir / LAST_MESSAGE)
        argv = agent.command(str(run.workspace), last_message, run.prompt)
        env = {**self.base_env, **agent.environment(run, str(home))}
        active = self._active[run.run_id] = Active()
        try:
            for path in (home, run.output_dir):
                await asyncio.to_thread(path.mkdir, parents=True, exist_ok=True)
            if active.cancelled:  # before the agent even started
                return ExecResult(exit_code=None, cancelled=True)
            process = await spawn(argv, env, run.workspace)
            active.process = process
            if active.cancelled:  # cancel() came while it was being spawned
                signal_group(process, signal.SIGTERM)
            record = self._record(run, process.pid)
            assert process.stdout is not None
            assert process.stderr is not None
            stderr = asyncio.create_task(tail(process.stderr))
            follower = LineFollower(chunks(process.stdout), on_line)
            try:
                ended = await follower.follow(
                    deadline=deadline, idle_timeout=idle_timeout
                )
                if ended is not Ended.EOF:
                    signal_group(process, signal.SIGKILL)
                    await follower.drain(WAIT_GRACE)
                returncode = await exit_code(process)
                text = await asyncio.wait_for(stderr, WAIT_GRACE)
            finally:
                await asyncio.shield(reap(process))
                stderr.cancel()
                await follower.close()
                record.unlink(missing_ok=True)
            return ExecResult(
                # A signal is -N here; report it the way a container does (128 + N).
                exit_code=128 - returncode if returncode < 0 else returncode,
                timed_out=ended is Ended.TIMED_OUT,
                stalled=ended is Ended.STALLED,
                cancelled=active.cancelled,
                stderr_tail=stderr_tail(
                    text.decode(errors="replace"), run.credentials.values()
                ),
            )
        finally:
            active.done.set()
            self._active.pop(run.run_id, None)

    async def cancel(self, run_id: UUID) -> bool:
        """SIGTERM the process group, SIGKILL after `stop_timeout`; wait it out."""
        active = self._active.get(run_id)
        if active is None:
            return False
        active.cancelled = True
        process = active.process
        if process is not None and process.returncode is None:
            signal_group(process, signal.SIGTERM)
            try:
                exited = asyncio.shield(process.wait())
                await asyncio.wait_for(exited, self.stop_timeout)
            except TimeoutError:
                signal_group(process, signal.SIGKILL)
        await asyncio.wait_for(active.done.wait(), self.stop_timeout + WAIT_GRACE)
        return True

    def _record(self, run: AgentRun, pid: int) -> Path:
        """Note the process group, so a restarted runner can find what it left."""
        labels = {**run.labels, "run_id": str(run.run_id), "attempt": str(run.attempt)}
        name = f"{run.run_id}-{run.attempt}.json"
        record = self.codex_homes_root / RUNNING_DIR / name
        record.parent.mkdir(parents=True, exist_ok=True)
        entry = {"pid": pid, "start": start_time(pid), "labels": labels}
        record.write_text(json.dumps(entry))
        return record

    async def cleanup(self, labels: dict[str, str]) -> int:
        """Kill the process groups a previous runner left with all of `labels`."""
        if not labels:
            raise ValueError("cleanup needs at least one label")
        ours = {a.process.pid for a in self._active.values() if a.process is not None}
        killed = 0
        for record in sorted((self.codex_homes_root / RUNNING_DIR).glob("*.json")):
            try:
                entry = json.loads(record.read_text())
                pid, start = int(entry["pid"]), entry["start"]
                found = entry["labels"].items() >= labels.items()
            except (OSError, ValueError, KeyError, TypeError, AttributeError):
                continue
            if not found or pid in ours:
                continue
            if start is not None and start_time(pid) == start:  # not a reused pid
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.killpg(pid, signal.SIGKILL)
                killed += 1
            record.unlink(missing_ok=True)
        return killed


async def spawn(
    argv: list[str], env: Mapping[str, str], cwd: Path
) -> asyncio.subprocess.Process:
    try:
        return await asyncio.create_subprocess_exec(
            *argv,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            env=dict(env),
            cwd=cwd,
            start_new_session=True,  # its own process group (pgid == pid)
        )
    except FileNotFoundError as exc:
        raise ExecutorError(
            "codex_binary_missing",
            f"{argv[0]} not found (PATH={env.get('PATH', '')}, cwd={cwd}): {exc}",
            retryable=False,
        ) from exc
    except OSError as exc:
        raise ExecutorError(
            "executor_failed", f"cannot start {argv[0]}: {exc}", retryable=True
        ) from exc


async def exit_code(process: asyncio.subprocess.Process) -> int:
    try:
        return await asyncio.wait_for(process.wait(), WAIT_GRACE)
    except TimeoutError as exc:  # it closed stdout yet kept running
        raise ExecutorError(
            "executor_failed",
            f"the agent closed its output but was still running {WAIT_GRACE:.0f} s "
            "later (it has been killed)",
            retryable=True,
        ) from exc


async def tail(stream: asyncio.StreamReader) -> bytes:
    """The last STDERR_KEEP bytes, without holding more than twice that."""
    kept = bytearray()
    async for chunk in chunks(stream):
        kept += chunk
        if len(kept) > 2 * STDERR_KEEP:
            del kept[:-STDERR_KEEP]
    return bytes(kept[-STDERR_KEEP:])


async def chunks(stream: asyncio.StreamReader) -> AsyncIterator[bytes]:
    while chunk := await stream.read(65536):
        yield chunk


def signal_group(process: asyncio.subprocess.Process, signum: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(process.pid, signum)


async def reap(process: asyncio.subprocess.Process) -> None:
    """Kill whatever is left of the group (tools the agent left) and wait for it."""
    signal_group(process, signal.SIGKILL)
    if process.returncode is None:
        await process.wait()


def start_time(pid: int) -> str | None:
    """Field 22 of /proc/<pid>/stat: with the pid, it names one process for good."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return stat.rsplit(")", 1)[1].split()[19]
