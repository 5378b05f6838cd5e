"""The API (HTTP + AMQP consumers), the outbox relay and scripted stages.

All on this session's database and vhost.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
import pytest_asyncio
from fastapi import FastAPI
from faststream_fastapi import FastStreamAPI

from services.api.db import Database
from services.api.main import create_app
from services.api.migrate import prepare_database
from services.api.relay import Relay, build_broker
from services.api.settings import Settings
from tests.support.harness import StageHarness
from tests.support.infra import Infra
from tests.support.lifespan import lifespan

SHARDS = 3


@pytest.fixture(scope="session")
def artifacts_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("artifacts")


@pytest.fixture(scope="session")
def settings(infra: Infra, artifacts_root: Path) -> Settings:
    return Settings(
        **{  # type: ignore[arg-type]
            "DATABASE_URL": infra.database_url,
            "RABBITMQ_URL": infra.rabbitmq_url,
            "ARTIFACTS_ROOT": str(artifacts_root),
            "CODEX_SHARDS": SHARDS,
            "RELAY_INTERVAL": 0.5,
            "REAPER_INTERVAL": 0.3,
            "LEASE_MAX_REDISPATCH": 1,
            "LOG_JSON": False,
            "LOG_LEVEL": "WARNING",
        }
    )


@pytest_asyncio.fixture(scope="session", loop_scope="session")
async def app(settings: Settings) -> FastStreamAPI:
    """The API app (routes and AMQP consumers) on a migrated database; not started."""
    await prepare_database(str(settings.database_url))
    return create_app(settings)


@pytest.fixture(scope="session")
def fastapi_app(app: FastStreamAPI) -> FastAPI:
    """The FastAPI half, for dependency overrides.

    faststream-fastapi has no public accessor for it.
    """
    application: FastAPI = app._application
    return application


@pytest_asyncio.fixture(scope="session", loop_scope="session")
async def api(
    settings: Settings, app: FastStreamAPI
) -> AsyncIterator[httpx.AsyncClient]:
    """The API app with its consumers started, plus a running relay.

    Yields an HTTP client bound to the app.
    """
    database = Database(str(settings.database_url), pool_size=3)
    relay_broker = build_broker(settings)
    async with lifespan(app):
        await relay_broker.connect()
        relay = Relay(settings, database, relay_broker)
        relay_task = asyncio.create_task(relay.serve())
        try:
            async with httpx.AsyncClient(
                transport=httpx.ASGITransport(app=app), base_url="http://api"
            ) as client:
                yield client
        finally:
            relay.stop.set()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(relay_task, 10)
            await relay_broker.stop()
            await database.dispose()


@pytest_asyncio.fixture(scope="session", loop_scope="session")
async def stages(
    settings: Settings, api: httpx.AsyncClient, artifacts_root: Path
) -> AsyncIterator[StageHarness]:
    del api  # requested for ordering only: the API consumes what the stages send
    harness = StageHarness(str(settings.rabbitmq_url), SHARDS, artifacts_root)
    await harness.start()
    yield harness
    await harness.stop()


@pytest_asyncio.fixture(scope="session", loop_scope="session")
async def database(
    settings: Settings, api: httpx.AsyncClient
) -> AsyncIterator[Database]:
    """Direct database access for assertions (the schema exists once `api` started)."""
    del api  # requested for ordering only
    db = Database(str(settings.database_url), pool_size=2)
    yield db
    await db.dispose()
