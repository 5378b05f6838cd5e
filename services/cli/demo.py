"""`demo`: the whole product on one machine, against a local sample repository.

`make demo` runs three steps (scripts/demo.sh), with a container engine in DOCKER_HOST:

- `demo prepare` creates the sample remote (`<VAR_DIR>/demo/remote/greeting.git`),
  picks the model -- OPENAI_API_KEY, else logged-in `codex_auth_<n>` volumes, else the
  bundled offline model, which it starts -- logs the shards' auth volumes in, and
  writes `<VAR_DIR>/demo/env`: the settings `up` must run with;
- `up` (with that env);
- `demo run` submits a run for the sample feature, follows it live, then shows the
  pushed branch and where to look.

`demo down` stops the stack and the offline model and deletes the demo's volumes.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import secrets
import shlex
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import typer
from rich.console import Console

from services.cli import api_client, demo_volumes, sample_repo
from services.cli.settings import DemoSettings
from services.cli.watch import watch

OPERATOR_PREFIX = "codex_auth_"
MODEL_MODULE = "services.cli.offline_model"


@dataclass(frozen=True)
class Paths:
    root: Path

    @classmethod
    def of(cls, settings: DemoSettings) -> Paths:
        return cls(settings.var_dir.resolve() / "demo")

    @property
    def remote(self) -> Path:
        return self.root / "remote" / "greeting.git"

    @property
    def env(self) -> Path:
        return self.root / "env"

    @property
    def plan(self) -> Path:
        return self.root / "plan.json"

    @property
    def model_key(self) -> Path:
        return self.root / "model.key"

    @property
    def model_pid(self) -> Path:
        return self.root / "model.pid"

    @property
    def model_log(self) -> Path:
        return self.root / "model.log"


def volumes(prefix: str, shards: int) -> list[str]:
    return [f"{prefix}{n}" for n in range(shards)]


def prepare(settings: DemoSettings) -> int:
    paths = Paths.of(settings)
    paths.root.mkdir(parents=True, exist_ok=True)
    sha = sample_repo.create(paths.remote)
    typer.echo(f"sample repository file://{paths.remote} (main at {sha[:12]})")
    stop_model(paths)
    try:
        env, model = asyncio.run(_choose_model(settings, paths))
    except demo_volumes.VolumeError as exc:
        typer.echo(f"the Codex auth volumes: {exc}", err=True)
        return 1
    env |= {"EXECUTOR": "docker", "CODEX_IMAGE": settings.codex_image}
    if settings.docker_host:
        env["DOCKER_HOST"] = settings.docker_host
    lines = [f"export {name}={shlex.quote(value)}" for name, value in env.items()]
    paths.env.write_text("\n".join(lines) + "\n")
    plan = {
        "repository": f"file://{paths.remote}",
        "featureKey": sample_repo.FEATURE_KEY,
        "model": model,
    }
    paths.plan.write_text(json.dumps(plan, indent=2) + "\n")
    typer.echo(f"model: {model}")
    return 0


async def _choose_model(
    settings: DemoSettings, paths: Paths
) -> tuple[dict[str, str], str]:
    """The env `up` needs for the model the demo uses, and a sentence saying which."""
    docker, image, shards = (
        settings.docker_host,
        settings.codex_image,
        settings.codex_shards,
    )
    prefix = settings.demo_volume_prefix
    if settings.openai_api_key is not None:
        key = settings.openai_api_key.get_secret_value()
        await demo_volumes.log_in(docker, image, volumes(prefix, shards), key)
        last = shards - 1
        return {"CODEX_VOLUME_PREFIX": prefix}, (
            f"the real OpenAI model (OPENAI_API_KEY logged into {prefix}0..{last})"
        )
    if await demo_volumes.logged_in(docker, image, volumes(OPERATOR_PREFIX, shards)):
        last = shards - 1
        return {"CODEX_VOLUME_PREFIX": OPERATOR_PREFIX}, (
            f"the real OpenAI model (logged-in volumes {OPERATOR_PREFIX}0..{last})"
        )
    key = secrets.token_urlsafe(24)
    paths.model_key.write_text(key + "\n")
    paths.model_key.chmod(0o600)
    base_url = start_model(paths, settings.demo_model_port)
    await demo_volumes.log_in(docker, image, volumes(prefix, shards), key)
    provider = {
        "id": "offline",
        "name": "MoonMind offline demo model",
        "base_url": base_url,
        "wire_api": "responses",
        "requires_openai_auth": True,
    }
    env = {
        "CODEX_VOLUME_PREFIX": prefix,
        "CODEX_PROVIDER": json.dumps(provider),
        # the model listens on the host's loopback
        "CODEX_NETWORK_MODE": "host",
    }
    return env, (
        "the bundled OFFLINE SCRIPTED MODEL at "
        f"{base_url} -- no OPENAI_API_KEY and no logged-in {OPERATOR_PREFIX}<n> "
        "volumes, so the real Codex CLI runs against a canned answer for the sample "
        "tasks; set OPENAI_API_KEY for the real model"
    )


def start_model(paths: Paths, port: int) -> str:
    """Start the offline model in the background; its base URL once it listens."""
    argv = [sys.executable, "-m", MODEL_MODULE, "--port", str(port),
            "--key-file", str(paths.model_key)]  # fmt: skip
    with paths.model_log.open("ab") as log:
        child = subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    paths.model_pid.write_text(f"{child.pid}\n")
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        if child.poll() is not None:
            raise demo_volumes.VolumeError(
                f"the offline model exited ({child.returncode}); see {paths.model_log}"
            )
        with (
            contextlib.suppress(OSError),
            socket.create_connection(("127.0.0.1", port), timeout=0.5),
        ):
            return f"http://127.0.0.1:{port}/v1"
        time.sleep(0.1)
    raise demo_volumes.VolumeError(f"the offline model did not listen on port {port}")


def _model_pid(paths: Paths) -> int | None:
    try:
        pid = int(paths.model_pid.read_text())
        argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except (OSError, ValueError):
        return None
    return pid if MODEL_MODULE.encode() in argv else None


def stop_model(paths: Paths) -> bool:
    """Stop the offline model this demo started; whether one was running."""
    pid = _model_pid(paths)
    paths.model_pid.unlink(missing_ok=True)
    if pid is None:
        return False
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGTERM)
    return True


def run(settings: DemoSettings, timeout: float) -> int:
    """Submit the sample run, follow it, show the result; 0 only if it succeeded."""
    paths = Paths.of(settings)
    try:
        plan = json.loads(paths.plan.read_text())
    except (OSError, ValueError):
        typer.echo("no demo plan: run `spec-workflow demo prepare` first", err=True)
        return 1
    typer.echo(f"model: {plan['model']}")
    console = Console()
    request = api_client.RunRequest(
        plan["repository"], plan["featureKey"], publish_mode="branch"
    )

    async def follow() -> tuple[int, dict[str, Any]]:
        async with api_client.api_client(settings) as client:
            created, _ = await api_client.create_run(client, request)
            console.print(f"run {created['id']} for {plan['featureKey']}")
            code = await asyncio.wait_for(
                watch(client, created["id"], console), timeout
            )
            return code, await api_client.get_run(client, created["id"])

    code, final = asyncio.run(follow())
    _show(settings, paths, final)
    return code


def _show(settings: DemoSettings, paths: Paths, run: dict[str, Any]) -> None:
    run_id = run["id"]
    branch = run.get("branchName")
    lines = [""]
    if branch and branch in sample_repo.branches(paths.remote):
        lines += [
            f"pushed branch {branch} to file://{paths.remote}:",
            f"  git -C {paths.remote} diff main {branch}",
            "",
            sample_repo.diff(paths.remote, branch),
        ]
    artifacts = settings.artifacts_root.resolve() / run_id
    lines += [
        "where to look:",
        f"  the run           spec-workflow runs show {run_id}",
        f"  its artifacts     {artifacts}",
        f"  its logs          spec-workflow logs --run {run_id}",
        "  live messages     spec-workflow tap --json   (then submit another run)",
        f"  process logs      {settings.var_dir.resolve() / 'log'}",
        f"  the API           {settings.base_url}/docs",
        "  clean up          make demo-down",
    ]
    typer.echo("\n".join(lines))


def down(settings: DemoSettings, stop_stack: int) -> int:
    """After `down` of the stack: stop the offline model, delete the demo's volumes."""
    paths = Paths.of(settings)
    if stop_model(paths):
        typer.echo("offline model stopped")
    try:
        deleted = asyncio.run(
            demo_volumes.remove(
                settings.docker_host,
                volumes(settings.demo_volume_prefix, settings.codex_shards),
            )
        )
    except demo_volumes.VolumeError as exc:
        typer.echo(str(exc), err=True)
        return 1
    if deleted:
        typer.echo(f"deleted volumes {', '.join(deleted)}")
    return stop_stack
