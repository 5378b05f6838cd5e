"""Codex auth volumes for the demo: find logged-in ones, log the demo's own in, remove.

A volume is "logged in" when it holds `/home/app/.codex/auth.json`. The demo writes
`auth.json` (`{"auth_mode": "apikey", ...}`, uid 1000, mode 0600) into volumes it
labels `org.moonmind.demo`, through a short container of the Codex image; it never
deletes a volume without that label.
"""

from __future__ import annotations

import asyncio
import io
import json
import tarfile
import time
from typing import Any

import aiodocker
from aiodocker.exceptions import DockerError

DEMO_LABEL = "org.moonmind.demo"
CODEX_HOME = "/home/app/.codex"
APP_USER = "1000:1000"
TIMEOUT = 60.0


class VolumeError(RuntimeError):
    """The engine refused or the login container failed; the message says which."""


def _container(image: str, volume: str, script: str) -> dict[str, Any]:
    return {
        "Image": image,
        "Cmd": ["/bin/sh", "-c", script],
        "User": APP_USER,
        "Labels": {DEMO_LABEL: "1"},
        "HostConfig": {
            "Binds": [f"{volume}:{CODEX_HOME}"],
            "NetworkMode": "none",
            "AutoRemove": False,  # Podman 4.3 loses AutoRemove containers' exit codes
            "Memory": 256 * 2**20,
            "PidsLimit": 64,
            # replaces Podman's default list, which start() needs nproc in
            "Ulimits": [
                {"Name": "nofile", "Soft": 1024, "Hard": 1024},
                {"Name": "nproc", "Soft": 256, "Hard": 256},
            ],
        },
    }


def tar_one(name: str, data: bytes, *, uid: int = 1000, mode: int = 0o600) -> bytes:
    """A tar archive of one file `name` owned by `uid` (the Codex user, `app`)."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.PAX_FORMAT) as archive:
        info = tarfile.TarInfo(name)
        info.size, info.uid, info.gid, info.mode = len(data), uid, uid, mode
        info.uname = info.gname = "app"
        info.mtime = int(time.time())
        archive.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


async def _run(
    docker: aiodocker.Docker, image: str, volume: str, script: str, put: bytes = b""
) -> int:
    """Exit code of `script` in a container with `volume` at CODEX_HOME."""
    try:
        container = await docker.containers.create(
            config=_container(image, volume, script)
        )
    except DockerError as exc:
        raise VolumeError(f"cannot create a container of {image}: {exc}") from exc
    try:
        if put:
            await container.put_archive(CODEX_HOME, put)  # type: ignore[no-untyped-call]
        await container.start()
        result = await asyncio.wait_for(container.wait(), TIMEOUT)
        return int(result["StatusCode"])
    except (DockerError, TimeoutError) as exc:
        raise VolumeError(f"the login container on {volume} failed: {exc!r}") from exc
    finally:
        await container.delete(force=True)


async def logged_in(docker_url: str | None, image: str, volumes: list[str]) -> bool:
    """Whether every one of `volumes` exists and holds an auth.json."""
    async with aiodocker.Docker(url=docker_url) as docker:
        for name in volumes:
            try:
                await docker.volumes.get(name)  # type: ignore[no-untyped-call]
            except DockerError as exc:
                if exc.status == 404:
                    return False
                raise VolumeError(f"cannot inspect volume {name}: {exc}") from exc
            if await _run(docker, image, name, f"test -s {CODEX_HOME}/auth.json"):
                return False
    return True


async def log_in(
    docker_url: str | None, image: str, volumes: list[str], api_key: str
) -> None:
    """Create each of `volumes` (labelled as the demo's) with an API-key login."""
    auth = json.dumps({"auth_mode": "apikey", "OPENAI_API_KEY": api_key}).encode()
    async with aiodocker.Docker(url=docker_url) as docker:
        for name in volumes:
            await _own(docker, name)
            await docker.volumes.create(  # type: ignore[no-untyped-call]
                {"Name": name, "Labels": {DEMO_LABEL: "1"}}
            )
            code = await _run(docker, image, name, f"test -s {CODEX_HOME}/auth.json",
                              put=tar_one("auth.json", auth))  # fmt: skip
            if code != 0:
                raise VolumeError(
                    f"auth.json did not reach volume {name} (exit {code})"
                )


async def remove(docker_url: str | None, volumes: list[str]) -> list[str]:
    """Delete those of `volumes` the demo made; returns the names deleted."""
    deleted = []
    async with aiodocker.Docker(url=docker_url) as docker:
        for name in volumes:
            try:
                await _own(docker, name)
                volume = await docker.volumes.get(name)  # type: ignore[no-untyped-call]
                await volume.delete()
            except DockerError as exc:
                if exc.status != 404:
                    raise VolumeError(f"cannot delete volume {name}: {exc}") from exc
                continue
            deleted.append(name)
    return deleted


async def _own(docker: aiodocker.Docker, name: str) -> None:
    """Refuse a volume of that name that the demo did not make."""
    try:
        volume = await docker.volumes.get(name)  # type: ignore[no-untyped-call]
    except DockerError as exc:
        if exc.status == 404:
            return
        raise
    labels = (await volume.show()).get("Labels") or {}
    if DEMO_LABEL not in labels:
        raise VolumeError(f"volume {name} exists and was not made by the demo")
