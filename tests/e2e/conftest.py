"""The whole local stack as real processes (`spec-workflow up`).

It runs on its own database and vhost, against a local git smart-HTTP server and a
GitHub-compatible API (seeded with `acme/shop`), and containers through the Docker API
in DOCKER_HOST (Podman under `make test`) with logged-in Codex auth volumes.
"""

from __future__ import annotations

import json
import os
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
from tests.support.infra import provision
from tests.support.model import ScriptedModel, patch, say
from tests.support.specrepo import SeededRepo, seed_spec_repo
from tests.support.stack import CODEX_KEY, GITHUB_TOKEN, SHARDS, Stack, free_port


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
    git, github, repo = forge
    home = tmp_path_factory.mktemp("stack")
    async with provision() as infra:
        port = free_port()
        env = {
            **os.environ,
            "DATABASE_URL": infra.database_url,
            "RABBITMQ_URL": infra.rabbitmq_url,
            "RABBITMQ_MANAGEMENT_URL": infra.management_url,
            "API_HOST": "127.0.0.1",
            "API_PORT": str(port),
            "API_URL": f"http://127.0.0.1:{port}",
            "VAR_DIR": str(home / "var"),
            "ARTIFACTS_ROOT": str(home / "artifacts"),
            "WORKSPACES_ROOT": str(home / "work"),
            "CODEX_SHARDS": str(SHARDS),
            "CODEX_IMAGE": auth_volumes,
            # Codex reaches the scripted model on the host loopback, authenticated
            # with the key logged into the shard's volume.
            "CODEX_NETWORK_MODE": "host",
            "CODEX_PROVIDER": json.dumps(
                {
                    "id": "scripted",
                    "name": "Scripted",
                    "base_url": model.base_url,
                    "wire_api": "responses",
                    "requires_openai_auth": True,
                }
            ),
            "CODEX_TIMEOUT": "120",
            "CODEX_IDLE_TIMEOUT": "60",
            "HEARTBEAT_INTERVAL": "2",
            "GITHUB_GIT_URL": git.base_url,
            "GITHUB_API_URL": github.url,
            "GITHUB_TOKEN": GITHUB_TOKEN,
            "STATSD_HOST": "127.0.0.1",
            "STATSD_PORT": str(statsd.getsockname()[1]),
            "LOG_JSON": "true",
            "LOG_LEVEL": "INFO",
            "RELAY_INTERVAL": "0.5",
            "GRACEFUL_TIMEOUT": "5",
            "LAUNCHER_STOP_TIMEOUT": "15",
        }
        s = Stack(
            f"http://127.0.0.1:{port}",
            home / "var",
            home / "artifacts",
            env,
            statsd,
            repo,
            git,
            github,
            model,
        )
        started = s.cli("up")
        assert started.returncode == 0, started.stdout + started.stderr
        try:
            yield s
        finally:
            stopped = s.cli("down")
            assert stopped.returncode == 0, stopped.stdout + stopped.stderr
