"""Container engine calls the executor's run, cancel and cleanup share: the errors
they raise, finding a run's containers, kill, and a delete that is verified.

Through the Docker API, Podman's included (../shared/notes/container-engine.md).
"""

from __future__ import annotations

import contextlib
from collections.abc import Mapping
from typing import Any

import aiodocker
from aiodocker.exceptions import DockerError
from loguru import logger

from services.codex_runner.agent import ExecutorError
from services.codex_runner.executors.streaming import LineFollower

ENGINE_DOWN = 900  # aiodocker's status for "cannot connect to the engine"


def engine_error(exc: DockerError, doing: str) -> ExecutorError:
    if exc.status == ENGINE_DOWN:
        return ExecutorError(
            "executor_unavailable",
            f"container engine unreachable while {doing}: {exc.message}",
            retryable=True,
        )
    return ExecutorError(
        "executor_failed",
        f"container engine error while {doing}: {exc.status} {exc.message}",
        retryable=True,
    )


async def find(docker: aiodocker.Docker, labels: Mapping[str, str]) -> list[Any]:
    filters = {"label": [f"{name}={value}" for name, value in labels.items()]}
    containers: list[Any] = await docker.containers.list(all=True, filters=filters)
    return containers


def is_running(listed: Any) -> bool:
    """From a `containers.list` entry (its `State` is a string there)."""
    try:
        return bool(listed["State"] == "running")
    except KeyError:
        return False


async def kill(container: Any) -> None:
    try:
        await container.kill()
    except DockerError as exc:
        if exc.status not in (404, 409):  # it had already stopped or gone
            raise


async def stop_following(container: Any, follower: LineFollower) -> None:
    """Kill before deleting: a log stream cut by a forced delete can end in an error
    that leaves aiodocker's response (and its connection) unreleased."""
    if not follower.eof:
        with contextlib.suppress(DockerError):
            await kill(container)
    await follower.close()


async def remove(container: Any) -> None:
    """delete(force=True), then require show() to answer 404."""
    with contextlib.suppress(DockerError):
        await container.delete(force=True)
    try:
        await container.show()
    except DockerError as exc:
        if exc.status == 404:
            return
        logger.error("Container {} not verified gone: {}", container.id[:12], exc)
        return
    logger.error("Container {} still exists after delete", container.id[:12])
