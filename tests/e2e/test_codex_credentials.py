"""A shard whose Codex auth volume nobody logged in, on a stack of its own.

Pre-flight fails the run with the re-authentication hint; the user stores an OpenAI
key through the API (`PUT /api/me/credentials/openai`); the retried run passes
pre-flight in API-key mode and Codex authenticates with that key, which the runner
fetched from the API just in time. The model here accepts only that key.
"""

from __future__ import annotations

import socket
from collections.abc import AsyncIterator, Iterator

import httpx
import pytest
import pytest_asyncio

from tests.support.api import RUNS, create_run, wait_for
from tests.support.containers import (
    AuthVolumes,
    ContainerEngine,
    codex_volumes,
    unique_volume_prefix,
)
from tests.support.github import FakeGitHub
from tests.support.gitserver import GitSmartHTTPServer
from tests.support.model import ScriptedModel, patch, say
from tests.support.specrepo import (
    AGENT_FILE,
    AGENT_PATCH,
    FEATURE_KEY,
    SeededRepo,
    seed_spec_repo,
)
from tests.support.stack import GITHUB_TOKEN, Stack, launch

REPO = "acme/keyless"
STORED_KEY = "sk-proj-e2e-stored-openai-key-9876543210fedcba"
CREDENTIAL = "/api/me/credentials/openai"
SHARDS = "/api/workflows/speckit/codex/shards"


@pytest.fixture(scope="module")
def keyed_model() -> Iterator[ScriptedModel]:
    """Answers only `Bearer STORED_KEY` (anything else is a counted 401)."""
    steps = [[patch("c1", AGENT_PATCH)], [say("Added the cart model.")]]
    with ScriptedModel(steps, api_key=STORED_KEY) as server:
        yield server


@pytest.fixture(scope="module")
def keyless_forge() -> Iterator[tuple[GitSmartHTTPServer, FakeGitHub, SeededRepo]]:
    with GitSmartHTTPServer() as git, FakeGitHub(git=git) as github:
        repo = seed_spec_repo(git, REPO)
        github.add_user("octo", GITHUB_TOKEN)
        github.add_repo(REPO)
        github.grant("octo", REPO, "write")
        yield git, github, repo


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def logged_out_volumes(engine: ContainerEngine) -> AsyncIterator[AuthVolumes]:
    """One shard's volume, initialised but without `auth.json`."""
    prefix = unique_volume_prefix("nologin_")
    async with codex_volumes(engine, prefix, 1, auth=None) as volumes:
        yield volumes


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def kstack(
    tmp_path_factory: pytest.TempPathFactory,
    statsd: socket.socket,
    keyless_forge: tuple[GitSmartHTTPServer, FakeGitHub, SeededRepo],
    logged_out_volumes: AuthVolumes,
    keyed_model: ScriptedModel,
) -> AsyncIterator[Stack]:
    async with launch(
        tmp_path_factory.mktemp("keyless"),
        statsd=statsd,
        forge=keyless_forge,
        model=keyed_model,
        volumes=logged_out_volumes,
        overrides={"CODEX_SHARDS": "1"},
    ) as stack:
        yield stack


async def test_logged_out_volume_fails_preflight_until_a_key_is_stored(
    kstack: Stack,
) -> None:
    volume = kstack.volume(0)
    async with httpx.AsyncClient(base_url=kstack.base_url, timeout=10) as client:
        none = await client.get(CREDENTIAL)
        assert none.status_code == 404, none.text  # no key from the environment
        created = await create_run(client, FEATURE_KEY, repository=REPO)
        run_id = created["id"]
        failed = await wait_for(client, run_id, timeout=60)

        assert (failed["status"], failed["errorCode"]) == (
            "failed",
            "codex_login_missing",
        ), failed
        assert failed["codexVolume"] == volume
        assert failed["codexPreflightStatus"] == "failed"
        message = failed["errorMessage"]
        assert f"Codex is not logged in on {volume}" in message
        assert f"PUT {CREDENTIAL}" in message  # the way out, named in the error
        assert failed["credentialAudit"]["codexStatus"] == "missing"
        assert "submit_codex_job" not in {t["taskName"] for t in failed["tasks"]}
        assert kstack.model.requests == []  # Codex never started
        shards = (await client.get(SHARDS)).json()["items"]
        assert [(s["volume"], s["volumeStatus"]) for s in shards] == [
            (volume, "needs_auth")
        ]

        stored = await client.put(CREDENTIAL, json={"value": STORED_KEY})
        assert stored.status_code == 200, stored.text
        assert stored.json()["source"] == "api"
        assert stored.json()["masked"] == "****" + STORED_KEY[-4:]
        retried = await client.post(f"{RUNS}/{run_id}/retry")
        assert retried.status_code == 202, retried.text
        final = await wait_for(
            client, run_id, timeout=90, where=lambda r: r["attempt"] == 2
        )

    assert final["status"] == "succeeded", final
    assert final["result"] == "published"
    preflights = [
        (t["attempt"], t["status"])
        for t in final["tasks"]
        if t["taskName"] == "codex_preflight"
    ]
    assert sorted(preflights) == [(1, "failed"), (2, "succeeded")]
    audit = final["credentialAudit"]
    assert (audit["attempt"], audit["codexStatus"]) == (2, "valid")
    assert "API-key mode" in audit["notes"]
    # Codex authenticated with the stored key, the only one this model accepts;
    # the volume still holds no login.
    asked = kstack.model.requests
    assert len(asked) == 2, asked
    assert {r.headers.get("authorization") for r in asked} == {f"Bearer {STORED_KEY}"}
    assert kstack.model.auth_failures == 0
    (pull,) = kstack.github.pulls(REPO)
    assert pull.head == final["branchName"]
    assert kstack.git.show(REPO, pull.head, AGENT_FILE).startswith(b"class Order:")
    for name in ("api", "preflight", "codex_runner-0", "publisher"):
        assert STORED_KEY not in kstack.log(name), name
