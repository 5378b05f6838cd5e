"""The whole local stack as real processes (`spec-workflow up`).

It runs on its own database and vhost, against a local git smart-HTTP server and a
GitHub-compatible API (seeded with `acme/shop`), and containers through the Docker API
in DOCKER_HOST (Podman under `make test`) with logged-in Codex auth volumes named with
a prefix of this session's own.
"""

from __future__ import annotations

import json
import socket
from collections.abc import AsyncIterator, Iterator

import pytest
import pytest_asyncio

from tests.support.containers import (
    AuthVolumes,
    ContainerEngine,
    codex_volumes,
    container_engine,
    unique_volume_prefix,
)
from tests.support.github import FakeGitHub
from tests.support.gitserver import GitSmartHTTPServer
from tests.support.model import ScriptedModel, patch, say
from tests.support.specrepo import AGENT_PATCH, SeededRepo, seed_spec_repo
from tests.support.stack import CODEX_KEY, GITHUB_TOKEN, SHARDS, Stack, launch


@pytest.fixture(scope="session")
def statsd() -> Iterator[socket.socket]:
    listener = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    listener.bind(("127.0.0.1", 0))
    listener.setblocking(False)
    yield listener
    listener.close()


@pytest.fixture(scope="session")
def model() -> Iterator[ScriptedModel]:
    """The model Codex talks to: one patch, then a final message."""
    steps = [
        [patch("c1", AGENT_PATCH)],
        [say("Added the cart model and checked T003.")],
    ]
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
async def engine() -> ContainerEngine:
    return await container_engine()


@pytest_asyncio.fixture(scope="session", loop_scope="session")
async def auth_volumes(engine: ContainerEngine) -> AsyncIterator[AuthVolumes]:
    """`e2e<hex>_codex_auth_<n>` for every shard, logged in with an API key.

    The prefix is this session's own (CODEX_VOLUME_PREFIX of its stacks), so another
    session on the same engine never touches them, nor they its.
    """
    auth = json.dumps({"auth_mode": "apikey", "OPENAI_API_KEY": CODEX_KEY})
    prefix = unique_volume_prefix()
    async with codex_volumes(engine, prefix, SHARDS, auth) as volumes:
        yield volumes


@pytest_asyncio.fixture(scope="session", loop_scope="session")
async def stack(
    tmp_path_factory: pytest.TempPathFactory,
    statsd: socket.socket,
    forge: tuple[GitSmartHTTPServer, FakeGitHub, SeededRepo],
    auth_volumes: AuthVolumes,
    model: ScriptedModel,
) -> AsyncIterator[Stack]:
    async with launch(
        tmp_path_factory.mktemp("stack"),
        statsd=statsd,
        forge=forge,
        model=model,
        volumes=auth_volumes,
    ) as s:
        yield s
