"""The whole local stack as real processes (`spec-workflow up`).

It runs on its own database and vhost.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import pytest_asyncio

from tests.support.infra import provision

CLI = str(Path(sys.executable).with_name("spec-workflow"))
SHARDS = 2


@dataclass(frozen=True)
class Stack:
    base_url: str
    var_dir: Path
    artifacts_root: Path
    env: dict[str, str]
    statsd: socket.socket

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


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="session")
def statsd() -> Iterator[socket.socket]:
    listener = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    listener.bind(("127.0.0.1", 0))
    listener.setblocking(False)
    yield listener
    listener.close()


@pytest_asyncio.fixture(scope="session", loop_scope="session")
async def stack(
    tmp_path_factory: pytest.TempPathFactory, statsd: socket.socket
) -> AsyncIterator[Stack]:
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
            "VAR_DIR": str(home / "var"),
            "ARTIFACTS_ROOT": str(home / "artifacts"),
            "CODEX_SHARDS": str(SHARDS),
            "STATSD_HOST": "127.0.0.1",
            "STATSD_PORT": str(statsd.getsockname()[1]),
            "LOG_JSON": "true",
            "LOG_LEVEL": "INFO",
            "RELAY_INTERVAL": "0.5",
            "GRACEFUL_TIMEOUT": "5",
            "LAUNCHER_STOP_TIMEOUT": "15",
        }
        s = Stack(
            f"http://127.0.0.1:{port}", home / "var", home / "artifacts", env, statsd
        )
        started = s.cli("up")
        assert started.returncode == 0, started.stdout + started.stderr
        try:
            yield s
        finally:
            stopped = s.cli("down")
            assert stopped.returncode == 0, stopped.stdout + stopped.stderr
