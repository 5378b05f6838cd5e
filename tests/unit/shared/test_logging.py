"""configure_logging(): one JSON sink on stdout, stdlib routed to it, secrets masked."""

from __future__ import annotations

import io
import json
import logging
import sys
from collections.abc import Iterator
from typing import Any

import pytest
from loguru import logger

from shared.logging import UVICORN_LOGGERS, add_sink, configure_logging
from shared.redaction import forget_secrets, register_secret

DIAGNOSE_MARKER = "diagnose" + "-marker-" + "value"


@pytest.fixture(autouse=True)
def restore_logging() -> Iterator[None]:
    """configure_logging() is process-wide: restore loguru and the stdlib root after."""
    root_handlers, root_level = logging.root.handlers[:], logging.root.level
    yield
    logger.remove()
    logger.configure(extra={}, patcher=lambda _record: None)
    logger.add(sys.stderr)
    logging.root.handlers = root_handlers
    logging.root.setLevel(root_level)
    forget_secrets()


def json_lines(out: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in out.splitlines() if line.strip()]


def test_json_line_carries_service_and_bound_context(
    capsys: pytest.CaptureFixture[str],
) -> None:
    configure_logging("preflight", level="INFO", json=True)

    with logger.contextualize(run_id="run-1", task="discover_next_phase", attempt=1):
        logger.info("hello {}", "world")

    (line,) = json_lines(capsys.readouterr().out)
    record = line["record"]
    assert record["message"] == "hello world"
    assert record["level"]["name"] == "INFO"
    assert record["extra"] == {
        "service": "preflight",
        "run_id": "run-1",
        "task": "discover_next_phase",
        "attempt": 1,
    }


def test_message_and_extra_are_redacted(capsys: pytest.CaptureFixture[str]) -> None:
    register_secret("run-credential-123")
    configure_logging("publisher", level="INFO", json=True)

    logger.bind(github_token="plain", feature_key="042-checkout").info(
        "push with run-credential-123 to https://bot:pw@github.com/acme/shop.git"
    )

    out = capsys.readouterr().out
    (line,) = json_lines(out)
    assert (
        line["record"]["message"]
        == "push with *** to https://***@github.com/acme/shop.git"
    )
    assert line["record"]["extra"]["github_token"] == "***"
    assert line["record"]["extra"]["feature_key"] == "042-checkout"
    assert "run-credential-123" not in out


def test_stdlib_logging_is_routed_through_loguru(
    capsys: pytest.CaptureFixture[str],
) -> None:
    configure_logging("api", level="INFO", json=True)

    logging.getLogger("aio_pika.robust_connection").warning(
        "reconnecting to %s", "amqp://guest:guest@mq:5672/"
    )
    logging.getLogger("some.library").debug("below the level")

    (line,) = json_lines(capsys.readouterr().out)
    assert line["record"]["level"]["name"] == "WARNING"
    assert line["record"]["message"] == "reconnecting to amqp://***@mq:5672/"
    assert line["record"]["extra"]["logger_name"] == "aio_pika.robust_connection"
    assert line["record"]["extra"]["service"] == "api"


def test_uvicorn_loggers_propagate_to_the_root_handler() -> None:
    logging.getLogger("uvicorn.access").addHandler(logging.NullHandler())
    logging.getLogger("uvicorn.access").propagate = False

    configure_logging("api", level="INFO", json=True)

    for name in UVICORN_LOGGERS:
        assert logging.getLogger(name).handlers == []
        assert logging.getLogger(name).propagate


def explode(secret_local: str) -> None:
    raise RuntimeError(f"failed with sk-{'x' * 30} ({len(secret_local)} chars)")


def test_tracebacks_show_no_locals_and_mask_secrets(
    capsys: pytest.CaptureFixture[str],
) -> None:
    configure_logging("codex_runner", level="INFO", json=True)

    try:
        explode(DIAGNOSE_MARKER)
    except RuntimeError:
        logger.exception("job crashed")

    out = capsys.readouterr().out
    (line,) = json_lines(out)
    assert "Traceback" in line["text"]
    assert "RuntimeError: failed with sk-*** (21 chars)" in line["text"]
    assert DIAGNOSE_MARKER not in out  # diagnose=True would print the argument's value
    assert "sk-xxxx" not in out


def test_configure_twice_keeps_a_single_sink(
    capsys: pytest.CaptureFixture[str],
) -> None:
    configure_logging("preflight", level="INFO", json=True)
    configure_logging("preflight", level="WARNING", json=False)

    logger.info("dropped")
    logger.warning("kept")

    assert capsys.readouterr().out.count("kept") == 1
    assert len(logging.root.handlers) == 1


def test_added_sink_gets_redacted_records_at_the_configured_level(
    capsys: pytest.CaptureFixture[str],
) -> None:
    configure_logging("publisher", level="INFO", json=True)
    stream = io.StringIO()

    add_sink(stream, serialize=True)
    logger.debug("too detailed")
    logger.info("token ghp_{}", "a" * 36)

    (line,) = json_lines(stream.getvalue())
    assert line["record"]["message"] == "token ghp_***"
    assert line["record"]["extra"]["service"] == "publisher"
    capsys.readouterr()
