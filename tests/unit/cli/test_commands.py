"""The typer app: its commands, and clean errors for missing settings."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from services.cli import app


def test_help_lists_the_commands() -> None:
    result = CliRunner().invoke(app, ["--help"])

    assert result.exit_code == 0
    for command in ("up", "down", "status", "demo", "db", "broker"):
        assert command in result.output


def test_broker_setup_without_rabbitmq_url_exits_2(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("RABBITMQ_URL", raising=False)

    result = CliRunner().invoke(app, ["broker", "setup"])

    assert result.exit_code == 2
    assert "RABBITMQ_URL" in result.output


def test_down_without_pid_files_stops_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("VAR_DIR", raising=False)

    result = CliRunner().invoke(app, ["down"])

    assert result.exit_code == 0
    assert "nothing to stop" in result.output
