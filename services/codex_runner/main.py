"""Codex runner process for one shard.

Run with `faststream run services.codex_runner.main:app`.
"""

from __future__ import annotations

import asyncio
import logging

from faststream import FastStream
from faststream.rabbit import Channel, RabbitBroker

from services.codex_runner.handlers import SERVICE, shard_router
from services.codex_runner.settings import Settings
from shared.logging import configure_logging
from shared.metrics import configure_metrics
from shared.redaction import register_settings_secrets
from shared.topology import declare_topology

CODEX_PREFETCH = 1
"""Forced, whatever PREFETCH says: a Codex login must never serve two runs at once."""

settings = Settings()
configure_logging(SERVICE, level=settings.log_level, json=settings.log_json)
register_settings_secrets(settings)
configure_metrics(settings)

broker = RabbitBroker(
    str(settings.rabbitmq_url),
    default_channel=Channel(prefetch_count=CODEX_PREFETCH),
    graceful_timeout=settings.graceful_timeout,
    logger=logging.getLogger(f"{SERVICE}.broker"),
)
broker.include_router(shard_router(settings.codex_shard_index))
app = FastStream(broker, logger=logging.getLogger(f"{SERVICE}.app"))


@app.on_startup
async def declare() -> None:
    # Before the subscribers start: connect early and declare the whole topology, so
    # commands published `mandatory` find their queues whichever service starts first.
    await broker.connect()
    await declare_topology(broker, settings.codex_shards)


if __name__ == "__main__":
    asyncio.run(app.run())
