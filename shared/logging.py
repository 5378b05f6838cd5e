"""configure_logging(): every log line, ours and the libraries', to one redacted sink.

Redaction happens twice: a loguru patcher masks the message and `extra` of every
record (by key and by value) before any sink sees it, and the stdout sink masks
secret values and token shapes in the finished line, which also covers exception
text and tracebacks. `diagnose=False` always: loguru's default prints local variable
values, tokens included, into tracebacks.
"""

from __future__ import annotations

import inspect
import logging
import sys
from typing import TYPE_CHECKING, Any, TextIO

from loguru import logger

from shared.redaction import redact, redact_text

if TYPE_CHECKING:
    from loguru import Record

UVICORN_LOGGERS = ("uvicorn", "uvicorn.error", "uvicorn.access")

_level = "INFO"


class InterceptHandler(logging.Handler):
    """loguru's documented stdlib recipe: re-emit a stdlib record at its caller."""

    def emit(self, record: logging.LogRecord) -> None:
        try:
            level: str | int = logger.level(record.levelname).name
        except ValueError:
            level = record.levelno

        frame, depth = inspect.currentframe(), 0
        while frame is not None:
            filename = frame.f_code.co_filename
            is_logging = filename == logging.__file__
            is_frozen = "importlib" in filename and "_bootstrap" in filename
            if depth > 0 and not (is_logging or is_frozen):
                break
            frame = frame.f_back
            depth += 1

        logger.bind(logger_name=record.name).opt(
            depth=depth, exception=record.exc_info
        ).log(level, record.getMessage())


class RedactingStream:
    """A text stream sink that masks secret values in each finished line."""

    def __init__(self, stream: TextIO) -> None:
        self._stream = stream

    def write(self, text: str) -> None:
        self._stream.write(redact_text(text))

    def flush(self) -> None:
        self._stream.flush()


def redact_record(record: Record) -> None:
    """loguru patcher: mask secrets in the message and in every `extra` value."""
    record["message"] = redact_text(record["message"])
    record["extra"] = redact(record["extra"])


def configure_logging(service: str, *, level: str, json: bool) -> None:
    """Send every log line, ours and the libraries', to one loguru sink on stdout.

    Safe to call again (tests): it replaces every sink and the stdlib root handlers.
    Further sinks (the `spec_workflow.logs` shipper) are added with `add_sink()`.
    """
    global _level
    _level = level.upper()
    logger.remove()
    logger.configure(extra={"service": service}, patcher=redact_record)
    logger.add(
        RedactingStream(sys.stdout), level=_level, serialize=json, diagnose=False
    )
    logging.root.handlers = [InterceptHandler()]
    logging.root.setLevel(_level)
    for name in UVICORN_LOGGERS:
        logging.getLogger(name).handlers.clear()
        logging.getLogger(name).propagate = True


def add_sink(sink: Any, **options: Any) -> int:
    """Add a loguru sink after `configure_logging()`; returns its id (`logger.remove`).

    Records reaching it are already redacted by the patcher. Text streams are wrapped
    so exception text is masked too; callables should log `message.record`, not the
    traceback. `diagnose` is forced off; `level` defaults to the configured level.
    """
    options["diagnose"] = False
    options.setdefault("level", _level)
    if hasattr(sink, "write") and not isinstance(sink, RedactingStream):
        sink = RedactingStream(sink)
    return logger.add(sink, **options)
