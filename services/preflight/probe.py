"""The Codex login probe: `codex login status` in CODEX_IMAGE on a shard's auth volume.

Exit 0 only proves that `auth.json` parses, so the probe also reads `auth.json` from the
stopped container (in memory, never logged) and treats `{}`, an empty key or a ChatGPT
login without tokens as logged out. Containers are never AutoRemoved: create, start,
wait (bounded), read logs and the file, then delete.
"""

from __future__ import annotations

import asyncio
import json
import time
from dataclasses import dataclass
from typing import Any, Protocol

import aiodocker
import aiohttp
from aiodocker.exceptions import DockerError

from shared.redaction import redact_text, register_secret

CODEX_HOME = "/home/app/.codex"
MAX_OUTPUT = 512
LIMITS = [
    # Podman replaces its whole default list when any is sent: always both.
    {"Name": "nofile", "Soft": 4096, "Hard": 4096},
    {"Name": "nproc", "Soft": 1024, "Hard": 1024},
]


@dataclass(frozen=True)
class ProbeResult:
    state: str
    """api_key | chatgpt | logged_out | error | volume_missing | image_missing | timeout
    | engine_unavailable"""
    exit_code: int | None
    output: str
    """Condensed CLI output, redacted, at most 512 characters."""
    checked_at: float

    @property
    def logged_in(self) -> bool:
        return self.state in ("api_key", "chatgpt")


class LoginProbe(Protocol):
    async def probe(self, volume: str) -> ProbeResult: ...


def condense(stdout: str, stderr: str) -> str:
    lines = [
        line.strip()
        for line in (stderr + "\n" + stdout).splitlines()
        if line.strip()
        and not line.startswith("WARNING:")
        and "Reading additional input from stdin" not in line
    ]
    return redact_text(" | ".join(lines))[:MAX_OUTPUT]


def auth_state(raw: bytes | None) -> str | None:
    """What `auth.json` holds: api_key, chatgpt, logged_out; None if unreadable."""
    if raw is None:
        return "logged_out"
    try:
        auth = json.loads(raw)
    except ValueError:
        return None
    if not isinstance(auth, dict):
        return None
    key = auth.get("OPENAI_API_KEY")
    if isinstance(key, str) and key.strip():
        register_secret(key)
        return "api_key"
    tokens = auth.get("tokens")
    if isinstance(tokens, dict) and any(
        isinstance(tokens.get(k), str) and tokens.get(k)
        for k in ("access_token", "refresh_token", "id_token")
    ):
        for value in tokens.values():
            if isinstance(value, str):
                register_secret(value)
        return "chatgpt"
    return "logged_out"  # {}, an empty key, or ChatGPT mode without tokens


def classify(exit_code: int, output: str, auth: str | None) -> str:
    first = output.split(" | ", 1)[0]
    if exit_code == 0:
        return auth if auth in ("api_key", "chatgpt") else "logged_out"
    if first.startswith("Not logged in"):
        return "logged_out"
    return "error"


async def _read_file(container: Any, path: str) -> bytes | None:
    try:
        archive = await container.get_archive(path)
    except DockerError:
        return None
    with archive:
        member = next((m for m in archive.getmembers() if m.isfile()), None)
        if member is None:
            return None
        handle = archive.extractfile(member)
        return handle.read() if handle else None


class DockerLoginProbe:
    """The probe through aiodocker, against DOCKER_HOST (Docker or Podman's API)."""

    def __init__(
        self,
        docker_url: str | None,
        image: str,
        timeout: float,
        command: tuple[str, ...] = ("codex", "login", "status"),
    ) -> None:
        self.docker_url, self.image, self.timeout = docker_url, image, timeout
        self.command = command

    async def probe(self, volume: str) -> ProbeResult:
        try:
            docker = aiodocker.Docker(url=self.docker_url)
        except (ValueError, OSError) as exc:
            return self._result("engine_unavailable", None, f"{type(exc).__name__}")
        try:
            return await self._probe(docker, volume)
        except (DockerError, OSError, aiohttp.ClientError) as exc:
            return self._result("engine_unavailable", None, redact_text(str(exc))[:200])
        finally:
            await docker.close()

    async def _probe(self, docker: aiodocker.Docker, volume: str) -> ProbeResult:
        try:
            await docker.volumes.get(volume)  # type: ignore[no-untyped-call]
        except DockerError as exc:
            if exc.status == 404:
                return self._result("volume_missing", None, f"no volume {volume}")
            raise
        config: dict[str, Any] = {
            "Image": self.image,
            "Cmd": list(self.command),
            "User": "1000:1000",
            "Env": ["HOME=/home/app", f"CODEX_HOME={CODEX_HOME}"],
            "Labels": {"moonmind.role": "codex-login-probe", "codex_volume": volume},
            "HostConfig": {
                "Binds": [f"{volume}:{CODEX_HOME}:ro"],
                "NetworkMode": "none",
                "Memory": 256 * 2**20,
                "NanoCpus": 500_000_000,
                "PidsLimit": 64,
                "Ulimits": LIMITS,
            },
        }
        try:
            container = await docker.containers.create(config=config)
        except DockerError as exc:
            if exc.status == 404:
                return self._result("image_missing", None, f"no image {self.image}")
            raise
        try:
            await container.start()
            try:
                waited = await asyncio.wait_for(container.wait(), self.timeout)
            except TimeoutError:
                await container.kill()
                return self._result(
                    "timeout", None, f"no answer within {self.timeout:g}s"
                )
            exit_code = int(waited.get("StatusCode", -1))
            stdout = "".join(await container.log(stdout=True))
            stderr = "".join(await container.log(stderr=True))
            auth = auth_state(await _read_file(container, f"{CODEX_HOME}/auth.json"))
        finally:
            await container.delete(force=True)
        output = condense(stdout, stderr)
        return self._result(classify(exit_code, output, auth), exit_code, output)

    @staticmethod
    def _result(state: str, exit_code: int | None, output: str) -> ProbeResult:
        return ProbeResult(state, exit_code, output[:MAX_OUTPUT], time.time())


class ProbeCache:
    """Probe results per volume, reused for `ttl` seconds (0: never)."""

    def __init__(self, probe: LoginProbe, ttl: float) -> None:
        self._probe, self._ttl = probe, ttl
        self._results: dict[str, ProbeResult] = {}
        self._locks: dict[str, asyncio.Lock] = {}

    async def get(
        self, volume: str, *, refresh: bool = False
    ) -> tuple[ProbeResult, bool]:
        """(result, cached). One probe per volume at a time; others wait for it."""
        lock = self._locks.setdefault(volume, asyncio.Lock())
        async with lock:
            cached = self._results.get(volume)
            if not refresh and cached and time.time() - cached.checked_at < self._ttl:
                return cached, True
            result = await self._probe.probe(volume)
            if result.state not in ("engine_unavailable", "timeout"):
                self._results[volume] = result
            return result, False
