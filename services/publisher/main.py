"""Publisher worker process: `faststream run services.publisher.main:app`."""

from __future__ import annotations

import asyncio

from services.publisher import handlers
from services.publisher.landing import Identity
from services.publisher.publish import Deps
from services.publisher.settings import Settings
from shared.internal_api import InternalApi
from shared.worker import build_worker

settings = Settings()
app = build_worker(
    handlers.SERVICE, settings, handlers.router, prefetch=settings.prefetch
)
handlers.configure(
    Deps(
        internal_api=InternalApi(settings.api_url, settings.service_token),
        artifacts_root=settings.artifacts_root,
        workspaces_root=settings.workspaces_root,
        github_api_url=settings.github_api_url,
        github_git_url=settings.github_git_url,
        git_timeout=settings.git_timeout,
        started_after=settings.started_after,
        branch_prefix=settings.branch_prefix,
        author=Identity(settings.author_name, settings.author_email),
        co_author=settings.co_author,
        labels=settings.labels,
        max_files=settings.max_files,
        max_lines=settings.max_lines,
    )
)

if __name__ == "__main__":
    asyncio.run(app.run())
