"""The agent in a fresh container per run, through the Docker API (Podman's too).

create -> start -> follow stdout -> wait -> stderr tail -> delete(force) in a
`finally`. Never AutoRemove: Podman 4.3 then loses the exit code
(../shared/notes/container-engine.md §8).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any
from uuid import UUID

import aiodocker
from aiodocker.exceptions import DockerError

from services.codex_runner.agent import (
    CONTAINER_AGENT_HOME,
    CONTAINER_OUTPUT,
    CONTAINER_WORKSPACE,
    Agent,
    AgentRun,
    ExecResult,
    ExecutorError,
    OnLine,
)
from services.codex_runner.executors.engine import (
    engine_error,
    find,
    is_running,
    kill,
    remove,
    stop_following,
)
from services.codex_runner.executors.streaming import (
    LAST_MESSAGE,
    WAIT_GRACE,
    Active,
    Ended,
    LineFollower,
    stderr_tail,
)

APP_UID = APP_GID = 1000
"""The agent's user in the container; the workspace and output dir must be its own."""


def claim_for_agent(
    paths: Iterable[Path], uid: int = APP_UID, gid: int = APP_GID
) -> None:
    """Create the dirs and hand them, recursively, to the container's user.

    The runner runs (and clones) as root; Codex runs as uid 1000 and must write there.
    Not root: nothing it may change, so nothing is changed.
    """
    for path in paths:
        path.mkdir(parents=True, exist_ok=True)
        if os.geteuid() != 0:
            continue
        for root, dirs, files in os.walk(path):
            for name in (".", *dirs, *files):
                entry = os.path.join(root, name)
                st = os.lstat(entry)
                if (st.st_uid, st.st_gid) != (uid, gid):
                    os.lchown(entry, uid, gid)


class DockerExecutor:
    """Runs the agent's image with the workspace, output dir and auth volume mounted.

    The workspace and output dir are chowned to uid 1000 before start, so a runner
    reading the workspace back as another user needs git's `safe.directory`.
    """

    def __init__(
        self,
        docker_url: str | None,
        *,
        network_mode: str = "bridge",
        memory_bytes: int = 4 * 2**30,
        nano_cpus: int = 2_000_000_000,
        pids_limit: int = 1024,
        nofile: int = 4096,
        nproc: int = 2048,
        stop_timeout: int = 10,
    ) -> None:
        self.docker_url = docker_url
        self.network_mode = network_mode
        self.memory_bytes = memory_bytes
        self.nano_cpus = nano_cpus
        self.pids_limit = pids_limit
        self.nofile = nofile
        self.nproc = nproc
        self.stop_timeout = stop_timeout
        self._active: dict[UUID, Active] = {}

    def container_config(self, run: AgentRun, agent: Agent) -> dict[str, Any]:
        last_message = f"{CONTAINER_OUTPUT}/{LAST_MESSAGE}"
        env = agent.environment(run, CONTAINER_AGENT_HOME)
        labels = {**run.labels, "run_id": str(run.run_id), "attempt": str(run.attempt)}
        return {
            "Image": agent.image,
            "Cmd": agent.command(CONTAINER_WORKSPACE, last_message, run.prompt),
            "User": f"{APP_UID}:{APP_GID}",
            "WorkingDir": CONTAINER_WORKSPACE,
            "Env": [f"{name}={value}" for name, value in env.items()],
            "Labels": labels,
            # stdin stays closed: Codex reads it to EOF and would hang on an open one.
            "OpenStdin": False,
            "AttachStdin": False,
            "StdinOnce": False,
            "Tty": False,
            "HostConfig": {
                "Binds": [
                    f"{run.workspace}:{CONTAINER_WORKSPACE}:rw",
                    f"{run.output_dir}:{CONTAINER_OUTPUT}:rw",
                    f"{run.auth_volume}:{CONTAINER_AGENT_HOME}:rw",
                ],
                "NetworkMode": self.network_mode,
                "AutoRemove": False,
                "Memory": self.memory_bytes,
                "NanoCpus": self.nano_cpus,
                "PidsLimit": self.pids_limit,
                # Replaces Podman's whole default list: without nproc, start() fails.
                "Ulimits": [
                    {"Name": "nofile", "Soft": self.nofile, "Hard": self.nofile},
                    {"Name": "nproc", "Soft": self.nproc, "Hard": self.nproc},
                ],
            },
        }

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
        active = self._active[run.run_id] = Active()
        try:
            await asyncio.to_thread(claim_for_agent, [run.workspace, run.output_dir])
            async with aiodocker.Docker(url=self.docker_url) as docker:
                container = await self._create(docker, run, agent)
                follower: LineFollower | None = None
                try:
                    if active.cancelled:  # while the container was being created
                        return ExecResult(exit_code=None, cancelled=True)
                    await container.start()
                    stream = container.log(stdout=True, follow=True)
                    follower = LineFollower(stream, on_line)
                    ended = await follower.follow(
                        deadline=deadline, idle_timeout=idle_timeout
                    )
                    if ended is not Ended.EOF:
                        await kill(container)
                        await follower.drain(WAIT_GRACE)
                    return await self._result(container, run, active, ended)
                except DockerError as exc:
                    raise engine_error(exc, "running the container") from exc
                finally:
                    if follower is not None:
                        await asyncio.shield(stop_following(container, follower))
                    await asyncio.shield(remove(container))
        finally:
            active.done.set()
            self._active.pop(run.run_id, None)

    async def _create(
        self, docker: aiodocker.Docker, run: AgentRun, agent: Agent
    ) -> Any:
        config = self.container_config(run, agent)
        try:
            return await docker.containers.create(config=config)
        except DockerError as exc:
            if exc.status == 404:
                raise ExecutorError(
                    "codex_image_missing",
                    f"image {agent.image} is not on the container engine",
                    retryable=False,
                ) from exc
            raise engine_error(exc, "creating the container") from exc

    async def _result(
        self, container: Any, run: AgentRun, active: Active, ended: Ended
    ) -> ExecResult:
        try:
            state = await asyncio.wait_for(container.wait(), WAIT_GRACE)
        except TimeoutError as exc:
            raise ExecutorError(
                "executor_failed",
                f"the engine reported no exit {WAIT_GRACE:.0f} s after the agent's "
                "output ended",
                retryable=True,
            ) from exc
        stderr = "".join(await container.log(stderr=True, tail="200"))
        return ExecResult(
            exit_code=state.get("StatusCode"),
            timed_out=ended is Ended.TIMED_OUT,
            stalled=ended is Ended.STALLED,
            cancelled=active.cancelled,
            stderr_tail=stderr_tail(stderr, run.credentials.values()),
        )

    async def cancel(self, run_id: UUID) -> bool:
        """Stop (grace `stop_timeout`, then kill) the run's container; wait until gone.

        True when an agent was running (or about to start) for this run.
        """
        active = self._active.get(run_id)
        if active is not None:
            active.cancelled = True
        labels = {"run_id": str(run_id)}
        try:
            async with aiodocker.Docker(url=self.docker_url) as docker:
                found = await find(docker, labels)
                running = [c for c in found if is_running(c)]
                await asyncio.gather(*(self._stop(c) for c in running))
                if active is not None:
                    # run() reads the exit code and stderr, then deletes the container.
                    wait = self.stop_timeout + WAIT_GRACE
                    await asyncio.wait_for(active.done.wait(), wait)
                await asyncio.gather(*(remove(c) for c in found))
                if await find(docker, labels):
                    raise ExecutorError(
                        "executor_failed",
                        f"containers of run {run_id} survived cancel",
                        retryable=True,
                    )
        except DockerError as exc:
            raise engine_error(exc, "cancelling a run") from exc
        return bool(running) or active is not None

    async def _stop(self, container: Any) -> None:
        with contextlib.suppress(DockerError):
            await container.stop(t=self.stop_timeout)
        with contextlib.suppress(DockerError):
            if (await container.show())["State"]["Running"]:
                await kill(container)

    async def cleanup(self, labels: dict[str, str]) -> int:
        """Delete every container (running or not) carrying all of `labels`."""
        if not labels:
            raise ValueError("cleanup needs at least one label")
        try:
            async with aiodocker.Docker(url=self.docker_url) as docker:
                found = await find(docker, labels)
                await asyncio.gather(*(remove(c) for c in found))
        except DockerError as exc:
            raise engine_error(exc, "removing leftover containers") from exc
        return len(found)
