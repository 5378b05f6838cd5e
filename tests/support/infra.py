"""A private Postgres database and RabbitMQ vhost per test session (`infra` fixture).

Both servers are always up on development and CI machines (`make services`), so an
unreachable one raises `InfraUnavailable`: a failure, never a skip.
"""

from __future__ import annotations

import asyncio
import secrets
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote, urlsplit, urlunsplit

import asyncpg
import httpx
from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict
from sqlalchemy.engine import URL, make_url

from services.cli.broker import (
    AmqpTarget,
    amqp_target,
    delete_vhost,
    management_client,
    setup_broker,
    vhost_path,
)

DELIVERY_LIMIT = 5  # fixed, not read from DELIVERY_LIMIT: tests count on it
START_HINT = "start it with `make services`"


class InfraUnavailable(RuntimeError):
    """PostgreSQL or RabbitMQ (or its management API) could not be reached."""


class InfraSettings(BaseSettings):
    """The servers to borrow from: only host, port and credentials are used."""

    model_config = SettingsConfigDict(
        env_file=".env", env_ignore_empty=True, extra="ignore"
    )

    database_url: str = Field(
        "postgresql://postgres@127.0.0.1:5432/postgres", validation_alias="DATABASE_URL"
    )
    rabbitmq_url: str = Field(
        "amqp://guest:guest@127.0.0.1:5672/", validation_alias="RABBITMQ_URL"
    )
    management_url: str = Field(
        "http://127.0.0.1:15672", validation_alias="RABBITMQ_MANAGEMENT_URL"
    )


@dataclass(frozen=True)
class QueueInfo:
    """A queue as the management API reports it (statistics lag a few seconds)."""

    name: str
    type: str  # quorum, classic, stream
    messages: int  # ready + unacknowledged
    consumers: int
    policy: str | None
    arguments: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Infra:
    """This session's database (empty: no migrations run) and vhost (policy applied)."""

    database_url: str  # postgresql+asyncpg://…/sw_test_<hex>
    rabbitmq_url: str  # amqp://…/sw_test_<hex>
    vhost: str
    management_url: str
    delivery_limit: int = DELIVERY_LIMIT

    def management(self) -> httpx.AsyncClient:
        """A management API client (base `<management_url>/api`); use `async with`."""
        return management_client(self.management_url, amqp_target(self.rabbitmq_url))

    async def list_queues(self) -> list[QueueInfo]:
        async with self.management() as client:
            response = await client.get(f"/queues/{vhost_path(self.vhost)}")
        response.raise_for_status()
        return sorted((_queue_info(q) for q in response.json()), key=lambda q: q.name)

    async def queue(self, name: str) -> QueueInfo:
        async with self.management() as client:
            response = await client.get(
                f"/queues/{vhost_path(self.vhost)}/{quote(name, safe='')}"
            )
        response.raise_for_status()
        return _queue_info(response.json())

    async def queue_messages(self, name: str) -> int:
        """Messages ready plus unacknowledged, as last sampled by the broker."""
        return (await self.queue(name)).messages

    async def wait_queue_messages(
        self,
        name: str,
        expected: int,
        timeout: float = 15.0,  # noqa: ASYNC109 - expiry is an AssertionError
    ) -> None:
        """Poll until the sampled count is `expected` (samples come every ~5 s)."""
        deadline = time.monotonic() + timeout
        while (seen := await self.queue_messages(name)) != expected:
            if time.monotonic() >= deadline:
                raise AssertionError(
                    f"queue {name}: {seen} messages after {timeout:g}s, "
                    f"expected {expected}"
                )
            await asyncio.sleep(0.5)


@asynccontextmanager
async def provision(settings: InfraSettings | None = None) -> AsyncIterator[Infra]:
    """Create `sw_test_<hex>` as a database and as a vhost; drop both at exit."""
    settings = settings or InfraSettings()
    name = f"sw_test_{secrets.token_hex(6)}"
    server = make_url(settings.database_url)
    admin = server.set(drivername="postgresql", database="postgres")
    database_url = server.set(drivername="postgresql+asyncpg", database=name)
    broker = amqp_target(settings.rabbitmq_url)
    target = AmqpTarget(broker.user, broker.password, name)
    amqp = urlsplit(settings.rabbitmq_url)
    infra = Infra(
        database_url=database_url.render_as_string(hide_password=False),
        rabbitmq_url=urlunsplit(amqp._replace(path="/" + vhost_path(name))),
        vhost=name,
        management_url=settings.management_url,
    )

    await _postgres(admin, f'CREATE DATABASE "{name}"')
    try:
        await _management(settings.management_url, target, create=True)
        try:
            yield infra
        finally:
            await _management(settings.management_url, target, create=False)
    finally:
        await _postgres(admin, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


async def _postgres(admin: URL, statement: str) -> None:
    try:
        dsn = admin.render_as_string(hide_password=False)
        connection = await asyncpg.connect(dsn, timeout=10)
    except (OSError, TimeoutError, asyncpg.PostgresError) as error:
        raise InfraUnavailable(
            f"PostgreSQL at {admin!r} unreachable ({error!r}); {START_HINT}"
        ) from error
    try:
        await connection.execute(statement)
    finally:
        await connection.close()


async def _management(url: str, target: AmqpTarget, *, create: bool) -> None:
    try:
        async with management_client(url, target) as client:
            if create:
                await setup_broker(client, target, DELIVERY_LIMIT)
            else:
                await delete_vhost(client, target.vhost)
    except httpx.TransportError as error:
        raise InfraUnavailable(
            f"RabbitMQ management API at {url} unreachable ({error!r}); {START_HINT}"
        ) from error


def _queue_info(raw: dict[str, Any]) -> QueueInfo:
    return QueueInfo(
        name=raw["name"],
        type=raw.get("type", "classic"),
        messages=raw.get("messages", 0),
        consumers=raw.get("consumers", 0),
        policy=raw.get("policy") or None,
        arguments=raw.get("arguments", {}),
    )
