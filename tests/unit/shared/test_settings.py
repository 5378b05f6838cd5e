"""Every documented environment variable name is read, under that name."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from pydantic import AliasChoices
from pydantic_settings import BaseSettings

from services.api.settings import Settings as ApiSettings
from services.cli.settings import (
    BrokerSettings,
    ClientSettings,
    DatabaseSettings,
    DemoSettings,
    LauncherSettings,
    SecretsSettings,
    TapSettings,
    TokenSettings,
)
from services.codex_runner.settings import Settings as CodexSettings
from services.preflight.settings import Settings as PreflightSettings
from services.publisher.settings import Settings as PublisherSettings
from shared.routing import codex_volume_name
from shared.settings import ServiceSettings

ROOT = Path(__file__).resolve().parents[3]
SETTINGS: list[type[BaseSettings]] = [
    ServiceSettings,
    ApiSettings,
    PreflightSettings,
    CodexSettings,
    PublisherSettings,
    LauncherSettings,
    BrokerSettings,
    DatabaseSettings,
    TokenSettings,
    SecretsSettings,
    ClientSettings,
    TapSettings,
    DemoSettings,
]
REQUIRED = {
    "RABBITMQ_URL": "amqp://u:p@127.0.0.1:5672/v",
    "DATABASE_URL": "postgresql://postgres@127.0.0.1/db",
}


def names_read(cls: type[BaseSettings]) -> set[str]:
    names: set[str] = set()
    for field in cls.model_fields.values():
        alias = field.validation_alias
        if isinstance(alias, str):
            names.add(alias)
        elif isinstance(alias, AliasChoices):
            names.update(choice for choice in alias.choices if isinstance(choice, str))
    return names


def documented() -> set[str]:
    text = (ROOT / ".env.example").read_text()
    return set(re.findall(r"^([A-Z][A-Z0-9_]*)=", text, flags=re.MULTILINE))


def test_env_example_names_are_all_read() -> None:
    read = set().union(*(names_read(cls) for cls in SETTINGS))
    assert documented() - read == set()


def test_every_name_read_is_documented() -> None:
    read = set().union(*(names_read(cls) for cls in SETTINGS))
    assert read - documented() == set()


@pytest.fixture(autouse=True)
def _no_dotenv(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.chdir(tmp_path)  # a developer's .env must not leak into these tests
    for name in documented():
        monkeypatch.delenv(name, raising=False)


def test_api_settings_read_their_documented_names(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    values = {
        **REQUIRED,
        "API_HOST": "0.0.0.0",
        "API_PORT": "9001",
        "RELAY_INTERVAL": "0.25",
        "LEASE_MAX_REDISPATCH": "4",
        "CODEX_SHARDS": "5",
        "ARTIFACTS_ROOT": "/srv/a",
        "LOG_JSON": "false",
        "PREFETCH": "3",
        "GRACEFUL_TIMEOUT": "7",
    }
    for name, value in values.items():
        monkeypatch.setenv(name, value)
    s = ApiSettings()
    assert (s.api_host, s.api_port, s.relay_interval, s.lease_max_redispatch) == (
        "0.0.0.0",
        9001,
        0.25,
        4,
    )
    assert (s.codex_shards, str(s.artifacts_root), s.log_json, s.prefetch) == (
        5,
        "/srv/a",
        False,
        3,
    )
    assert str(s.database_url) == "postgresql+asyncpg://postgres@127.0.0.1/db"


def test_metrics_host_prefers_the_spec_workflow_name(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    for name, value in REQUIRED.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("STATSD_HOST", "statsd.local")
    monkeypatch.setenv("STATSD_PORT", "9125")
    assert (ServiceSettings().metrics_host, ServiceSettings().metrics_port) == (
        "statsd.local",
        9125,
    )
    monkeypatch.setenv("SPEC_WORKFLOW_METRICS_HOST", "metrics.local")
    monkeypatch.setenv("SPEC_WORKFLOW_METRICS_PORT", "8200")
    s = ServiceSettings()
    assert (s.metrics_host, s.metrics_port) == ("metrics.local", 8200)


def test_missing_required_connection_is_an_error() -> None:
    with pytest.raises(ValueError, match="RABBITMQ_URL"):
        ServiceSettings()


def test_publisher_settings_read_their_documented_names(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    values = {
        **REQUIRED,
        "PUBLISH_BRANCH_PREFIX": "bot",
        "PUBLISH_AUTHOR_NAME": "Spec Bot",
        "PUBLISH_LABELS": '["spec-workflow", "bot"]',
        "PUBLISH_MAX_FILES": "7",
        "PUBLISH_MAX_LINES": "70",
    }
    for name, value in values.items():
        monkeypatch.setenv(name, value)
    s = PublisherSettings()
    assert (s.branch_prefix, s.author_name, s.labels) == (
        "bot",
        "Spec Bot",
        ["spec-workflow", "bot"],
    )
    assert (s.max_files, s.max_lines) == (7, 70)
    assert s.author_email == "spec-workflow@users.noreply.github.com"


def test_codex_volume_prefix_names_the_shard_volumes() -> None:
    settings = ServiceSettings(
        RABBITMQ_URL="amqp://guest:guest@127.0.0.1:5672/",
        CODEX_VOLUME_PREFIX="spec-workflow_codex_auth_",
    )
    assert codex_volume_name(2, settings.codex_volume_prefix) == (
        "spec-workflow_codex_auth_2"
    )
    assert codex_volume_name(0) == "codex_auth_0"


@pytest.mark.parametrize("prefix", ["-x", "a/b", "a b", "x" * 102])
def test_codex_volume_prefix_must_be_a_volume_name(prefix: str) -> None:
    with pytest.raises(ValueError, match="CODEX_VOLUME_PREFIX"):
        ServiceSettings(
            RABBITMQ_URL="amqp://guest:guest@127.0.0.1:5672/",
            CODEX_VOLUME_PREFIX=prefix,
        )
