"""The auth matrix: every route of the app by every kind of caller → one status.

The routes come from the app's own route table, so a route added without a row here
fails `test_every_route_has_a_row`. Runs in the sandbox stack: the default user (the
closest thing to an admin: disabled mode acts as it, and it holds the seeded keys)
and the credential routes are changed freely there.

There is no admin role: a token of the default user is checked to have no power
over anyone else's runs, like any other user.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import pytest
import pytest_asyncio
from sqlalchemy import update

from services.api.models import ApiToken
from tests.support.api import RUNS, wait_for
from tests.support.canary import INTERNAL_TOKEN
from tests.support.routetable import route_table
from tests.support.sandbox import Principal, Sandbox

CALLERS = ("anonymous", "wrong_token", "expired", "owner", "other", "admin", "service")
USERS = ("owner", "other", "admin")
"""Valid user tokens: `owner` made the run; `other` is a second user; `admin` is the
default user."""
REFUSED = ("anonymous", "wrong_token", "expired", "service")
"""Callers no /api route accepts (the service token opens /internal only)."""

PROVIDER = "openai"
"""Credential routes use this provider: the owner has it stored, the others do not."""
OWNER_KEY = "sk-proj-matrixOWNERkey0123456789abcdeWXYZ"


@dataclass(frozen=True)
class Row:
    expect: dict[str, int | frozenset[int]]
    body: Any = None


def user_route(owner: int, others: int | None = None, body: Any = None) -> Row:
    """A user route: 401 for refused callers, `owner` for the owner, `others` (default
    the same) for another user and the default user."""
    others = owner if others is None else others
    expect: dict[str, int | frozenset[int]] = dict.fromkeys(REFUSED, 401)
    expect |= {"owner": owner, "other": others, "admin": others}
    return Row(expect, body)


def internal_route(status: int | frozenset[int], body: Any) -> Row:
    return Row({**dict.fromkeys(CALLERS, 401), "service": status}, body)


R = "/api/workflows/speckit/runs"
ME = "/api/me/credentials"
MATRIX: dict[tuple[str, str], Row] = {
    ("GET", "/healthz"): Row(dict.fromkeys(CALLERS, 200)),
    ("GET", "/readyz"): Row(dict.fromkeys(CALLERS, 200)),
    ("POST", R): user_route(202, body="new-run"),
    ("GET", R): user_route(200),
    ("GET", R + "/{run_id}"): user_route(200, 404),
    ("POST", R + "/{run_id}/retry"): user_route(409, 404, body={}),  # succeeded run
    ("POST", R + "/{run_id}/cancel"): user_route(409, 404),
    ("GET", R + "/{run_id}/events"): user_route(200, 404),
    ("GET", R + "/{run_id}/artifacts"): user_route(200, 404),
    ("GET", R + "/{run_id}/artifacts/{artifact_id}"): user_route(200, 404),
    ("POST", R + "/{run_id}/codex/preflight"): user_route(202, 404, body={}),
    ("GET", "/api/workflows/speckit/codex/shards"): user_route(200),
    ("GET", ME): user_route(200),
    ("GET", ME + "/{provider}"): user_route(200, 404),  # each caller's own key
    ("PUT", ME + "/{provider}"): user_route(200, body="new-key"),
    ("DELETE", ME + "/{provider}"): user_route(204, 404),
    ("GET", "/api/logs"): user_route(200),
    ("POST", "/internal/runs/{run_id}/secrets"): internal_route(
        200, {"providers": ["github", PROVIDER]}
    ),
    # 409 once every shard is served (the fuzzer may have claimed them): still past auth
    ("POST", "/internal/shards/claim"): internal_route(
        frozenset({200, 409}), {"hostname": "matrix-host"}
    ),
    ("POST", "/internal/shards/{index}/heartbeat"): internal_route(
        200, {"hostname": "matrix-host"}
    ),
}
DOCS = {
    ("GET", "/openapi.json"),
    ("HEAD", "/openapi.json"),
    ("GET", "/docs"),
    ("HEAD", "/docs"),
    ("GET", "/docs/oauth2-redirect"),
    ("HEAD", "/docs/oauth2-redirect"),
}
"""Disabled mode only: token mode serves no anonymous docs."""


@dataclass
class World:
    sandbox: Sandbox
    principals: dict[str, Principal]
    headers: dict[str, dict[str, str]]
    run_id: str
    artifact_id: str
    artifact_text: str


async def _expired(sandbox: Sandbox) -> Principal:
    """The owner-like user whose token ran out a second ago."""
    user = await sandbox.new_user(ttl=timedelta(days=1))
    async with sandbox.database.new_session() as session, session.begin():
        await session.execute(
            update(ApiToken)
            .where(ApiToken.user_id == user.id)
            .values(expires_at=ApiToken.created_at - timedelta(seconds=1))
        )
    return user


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def world(sandbox: Sandbox) -> World:
    owner, other = await sandbox.new_user(), await sandbox.new_user()
    principals = {"owner": owner, "other": other, "admin": await sandbox.default_user()}
    headers: dict[str, dict[str, str]] = {
        "anonymous": {},
        "wrong_token": {"Authorization": "Bearer sw_" + uuid.uuid4().hex * 2},
        "expired": (await _expired(sandbox)).headers,
        "service": {"Authorization": f"Bearer {INTERNAL_TOKEN}"},
        **{name: p.headers for name, p in principals.items()},
    }
    api = sandbox.token_api
    created = await api.post(
        RUNS,
        json={"repository": "acme/matrix", "featureKey": f"mx-{uuid.uuid4().hex[:8]}"},
        headers=owner.headers,
    )
    assert created.status_code == 202, created.text
    run = await wait_for(api, created.json()["id"], headers=owner.headers)
    assert run["status"] == "succeeded", run
    (artifact,) = [a for a in run["artifacts"] if a["artifactType"] == "patch"]
    download = await api.get(
        f"{RUNS}/{run['id']}/artifacts/{artifact['id']}", headers=owner.headers
    )
    assert download.status_code == 200
    return World(sandbox, principals, headers, run["id"], artifact["id"], download.text)


def fill(path: str, world: World) -> str:
    return (
        path.replace("{run_id}", world.run_id)
        .replace("{artifact_id}", world.artifact_id)
        .replace("{provider}", PROVIDER)
        .replace("{index}", "0")
    )


async def arrange(world: World, path: str, caller: str) -> None:
    """Put the caller's keys in the state the row assumes: the owner holds PROVIDER,
    nobody else does."""
    if not path.startswith(ME + "/") or caller not in USERS:
        return
    api, headers = world.sandbox.token_api, world.headers[caller]
    if caller == "owner":
        stored = await api.put(
            f"{ME}/{PROVIDER}", json={"value": OWNER_KEY}, headers=headers
        )
        assert stored.status_code == 200, stored.text
    else:
        gone = await api.delete(f"{ME}/{PROVIDER}", headers=headers)
        assert gone.status_code in (204, 404), gone.text


def body_for(row: Row, caller: str) -> Any:
    if row.body == "new-run":
        feature = f"mx-{caller}-{uuid.uuid4().hex[:6]}"
        return {"repository": "acme/matrix", "featureKey": feature}
    if row.body == "new-key":
        value = OWNER_KEY if caller == "owner" else f"sk-proj-{caller}-{uuid.uuid4()}"
        return {"value": value}
    return row.body


async def test_every_route_has_a_row(world: World) -> None:
    served = route_table(world.sandbox.token_app)
    missing = sorted(served - MATRIX.keys())
    stale = sorted(MATRIX.keys() - served)
    assert not missing, f"routes without a row in MATRIX: {missing}"
    assert not stale, f"rows for routes the app does not serve: {stale}"
    for key, row in MATRIX.items():
        assert set(row.expect) == set(CALLERS), key


@pytest.mark.parametrize("caller", CALLERS)
async def test_auth_matrix(world: World, caller: str) -> None:
    api = world.sandbox.token_api
    wrong = []
    for (method, path), row in sorted(MATRIX.items()):
        await arrange(world, path, caller)
        response = await api.request(
            method,
            fill(path, world),
            json=body_for(row, caller),
            headers=world.headers[caller],
        )
        expected = row.expect[caller]
        allowed = expected if isinstance(expected, frozenset) else {expected}
        if response.status_code not in allowed:
            wrong.append(
                f"{method} {path}: {response.status_code} not {expected}: "
                f"{response.text[:200]}"
            )
            continue
        if response.status_code == 401:
            assert response.json()["detail"]["code"] == "unauthorized"
            assert response.headers["www-authenticate"] == "Bearer"
        if caller in ("other", "admin") and response.is_success:
            # Nothing of the owner's reaches another user. (The service token gets
            # any run's keys by design; 404 bodies echo the id that was asked for.)
            assert world.run_id not in response.text, (method, path)
            assert world.artifact_text not in response.text, (method, path)
            assert OWNER_KEY[-4:] not in response.text, (method, path)
        if not path.startswith("/internal/"):
            assert OWNER_KEY not in response.text, (method, path)
    assert not wrong, f"{caller}:\n" + "\n".join(wrong)


async def test_others_runs_stay_out_of_listings(world: World) -> None:
    api = world.sandbox.token_api
    for caller in ("other", "admin"):
        listed = await api.get(
            RUNS, params={"limit": 100}, headers=world.headers[caller]
        )
        assert world.run_id not in {r["id"] for r in listed.json()["items"]}
        logs = await api.get(
            "/api/logs", params={"runId": world.run_id}, headers=world.headers[caller]
        )
        assert logs.json()["items"] == [], caller
    mine = await api.get(RUNS, params={"limit": 100}, headers=world.headers["owner"])
    assert world.run_id in {r["id"] for r in mine.json()["items"]}


async def test_disabled_mode_opens_every_route_but_internal(world: World) -> None:
    """AUTH_MODE=disabled: no route asks for a user token (every request is the
    default user); /internal still takes only the service token."""
    sandbox = world.sandbox
    served = route_table(sandbox.app)
    assert served - DOCS == MATRIX.keys(), "the two modes serve the same API"
    for method, path in sorted(served):
        if path.startswith("/internal/"):
            row = MATRIX[(method, path)]
            for headers in ({}, world.headers["owner"], world.headers["wrong_token"]):
                response = await sandbox.api.request(
                    method, fill(path, world), json=row.body, headers=headers
                )
                assert response.status_code == 401, (method, path, headers)
            continue
        response = await sandbox.api.request(method, fill(path, world))
        assert response.status_code != 401, (method, path, response.text)
