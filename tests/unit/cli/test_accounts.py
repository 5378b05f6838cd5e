"""`users`, `tokens`, `secrets`: output formats, error lines, settings (no database)."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from pathlib import Path

import asyncpg
import pytest
from sqlalchemy.exc import ProgrammingError
from typer.testing import CliRunner

from services.api.vault import parse_key
from services.cli import app
from services.cli.accounts import table, when
from services.cli.accounts_db import describe_database_error, root_cause
from services.cli.settings import SecretsSettings, TokenSettings

UNREACHABLE = "postgresql://postgres:hunter2@127.0.0.1:1/nowhere"
NAMES = (
    "DATABASE_URL",
    "SECRETS_KEY",
    "SECRETS_KEY_FILE",
    "SECRETS_PREVIOUS_KEYS",
    "API_TOKEN_DEFAULT_TTL_DAYS",
)


@pytest.fixture(autouse=True)
def no_dotenv(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    for name in NAMES:
        monkeypatch.delenv(name, raising=False)


def test_when_is_utc_to_the_second() -> None:
    moment = datetime(2030, 1, 2, 5, 4, 5, 999, tzinfo=timezone(timedelta(hours=2)))

    assert when(moment) == "2030-01-02T03:04:05Z"
    assert when(None) == "-"
    assert when(None, "never") == "never"


def test_table_pads_columns_but_not_the_last() -> None:
    lines = table(("ID", "EMAIL"), [("1", "a@example.com"), ("22", "b@x")])

    assert lines == ["ID  EMAIL", "1   a@example.com", "22  b@x"]


def test_table_without_rows_is_its_header() -> None:
    assert table(("ID", "EMAIL", "CREATED"), []) == ["ID  EMAIL  CREATED"]


def test_database_error_names_the_database_without_its_password() -> None:
    line = describe_database_error(UNREACHABLE, ConnectionRefusedError(111, "refused"))

    assert "hunter2" not in line
    assert line.startswith("database postgresql://postgres:***@127.0.0.1:1/nowhere:")
    assert "make services" in line
    assert "\n" not in line


def test_missing_table_suggests_db_upgrade() -> None:
    driver = asyncpg.UndefinedTableError('relation "users" does not exist')
    adapted = Exception("<class 'asyncpg.exceptions.UndefinedTableError'>: …")
    adapted.__cause__ = driver
    error = ProgrammingError("SELECT users.id FROM users", {}, adapted)

    assert root_cause(error) is driver
    line = describe_database_error("postgresql://db/x", error)
    assert line == (
        'database postgresql://db/x: relation "users" does not exist '
        "(run `spec-workflow db upgrade`)"
    )


def test_help_lists_the_account_commands() -> None:
    result = CliRunner().invoke(app, ["--help"])

    for command in ("users", "tokens", "secrets"):
        assert command in result.output


def test_generate_key_prints_a_fresh_usable_key() -> None:
    first = CliRunner().invoke(app, ["secrets", "generate-key"])
    second = CliRunner().invoke(app, ["secrets", "generate-key"])

    assert first.exit_code == second.exit_code == 0
    assert len(parse_key(first.output.strip())) == 32
    assert first.output != second.output


def _fails_cleanly(args: list[str], *expected: str) -> str:
    result = CliRunner().invoke(app, args)

    assert result.exit_code == 1, result.output
    assert isinstance(result.exception, SystemExit)  # not an uncaught error
    assert "Traceback" not in result.output
    lines = result.output.strip().splitlines()
    assert len(lines) == 1, result.output
    for text in expected:
        assert text in lines[0]
    return lines[0]


def test_rotate_without_a_key_fails_cleanly(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DATABASE_URL", UNREACHABLE)

    _fails_cleanly(["secrets", "rotate"], "SECRETS_KEY")


def test_rotate_with_a_malformed_key_fails_cleanly(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("DATABASE_URL", UNREACHABLE)
    monkeypatch.setenv("SECRETS_KEY", "not-a-key")

    _fails_cleanly(["secrets", "rotate"], "base64")


def test_rotate_with_an_unreadable_key_file_fails_cleanly(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("DATABASE_URL", UNREACHABLE)
    monkeypatch.setenv("SECRETS_KEY_FILE", str(tmp_path / "missing.key"))

    _fails_cleanly(["secrets", "rotate"], "SECRETS_KEY_FILE")


@pytest.mark.parametrize(
    "args",
    [
        ["users", "create", "--email", "a@example.com"],
        ["users", "list"],
        ["tokens", "create", "--user", "a@example.com"],
        ["tokens", "list", "--user", "a@example.com"],
        ["tokens", "revoke", "00000000-0000-0000-0000-000000000001"],
    ],
)
def test_unreachable_database_is_one_line(
    monkeypatch: pytest.MonkeyPatch, args: list[str]
) -> None:
    monkeypatch.setenv("DATABASE_URL", UNREACHABLE)

    line = _fails_cleanly(args, "127.0.0.1:1/nowhere")
    assert "hunter2" not in line


def test_revoke_needs_a_token_id(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DATABASE_URL", UNREACHABLE)

    _fails_cleanly(["tokens", "revoke", "sw_abc"], "not a token id")


def test_commands_without_database_url_exit_2() -> None:
    result = CliRunner().invoke(app, ["users", "list"])

    assert result.exit_code == 2
    assert "DATABASE_URL" in result.output


def test_token_settings_default_and_override(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DATABASE_URL", "postgresql://postgres@127.0.0.1/db")
    assert TokenSettings().token_default_ttl_days == 90

    monkeypatch.setenv("API_TOKEN_DEFAULT_TTL_DAYS", "0")
    assert TokenSettings().token_default_ttl_days == 0


def test_secrets_settings_split_previous_keys(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DATABASE_URL", "postgresql://postgres@127.0.0.1/db")
    monkeypatch.setenv("SECRETS_KEY", "current")
    monkeypatch.setenv("SECRETS_PREVIOUS_KEYS", " old1 ,, old2,")

    settings = SecretsSettings()

    assert settings.previous_keys() == ["old1", "old2"]
    assert "current" not in repr(settings)


def test_secrets_settings_without_previous_keys(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("DATABASE_URL", "postgresql://postgres@127.0.0.1/db")

    assert SecretsSettings().previous_keys() == []
