"""The CLI's settings read their documented names."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from services.cli.settings import BrokerSettings, LauncherSettings


@pytest.fixture(autouse=True)
def no_dotenv(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Run where no `.env` is, with none of the names set."""
    monkeypatch.chdir(tmp_path)
    for name in ("API_URL", "API_HOST", "API_PORT", "RABBITMQ_URL", "VAR_DIR"):
        monkeypatch.delenv(name, raising=False)


def test_base_url_defaults_to_local_api() -> None:
    assert LauncherSettings().base_url == "http://127.0.0.1:8000"


def test_base_url_reaches_a_wildcard_bind_on_loopback(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("API_HOST", "0.0.0.0")
    monkeypatch.setenv("API_PORT", "9000")

    assert LauncherSettings().base_url == "http://127.0.0.1:9000"


def test_api_url_wins_over_host_and_port(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("API_URL", "http://api.internal:8080/")
    monkeypatch.setenv("API_PORT", "9000")

    assert LauncherSettings().base_url == "http://api.internal:8080"


def test_launcher_reads_documented_names(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("VAR_DIR", "/tmp/sw")
    monkeypatch.setenv("CODEX_SHARDS", "2")
    monkeypatch.setenv("LAUNCHER_READY_TIMEOUT", "5")
    monkeypatch.setenv("LAUNCHER_STOP_TIMEOUT", "7")

    settings = LauncherSettings()

    assert settings.var_dir == Path("/tmp/sw")
    assert settings.codex_shards == 2
    assert (settings.ready_timeout, settings.stop_timeout) == (5.0, 7.0)


def test_broker_settings_require_rabbitmq_url() -> None:
    with pytest.raises(ValidationError, match="RABBITMQ_URL"):
        BrokerSettings()


def test_broker_settings_read_documented_names(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RABBITMQ_URL", "amqp://u:p@h:5672/v")
    monkeypatch.setenv("RABBITMQ_MANAGEMENT_URL", "http://h:15672")
    monkeypatch.setenv("DELIVERY_LIMIT", "9")

    settings = BrokerSettings()

    assert str(settings.management_url) == "http://h:15672/"
    assert settings.delivery_limit == 9
