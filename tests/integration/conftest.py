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

from services.api.db import Database
from services.api.main import create_app
from services.api.migrate import prepare_database
from services.api.relay import Relay, build_broker
from services.api.settings import AuthMode, Settings
from shared.topology import EXCHANGE
from tests.support.canary import (
    INTERNAL_TOKEN,
    SECRETS_KEY,
    SEED_ENV,
    CanaryAudit,
    attach_capture,
    database_dump,
    dump_leaks,
)
from tests.support.harness import StageHarness
from tests.support.infra import Infra
from tests.support.lifespan import caching_tokens, lifespan
from tests.support.sandbox import Sandbox, open_sandbox

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
            "SECRETS_KEY": SECRETS_KEY,
            "INTERNAL_API_TOKEN": INTERNAL_TOKEN,
            **SEED_ENV,
        }
    )


@pytest.fixture(scope="session")
def canary() -> CanaryAudit:
    return CanaryAudit()


@pytest_asyncio.fixture(scope="session", loop_scope="session")
async def app(settings: Settings, canary: CanaryAudit) -> FastAPI:
    """The API app (routes and AMQP consumers) on a migrated database; not started."""
    await prepare_database(str(settings.database_url))
    application = create_app(settings)
    attach_capture(canary)
    return application


@pytest_asyncio.fixture(scope="session", loop_scope="session")
async def api(
    settings: Settings, app: FastAPI, canary: CanaryAudit, artifacts_root: Path
) -> AsyncIterator[httpx.AsyncClient]:
    """The API app with its consumers started, plus a running relay.

    Yields an HTTP client bound to the app. At the end of the session the canary
    audit must find the seeded secrets in no log line, response, message or artifact.
    """
    database = Database(str(settings.database_url), pool_size=3)
    relay_broker = build_broker(settings)
    async with lifespan(app):
        await canary.start_tap(str(settings.rabbitmq_url), EXCHANGE.name)
        await relay_broker.connect()
        relay = Relay(settings, database, relay_broker)
        relay_task = asyncio.create_task(relay.serve())
        try:
            async with httpx.AsyncClient(
                transport=httpx.ASGITransport(app=app),
                base_url="http://api",
                event_hooks={"response": [canary.record_response]},
            ) as client:
                yield client
        finally:
            relay.stop.set()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(relay_task, 10)
            await relay_broker.stop()
            await database.dispose()
            await canary.stop_tap()
    assert canary.logs, "the canary audit captured no log line: is its sink attached?"
    leaks = canary.leaks(artifacts_root)
    leaks += dump_leaks(await database_dump(str(settings.database_url)))
    assert not leaks, "canary secrets leaked:\n" + "\n".join(leaks[:20])


@pytest.fixture(scope="session")
def token_settings(settings: Settings) -> Settings:
    """The same database, broker and keys, with AUTH_MODE=token."""
    return settings.model_copy(update={"auth_mode": AuthMode.TOKEN})


@pytest_asyncio.fixture(scope="session", loop_scope="session")
async def token_app(
    token_settings: Settings, api: httpx.AsyncClient, canary: CanaryAudit
) -> AsyncIterator[FastAPI]:
    """A second app in token mode, HTTP only: its consumers are not started (the
    session app's consumers and relay carry its runs). Its token cache is on, as
    in production: a token change reaches it by NOTIFY, milliseconds later."""
    del api  # the session app first: it migrated the database
    application = create_app(token_settings)
    attach_capture(canary)  # create_app reconfigured logging
    async with caching_tokens(application):
        yield application


@pytest_asyncio.fixture(scope="session", loop_scope="session")
async def token_api(
    token_app: FastAPI, canary: CanaryAudit
) -> AsyncIterator[httpx.AsyncClient]:
    """The token-mode app's HTTP client."""
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=token_app),
        base_url="http://token-api",
        event_hooks={"response": [canary.record_response]},
    ) as client:
        yield client


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


@pytest_asyncio.fixture(scope="session", loop_scope="session")
async def sandbox(
    settings: Settings,
    api: httpx.AsyncClient,
    canary: CanaryAudit,
    artifacts_root: Path,
) -> AsyncIterator[Sandbox]:
    """A throw-away stack on its own database and vhost, for probes that would disturb
    the session's shared state (see tests/support/sandbox.py)."""
    del api  # inside the session stack: its canary audit runs after this closes
    async with open_sandbox(settings, canary, artifacts_root, SHARDS) as box:
        yield box
