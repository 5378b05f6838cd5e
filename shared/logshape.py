"""What a shipped log record looks like (`shape`), which records are shipped
(`should_ship`), and the routing keys they travel under (`log.<service>.<level>`, in
runs that keep the order they were logged in). Pure: the shipper is `shared.logship`.
"""

from __future__ import annotations

import traceback
from datetime import UTC
from typing import TYPE_CHECKING, Any

from shared.redaction import redact_text

if TYPE_CHECKING:
    from loguru import Record

NO_SHIP = "no_ship"
"""`logger.bind(no_ship=True)`: a record that stays on stdout only."""

QUIET_PREFIXES = ("aio_pika", "aiormq", "pamqp", "faststream", "shared.logship")
"""Loggers whose records are never shipped (publishing would log about itself)."""

CONTEXT_KEYS = ("run_id", "task", "attempt")
MAX_MESSAGE = 8_192
MAX_EXCEPTION = 16_384


def should_ship(record: Record) -> bool:
    """False for records that would feed the shipper back into itself."""
    extra = record["extra"]
    if extra.get(NO_SHIP):
        return False
    names = (str(record["name"] or ""), str(extra.get("logger_name", "")))
    if any(n.startswith(QUIET_PREFIXES) for n in names):
        return False
    # FastStream's Received/Processed lines go through `<service>.broker`/`.app`.
    logger_name = names[1]
    return not (logger_name.endswith((".broker", ".app")) and record["level"].no < 30)


def shape(record: Record, service: str) -> dict[str, Any]:
    """The small JSON dict stored by the sink consumer."""
    extra = dict(record["extra"])
    extra.pop("service", None)
    shaped: dict[str, Any] = {
        "time": record["time"].astimezone(UTC).isoformat(),
        "level": record["level"].name,
        "service": str(record["extra"].get("service") or service),
        "message": record["message"][:MAX_MESSAGE],
    }
    for key in CONTEXT_KEYS:
        value = extra.pop(key, None)
        shaped[key] = None if value is None else value
    shaped["details"] = extra
    exception = record["exception"]
    if exception is not None and exception.type is not None:
        text = "".join(
            traceback.format_exception(
                exception.type, exception.value, exception.traceback
            )
        )
        shaped["exception"] = redact_text(text[-MAX_EXCEPTION:])
    return shaped


def routing_key(service: str, level: str) -> str:
    safe = "".join(c if c.isalnum() or c in "-_" else "_" for c in service)
    return f"log.{safe or 'unknown'}.{level.lower()}"


def runs_by_key(
    batch: list[dict[str, Any]],
) -> list[tuple[str, list[dict[str, Any]]]]:
    """The batch cut into consecutive runs of one routing key, in order.

    Not one group per key: an ERROR buffered before five WARNINGs and another ERROR
    would be published (and stored) ahead of those WARNINGs, and the sink's ids would
    no longer follow emission order (seen in CI).
    """
    runs: list[tuple[str, list[dict[str, Any]]]] = []
    for item in batch:
        key = routing_key(item["service"], item["level"])
        if runs and runs[-1][0] == key:
            runs[-1][1].append(item)
        else:
            runs.append((key, [item]))
    return runs
