"""Fixtures only; shared test code lives in tests/support/."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest_asyncio

from tests.support.infra import Infra, provision


@pytest_asyncio.fixture(scope="session", loop_scope="session")
async def infra() -> AsyncIterator[Infra]:
    """This session's own empty Postgres database and RabbitMQ vhost."""
    async with provision() as session_infra:
        yield session_infra
