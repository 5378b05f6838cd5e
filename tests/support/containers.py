"""Real containers for tests: Podman's Docker-compatible API and the Codex test image.

`make podman` (`.ci/podman-env.sh up`) starts the API service and builds the image;
`make test` does the same around the run. Both export `DOCKER_HOST`, `CODEX_IMAGE` and
`CODEX_BIN` (see `var/podman/env.sh`). A missing or unreachable engine raises
`ContainerEngineUnavailable`: a failure, never a skip.

Lifecycle rule (Podman 4.3 loses exit codes with `AutoRemove`): create, start, wait,
read the logs, delete in a `finally`. Background: ../shared/notes/container-engine.md.
"""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import AsyncIterator, Mapping, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import aiodocker
import httpx
from aiodocker.exceptions import DockerError
from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from services.cli.demo_volumes import tar_one

START_HINT = (
    "start it with `make podman` (then `. var/podman/env.sh`), "
    "or run the tests through `make test` / `make test-integration`"
)
CODEX_HOME = "/home/app/.codex"
APP_USER = "1000:1000"
TEST_LABEL = "org.moonmind.test"
# HostConfig.Ulimits replaces Podman's whole default list: always send nofile AND nproc.
ULIMITS = [
    {"Name": "nofile", "Soft": 4096, "Hard": 4096},
    {"Name": "nproc", "Soft": 2048, "Hard": 2048},
]


class ContainerEngineUnavailable(RuntimeError):
    """DOCKER_HOST is unset or the API does not answer, or the test image is missing."""


class ContainerSettings(BaseSettings):
    """What `.ci/podman-env.sh` exports; environment only (no `.env`)."""

    model_config = SettingsConfigDict(env_ignore_empty=True, extra="ignore")

    docker_host: str | None = Field(None, validation_alias="DOCKER_HOST")
    codex_image: str | None = Field(None, validation_alias="CODEX_IMAGE")
    codex_bin: str | None = Field(None, validation_alias="CODEX_BIN")


@dataclass(frozen=True)
class ContainerEngine:
    """A reachable Docker API with the Codex test image present."""

    url: str  # DOCKER_HOST, e.g. unix:///…/var/podman/podman.sock
    codex_image: str  # localhost/moonmind-codex-test:<version>
    codex_bin: Path  # the same Codex binary on the host

    def docker(self) -> aiodocker.Docker:
        """A new client bound to this engine; close it (`async with`)."""
        return aiodocker.Docker(url=self.url)


@dataclass(frozen=True)
class ContainerResult:
    exit_code: int
    stdout: str
    stderr: str


def docker_url() -> str:
    """DOCKER_HOST, or `ContainerEngineUnavailable` when it is unset."""
    url = ContainerSettings().docker_host
    if not url:
        raise ContainerEngineUnavailable(f"DOCKER_HOST is not set: {START_HINT}")
    return url


async def ping(
    url: str,
    timeout: float = 5.0,  # noqa: ASYNC109 - an httpx timeout, not a deadline
) -> None:
    """`GET /_ping` must answer 200 `OK`; raises `ContainerEngineUnavailable`."""
    parts = urlsplit(url)
    if parts.scheme == "unix":
        transport = httpx.AsyncHTTPTransport(uds=parts.path)
        base = "http://docker"
    elif parts.scheme in ("tcp", "http", "https"):
        transport = httpx.AsyncHTTPTransport()
        scheme = "https" if parts.scheme == "https" else "http"
        base = f"{scheme}://{parts.netloc}"
    else:
        raise ContainerEngineUnavailable(
            f"unsupported DOCKER_HOST {url!r}: {START_HINT}"
        )
    try:
        async with httpx.AsyncClient(
            transport=transport, base_url=base, timeout=timeout
        ) as client:
            response = await client.get("/_ping")
    except httpx.HTTPError as exc:
        raise ContainerEngineUnavailable(
            f"the container engine at {url} does not answer ({exc!r}): {START_HINT}"
        ) from exc
    if response.status_code != 200 or response.text.strip() != "OK":
        raise ContainerEngineUnavailable(
            f"GET {url}/_ping answered {response.status_code} "
            f"{response.text[:200]!r}: {START_HINT}"
        )


async def container_engine() -> ContainerEngine:
    """Check the engine and the test image; raise `ContainerEngineUnavailable` loudly.

    For a session fixture: `engine = await container_engine()`.
    """
    settings = ContainerSettings()
    url = docker_url()
    missing = [
        name
        for name, value in (
            ("CODEX_IMAGE", settings.codex_image),
            ("CODEX_BIN", settings.codex_bin),
        )
        if not value
    ]
    if missing:
        raise ContainerEngineUnavailable(
            f"{' and '.join(missing)} not set: {START_HINT}"
        )
    assert settings.codex_image  # for mypy: checked above
    assert settings.codex_bin
    await ping(url)
    codex_bin = Path(settings.codex_bin)
    if not await asyncio.to_thread(codex_bin.is_file):
        raise ContainerEngineUnavailable(
            f"CODEX_BIN {codex_bin} does not exist: {START_HINT}"
        )
    async with aiodocker.Docker(url=url) as docker:
        try:
            await docker.images.inspect(settings.codex_image)
        except DockerError as exc:
            raise ContainerEngineUnavailable(
                f"image {settings.codex_image} is missing "
                f"({exc.status} {exc.message}): {START_HINT}"
            ) from exc
    return ContainerEngine(
        url=url, codex_image=settings.codex_image, codex_bin=codex_bin
    )


def container_config(
    image: str,
    cmd: Sequence[str],
    *,
    binds: Sequence[str] = (),
    env: Sequence[str] = (),
    user: str = APP_USER,
    network_mode: str = "none",
    labels: Mapping[str, str] | None = None,
) -> dict[str, Any]:
    """A create() config with limits and without AutoRemove.

    Podman 4.3 loses the exit code of AutoRemove containers.
    """
    return {
        "Image": image,
        "Cmd": list(cmd),
        "User": user,
        "Env": list(env),
        "Labels": {TEST_LABEL: "1", **(labels or {})},
        "HostConfig": {
            "Binds": list(binds),
            "NetworkMode": network_mode,
            "AutoRemove": False,
            "Memory": 512 * 2**20,
            "NanoCpus": 1_000_000_000,
            "PidsLimit": 256,
            "Ulimits": ULIMITS,
        },
    }


async def run_container(
    docker: aiodocker.Docker,
    image: str,
    cmd: Sequence[str],
    *,
    timeout: float = 60.0,  # noqa: ASYNC109 - expiry kills the container, then TimeoutError
    **config: Any,
) -> ContainerResult:
    """create → start → wait (bounded) → read logs → delete; never AutoRemove.

    `config` goes to `container_config` (binds, env, user, network_mode, labels).
    A missing image raises `DockerError` 404 from `create` at once (no pull).
    On timeout the container is killed and deleted, and `TimeoutError` propagates.
    """
    container = await docker.containers.create(
        config=container_config(image, cmd, **config)
    )
    try:
        return await start_and_collect(container, timeout)
    finally:
        await container.delete(force=True)


async def start_and_collect(
    container: Any,
    timeout: float,  # noqa: ASYNC109 - expiry kills the container, then TimeoutError
) -> ContainerResult:
    """start → wait (bounded; kill on timeout) → logs, for a `create`d container."""
    await container.start()
    try:
        result = await asyncio.wait_for(container.wait(), timeout)
    except TimeoutError:
        await container.kill()
        raise
    stdout = "".join(await container.log(stdout=True))
    stderr = "".join(await container.log(stderr=True))
    return ContainerResult(int(result["StatusCode"]), stdout, stderr)


async def create_volume(docker: aiodocker.Docker, name: str) -> str:
    """Create (or reuse) the named volume; returns its name."""
    config = {"Name": name, "Labels": {TEST_LABEL: "1"}}
    await docker.volumes.create(config)  # type: ignore[no-untyped-call]
    return name


async def delete_volume(docker: aiodocker.Docker, name: str) -> None:
    """Delete the named volume; a missing one is fine. An in-use one raises (409)."""
    try:
        volume = await docker.volumes.get(name)  # type: ignore[no-untyped-call]
        await volume.delete()
    except DockerError as exc:
        if exc.status != 404:
            raise


def unique_volume_prefix(purpose: str = "codex_auth_") -> str:
    """`e2e<8 hex>_<purpose>`: a volume name prefix no other test session uses.

    Volumes live in the engine's shared store: with fixed names, two sessions at once
    (a local run and CI) would delete each other's.
    """
    return f"e2e{secrets.token_hex(4)}_{purpose}"


@dataclass(frozen=True)
class AuthVolumes:
    """Auth volumes `<prefix><n>` made for a stack (CODEX_VOLUME_PREFIX = prefix)."""

    image: str  # the Codex image the volumes were prepared with
    prefix: str
    names: tuple[str, ...]


@asynccontextmanager
async def codex_volumes(
    engine: ContainerEngine, prefix: str, shards: int, auth: str | None
) -> AsyncIterator[AuthVolumes]:
    """Create `<prefix>0` … `<prefix><shards-1>`; delete them at exit.

    `auth` is written as `auth.json`; None leaves the volume logged out (initialised
    and writable by the agent's user, but without `auth.json`). Refuses to touch a
    volume of those names that a test did not make, and then deletes only its own.
    """
    names = tuple(f"{prefix}{n}" for n in range(shards))
    made: list[str] = []
    async with engine.docker() as docker:
        try:
            for name in names:
                try:
                    existing = await docker.volumes.get(name)  # type: ignore[no-untyped-call]
                except DockerError as exc:
                    if exc.status != 404:
                        raise
                else:
                    labels = (await existing.show()).get("Labels") or {}
                    if TEST_LABEL not in labels:
                        raise RuntimeError(f"{name} exists and is not a test volume")
                made.append(await create_volume(docker, name))
                if auth is None:
                    await init_volume(docker, name, image=engine.codex_image)
                else:
                    await write_auth_json(docker, name, auth, image=engine.codex_image)
            yield AuthVolumes(engine.codex_image, prefix, names)
        finally:
            for name in made:
                await delete_volume(docker, name)


async def init_volume(
    docker: aiodocker.Docker,
    volume: str,
    *,
    image: str,
    timeout: float = 30.0,  # noqa: ASYNC109 - expiry kills the container, then TimeoutError
) -> None:
    """Mount `volume` once as the agent's user, so the engine copies the image's
    `/home/app/.codex` (owner included) into it; check it is writable and empty of
    `auth.json` (a volume nobody logged in)."""
    check = f"test -w {CODEX_HOME} && test ! -e {CODEX_HOME}/auth.json"
    result = await run_container(
        docker,
        image,
        ["/bin/sh", "-c", check],
        binds=[f"{volume}:{CODEX_HOME}"],
        timeout=timeout,
    )
    if result.exit_code != 0:
        raise RuntimeError(
            f"initialising volume {volume} failed: exit {result.exit_code}, "
            f"{(result.stdout + result.stderr)[:500]!r}"
        )


async def write_auth_json(
    docker: aiodocker.Docker,
    volume: str,
    content: str,
    *,
    image: str | None = None,
    timeout: float = 30.0,  # noqa: ASYNC109 - expiry kills the container, then TimeoutError
) -> None:
    """Write `content` as `/home/app/.codex/auth.json` (uid 1000, 0600) into `volume`.

    A short container (default image: CODEX_IMAGE) mounts the volume as uid 1000;
    the file goes in through put_archive before start, and the container checks it
    is there. Any content is written as is, malformed JSON or an empty file too.
    """
    image = image or ContainerSettings().codex_image
    if not image:
        raise ContainerEngineUnavailable(f"CODEX_IMAGE is not set: {START_HINT}")
    config = container_config(
        image,
        ["/bin/sh", "-c", f"test -f {CODEX_HOME}/auth.json"],
        binds=[f"{volume}:{CODEX_HOME}"],
    )
    archive = tar_one("auth.json", content.encode())
    container = await docker.containers.create(config=config)
    try:
        for attempt in range(3):  # Podman 4.3 may answer 500 "broken pipe" once
            try:
                await container.put_archive(CODEX_HOME, archive)  # type: ignore[no-untyped-call]
                break
            except DockerError as exc:
                if exc.status != 500 or attempt == 2:
                    raise
                await asyncio.sleep(0.2)
        result = await start_and_collect(container, timeout)
    finally:
        await container.delete(force=True)
    if result.exit_code != 0:
        raise RuntimeError(
            f"writing auth.json into volume {volume} failed: exit {result.exit_code}, "
            f"{(result.stdout + result.stderr)[:500]!r}"
        )


def meaningful_lines(text: str) -> list[str]:
    """Output lines without blanks and Codex's harmless `WARNING:` lines."""
    return [
        line
        for line in text.splitlines()
        if line.strip() and not line.startswith("WARNING:")
    ]
