"""Preflight worker process: `faststream run services.preflight.main:app`."""

from __future__ import annotations

import asyncio

from services.preflight.handlers import SERVICE, router
from services.preflight.settings import Settings
from shared.worker import build_worker

settings = Settings()
app = build_worker(SERVICE, settings, router, prefetch=settings.prefetch)

if __name__ == "__main__":
    asyncio.run(app.run())
