"""`make demo`'s script (scripts/demo.sh) from start to end, then `demo-down`.

It runs on this session's database and vhost, in a private VAR_DIR, with its own
ports and volume prefix, and reuses the Podman service `make test` started (which
`down` must then leave running).
"""

from __future__ import annotations

import os
import secrets
import subprocess
from pathlib import Path

import aiodocker
import pytest
from aiodocker.exceptions import DockerError

from services.cli import sample_repo
from tests.support.infra import provision
from tests.support.stack import free_port

ROOT = Path(__file__).resolve().parents[2]


def demo(step: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["bash", "scripts/demo.sh", step],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
        stdin=subprocess.DEVNULL,
    )


async def volume_exists(name: str) -> bool:
    async with aiodocker.Docker() as docker:
        try:
            await docker.volumes.get(name)  # type: ignore[no-untyped-call]
        except DockerError as exc:
            if exc.status == 404:
                return False
            raise
        return True


@pytest.mark.timeout(900)
async def test_demo_pushes_the_sample_change_to_a_branch_then_cleans_up(
    tmp_path: Path,
) -> None:
    prefix = f"e2edemo{secrets.token_hex(4)}_"
    async with provision() as infra:
        env = {
            key: value
            for key, value in os.environ.items()
            if key
            not in (
                "OPENAI_API_KEY",
                "CODEX_PROVIDER",
                "CODEX_VOLUME_PREFIX",
                "API_URL",
            )
        } | {
            "DATABASE_URL": infra.database_url,
            "RABBITMQ_URL": infra.rabbitmq_url,
            "RABBITMQ_MANAGEMENT_URL": infra.management_url,
            "VAR_DIR": str(tmp_path / "var"),
            "ARTIFACTS_ROOT": str(tmp_path / "artifacts"),
            "WORKSPACES_ROOT": str(tmp_path / "work"),
            "API_HOST": "127.0.0.1",
            "API_PORT": str(free_port()),
            "DEMO_MODEL_PORT": str(free_port()),
            "DEMO_VOLUME_PREFIX": prefix,
            "CODEX_SHARDS": "1",
            "GRACEFUL_TIMEOUT": "5",
            "LAUNCHER_STOP_TIMEOUT": "15",
            "RELAY_INTERVAL": "0.5",
        }
        up = demo("up", env)
        try:
            output = up.stdout + up.stderr
            assert up.returncode == 0, output
            assert "OFFLINE SCRIPTED MODEL" in output  # says plainly which model
            assert await volume_exists(f"{prefix}0")
            remote = tmp_path / "var" / "demo" / "remote" / "greeting.git"
            pushed = [b for b in sample_repo.branches(remote) if b != "main"]
            assert len(pushed) == 1
            assert pushed[0].startswith("speckit/001-greeting/T002-")
            change = sample_repo.diff(remote, pushed[0])
            assert "+def greet(name: str) -> str:" in change
            assert "+- [X] T002 [US1] Implement greet(name)" in change
            assert f"pushed branch {pushed[0]}" in output
            assert "spec-workflow logs --run" in output
        finally:
            down = demo("down", env)
        assert down.returncode == 0, down.stdout + down.stderr
        assert not await volume_exists(f"{prefix}0")
        assert not list((tmp_path / "var" / "run").glob("*.pid"))
        # the Podman service `make test` started is still there for the other tests
        async with aiodocker.Docker() as docker:
            assert (await docker.version())["Version"]
