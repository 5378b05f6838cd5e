"""A second, throw-away API stack on its own database and vhost.

Probes that create runs, store and delete keys, claim shards or act as the default
user would disturb the session's shared state (other tests count on it), so they run
here: a started disabled-mode app (routes, consumers, topology), a relay, scripted
stages, and an HTTP-only token-mode app, all on a fresh `sw_test_<hex>` database and
vhost that are dropped at the end. Artifacts go to the session's folder, and every
client feeds the session's canary audit.
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

import httpx
from fastapi import FastAPI

from services.api import accounts
from services.api.db import Database
from services.api.main import create_app
from services.api.migrate import prepare_database
from services.api.models import DEFAULT_USER_ID, User
from services.api.relay import Relay, build_broker
from services.api.settings import AuthMode, Settings
from tests.support.canary import CanaryAudit, attach_capture
from tests.support.harness import StageHarness
from tests.support.infra import Infra, provision
from tests.support.lifespan import caching_tokens, lifespan


@dataclass(frozen=True)
class Principal:
    """A user with a bearer token (token mode)."""

    id: uuid.UUID
    token: str

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"}


async def new_principal(database: Database, ttl: timedelta | None = None) -> Principal:
    """A new user and a bearer token of theirs."""
    async with database.new_session() as session, session.begin():
        user = await accounts.create_user(
            session, f"sec-{uuid.uuid4().hex[:10]}@example.com"
        )
        issued = await accounts.issue_token(session, user, name="sec", ttl=ttl)
    return Principal(user.id, issued.token)


@dataclass(frozen=True)
class Sandbox:
    infra: Infra
    settings: Settings  # disabled mode
    token_settings: Settings
    database: Database
    app: FastAPI  # disabled mode, started
    api: httpx.AsyncClient  # disabled mode: every request is the default user
    token_api: httpx.AsyncClient  # token mode, HTTP only
    token_app: FastAPI
    stages: StageHarness

    async def new_user(self, ttl: timedelta | None = None) -> Principal:
        return await new_principal(self.database, ttl)

    async def default_user(self) -> Principal:
        """A token of the default user: the account disabled mode acts as."""
        async with self.database.new_session() as session, session.begin():
            user = await session.get(User, DEFAULT_USER_ID)
            assert user is not None, "the default user is created at start-up"
            issued = await accounts.issue_token(session, user, name="sec", ttl=None)
        return Principal(DEFAULT_USER_ID, issued.token)


@asynccontextmanager
async def open_sandbox(
    base: Settings, canary: CanaryAudit, artifacts_root: Path, shards: int
) -> AsyncIterator[Sandbox]:
    async with provision() as infra:
        await prepare_database(infra.database_url)
        settings = base.model_copy(
            update={
                "database_url": infra.database_url,
                "rabbitmq_url": infra.rabbitmq_url,
                "artifacts_root": artifacts_root,
            }
        )
        token_settings = settings.model_copy(update={"auth_mode": AuthMode.TOKEN})
        app = create_app(settings)
        token_app = create_app(token_settings)
        attach_capture(canary)  # create_app reconfigured logging
        database = Database(infra.database_url, pool_size=3)
        relay_broker = build_broker(settings)
        stages = StageHarness(infra.rabbitmq_url, shards, artifacts_root)
        hooks = {"response": [canary.record_response]}
        # Connected, never started: /readyz answers, no second set of consumers.
        token_broker = token_app.state.broker
        async with lifespan(app), caching_tokens(token_app):
            await token_broker.connect()
            await relay_broker.connect()
            relay = Relay(settings, database, relay_broker)
            relay_task = asyncio.create_task(relay.serve())
            await stages.start()
            try:
                async with (
                    httpx.AsyncClient(
                        transport=httpx.ASGITransport(app=app),
                        base_url="http://sandbox",
                        event_hooks=hooks,
                    ) as api,
                    httpx.AsyncClient(
                        transport=httpx.ASGITransport(app=token_app),
                        base_url="http://sandbox-token",
                        event_hooks=hooks,
                    ) as token_api,
                ):
                    yield Sandbox(
                        infra,
                        settings,
                        token_settings,
                        database,
                        app,
                        api,
                        token_api,
                        token_app,
                        stages,
                    )
            finally:
                await stages.stop()
                relay.stop.set()
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(relay_task, 10)
                await relay_broker.stop()
                await token_broker.stop()
                await database.dispose()
