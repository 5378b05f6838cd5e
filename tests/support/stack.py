"""The local stack as the e2e tests see it: a handle on the processes `up` started."""

from __future__ import annotations

import socket
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from tests.support.github import FakeGitHub
from tests.support.gitserver import GitSmartHTTPServer
from tests.support.model import ScriptedModel
from tests.support.specrepo import SeededRepo

CLI = str(Path(sys.executable).with_name("spec-workflow"))
SHARDS = 2
GITHUB_TOKEN = "ghp_e2eTOKEN0123456789abcdefghijklmnopqr"
CODEX_KEY = "sk-proj-e2e-volume-key-0123456789abcdef"


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
