"""The stack `make chaos` runs against: many seeded repositories, a push log, extras.

`chaos_stack(...)` launches the whole system with `tests.support.stack.launch` on a
private database and vhost, tuned for fast stages: Codex as a host process
(`EXECUTOR=process`, `CODEX_BIN`) against the scripted model, short leases and
heartbeats, a fast relay and reaper. The Codex probe finds no auth volume
(`CODEX_VOLUME_PREFIX` is unique) and passes in API-key mode: the OpenAI key is
seeded into the default user's profile, and the runner hands it to Codex as
`CODEX_API_KEY`. Each run gets a repository of its own (one active run per
repository and feature), and every bare repository logs the ref updates it accepts
(`post-receive`), so duplicated pushes can be counted. Extra replicas of the stage
services run beside the ones `spec-workflow up` started.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import secrets
import signal
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path

from services.cli.processes import process_table
from tests.support.containers import AuthVolumes, ContainerSettings
from tests.support.github import FakeGitHub
from tests.support.gitserver import GitSmartHTTPServer
from tests.support.model import (
    Chooser,
    Request,
    Script,
    ScriptedModel,
    Step,
    patch,
    say,
)
from tests.support.specrepo import AGENT_PATCH, seed_spec_repo
from tests.support.stack import CODEX_KEY, GITHUB_TOKEN, Stack, launch

SHARDS = 4
EDIT = [patch("c1", AGENT_PATCH)]
DONE = [say("Added the cart model and checked T003.")]
NOTHING = [say("Nothing needed changing.")]  # an empty diff: the run fails no_changes
FAIL_ONCE = "chaos:fail-once"
"""Marker in a run's notes: its first Codex execution changes nothing."""

# Runs in the hook's own process (receive-pack's child): one short line per ref update,
# appended with O_APPEND, so concurrent pushes never interleave within a line.
_POST_RECEIVE = """#!/bin/sh
while read -r old new ref; do
  printf '%s %s %s %s\\n' '{repo}' "$old" "$new" "$ref" >> '{log}'
done
exit 0
"""


def overrides(home: Path, model_url: str, codex_bin: Path) -> dict[str, str]:
    """The fast stage configuration of every chaos stack."""
    provider = {
        "id": "scripted",
        "name": "Scripted",
        "base_url": model_url,
        "wire_api": "responses",
        "env_key": "CODEX_API_KEY",
    }
    return {
        "CODEX_SHARDS": str(SHARDS),
        "EXECUTOR": "process",
        "CODEX_BIN": str(codex_bin),
        "CODEX_HOMES_ROOT": str(home / "codex-homes"),
        "CODEX_PROVIDER": json.dumps(provider),
        "CODEX_VOLUME_PREFIX": f"chaos{secrets.token_hex(4)}_codex_auth_",
        "OPENAI_API_KEY": CODEX_KEY,
        "CODEX_LEASE_SECONDS": "20",
        "HEARTBEAT_INTERVAL": "2",
        "REAPER_INTERVAL": "1",
        "LEASE_MAX_REDISPATCH": "10",
        "CODEX_TIMEOUT": "60",
        "CODEX_IDLE_TIMEOUT": "30",
        "CODEX_STOP_TIMEOUT": "1",
        "RELAY_INTERVAL": "0.2",
        "GRACEFUL_TIMEOUT": "10",
        "LAUNCHER_STOP_TIMEOUT": "15",
        "PREFLIGHT_CACHE_SECONDS": "600",
        "GIT_TIMEOUT": "30",
        "LOG_LEVEL": "INFO",
    }


SUMMARY_KEYS = (
    "EXECUTOR",
    "CODEX_LEASE_SECONDS",
    "HEARTBEAT_INTERVAL",
    "REAPER_INTERVAL",
    "LEASE_MAX_REDISPATCH",
    "RELAY_INTERVAL",
    "GRACEFUL_TIMEOUT",
)


def overrides_summary() -> str:
    """The settings that shape the chaos runs, as `NAME=value` pairs."""
    fake = overrides(Path("/"), "http://127.0.0.1/v1", Path("codex"))
    pairs = [f"{key}={fake[key]}" for key in SUMMARY_KEYS]
    return ", ".join([*pairs, "2 replicas of preflight and publisher"])


def chooser(model: ScriptedModel, think: float) -> Chooser:
    """Every Codex execution thinks `think` s before its edit. The first execution of
    a run whose notes say `fail_once_note(n)` changes nothing (the run fails with
    no_changes); later ones work."""

    def script(request: Request) -> Script | None:
        marker = _FAIL_ONCE.search(json.dumps(request.body))
        if marker is not None and request.turn == 0:
            firsts = [
                r for r in list(model.requests) if r.turn == 0 and r.mentions(marker[0])
            ]
            if len(firsts) <= 1:  # this request is already recorded
                return [NOTHING]
        return [Step(items=EDIT, delay=think), DONE]

    return script


def fail_once_note(n: int) -> str:
    return f"{FAIL_ONCE}:{n}."


_FAIL_ONCE = re.compile(re.escape(FAIL_ONCE) + r":\d+\.")


@dataclass(frozen=True)
class Push:
    repo: str
    old: str
    new: str
    ref: str


class PushLog:
    """Ref updates every bare repository accepted (from its `post-receive` hook)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        path.touch()

    def install(self, git: GitSmartHTTPServer, full_name: str) -> None:
        hook = git.repo_path(full_name) / "hooks" / "post-receive"
        hook.write_text(_POST_RECEIVE.format(repo=full_name, log=self.path))
        hook.chmod(0o755)

    def pushes(self) -> list[Push]:
        found = []
        for line in self.path.read_text().splitlines():
            parts = line.split()
            if len(parts) == 4:
                found.append(Push(*parts))
        return found


@dataclass
class Replicas:
    """Extra stage replicas beside `up`'s (named `<service>#<n>`), owned here."""

    stack: Stack
    children: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)

    def argv(self, service: str) -> tuple[str, ...]:
        api_url = self.stack.env["API_URL"]
        specs = process_table(sys.executable, SHARDS, api_url)
        return next(s.argv for s in specs if s.name == service)

    def start(self, name: str) -> int:
        service = name.split("#", 1)[0]
        log = self.stack.var_dir / "log" / f"{name.replace('#', '-r')}.log"
        log.parent.mkdir(parents=True, exist_ok=True)
        with log.open("ab") as out:
            child = subprocess.Popen(
                self.argv(service),
                env=self.stack.env,
                cwd=self.stack.var_dir.parent,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        self.children[name] = child
        return child.pid

    def signal(self, name: str, sig: signal.Signals) -> int:
        child = self.children[name]
        with contextlib.suppress(ProcessLookupError):
            os.kill(child.pid, sig)
        return child.pid

    def reap(self, name: str, timeout: float = 30) -> None:
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.children[name].wait(timeout)

    def alive(self, name: str) -> bool:
        return self.children[name].poll() is None

    def stop_all(self) -> None:
        for child in self.children.values():
            if child.poll() is None:
                child.send_signal(signal.SIGTERM)
        for child in self.children.values():
            try:
                child.wait(20)
            except subprocess.TimeoutExpired:
                child.kill()
                child.wait(5)


@dataclass
class ChaosRig:
    stack: Stack
    github: FakeGitHub
    git: GitSmartHTTPServer
    model: ScriptedModel
    repos: list[str]
    pushes: PushLog
    replicas: Replicas

    @property
    def database_dsn(self) -> str:
        return self.stack.env["DATABASE_URL"].replace(
            "postgresql+asyncpg://", "postgresql://", 1
        )

    def workers(self) -> list[str]:
        """Every stage process a fault may hit (up's and the extra replicas)."""
        shards = [f"codex_runner-{n}" for n in range(SHARDS)]
        return ["preflight", "publisher", "relay", *shards, *self.replicas.children]

    def kill(self, name: str, sig: signal.Signals = signal.SIGKILL) -> int:
        if name in self.replicas.children:
            return self.replicas.signal(name, sig)
        pid = self.stack.pid(name)
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, sig)
        return pid

    def wait_dead(self, name: str, pid: int, timeout: float = 30) -> bool:
        if name in self.replicas.children:
            self.replicas.reap(name, timeout)
            return not self.replicas.alive(name)
        return _wait_gone(pid, timeout)

    def start(self, name: str) -> int:
        if name in self.replicas.children:
            return self.replicas.start(name)
        return self.stack.start(name)

    def alive(self, name: str) -> bool:
        if name in self.replicas.children:
            return self.replicas.alive(name)
        return _alive(self.stack.pid(name))


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as stat:
            state = stat.read().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError):
        return False
    return state not in ("Z", "X")


def _wait_gone(pid: int, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not _alive(pid):
            return True
        time.sleep(0.05)
    return not _alive(pid)


def codex_binary() -> Path:
    """CODEX_BIN (set by `.ci/podman-env.sh run`), else `.ci/install-codex.sh`."""
    configured = ContainerSettings().codex_bin
    if configured:
        return Path(configured)
    done = subprocess.run(
        ["bash", ".ci/install-codex.sh"],
        capture_output=True,
        text=True,
        check=True,
        stdin=subprocess.DEVNULL,
    )
    return Path(done.stdout.strip())


@asynccontextmanager
async def chaos_stack(
    home: Path, runs: int, *, think: float = 0.5, extra: dict[str, str] | None = None
) -> AsyncIterator[ChaosRig]:
    """A stack with `runs` seeded repositories `chaos/r<n>` and two replicas of
    preflight and publisher; everything stopped and dropped at exit."""
    codex_bin = codex_binary()
    await asyncio.to_thread(home.mkdir, parents=True, exist_ok=True)
    with (
        _statsd() as statsd,
        GitSmartHTTPServer() as git,
        FakeGitHub(git=git) as github,
    ):
        github.add_user("octo", GITHUB_TOKEN)
        pushes = PushLog(home / "pushes.log")
        repos = [f"chaos/r{n:03d}" for n in range(runs)]
        for name in repos:
            seed_spec_repo(git, name)
            github.add_repo(name)
            github.grant("octo", name, "write")
            pushes.install(git, name)
        model = ScriptedModel([EDIT, DONE], api_key=CODEX_KEY)
        model.choose = chooser(model, think)
        with model:
            # No volumes exist under this prefix: the probe says volume_missing and
            # the profile's OpenAI key makes it pass in API-key mode.
            volumes = AuthVolumes(ContainerSettings().codex_image or "", "", ())
            settings = {**overrides(home, model.base_url, codex_bin), **(extra or {})}
            async with launch(
                home,
                statsd=statsd,
                forge=(git, github, seed_spec_repo(git, "chaos/seed")),
                model=model,
                volumes=volumes,
                overrides=settings,
            ) as stack:
                replicas = Replicas(stack)
                try:
                    for name in ("preflight#2", "publisher#2"):
                        replicas.start(name)
                    yield ChaosRig(stack, github, git, model, repos, pushes, replicas)
                finally:
                    replicas.stop_all()


@contextlib.contextmanager
def _statsd() -> Iterator[socket.socket]:
    listener = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    listener.bind(("127.0.0.1", 0))
    listener.setblocking(False)
    try:
        yield listener
    finally:
        listener.close()
