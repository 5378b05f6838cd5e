"""Codex runner settings: paths the container engine sees are absolute."""

from __future__ import annotations

from pathlib import Path

import pytest

from services.codex_runner.settings import Settings
from services.preflight.settings import Settings as PreflightSettings
from services.publisher.settings import Settings as PublisherSettings


def test_relative_roots_become_absolute(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A relative bind source reaches the engine as the name of a volume to create
    # ("names must match [a-zA-Z0-9][a-zA-Z0-9_.-]*" from Podman), so the roots the
    # runner mounts from are resolved against the working directory at start.
    monkeypatch.chdir(tmp_path)
    settings = Settings(
        RABBITMQ_URL="amqp://guest:guest@127.0.0.1:5672/",
        WORKSPACES_ROOT="var/workspaces",
        ARTIFACTS_ROOT="var/artifacts",
        CODEX_HOMES_ROOT="var/homes",
    )
    assert settings.workspaces_root == tmp_path.resolve() / "var/workspaces"
    assert settings.artifacts_root == tmp_path.resolve() / "var/artifacts"
    assert settings.codex_homes_root == tmp_path.resolve() / "var/homes"


@pytest.mark.parametrize("kind", [PreflightSettings, PublisherSettings])
def test_every_worker_resolves_its_roots(
    kind: type[PreflightSettings | PublisherSettings],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.chdir(tmp_path)
    settings = kind(
        RABBITMQ_URL="amqp://guest:guest@127.0.0.1:5672/",
        WORKSPACES_ROOT="w",
        ARTIFACTS_ROOT="a",
    )
    assert settings.workspaces_root == tmp_path.resolve() / "w"
    assert settings.artifacts_root == tmp_path.resolve() / "a"
