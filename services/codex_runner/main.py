"""Codex runner for one shard: `faststream run services.codex_runner.main:app`."""

from __future__ import annotations

import asyncio

from services.codex_runner.handlers import SERVICE, shard_router
from services.codex_runner.settings import Settings
from shared.worker import build_worker

CODEX_PREFETCH = 1
"""Forced, whatever PREFETCH says: a Codex login must never serve two runs at once."""

settings = Settings()
app = build_worker(
    SERVICE, settings, shard_router(settings.codex_shard_index), prefetch=CODEX_PREFETCH
)

if __name__ == "__main__":
    asyncio.run(app.run())
