"""The container fixtures, through Podman's Docker API with the real Codex binary.

Needs `make podman`, or `make test` / `make test-integration` (they bring it up).
"""

from __future__ import annotations

import json
import secrets
import subprocess
from collections.abc import AsyncIterator

import aiodocker
import pytest
import pytest_asyncio
from aiodocker.exceptions import DockerError

from tests.support.containers import (
    CODEX_HOME,
    ContainerEngine,
    ContainerResult,
    container_config,
    container_engine,
    create_volume,
    delete_volume,
    meaningful_lines,
    run_container,
    start_and_collect,
    write_auth_json,
)

pytestmark = pytest.mark.timeout(30)

PROBE_ENV = ["HOME=/home/app"]


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def engine() -> ContainerEngine:
    return await container_engine()


@pytest_asyncio.fixture(loop_scope="session")
async def docker(engine: ContainerEngine) -> AsyncIterator[aiodocker.Docker]:
    async with engine.docker() as client:
        yield client


@pytest_asyncio.fixture(loop_scope="session")
async def volume(docker: aiodocker.Docker) -> AsyncIterator[str]:
    name = await create_volume(docker, f"moonmind-test-{secrets.token_hex(6)}")
    try:
        yield name
    finally:
        # not forced: a container left referencing the volume would make this fail (409)
        await delete_volume(docker, name)
    with pytest.raises(DockerError) as missing:
        await docker.volumes.get(name)  # type: ignore[no-untyped-call]
    assert missing.value.status == 404


def codex_version(engine: ContainerEngine) -> str:
    out = subprocess.run(
        [str(engine.codex_bin), "--version"], capture_output=True, text=True, check=True
    ).stdout
    return out.strip().removeprefix("codex-cli ")


async def login_status(
    docker: aiodocker.Docker, engine: ContainerEngine, volume: str
) -> ContainerResult:
    return await run_container(
        docker,
        engine.codex_image,
        ["codex", "login", "status"],
        binds=[f"{volume}:{CODEX_HOME}:ro"],
        env=PROBE_ENV,
    )


async def test_image_runs_the_pinned_codex_as_uid_1000(
    docker: aiodocker.Docker, engine: ContainerEngine
) -> None:
    result = await run_container(
        docker,
        engine.codex_image,
        ["/bin/bash", "-c", "id -u; codex --version"],
        env=PROBE_ENV,
    )
    assert result.exit_code == 0, result
    assert result.stdout.splitlines() == ["1000", f"codex-cli {codex_version(engine)}"]
    assert engine.codex_image.endswith(f":{codex_version(engine)}")


async def test_image_layout(docker: aiodocker.Docker, engine: ContainerEngine) -> None:
    script = (
        "readlink /usr/local/bin/codex; "
        "test -x /opt/codex/codex-resources/bwrap && "
        "test -x /opt/codex/codex-path/rg && echo vendor; "
        "grep '^app:' /etc/passwd; "
        "stat -c '%u %n' /home/app/.codex /workspace; "
        "pwd"
    )
    result = await run_container(docker, engine.codex_image, ["/bin/sh", "-c", script])
    assert result.exit_code == 0, result
    assert result.stdout.splitlines() == [
        "/opt/codex/bin/codex",
        "vendor",
        "app:x:1000:1000:app:/home/app:/bin/bash",
        "1000 /home/app/.codex",
        "1000 /workspace",
        "/workspace",
    ]


async def test_login_status_with_an_empty_volume_is_not_logged_in(
    docker: aiodocker.Docker, engine: ContainerEngine, volume: str
) -> None:
    result = await login_status(docker, engine, volume)
    assert result.exit_code == 1, result
    assert result.stdout == ""
    assert meaningful_lines(result.stderr) == ["Not logged in"]


async def test_login_status_with_an_api_key_auth_json(
    docker: aiodocker.Docker, engine: ContainerEngine, volume: str
) -> None:
    auth = {"auth_mode": "apikey", "OPENAI_API_KEY": "sk-test-" + "0123456789" * 3}
    await write_auth_json(docker, volume, json.dumps(auth))

    result = await login_status(docker, engine, volume)

    assert result.exit_code == 0, result
    lines = meaningful_lines(result.stderr)
    assert lines[0].startswith("API key configured"), result
    assert auth["OPENAI_API_KEY"] not in result.stderr  # codex masks the key


async def test_write_auth_json_writes_content_as_is_for_uid_1000(
    docker: aiodocker.Docker, engine: ContainerEngine, volume: str
) -> None:
    await write_auth_json(docker, volume, "{not json")
    result = await run_container(
        docker,
        engine.codex_image,
        [
            "/bin/sh",
            "-c",
            f"stat -c '%u %a' {CODEX_HOME}/auth.json; cat {CODEX_HOME}/auth.json",
        ],
        binds=[f"{volume}:{CODEX_HOME}:ro"],
    )
    assert result.exit_code == 0, result
    assert result.stdout == "1000 600\n{not json"

    result = await login_status(docker, engine, volume)
    assert result.exit_code == 1, result
    assert meaningful_lines(result.stderr)[0].startswith("Error checking login status")


async def test_a_missing_image_fails_create_with_404(
    docker: aiodocker.Docker,
) -> None:
    config = container_config("localhost/moonmind-no-such-image:missing", ["true"])
    with pytest.raises(DockerError) as error:
        await docker.containers.create(config=config)
    assert error.value.status == 404


async def test_containers_keep_their_exit_code_and_are_deleted_after_the_logs(
    docker: aiodocker.Docker, engine: ContainerEngine
) -> None:
    config = container_config(
        engine.codex_image, ["/bin/sh", "-c", "echo out; echo err >&2; exit 3"]
    )
    container = await docker.containers.create(config=config)
    try:
        assert (await container.show())["HostConfig"]["AutoRemove"] is False
        result = await start_and_collect(container, timeout=20)
        # still there after exiting: wait() and the logs saw the real exit code
        state = (await container.show())["State"]
        assert (state["Status"], state["ExitCode"]) == ("exited", 3)
    finally:
        await container.delete(force=True)
    assert (result.exit_code, result.stdout, result.stderr) == (3, "out\n", "err\n")
    with pytest.raises(DockerError) as gone:
        await container.show()
    assert gone.value.status == 404
