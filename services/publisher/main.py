"""Publisher worker process: `faststream run services.publisher.main:app`."""

from __future__ import annotations

import asyncio
import logging

from faststream import FastStream
from faststream.rabbit import Channel, RabbitBroker

from services.publisher.handlers import SERVICE, router
from services.publisher.settings import Settings
from shared.logging import configure_logging
from shared.metrics import configure_metrics
from shared.redaction import register_settings_secrets
from shared.topology import declare_topology

settings = Settings()
configure_logging(SERVICE, level=settings.log_level, json=settings.log_json)
register_settings_secrets(settings)
configure_metrics(settings)

broker = RabbitBroker(
    str(settings.rabbitmq_url),
    default_channel=Channel(prefetch_count=settings.prefetch),
    graceful_timeout=settings.graceful_timeout,
    logger=logging.getLogger(f"{SERVICE}.broker"),
)
broker.include_router(router)
app = FastStream(broker, logger=logging.getLogger(f"{SERVICE}.app"))


@app.on_startup
async def declare() -> None:
    # Before the subscribers start: connect early and declare the whole topology, so
    # commands published `mandatory` find their queues whichever service starts first.
    await broker.connect()
    await declare_topology(broker, settings.codex_shards)


if __name__ == "__main__":
    asyncio.run(app.run())
