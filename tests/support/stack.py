"""The local stack as the e2e tests see it: a handle on the processes `up` started.

`launch(...)` provisions a private database and vhost, starts every process with
`spec-workflow up` against the given fakes, and stops them with `down`; e2e modules
that need their own settings (short leases, one shard, ...) pass `overrides`.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

from tests.support.containers import AuthVolumes
from tests.support.github import FakeGitHub
from tests.support.gitserver import GitSmartHTTPServer
from tests.support.infra import Infra, provision
from tests.support.model import ScriptedModel
from tests.support.specrepo import SeededRepo

CLI = str(Path(sys.executable).with_name("spec-workflow"))
SHARDS = 3
GITHUB_TOKEN = "ghp_e2eTOKEN0123456789abcdefghijklmnopqr"
CODEX_KEY = "sk-proj-e2e-volume-key-0123456789abcdef"
# Starts one process of the table exactly as `spec-workflow up` does (same argv, log,
# pid file, own session), for tests that kill one and bring it back.
_START_ONE = """
import sys
from pathlib import Path
from services.cli.processes import PidDir, process_table
name, var_dir, shards = sys.argv[1], Path(sys.argv[2]), int(sys.argv[3])
spec = next(s for s in process_table(sys.executable, shards) if s.name == name)
print(PidDir(var_dir).start(spec).pid)
"""


@dataclass(frozen=True)
class Stack:
    base_url: str
    var_dir: Path
    artifacts_root: Path
    env: dict[str, str]
    statsd: socket.socket
    repo: SeededRepo
    git: GitSmartHTTPServer
    github: FakeGitHub
    model: ScriptedModel
    volumes: AuthVolumes

    def volume(self, shard: int) -> str:
        """The auth volume of `shard` (what the API names `<prefix><shard>`)."""
        return f"{self.volumes.prefix}{shard}"

    def cli(self, *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [CLI, *args],
            env=self.env,
            cwd=self.var_dir.parent,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
            stdin=subprocess.DEVNULL,
        )

    def datagrams(self) -> list[str]:
        lines: list[str] = []
        while True:
            try:
                lines.extend(self.statsd.recv(65535).decode().splitlines())
            except BlockingIOError:
                return lines

    def log(self, name: str) -> str:
        return (self.var_dir / "log" / f"{name}.log").read_text(errors="replace")

    def pid(self, name: str) -> int:
        """The pid `up` recorded for process `name` (e.g. `codex_runner-0`)."""
        return int((self.var_dir / "run" / f"{name}.pid").read_text())

    def kill(self, name: str) -> int:
        """SIGKILL process `name` (no clean-up of its own); returns its pid."""
        pid = self.pid(name)
        os.kill(pid, signal.SIGKILL)
        return pid

    def start(self, name: str) -> int:
        """Start process `name` again the way `up` does; returns its new pid.

        `up` itself refuses a partly running stack.
        """
        shards = self.env["CODEX_SHARDS"]
        done = subprocess.run(
            [sys.executable, "-c", _START_ONE, name, str(self.var_dir), shards],
            env=self.env,
            cwd=self.var_dir.parent,
            capture_output=True,
            text=True,
            # Under `make chaos` load a fresh interpreter took over 30 s to import and
            # start the process (the restart then failed silently before).
            timeout=120,
            check=True,
            stdin=subprocess.DEVNULL,
        )
        return int(done.stdout)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def stack_env(
    infra: Infra,
    home: Path,
    port: int,
    *,
    statsd: socket.socket,
    git: GitSmartHTTPServer,
    github: FakeGitHub,
    model: ScriptedModel,
    volumes: AuthVolumes,
    overrides: dict[str, str] | None = None,
) -> dict[str, str]:
    """The environment of every process: this stack's servers, fakes and folders."""
    return {
        **os.environ,
        # Keys come from the profile only: none may leak in from the environment
        # of whoever runs the tests (an empty value counts as unset).
        **dict.fromkeys(("OPENAI_API_KEY", "GOOGLE_API_KEY", "ANTHROPIC_API_KEY"), ""),
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
        "CODEX_IMAGE": volumes.image,
        "CODEX_VOLUME_PREFIX": volumes.prefix,
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
        **(overrides or {}),
    }


@asynccontextmanager
async def launch(
    home: Path,
    *,
    statsd: socket.socket,
    forge: tuple[GitSmartHTTPServer, FakeGitHub, SeededRepo],
    model: ScriptedModel,
    volumes: AuthVolumes,
    overrides: dict[str, str] | None = None,
) -> AsyncIterator[Stack]:
    """`spec-workflow up` on a private database and vhost; `down` on the way out.

    `volumes` names the shards' auth volumes (`<prefix><n>`, one per shard, made by
    the caller, logged in or not: the scenario decides).
    """
    git, github, repo = forge
    async with provision() as infra:
        port = free_port()
        env = stack_env(
            infra,
            home,
            port,
            statsd=statsd,
            git=git,
            github=github,
            model=model,
            volumes=volumes,
            overrides=overrides,
        )
        stack = Stack(
            f"http://127.0.0.1:{port}",
            home / "var",
            home / "artifacts",
            env,
            statsd,
            repo,
            git,
            github,
            model,
            volumes,
        )
        started = stack.cli("up")
        assert started.returncode == 0, started.stdout + started.stderr
        try:
            yield stack
        finally:
            stopped = stack.cli("down")
            assert stopped.returncode == 0, stopped.stdout + stopped.stderr
