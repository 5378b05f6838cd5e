"""Publisher worker process: `faststream run services.publisher.main:app`."""

from __future__ import annotations

import asyncio

from services.publisher.handlers import SERVICE, router
from services.publisher.settings import Settings
from shared.worker import build_worker

settings = Settings()
app = build_worker(SERVICE, settings, router, prefetch=settings.prefetch)

if __name__ == "__main__":
    asyncio.run(app.run())
