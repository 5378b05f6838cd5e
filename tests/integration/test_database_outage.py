"""While PostgreSQL cannot be reached the API answers 503 with a code, never 500."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator

import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession

from services.api import accounts
from services.api.db import Database, database_dep, get_session
from services.api.main import create_app
from services.api.settings import Settings
from tests.support.api import RUNS

GOOD = {"repository": "acme/shop", "featureKey": "outage-1"}


@pytest.fixture
def dead_database(app: FastAPI) -> Iterator[None]:
    """Route every request's session to a port where no PostgreSQL listens."""
    dead = Database("postgresql+asyncpg://postgres@127.0.0.1:9/nowhere")

    async def unreachable() -> AsyncIterator[AsyncSession]:
        async with dead.new_session() as session:
            yield session

    async def unreachable_database() -> Database:
        return dead  # the read routes take the database itself

    app.dependency_overrides[get_session] = unreachable
    app.dependency_overrides[database_dep] = unreachable_database
    yield
    app.dependency_overrides.pop(get_session)
    app.dependency_overrides.pop(database_dep)


@pytest.mark.usefixtures("dead_database")
@pytest.mark.parametrize(
    ("method", "path", "body"),
    [
        ("POST", RUNS, GOOD),
        ("GET", RUNS, None),
        ("GET", f"{RUNS}/00000000-0000-0000-0000-000000000001", None),
        ("POST", f"{RUNS}/00000000-0000-0000-0000-000000000001/retry", None),
        ("GET", "/api/workflows/speckit/codex/shards", None),
    ],
)
async def test_database_outage_is_a_503(
    api: httpx.AsyncClient, method: str, path: str, body: object
) -> None:
    response = await api.request(method, path, json=body)

    assert response.status_code == 503, response.text
    assert response.json()["detail"]["code"] == "database_unavailable"


@pytest.mark.usefixtures("dead_database")
async def test_database_outage_still_validates_input_first(
    api: httpx.AsyncClient,
) -> None:
    response = await api.post(RUNS, json={"repository": "-x"})
    assert response.status_code == 422


@pytest.fixture
def busy_database(app: FastAPI, settings: Settings) -> Iterator[Database]:
    """Route every request's session to a pool of one connection, no overflow, and a
    short wait for it (the API's own waits 30 s)."""
    busy = Database(
        str(settings.database_url), pool_size=1, max_overflow=0, pool_timeout=0.3
    )

    async def pooled() -> AsyncIterator[AsyncSession]:
        async with busy.new_session() as session:
            yield session

    async def pooled_database() -> Database:
        return busy

    app.dependency_overrides[get_session] = pooled
    app.dependency_overrides[database_dep] = pooled_database
    yield busy
    app.dependency_overrides.pop(get_session)
    app.dependency_overrides.pop(database_dep)


async def test_a_pool_that_stays_busy_is_a_503(
    api: httpx.AsyncClient, busy_database: Database
) -> None:
    async with busy_database.engine.connect() as held:  # the pool's only connection
        await held.execute(text("SELECT 1"))
        response = await api.post(RUNS, json={**GOOD, "featureKey": "busy-1"})

    assert response.status_code == 503, response.text
    assert response.json()["detail"]["code"] == "database_unavailable"
    await busy_database.dispose()


async def test_token_check_during_an_outage_is_a_503(token_settings: Settings) -> None:
    """Token mode looks the bearer token up before anything else: with no database
    that lookup is answered 503, not 500 or 401."""
    dead = token_settings.model_copy(
        update={"database_url": "postgresql+asyncpg://postgres@127.0.0.1:9/nowhere"}
    )
    app = create_app(dead)
    try:
        async with httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app), base_url="http://dead"
        ) as client:
            response = await client.get(
                RUNS, headers={"Authorization": f"Bearer {accounts.new_token()}"}
            )
    finally:
        await app.state.database.dispose()

    assert response.status_code == 503, response.text
    assert response.json()["detail"]["code"] == "database_unavailable"
