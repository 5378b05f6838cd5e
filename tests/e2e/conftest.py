"""The whole local stack as real processes (`spec-workflow up`).

It runs on its own database and vhost, against a local git smart-HTTP server and a
GitHub-compatible API (seeded with `acme/shop`), and containers through the Docker API
in DOCKER_HOST (Podman under `make test`) with logged-in Codex auth volumes.
"""

from __future__ import annotations

import json
import socket
from collections.abc import AsyncIterator, Iterator

import aiodocker
import pytest
import pytest_asyncio
from aiodocker.exceptions import DockerError

from tests.support.containers import (
    TEST_LABEL,
    container_engine,
    create_volume,
    delete_volume,
    write_auth_json,
)
from tests.support.github import FakeGitHub
from tests.support.gitserver import GitSmartHTTPServer
from tests.support.model import ScriptedModel, patch, say
from tests.support.specrepo import SeededRepo, seed_spec_repo
from tests.support.stack import CODEX_KEY, GITHUB_TOKEN, SHARDS, Stack, launch


@pytest.fixture(scope="session")
def statsd() -> Iterator[socket.socket]:
    listener = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    listener.bind(("127.0.0.1", 0))
    listener.setblocking(False)
    yield listener
    listener.close()


CART = """*** Begin Patch
*** Add File: src/checkout/models.py
+class Order:
+    \"\"\"An order.\"\"\"
*** Update File: specs/042-checkout/tasks.md
@@
-- [ ] T003 Create Order and Payment models in src/checkout/models.py
+- [X] T003 Create Order and Payment models in src/checkout/models.py
*** End Patch
"""


@pytest.fixture(scope="session")
def model() -> Iterator[ScriptedModel]:
    """The model Codex talks to: one patch, then a final message."""
    steps = [[patch("c1", CART)], [say("Added the cart model and checked T003.")]]
    with ScriptedModel(steps, api_key=CODEX_KEY) as server:
        yield server


@pytest.fixture(scope="session")
def forge() -> Iterator[tuple[GitSmartHTTPServer, FakeGitHub, SeededRepo]]:
    """A git host and GitHub API with `acme/shop` and a token that may push to it."""
    with GitSmartHTTPServer() as git, FakeGitHub(git=git) as github:
        repo = seed_spec_repo(git, "acme/shop")
        github.add_user("octo", GITHUB_TOKEN)
        github.add_repo("acme/shop")
        github.grant("octo", "acme/shop", "write")
        yield git, github, repo


@pytest_asyncio.fixture(scope="session", loop_scope="session")
async def auth_volumes() -> AsyncIterator[str]:
    """codex_auth_<n> logged in with an API key.

    Refuses to touch a volume of that name that a test did not make.
    """
    engine = await container_engine()
    docker = aiodocker.Docker(url=engine.url)
    names = [f"codex_auth_{n}" for n in range(SHARDS)]
    try:
        for name in names:
            try:
                existing = await docker.volumes.get(name)  # type: ignore[no-untyped-call]
            except DockerError as exc:
                if exc.status != 404:
                    raise
            else:
                labels = (await existing.show()).get("Labels") or {}
                assert TEST_LABEL in labels, f"{name} exists and is not a test volume"
            await create_volume(docker, name)
            auth = {"auth_mode": "apikey", "OPENAI_API_KEY": CODEX_KEY}
            await write_auth_json(
                docker, name, json.dumps(auth), image=engine.codex_image
            )
        yield engine.codex_image
    finally:
        for name in names:
            await delete_volume(docker, name)
        await docker.close()


@pytest_asyncio.fixture(scope="session", loop_scope="session")
async def stack(
    tmp_path_factory: pytest.TempPathFactory,
    statsd: socket.socket,
    forge: tuple[GitSmartHTTPServer, FakeGitHub, SeededRepo],
    auth_volumes: str,
    model: ScriptedModel,
) -> AsyncIterator[Stack]:
    async with launch(
        tmp_path_factory.mktemp("stack"),
        statsd=statsd,
        forge=forge,
        model=model,
        codex_image=auth_volumes,
    ) as s:
        yield s
