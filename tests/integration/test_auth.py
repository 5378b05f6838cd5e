"""AUTH_MODE=token: every route but health needs a bearer token.

Users see and act on only their own runs and keys.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import httpx
import pytest
import pytest_asyncio
from fastapi import FastAPI
from sqlalchemy import select, update

from services.api import accounts
from services.api.db import Database
from services.api.main import create_app
from services.api.models import ApiToken
from services.api.models import User as UserRow
from services.api.settings import Settings
from services.api.tokencache import TokenCache
from shared.messages import ApplyAndPublish, TaskName
from tests.support.api import RUNS, wait_for
from tests.support.canary import INTERNAL_TOKEN
from tests.support.harness import StageHarness

PUBLIC = {"/healthz", "/readyz"}


@dataclass(frozen=True)
class User:
    id: uuid.UUID
    token: str
    token_id: uuid.UUID

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"}


async def new_user(database: Database, ttl: timedelta | None = None) -> User:
    async with database.new_session() as session, session.begin():
        user = await accounts.create_user(
            session, f"u-{uuid.uuid4().hex[:10]}@example.com"
        )
        issued = await accounts.issue_token(session, user, name="test", ttl=ttl)
    return User(user.id, issued.token, issued.id)


@pytest_asyncio.fixture(loop_scope="session")
async def alice(database: Database) -> User:
    return await new_user(database)


@pytest_asyncio.fixture(loop_scope="session")
async def bob(database: Database) -> User:
    return await new_user(database)


def every_route(settings: Settings) -> list[tuple[str, str]]:
    """(method, path template) of every operation in the token-mode app's OpenAPI."""
    schema = create_app(settings).openapi()
    return sorted(
        (method.upper(), path)
        for path, operations in schema["paths"].items()
        for method in operations
    )


def fill(path: str, run_id: str) -> str:
    return (
        path.replace("{run_id}", run_id)
        .replace("{artifact_id}", str(uuid.uuid4()))
        .replace("{provider}", "github")
    )


async def test_every_route_but_health_needs_a_token(
    token_api: httpx.AsyncClient, token_settings: Settings
) -> None:
    routes = every_route(token_settings)
    assert len(routes) >= 14
    checked = 0
    for method, path in routes:
        response = await token_api.request(
            method, fill(path, str(uuid.uuid4())), json={}
        )
        if path in PUBLIC:
            assert response.status_code in (200, 503), (method, path)
            continue
        assert response.status_code == 401, (method, path, response.text)
        assert response.json()["detail"]["code"] == "unauthorized"
        assert response.headers["www-authenticate"] == "Bearer"
        checked += 1
    assert checked == len(routes) - len(PUBLIC)
    assert (
        await token_api.get("/openapi.json")
    ).status_code == 404  # no anonymous docs


@pytest.mark.usefixtures("stages")
async def test_users_see_and_act_on_only_their_own_runs(
    token_api: httpx.AsyncClient, token_settings: Settings, alice: User, bob: User
) -> None:
    created = await token_api.post(
        RUNS,
        json={"repository": "acme/shop", "featureKey": f"a-{uuid.uuid4().hex[:8]}"},
        headers=alice.headers,
    )
    assert created.status_code == 202, created.text
    run = created.json()
    assert run["createdBy"] == str(alice.id)
    await wait_for(token_api, run["id"], headers=alice.headers)

    for method, path in every_route(token_settings):
        if "{run_id}" not in path or path.startswith("/internal/"):
            continue  # /internal takes the service token only (tested below)
        response = await token_api.request(
            method, fill(path, run["id"]), json={}, headers=bob.headers
        )
        assert response.status_code == 404, (method, path, response.text)
    mine = (
        await token_api.get(RUNS, params={"limit": 100}, headers=bob.headers)
    ).json()
    assert run["id"] not in {r["id"] for r in mine["items"]}
    theirs = (
        await token_api.get(RUNS, params={"limit": 100}, headers=alice.headers)
    ).json()
    assert run["id"] in {r["id"] for r in theirs["items"]}
    own = await token_api.get(f"{RUNS}/{run['id']}", headers=alice.headers)
    assert own.status_code == 200


async def test_the_creator_comes_from_the_token_never_the_body(
    token_api: httpx.AsyncClient, alice: User, bob: User
) -> None:
    body = {
        "repository": "acme/shop",
        "featureKey": f"b-{uuid.uuid4().hex[:8]}",
        "createdBy": str(bob.id),
    }
    refused = await token_api.post(RUNS, json=body, headers=alice.headers)
    assert refused.status_code == 422
    del body["createdBy"]
    accepted = await token_api.post(RUNS, json=body, headers=alice.headers)
    assert accepted.json()["createdBy"] == str(alice.id)
    await token_api.post(
        f"{RUNS}/{accepted.json()['id']}/cancel", headers=alice.headers
    )


async def test_credentials_belong_to_the_caller(
    token_api: httpx.AsyncClient, alice: User, bob: User
) -> None:
    stored = await token_api.put(
        "/api/me/credentials/openai",
        json={"value": "sk-alice-" + uuid.uuid4().hex},
        headers=alice.headers,
    )
    assert stored.status_code == 200
    assert (
        await token_api.get("/api/me/credentials/openai", headers=bob.headers)
    ).status_code == 404
    assert (await token_api.get("/api/me/credentials", headers=bob.headers)).json() == {
        "items": []
    }


@pytest.mark.parametrize(
    "authorization",
    [
        "Bearer",
        "Bearer ",
        "Token sw_abc",
        "Bearer sw_not-a-real-token",
        "Bearer " + "x" * 5000,
        f"Bearer {INTERNAL_TOKEN}",  # the service token is not a user token
    ],
)
async def test_malformed_or_unknown_tokens_are_401(
    token_api: httpx.AsyncClient, authorization: str
) -> None:
    response = await token_api.get(RUNS, headers={"Authorization": authorization})
    assert response.status_code == 401
    assert response.json()["detail"]["code"] == "unauthorized"


async def refused_soon(
    api: httpx.AsyncClient,
    user: User,
    timeout: float = 5.0,  # noqa: ASYNC109 - expiry is an AssertionError
) -> None:
    """The change reaches the app's token cache by NOTIFY, milliseconds after its
    commit; until then the cached answer may stand."""
    deadline = time.monotonic() + timeout
    while (await api.get(RUNS, headers=user.headers)).status_code != 401:
        assert time.monotonic() < deadline, "the token is still accepted"
        await asyncio.sleep(0.01)


async def test_revoked_and_expired_tokens_are_refused(
    token_api: httpx.AsyncClient, token_app: FastAPI, database: Database
) -> None:
    """Through the session token app's cache (on, as in production)."""
    cache: TokenCache = token_app.state.token_cache
    revoked = await new_user(database)
    assert (await token_api.get(RUNS, headers=revoked.headers)).status_code == 200
    assert accounts.hash_token(revoked.token) in cache.entries
    async with database.new_session() as session, session.begin():
        assert await accounts.revoke_token(session, revoked.token_id)
    await refused_soon(token_api, revoked)

    expiring = await new_user(database, ttl=timedelta(days=1))
    assert (await token_api.get(RUNS, headers=expiring.headers)).status_code == 200
    async with database.new_session() as session, session.begin():
        await session.execute(
            update(ApiToken)
            .where(ApiToken.id == expiring.token_id)
            .values(expires_at=datetime.now(UTC) - timedelta(seconds=1))
        )
    await refused_soon(token_api, expiring)


async def test_user_tokens_do_not_open_the_internal_api(
    token_api: httpx.AsyncClient, alice: User
) -> None:
    response = await token_api.post(
        f"/internal/runs/{uuid.uuid4()}/secrets",
        json={"providers": ["github"]},
        headers=alice.headers,
    )
    assert response.status_code == 401


async def test_only_hashes_of_tokens_are_stored(
    database: Database, alice: User
) -> None:
    async with database.new_session() as session:
        row = await session.get(ApiToken, alice.token_id)
    assert row is not None
    assert row.token_hash == accounts.hash_token(alice.token)
    assert alice.token not in (row.token_hash, row.prefix, row.name)


async def test_publish_command_names_the_requesting_user(
    token_api: httpx.AsyncClient, stages: StageHarness, database: Database, alice: User
) -> None:
    key = f"c-{uuid.uuid4().hex[:8]}"
    created = await token_api.post(
        RUNS, json={"repository": "acme/shop", "featureKey": key}, headers=alice.headers
    )
    await wait_for(token_api, created.json()["id"], headers=alice.headers)
    async with database.new_session() as session:
        email = await session.scalar(
            select(UserRow.email).where(UserRow.id == alice.id)
        )
    (publish,) = stages.commands(key, TaskName.APPLY_AND_PUBLISH)
    assert isinstance(publish, ApplyAndPublish)
    assert publish.requested_by == email
