"""Provider keys: masked reads, encryption at rest, seeding, the internal endpoint."""

from __future__ import annotations

import asyncio
import subprocess
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy import select

from services.api import credentials, runs
from services.api.db import Database
from services.api.main import create_app, startup
from services.api.migrate import prepare_database
from services.api.models import DEFAULT_USER_ID, ProviderSecret
from services.api.settings import Settings
from services.api.vault import Keyring, Sealed, VaultError, parse_key
from tests.support.api import create_run, wait_for
from tests.support.canary import (
    CANARIES,
    INTERNAL_TOKEN,
    SECRETS_KEY,
    CanaryAudit,
    attach_capture,
)
from tests.support.infra import Infra, provision

ME = "/api/me/credentials"
SERVICE = {"Authorization": f"Bearer {INTERNAL_TOKEN}"}


def secrets_url(run_id: str) -> str:
    return f"/internal/runs/{run_id}/secrets"


async def test_environment_keys_seed_the_default_user(api: httpx.AsyncClient) -> None:
    listed = (await api.get(ME)).json()["items"]
    by_provider = {item["provider"]: item for item in listed}

    assert set(by_provider) >= {"github", "google", "anthropic"}
    assert by_provider["github"]["source"] == "environment"
    assert by_provider["github"]["masked"] == "****" + CANARIES["github"][-4:]
    assert all(CANARIES[p] not in str(by_provider) for p in CANARIES)


async def test_put_get_delete_round_trip_shows_only_masked_values(
    api: httpx.AsyncClient, database: Database
) -> None:
    value = "sk-proj-" + uuid.uuid4().hex + uuid.uuid4().hex
    stored = await api.put(f"{ME}/openai", json={"value": value})
    assert stored.status_code == 200, stored.text
    assert stored.json()["masked"] == "****" + value[-4:]
    assert stored.json()["source"] == "api"
    assert value not in stored.text

    read = await api.get(f"{ME}/openai")
    assert read.json()["masked"] == "****" + value[-4:]
    assert value not in read.text
    async with database.new_session() as session:
        row = await session.scalar(
            select(ProviderSecret).where(
                ProviderSecret.user_id == DEFAULT_USER_ID,
                ProviderSecret.provider == "openai",
            )
        )
    assert row is not None
    assert value.encode() not in row.ciphertext

    gone = await api.delete(f"{ME}/openai")
    assert gone.status_code == 204
    assert (await api.get(f"{ME}/openai")).status_code == 404
    again = await api.delete(f"{ME}/openai")
    assert again.status_code == 404
    assert again.json()["detail"]["code"] == "credential_not_found"


async def test_short_keys_are_masked_without_a_hint(api: httpx.AsyncClient) -> None:
    stored = await api.put(f"{ME}/anthropic", json={"value": "shortkey"})
    assert stored.json()["masked"] == "****"
    await api.put(f"{ME}/anthropic", json={"value": CANARIES["anthropic"]})


@pytest.mark.parametrize(
    ("path", "body"),
    [
        (f"{ME}/gitlab", {"value": "x" * 20}),
        (f"{ME}/github", {"value": ""}),
        (f"{ME}/github", {"value": " padded-key-value "}),
        (f"{ME}/github", {"value": "line\nbreak"}),
        (f"{ME}/github", {"value": "x" * 5000}),
        (f"{ME}/github", {"value": "k" * 20, "extra": 1}),
        (f"{ME}/github", {"secret": "k" * 20}),
    ],
)
async def test_bad_credential_input_is_a_422(
    api: httpx.AsyncClient, path: str, body: object
) -> None:
    response = await api.put(path, json=body)
    assert response.status_code == 422
    assert response.json()["detail"]["code"] == "invalid_request"
    assert "x" * 100 not in response.text


async def test_database_dump_holds_no_plaintext_key(infra: Infra) -> None:
    url = infra.database_url.replace("postgresql+asyncpg://", "postgresql://")
    dump = await asyncio.to_thread(
        subprocess.run,
        ["pg_dump", "--no-owner", url],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )
    assert "provider_secrets" in dump.stdout
    for value in CANARIES.values():
        assert value not in dump.stdout


async def test_ciphertext_is_bound_to_its_user_and_provider(database: Database) -> None:
    keyring = Keyring(parse_key(SECRETS_KEY))
    async with database.new_session() as session:
        row = await session.scalar(
            select(ProviderSecret).where(
                ProviderSecret.user_id == DEFAULT_USER_ID,
                ProviderSecret.provider == "github",
            )
        )
    assert row is not None
    sealed = Sealed(row.key_id, row.nonce, row.ciphertext)
    assert keyring.open(DEFAULT_USER_ID, "github", sealed) == CANARIES["github"]
    with pytest.raises(Exception, match="authentication"):
        keyring.open(DEFAULT_USER_ID, "google", sealed)
    with pytest.raises(Exception, match="authentication"):
        keyring.open(uuid.uuid4(), "github", sealed)


@pytest.mark.usefixtures("stages")
async def test_internal_endpoint_releases_the_run_users_keys(
    api: httpx.AsyncClient, canary: CanaryAudit
) -> None:
    run = await wait_for(
        api, (await create_run(api, f"c-{uuid.uuid4().hex[:8]}"))["id"]
    )
    await api.delete(
        f"{ME}/openai"
    )  # present in the environment, absent from the profile

    response = await api.post(
        secrets_url(run["id"]),
        json={"providers": ["github", "openai", "github"]},
        headers=SERVICE,
    )

    assert response.status_code == 200, response.text
    body = response.json()
    assert body["userId"] == str(DEFAULT_USER_ID)
    assert body["secrets"] == {"github": CANARIES["github"]}
    assert body["missing"] == ["openai"]  # no silent fallback to OPENAI_API_KEY
    assert any(run["id"] in message for message in canary.tapped)  # the audit sees it


@pytest.mark.usefixtures("stages")
@pytest.mark.parametrize(
    "headers",
    [
        {},
        {"Authorization": "Bearer wrong-token-0123456789abcdef0123456789"},
        {"Authorization": f"Basic {INTERNAL_TOKEN}"},
        {"Authorization": f"Bearer {INTERNAL_TOKEN}x"},
    ],
)
async def test_internal_endpoint_refuses_without_the_service_token(
    api: httpx.AsyncClient, headers: dict[str, str]
) -> None:
    response = await api.post(
        secrets_url(str(uuid.uuid4())), json={"providers": ["github"]}, headers=headers
    )
    assert response.status_code == 401
    assert response.json()["detail"]["code"] == "unauthorized"
    assert response.headers["www-authenticate"] == "Bearer"


async def test_internal_endpoint_input_errors(api: httpx.AsyncClient) -> None:
    unknown = await api.post(
        secrets_url(str(uuid.uuid4())), json={"providers": ["github"]}, headers=SERVICE
    )
    assert unknown.status_code == 404
    bad = await api.post(
        secrets_url(str(uuid.uuid4())), json={"providers": ["gitlab"]}, headers=SERVICE
    )
    assert bad.status_code == 422
    empty = await api.post(
        secrets_url(str(uuid.uuid4())), json={"providers": []}, headers=SERVICE
    )
    assert empty.status_code == 422


@asynccontextmanager
async def fresh_api(
    settings: Settings, canary: CanaryAudit, **env: str | None
) -> AsyncIterator[tuple[httpx.AsyncClient, FastAPI]]:
    """An API on a brand-new database, started (default user, seeding) but without
    consumers; `env` overrides provider-key settings (None: absent)."""
    async with provision() as fresh:
        await prepare_database(fresh.database_url)
        overrides = {"database_url": fresh.database_url, **env}
        app = create_app(settings.model_copy(update=overrides))
        attach_capture(canary)
        async with (
            startup(app),
            httpx.AsyncClient(
                transport=httpx.ASGITransport(app=app),
                base_url="http://fresh",
                event_hooks={"response": [canary.record_response]},
            ) as client,
        ):
            yield client, app


async def internal_secrets(
    client: httpx.AsyncClient, fastapi: FastAPI, providers: list[str]
) -> dict[str, object]:
    """Make a run row directly (no consumers here) and ask for its user's keys."""
    async with fastapi.state.database.new_session() as session, session.begin():
        run, _ = await runs.create_run(
            session,
            runs.NewRun(
                "acme/shop", f"s-{uuid.uuid4().hex[:8]}", None, None, "pr", None
            ),
            user_id=DEFAULT_USER_ID,
            idempotency_key=None,
        )
    response = await client.post(
        secrets_url(str(run.id)), json={"providers": providers}, headers=SERVICE
    )
    assert response.status_code == 200, response.text
    return dict(response.json())


async def test_fresh_database_is_seeded_from_the_environment(
    settings: Settings, canary: CanaryAudit
) -> None:
    async with fresh_api(settings, canary, openai_api_key=None) as (client, fastapi):
        listed = {
            i["provider"]: i["source"] for i in (await client.get(ME)).json()["items"]
        }
        assert listed == {
            "github": "environment",
            "google": "environment",
            "anthropic": "environment",
        }
        found = await internal_secrets(client, fastapi, ["github", "openai"])
    assert found["secrets"] == {"github": CANARIES["github"]}
    assert found["missing"] == ["openai"]


async def test_without_environment_keys_jobs_get_none_until_one_is_stored(
    settings: Settings, canary: CanaryAudit
) -> None:
    none = dict.fromkeys(
        ("openai_api_key", "google_api_key", "github_token", "anthropic_api_key")
    )
    async with fresh_api(settings, canary, **none) as (client, fastapi):
        assert (await client.get(ME)).json()["items"] == []
        before = await internal_secrets(client, fastapi, ["github"])
        assert before["secrets"] == {}
        assert before["missing"] == ["github"]
        await client.put(f"{ME}/github", json={"value": CANARIES["github"]})
        after = await internal_secrets(client, fastapi, ["github"])
    assert after["secrets"] == {"github": CANARIES["github"]}


async def test_seeding_never_overwrites_a_stored_key(
    settings: Settings, canary: CanaryAudit
) -> None:
    mine = "ghp_" + uuid.uuid4().hex + "STORED"
    async with fresh_api(settings, canary) as (client, fastapi):
        await client.put(f"{ME}/github", json={"value": mine})
        async with startup(fastapi):  # the next start-up seeds again
            pass
        listed = {i["provider"]: i for i in (await client.get(ME)).json()["items"]}
        found = await internal_secrets(client, fastapi, ["github"])
    assert listed["github"]["source"] == "api"
    assert listed["github"]["masked"] == "****" + mine[-4:]
    assert found["secrets"] == {"github": mine}


async def test_rotation_re_encrypts_under_the_new_key(
    settings: Settings, canary: CanaryAudit
) -> None:
    new_key = parse_key("q2c5y3K3wGm2u2Z9o1Yz5b0x6ZQvJ3r7nD8sX1fL4kA=")
    old_key = parse_key(SECRETS_KEY)
    async with fresh_api(settings, canary) as (_, fastapi):
        database: Database = fastapi.state.database
        async with database.new_session() as session, session.begin():
            rotated = await credentials.rotate(session, Keyring(new_key, [old_key]))
        async with database.new_session() as session, session.begin():
            rows = (await session.scalars(select(ProviderSecret))).all()
            revealed = await credentials.reveal(
                session,
                Keyring(new_key),
                DEFAULT_USER_ID,
                [credentials.Provider.GITHUB],
            )
            with pytest.raises(VaultError, match="no key"):
                await credentials.reveal(
                    session,
                    Keyring(old_key),
                    DEFAULT_USER_ID,
                    [credentials.Provider.GITHUB],
                )
    assert rotated == 4
    assert {row.key_id for row in rows} == {Keyring(new_key).current_id}
    assert revealed == {"github": CANARIES["github"]}
