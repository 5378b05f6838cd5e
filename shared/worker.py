"""Building a stage worker process: logging, secrets, metrics, broker, topology."""

from __future__ import annotations

import logging

from faststream import FastStream
from faststream.rabbit import Channel, RabbitBroker, RabbitRouter

from shared.liveness import LivenessFile
from shared.logging import configure_logging
from shared.logship import install as install_log_shipper
from shared.metrics import configure_metrics
from shared.redaction import register_settings_secrets
from shared.settings import ServiceSettings
from shared.topology import declare_topology


def build_worker(
    service: str, settings: ServiceSettings, router: RabbitRouter, *, prefetch: int
) -> FastStream:
    """The FastStream app of one stage service; `main.py` calls this once."""
    configure_logging(service, level=settings.log_level, json=settings.log_json)
    register_settings_secrets(settings)
    configure_metrics(settings)
    broker = RabbitBroker(
        str(settings.rabbitmq_url),
        default_channel=Channel(prefetch_count=prefetch),
        graceful_timeout=settings.graceful_timeout,
        logger=logging.getLogger(f"{service}.broker"),
    )
    broker.include_router(router)
    app = FastStream(broker, logger=logging.getLogger(f"{service}.app"))
    shipper = install_log_shipper(service, broker)
    liveness = LivenessFile(settings.liveness_file, lambda: broker.ping(timeout=5.0))

    @app.on_startup
    async def declare() -> None:
        # Before the subscribers start: connect early and declare the whole topology,
        # so `mandatory` commands find their queues whichever service starts first.
        await broker.connect()
        await declare_topology(broker, settings.codex_shards)
        shipper.start()

    @app.after_startup
    async def report_liveness() -> None:
        await liveness.start()  # consuming from here on: the health check may pass

    @app.on_shutdown
    async def stop_shipping() -> None:
        await liveness.stop()
        await shipper.stop()

    return app
