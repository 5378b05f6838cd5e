"""Fakes for unit tests: in-memory stand-ins for our ports, not mocks of our modules."""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager
from typing import TYPE_CHECKING, NamedTuple

from loguru import logger

from services.preflight.probe import ProbeResult
from shared.metrics import Tag, tag_values, timed_block

if TYPE_CHECKING:
    from loguru import Message, Record


class Recorded(NamedTuple):
    """One metric call.

    Tags as the wire would carry them (`attempt="1"`, `retry="false"`).
    """

    name: str
    value: float
    tags: dict[str, str]


class RecordingMetrics:
    """`Metrics` that records every call.

    Inject with `dependency_provider.scope(get_metrics, ...)`.
    """

    def __init__(self) -> None:
        self.records: list[Recorded] = []

    def incr(self, name: str, value: int = 1, **tags: Tag) -> None:
        self.records.append(Recorded(name, value, tag_values(tags)))

    def timing(self, name: str, ms: float, **tags: Tag) -> None:
        self.records.append(Recorded(name, ms, tag_values(tags)))

    def timed(self, name: str, **tags: Tag) -> AbstractContextManager[None]:
        return timed_block(self, name, tags)

    def names(self) -> list[str]:
        """Metric names in call order."""
        return [record.name for record in self.records]

    def find(self, name: str, **tags: Tag) -> list[Recorded]:
        """Calls of `name` whose tags include every given tag (as wire strings)."""
        wanted = tag_values(tags).items()
        return [r for r in self.records if r.name == name and wanted <= r.tags.items()]

    def count(self, name: str, **tags: Tag) -> float:
        """Sum of the matching calls' values (for counters: how many were counted)."""
        return sum(record.value for record in self.find(name, **tags))

    def tags_of(self, name: str) -> list[dict[str, str]]:
        return [record.tags for record in self.records if record.name == name]


class CapturedLogs:
    """Loguru records, in order: `with CapturedLogs.capture() as logs: ...`."""

    def __init__(self) -> None:
        self.records: list[Record] = []

    @classmethod
    @contextmanager
    def capture(cls, level: str = "DEBUG") -> Iterator[CapturedLogs]:
        logs = cls()
        sink_id = logger.add(logs.sink, level=level)
        try:
            yield logs
        finally:
            logger.remove(sink_id)

    def sink(self, message: Message) -> None:
        self.records.append(message.record)

    def __getitem__(self, index: int) -> Record:
        return self.records[index]

    def messages(self) -> list[str]:
        return [record["message"] for record in self.records]

    def matching(self, fragment: str) -> list[Record]:
        """Records whose message contains `fragment`."""
        return [record for record in self.records if fragment in record["message"]]


class FakeSecrets:
    """A run's keys as the API's internal endpoint would return them."""

    def __init__(
        self, keys: dict[str, str] | None = None, error: Exception | None = None
    ):
        self.keys = dict(keys or {})
        self.error = error
        self.asked: list[tuple[str, list[str]]] = []

    async def secrets(self, run_id: object, providers: list[str]) -> dict[str, str]:
        self.asked.append((str(run_id), list(providers)))
        if self.error is not None:
            raise self.error
        return {p: v for p, v in self.keys.items() if p in providers}


class FakeLoginProbe:
    """Login probe verdicts by volume, counting how often each volume was probed."""

    def __init__(self, states: dict[str, str], default: str = "logged_out") -> None:
        self.states, self.default = states, default
        self.calls: list[str] = []

    async def probe(self, volume: str) -> ProbeResult:
        self.calls.append(volume)
        state = self.states.get(volume, self.default)
        exit_code = 0 if state in ("api_key", "chatgpt") else 1
        output = {
            "api_key": "API key configured - sk-***",
            "chatgpt": "Logged in using ChatGPT",
            "logged_out": "Not logged in",
        }.get(state, state)
        return ProbeResult(state, exit_code, output, time.time())
