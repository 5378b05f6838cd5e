"""Preflight worker process: `faststream run services.preflight.main:app`."""

from __future__ import annotations

import asyncio

from services.preflight import handlers
from services.preflight.checks import Deps
from services.preflight.probe import DockerLoginProbe, ProbeCache
from services.preflight.settings import Settings
from shared.internal_api import InternalApi
from shared.worker import build_worker

settings = Settings()
app = build_worker(
    handlers.SERVICE, settings, handlers.router, prefetch=settings.prefetch
)
handlers.configure(
    Deps(
        internal_api=InternalApi(settings.api_url, settings.service_token),
        probes=ProbeCache(
            DockerLoginProbe(
                settings.docker_host, settings.codex_image, settings.probe_timeout
            ),
            settings.probe_cache_seconds,
        ),
        artifacts_root=settings.artifacts_root,
        workspaces_root=settings.workspaces_root,
        github_api_url=settings.github_api_url,
        github_git_url=settings.github_git_url,
        git_timeout=settings.git_timeout,
        started_after=settings.started_after,
        codex_image=settings.codex_image,
    )
)

if __name__ == "__main__":
    asyncio.run(app.run())
