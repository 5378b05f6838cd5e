"""Codex runner for one shard: `faststream run services.codex_runner.main:app`.

With CODEX_SHARD_INDEX it serves that shard; without, it claims the lowest shard no
live runner serves (so `--scale codex_runner=3` serves three). Either way it registers
and heartbeats the shard with the API, and removes containers a crashed predecessor
left on this shard.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket

from loguru import logger

from services.codex_runner import handlers
from services.codex_runner.codex import CodexAgent
from services.codex_runner.executors import DockerExecutor, ProcessExecutor
from services.codex_runner.runner import RunnerDeps, shard_labels
from services.codex_runner.settings import Settings
from shared.internal_api import InternalApi, ShardRegistry
from shared.worker import build_worker

CODEX_PREFETCH = 1
"""Forced, whatever PREFETCH says: a Codex login must never serve two runs at once."""

settings = Settings()
hostname = socket.gethostname()
registry = ShardRegistry(settings.api_url, settings.service_token)
shard = (
    settings.codex_shard_index
    if settings.codex_shard_index is not None
    else registry.claim(hostname)
)
app = build_worker(
    handlers.SERVICE, settings, handlers.shard_router(shard), prefetch=CODEX_PREFETCH
)
executor = (
    ProcessExecutor(settings.codex_homes_root, stop_timeout=settings.codex_stop_timeout)
    if settings.executor == "process"
    else DockerExecutor(
        settings.docker_host,
        network_mode=settings.codex_network_mode,
        memory_bytes=settings.codex_memory_mb * 2**20,
        nano_cpus=int(settings.codex_cpus * 1e9),
        stop_timeout=settings.codex_stop_timeout,
    )
)
# One engine may serve several deployments (each has its own vhost): label ours.
deployment = (settings.rabbitmq_url.path or "").strip("/") or "default"
handlers.configure(
    RunnerDeps(
        executor=executor,
        agent=CodexAgent(
            settings.codex_image,
            model=settings.codex_model,
            config_overrides=settings.codex_config_overrides,
            provider=settings.codex_provider,
            # argv[0] inside the image is `codex`; CODEX_BIN is a host path.
            codex_bin=settings.codex_bin if settings.executor == "process" else "codex",
        ),
        internal_api=InternalApi(settings.api_url, settings.service_token),
        artifacts_root=settings.artifacts_root,
        workspaces_root=settings.workspaces_root,
        github_git_url=settings.github_git_url,
        git_timeout=settings.git_timeout,
        timeout=settings.codex_timeout,
        idle_timeout=settings.codex_idle_timeout,
        deployment=deployment,
    ),
    settings.heartbeat_interval,
    settings.codex_lease_seconds,
)
_tasks: set[asyncio.Task[None]] = set()


async def _register_forever() -> None:
    while True:
        try:
            await registry.heartbeat(shard, hostname)
        except Exception as exc:  # the API may restart; keep serving and try again
            logger.warning("Shard heartbeat failed: {}", type(exc).__name__)
        await asyncio.sleep(settings.heartbeat_interval)


@app.on_startup
async def remove_leftovers() -> None:
    """Before the subscribers start: agents a crashed runner left on this shard."""
    removed = await executor.cleanup(shard_labels(deployment, shard))
    if removed:
        logger.warning(
            "Removed {} agent(s) a previous runner left on shard {}", removed, shard
        )


@app.after_startup
async def start_serving_shard() -> None:
    _tasks.add(asyncio.create_task(_register_forever()))
    logger.info("Serving Codex shard {} as {}", shard, hostname)


@app.on_shutdown
async def stop_registering() -> None:
    for task in _tasks:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


if __name__ == "__main__":
    asyncio.run(app.run())
