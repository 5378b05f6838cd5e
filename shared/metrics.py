"""StatsD metrics with DogStatsD tags: metric names, the client and `get_metrics()`.

Why not `datadog.dogstatsd.DogStatsd` (0.56.0): tested against a local UDP socket, it
appends tags from `DATADOG_TAGS`/`DD_ENV`/`DD_SERVICE`/`DD_VERSION` and an `|e:` field
from `DD_EXTERNAL_ENV` to every line (only private attributes turn the latter off),
goes silent when `DD_DOGSTATSD_DISABLE` is set, logs a WARNING for every datagram a
dead collector refuses and then closes its socket, so the next send runs `getaddrinfo`
again (a blocking DNS lookup in our event loop), and counts no errors once telemetry
is off. Importing it also pulls in `requests`, builds a module-level client and
installs fork hooks. The few lines below resolve the address once, send on a
connected non-blocking socket (so a refused datagram is reported on the next send),
count errors and never raise.
"""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator, Mapping
from contextlib import AbstractContextManager, contextmanager
from typing import Protocol, runtime_checkable

from loguru import logger

from shared.settings import ServiceSettings

TASK_START = "task_start"
TASK_SUCCESS = "task_success"
TASK_FAILURE = "task_failure"
TASK_DURATION = "task_duration"

Tag = str | int | bool

RESOLVE_INTERVAL = 30.0
"""Seconds between address lookups while sends fail (the collector may move)."""

_TAG_FORBIDDEN = str.maketrans(
    {",": "_", "|": "_", "#": "_", " ": "_", "\n": "_"}
)  # DogStatsD separators


def tag_value(value: Tag) -> str:
    """Lower-case tag value: `True` → `true`, `TaskName.X` → its value."""
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value).lower().translate(_TAG_FORBIDDEN)


def tag_values(tags: Mapping[str, Tag]) -> dict[str, str]:
    return {name: tag_value(value) for name, value in tags.items()}


def format_line(prefix: str, body: str, tags: Mapping[str, Tag]) -> str:
    """`<prefix>.<name>:<value>|<type>|#k:v,…`; tags keep the caller's order."""
    name = f"{prefix}.{body}" if prefix else body
    if not tags:
        return name
    return (
        name
        + "|#"
        + ",".join(f"{key}:{value}" for key, value in tag_values(tags).items())
    )


@runtime_checkable  # FastStream validates a `MetricsDep` argument with isinstance()
class Metrics(Protocol):
    """What handlers use; `tests/support/fakes.RecordingMetrics` implements it too."""

    def incr(self, name: str, value: int = 1, **tags: Tag) -> None: ...

    def timing(self, name: str, ms: float, **tags: Tag) -> None: ...

    def timed(self, name: str, **tags: Tag) -> AbstractContextManager[None]: ...


class StatsdMetrics:
    """StatsD over UDP with DogStatsD-style tags. Sending never raises."""

    def __init__(self, host: str, port: int, prefix: str) -> None:
        self.host, self.port, self.prefix = host, port, prefix.strip(".")
        self.send_errors = 0
        self._sock: socket.socket | None = None
        self._resolved_at = float("-inf")
        self._connect()

    def incr(self, name: str, value: int = 1, **tags: Tag) -> None:
        self._send(f"{name}:{value}|c", tags)

    def timing(self, name: str, ms: float, **tags: Tag) -> None:
        self._send(f"{name}:{ms:.3f}|ms", tags)

    def timed(self, name: str, **tags: Tag) -> AbstractContextManager[None]:
        """Emit `name` in ms, tagged status=success|failure."""
        return timed_block(self, name, tags)

    def close(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None

    def _connect(self) -> None:
        # Rate-limited: getaddrinfo blocks, and a dead collector must not turn every
        # send into a DNS lookup.
        now = time.monotonic()
        if now - self._resolved_at < RESOLVE_INTERVAL:
            return
        self._resolved_at = now
        self.close()
        try:
            family, kind, proto, _, address = socket.getaddrinfo(
                self.host, self.port, type=socket.SOCK_DGRAM
            )[0]
            sock = socket.socket(family, kind, proto)
            sock.setblocking(False)
            # connect() on UDP only fixes the peer, and makes the kernel report
            # ICMP "port unreachable" to us (as ECONNREFUSED on a later send).
            sock.connect(address)
        except OSError as exc:
            self._failed(exc)
            return
        self._sock = sock

    def _send(self, body: str, tags: Mapping[str, Tag]) -> None:
        if self._sock is None:
            self._connect()
            if self._sock is None:
                self.send_errors += 1
                return
        try:
            self._sock.send(format_line(self.prefix, body, tags).encode())
        except OSError as exc:  # refused, would block, no route: drop it, go on
            self._failed(exc)
            self._connect()

    def _failed(self, exc: OSError) -> None:
        if self.send_errors == 0:
            logger.warning(
                "StatsD collector {}:{} unreachable ({}); counting errors silently",
                self.host,
                self.port,
                exc,
            )
        self.send_errors += 1


class NullMetrics:
    """No collector configured: every call is a no-op."""

    def incr(self, name: str, value: int = 1, **tags: Tag) -> None:
        pass

    def timing(self, name: str, ms: float, **tags: Tag) -> None:
        pass

    def timed(self, name: str, **tags: Tag) -> AbstractContextManager[None]:
        return timed_block(self, name, tags)


@contextmanager
def timed_block(metrics: Metrics, name: str, tags: Mapping[str, Tag]) -> Iterator[None]:
    """`timed()` for any `Metrics`: time the block, tag the outcome, re-raise."""
    started = time.monotonic()
    status = "failure"
    try:
        yield
        status = "success"
    finally:
        metrics.timing(
            name, (time.monotonic() - started) * 1000, **{**tags, "status": status}
        )


_metrics: Metrics = NullMetrics()


def configure_metrics(settings: ServiceSettings) -> Metrics:
    """Build the process's client (no host: `NullMetrics`); once, in `main.py`."""
    global _metrics
    if isinstance(_metrics, StatsdMetrics):
        _metrics.close()
    if settings.metrics_host:
        _metrics = StatsdMetrics(
            settings.metrics_host, settings.metrics_port, settings.metrics_prefix
        )
    else:
        _metrics = NullMetrics()
    return _metrics


def get_metrics() -> Metrics:
    """The client `configure_metrics()` made; services alias it as `MetricsDep`."""
    return _metrics
